"""Each package message type survives a round trip over real DDS between two processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

HERE = Path(__file__).parent


def _messages():
    from builtin_interfaces.msg import Time
    from dystream_ros.msg import AudioChunk, AvatarState, MotionLatent

    pcm = (np.sin(np.arange(1024) / 7.0) * 20000).astype("<i2")
    audio = AudioChunk()
    audio.header.stamp = Time(sec=1700000000, nanosec=123456789)
    audio.header.frame_id = "tts"
    audio.sample_rate = 44100
    audio.channels = 2
    audio.encoding = AudioChunk.ENCODING_PCM_S16LE
    audio.data = pcm.tobytes()

    latent = MotionLatent()
    latent.header.stamp = Time(sec=12, nanosec=40_000_000)
    latent.header.frame_id = "face"
    latent.frame_index = 2**40 + 3
    latent.latent = np.linspace(-1.5, 1.5, 64, dtype=np.float32)
    latent.profile = "lite"
    latent.checkpoint = "random"
    latent.step_ms = 7.25
    latent.processing_ms = 9.5

    state = AvatarState()
    state.header.stamp = Time(sec=12, nanosec=80_000_000)
    state.state = AvatarState.STATE_LISTENING
    state.frame_index = 77
    state.processing_ms = 11.0
    state.av_offset_ms = 101.5
    state.skipped_frames = 5
    state.speaker_level_db = -60.0
    state.listener_level_db = -18.5
    return {"AudioChunk": audio, "MotionLatent": latent, "AvatarState": state}


def test_every_message_type_round_trips_between_processes():
    import rclpy
    from dystream_ros.msg import AudioChunk, AvatarState, MotionLatent
    from rclpy.node import Node

    types = {"AudioChunk": AudioChunk, "MotionLatent": MotionLatent, "AvatarState": AvatarState}
    echo = subprocess.Popen([sys.executable, str(HERE / "ros_echo.py")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    rclpy.init()
    node = Node("dystream_roundtrip_test")
    try:
        sent = _messages()
        received: dict[str, object] = {}
        pubs = {n: node.create_publisher(t, f"echo_in/{n}", 10) for n, t in types.items()}
        for n, t in types.items():
            node.create_subscription(t, f"echo_out/{n}", lambda m, n=n: received.setdefault(n, m), 10)
        deadline = time.monotonic() + 60.0
        last_send = 0.0
        while len(received) < len(types) and time.monotonic() < deadline:
            assert echo.poll() is None, f"echo process died: {echo.stdout.read()}"
            if time.monotonic() - last_send > 0.5:  # keep publishing until discovery completes
                for n, msg in sent.items():
                    if n not in received:
                        pubs[n].publish(msg)
                last_send = time.monotonic()
            rclpy.spin_once(node, timeout_sec=0.1)
        assert set(received) == set(types), f"no echo for {set(types) - set(received)}"
        for n, msg in sent.items():
            assert received[n] == msg, f"{n} changed in transit: {received[n]} != {msg}"
        audio = received["AudioChunk"]
        decoded = np.frombuffer(bytes(audio.data), dtype="<i2")
        np.testing.assert_array_equal(decoded, np.frombuffer(bytes(sent["AudioChunk"].data), dtype="<i2"))
        assert received["MotionLatent"].frame_index == 2**40 + 3
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        echo.terminate()
        echo.wait(timeout=10)
