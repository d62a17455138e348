"""A seeded fuzz of dystream_node's audio handler, in-process: 5,000 valid and 500 malformed messages.

The node is configured and active (real model, no rendering) and its producer thread runs; messages go
straight into the subscription callback in a shuffled order. Every message must end in exactly one
counter (accepted, or rejected with its reason), the node's memory must stay bounded, and the longest
callback is reported (a measurement printed with ``-s``, not a pass/fail figure).
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")

from dystream_ros.msg import AudioChunk  # noqa: E402
from node_helpers import chunk_msg, rss_mb, to_time  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

RATES = (8000, 16000, 22050, 44100, 48000)
# malformed kind -> the bad_messages counter it must land in
MALFORMED = {"empty": "empty", "encoding": "encoding", "mp3": "compressed", "rate0": "sample_rate",
             "rate_odd": "sample_rate", "channels0": "channels", "too_large": "too_large"}



def _malformed(kind: str, stamp: int, rng) -> AudioChunk:
    m = AudioChunk()
    m.header.stamp = to_time(stamp)
    m.sample_rate, m.channels, m.encoding = 16000, 1, "pcm_s16le"
    m.data = rng.integers(0, 256, 640, dtype=np.uint8).tobytes()
    if kind == "empty":
        m.data = b""
    elif kind == "encoding":
        m.encoding = rng.choice(["pcm_u8", "pcm_s24le", "ulaw", ""])
    elif kind == "mp3":
        m.encoding = "mp3"
    elif kind == "rate0":
        m.sample_rate = 0
    elif kind == "rate_odd":
        m.sample_rate = int(rng.choice([383999, 12345, 1001]))
    elif kind == "channels0":
        m.channels = 0
    elif kind == "too_large":  # over max_message_s (1 s here)
        m.data = b"\0" * (16000 * 2 + 2)
    return m


@pytest.fixture()
def node():
    from dystream_ros.nodes.dystream_node import DystreamNode

    rclpy.init()
    overrides = {"checkpoint": "random", "autostart": False, "render": False, "warmup_frames": 1,
                 "max_message_s": 1.0, "buffer_s": 5.0}
    n = DystreamNode(parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    assert n.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert n.trigger_activate() == TransitionCallbackReturn.SUCCESS
    yield n
    n.release_for_exit()
    n.destroy_node()
    rclpy.try_shutdown()


def test_seeded_fuzz_every_message_counted_memory_bounded(node):
    rng = np.random.default_rng(20261201)
    now = node.get_clock().now().nanoseconds
    plan = ["valid"] * 5000 + [k for k in MALFORMED for _ in range(500 // len(MALFORMED))]
    plan += ["empty"] * (5500 - len(plan))
    rng.shuffle(plan)
    stamps = {"speaker": now, "listener": now}
    expected_bad = collections.Counter()
    rss0 = None
    for i, kind in enumerate(plan):
        channel = "speaker" if rng.random() < 0.5 else "listener"
        if kind == "valid":
            rate = int(rng.choice(RATES))
            n = int(rate * rng.uniform(0.01, 0.1))
            ch = int(rng.choice([1, 2]))
            x = rng.uniform(-0.5, 0.5, n * ch).astype(np.float32)
            if rng.random() < 0.5:
                msg = chunk_msg(x, rate, stamps[channel], channels=ch, encoding="pcm_f32le")
            else:
                msg = chunk_msg((x * 32767).astype(np.int16), rate, stamps[channel], channels=ch)
            stamps[channel] += n * 1_000_000_000 // rate
        else:
            msg = _malformed(kind, stamps[channel], rng)
            expected_bad[MALFORMED[kind]] += 1
        node._on_audio(msg, channel)
        if i == 500:
            rss0 = rss_mb()  # after the first allocations (rings, resampler banks, the model's warm-up)
    s = node.stats_snapshot()
    assert s["speaker_messages_received"] + s["listener_messages_received"] == len(plan)
    assert s["speaker_messages_accepted"] + s["listener_messages_accepted"] == 5000
    for kind, n in expected_bad.items():
        assert s[f"bad_messages_{kind}"] == n, (kind, s[f"bad_messages_{kind}"], n)
    assert s["bad_messages"] == 500 and s.get("bad_messages_internal", 0) == 0
    assert s["messages_unaccounted"] == 0 and s["messages_dropped_inactive"] == 0
    rss1 = rss_mb()
    assert rss1 <= 1.3 * rss0, (rss0, rss1)
    print(f"\nfuzz: {len(plan)} messages, audio callback p99 {s['audio_callback_ms_p99']:.2f} ms, "
          f"max {s['audio_callback_ms_max']:.2f} ms; RSS {rss0:.0f} -> {rss1:.0f} MB")
