"""Live replay over real DDS agrees with the offline replay of the same bag.

`dystream demo` runs the installed dystream_node, dystream_bag_player and dystream_recorder as three
processes (this session's ROS_DOMAIN_ID, localhost discovery) on the first 2 s of the sample
conversation; then the same bag is replayed offline with the same node parameters and seed.

What must agree, and why it may not (asserted exactly where it can be):
* Frame count: frames the node published + frames it skipped = the offline count (±1).
* Latents: the model draws its noise from (seed, frame index) and the scheduler decides in audio
  time, so every frame *before the first skip* has the offline latent. The node runs with images off
  (``render: false``) so that on 2 busy cores it keeps up; if it still falls behind and skips, the
  autoregressive history diverges from the skip on (the skipped frames never feed the generator), so
  only the frames before it are compared. A channel whose audio arrives later than its wait is
  replaced by silence (the node's rule for a lost mic); with the default 200 ms wait a loaded machine
  can delay a DDS delivery that long, so this test raises the waits to 1 s (the offline replay uses the
  same parameter file, so both follow the same rule). The audio subscriptions are reliable (the default;
  the parameter file says so as well): with best-effort ones a message lost on a loaded machine is
  (rightly) counted as silence, and the live run would then differ from the bag; the player waits for
  its last messages to be acknowledged before it exits (a message published just before the
  publisher was destroyed once went missing this way). The tolerance only covers floating-point
  reduction order between two processes; in practice the latents are bit-identical.
* Message size must not matter (frames are counted in audio time): 20 ms and 64 ms messages. With
  64 ms the timer regularly finds no frame due, which once shifted the node's session audio (fixed in
  the node: the session position stays put on ticks without due frames).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dystream_ros.io import bags

pytestmark = pytest.mark.ros

SECONDS = 2.0


def _env(repo):
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{repo}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


@pytest.mark.parametrize("chunk_ms", [20.0, 64.0])
def test_live_replay_matches_offline(repo, tmp_path, chunk_ms):
    from dystream_ros.commands import replay

    params = tmp_path / "latents_only.yaml"
    params.write_text("/**:\n  ros__parameters:\n    render: false\n    publish_image: false\n"
                      "    idle_publish_hz: 0.0\n    speaker_wait_ms: 1000.0\n    listener_wait_ms: 1000.0\n"
                      "    input_qos: reliable\n")
    out = tmp_path / "live"
    cmd = [sys.executable, "-m", "dystream_ros.cli", "demo", "--out", str(out), "--seconds", str(SECONDS),
           "--chunk-ms", str(chunk_ms), "--checkpoint", "random", "--seed", "5", "--params-file", str(params),
           "--no-setup", "--timeout", "180"]
    res = subprocess.run(cmd, cwd=repo, env=_env(repo), capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    live = json.loads((out / "report.json").read_text())
    assert live["mode"] == "live" and live["checkpoint"] == "random"
    expected = int(np.ceil(SECONDS * 25 - 1e-9))
    assert live["frames_expected"] == expected
    assert live["lost_frames"] == 0, live  # nothing lost between node and recorder (reliable, localhost)

    live_lat: dict[int, np.ndarray] = {}
    with bags.BagReader(out / "output.mcap") as bag:
        for _, ty, _, raw in bag.messages(["/dystream/motion_latent"]):
            m = bag.deserialize(raw, ty)
            live_lat[int(m.frame_index)] = np.asarray(m.latent, np.float32)

    off = replay.replay(out / "input_bag", tmp_path / "offline", checkpoint="random", seed=5,
                        params_file=params, video=False, lipsync=False, progress=False)
    off_lat = np.load(tmp_path / "offline" / "latents.npy")
    assert off["frames"] == expected == off_lat.shape[0]

    # frame count: published + skipped by the node = offline (±1)
    produced = len([i for i in live_lat if i < expected])
    assert abs(produced + live["skipped_frames"] - off["frames"]) <= 1, (produced, live["skipped_frames"])

    # latents: identical up to the first frame the node skipped (all of them when it kept up)
    first_gap = next((i for i in range(expected) if i not in live_lat), expected)
    assert first_gap >= 1, "the node published no frame at the start of the stream"
    got = np.stack([live_lat[i] for i in range(first_gap)])
    diag = json.loads((out / "output_frames.json").read_text()).get("diagnostics")
    per_frame = np.abs(got - off_lat[:first_gap]).max(axis=1)
    differing = {int(i): float(per_frame[i]) for i in np.flatnonzero(per_frame > 0)}
    np.testing.assert_allclose(got, off_lat[:first_gap], rtol=1e-4, atol=1e-5,
                               err_msg=f"frames differing (max abs): {differing}; node diagnostics: {diag}")
    if live["skipped_frames"] == 0:
        assert first_gap == expected


def test_bag_player_publishes_in_real_time_with_clock(repo, tmp_path):
    """The player publishes the bag's audio (restamped or with /clock in bag time) at ``rate``."""
    import time

    import rclpy
    from dystream_ros.msg import AudioChunk
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from rosgraph_msgs.msg import Clock
    from scipy.io import wavfile

    sr = 16000
    wavfile.write(tmp_path / "s.wav", sr, (np.sin(np.arange(sr) / 5.0) * 8000).astype(np.int16))
    bag = bags.make_bag(tmp_path / "s.wav", None, tmp_path / "bag", storage="sqlite3")
    rclpy.init()
    node = Node("player_probe")
    got: list[tuple[float, int]] = []
    clocks: list[int] = []
    node.create_subscription(AudioChunk, bags.DEFAULT_SPEAKER_TOPIC,
                             lambda m: got.append((time.monotonic(),
                                                   m.header.stamp.sec * 10**9 + m.header.stamp.nanosec)),
                             qos_profile_sensor_data)
    node.create_subscription(Clock, "/clock", lambda m: clocks.append(m.clock.sec * 10**9 + m.clock.nanosec),
                             10)
    player = subprocess.Popen([sys.executable, str(repo / "bin" / "dystream_bag_player"), str(bag),
                               "--ros-args", "-p", "clock:=true", "-p", "rate:=2.0", "-p",
                               "wait_for_subscribers:=1", "-p", "start_delay_s:=0.3"],
                              env=_env(repo), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while player.poll() is None and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        for _ in range(20):
            rclpy.spin_once(node, timeout_sec=0.05)
        out = player.stdout.read()
        assert player.returncode == 0, out
    finally:
        if player.poll() is None:
            player.kill()
        node.destroy_node()
        rclpy.try_shutdown()
    assert len(got) == 50, out  # 1 s in 20 ms chunks, reliable publisher on localhost
    stamps = [s for _, s in got]
    assert stamps[0] == bags.DEFAULT_START_NS  # with /clock the bag stamps are kept
    assert all(b - a == 20_000_000 for a, b in zip(stamps, stamps[1:], strict=False))
    assert clocks and bags.DEFAULT_START_NS <= clocks[-1] <= bags.DEFAULT_START_NS + 2 * 10**9
    # rate 2: one second of audio is sent in about half a second (generous bound, busy machine)
    assert got[-1][0] - got[0][0] < 0.98 * 2
