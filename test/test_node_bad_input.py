"""dystream_node under bad input, over real DDS with sim time: it stays alive and counts/logs what happened.

NaN/Inf audio, empty messages, unknown and MP3 encodings, sample rate 0, zero channels, odd byte counts,
a backwards clock jump, a 30 s gap, a 10x real-time burst and a deliberate overload. The test owns
/clock and moves it only when the node has caught up (every published chunk received, at most two
frames due and not yet produced), so what happens depends on the stamps and the clock, never on how
fast this machine is; 30 s of sim time pass in seconds. Overload is made on purpose (a 2 s clock jump
with audio buffered) and its counted outcome asserted. The node is spun as in production (one
SingleThreadedExecutor + its producer thread); audio is reliable so that "every chunk received" is a
condition that can be waited for.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")

from dystream_ros.msg import AudioChunk  # noqa: E402
from node_helpers import NS, Probe, Spinner, chunk_msg, stamp_ns, to_time, wait_for  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

MS = 1_000_000
FRAME = 40 * MS
T_START = 1000 * NS
MAX_BACKLOG = 2  # frames due but not produced before the clock moves on (catch_up_limit is 8)
CATCH_UP_LIMIT = 8


class Sim:
    """The node under test, a probe, and the sim clock."""

    def __init__(self, node, probe):
        self.node, self.probe = node, probe
        self.t = T_START

    def received_all(self) -> bool:
        s = self.snap()
        return all(s[f"{ch}_messages_received"] >= self.probe.sent[ch] for ch in ("speaker", "listener"))

    def settle(self, timeout: float = 120.0) -> None:
        """Wait until the node has every chunk sent so far and has produced what is due (but a backlog of
        ``MAX_BACKLOG``, which the next timer tick takes)."""
        assert wait_for(self.received_all, timeout), ("audio not received", dict(self.probe.sent),
                                                      self.snap())
        assert wait_for(lambda: self.snap().get("frames_pending", 0) <= MAX_BACKLOG, timeout), \
            ("node did not catch up", self.snap())

    def advance(self, to_ns: int, step: int = 10 * MS, sleep: float = 0.002, feed=None) -> None:
        """Move the clock to ``to_ns`` in ``step`` increments, each once the node has caught up;
        ``feed(t)`` may publish audio before each."""
        while self.t < to_ns:
            self.t = min(to_ns, self.t + step)
            if feed:
                feed(self.t)
            self.settle()
            self.probe.publish_clock(self.t)
            time.sleep(sleep)

    def wait(self, cond, timeout: float = 60.0) -> bool:
        """Wait for ``cond`` while nudging the clock (1 ms per 20 ms): under sim time the node's timer only
        fires when the clock moves, so a node that fell behind needs ticks to catch up."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            self.t += 1 * MS
            self.probe.publish_clock(self.t)
            time.sleep(0.02)
        return bool(cond())

    def snap(self) -> dict:
        return self.node.stats_snapshot()

    def frames(self, topic: str, start: int, seconds: float = 60.0) -> list:
        """``topic`` messages of the stream started at clock ``start``: stamped in [start, start + seconds).

        A frame the node published for an earlier stream can still be in flight after ``reset()`` cleared
        the probe (DDS orders nothing across topics), so a test never reads the probe's list unfiltered."""
        end = start + int(seconds * NS)
        return [m for m in self.probe.get(topic) if start <= stamp_ns(m.header) < end]

    def reset(self) -> None:
        cli = self.probe.create_client(Trigger, "/dystream_node/reset")
        assert cli.wait_for_service(timeout_sec=10)
        fut = cli.call_async(Trigger.Request())
        assert wait_for(fut.done, 30) and fut.result().success
        self.probe.destroy_client(cli)
        self.probe.clear()

    def stream(self, seconds: float, start: int, rate: int = 16000, chunk: int = 320, speaker=True,
               listener=True, value: float = 0.2):
        """A feed() publishing real-time mono float chunks stamped from ``start`` as the clock passes them."""
        n = int(seconds * rate)
        x = (value * np.sin(np.arange(n) * 2 * np.pi * 200 / rate)).astype(np.float32)
        pending = [(start + i * NS // rate, x[i:i + chunk]) for i in range(0, n, chunk)]

        def feed(t):
            while pending and pending[0][0] + len(pending[0][1]) * NS // rate <= t:
                st, c = pending.pop(0)
                if speaker:
                    self.probe.send("speaker", chunk_msg(c, rate, st, encoding="pcm_f32le"))
                if listener:
                    self.probe.send("listener", chunk_msg(c, rate, st, encoding="pcm_f32le"))
        return feed


@pytest.fixture(scope="module")
def sim():
    from dystream_ros.nodes.dystream_node import DystreamNode

    rclpy.init()
    overrides = {"use_sim_time": True, "checkpoint": "random", "autostart": False, "render": False,
                 "warmup_frames": 1, "output_qos_depth": 100, "catch_up_limit": CATCH_UP_LIMIT,
                 "input_qos": "reliable", "input_qos_depth": 1000}
    node = DystreamNode(parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    probe = Probe(reliable_audio=True)
    probe.watch_rosout()
    spinner = Spinner(node, probe)
    probe.publish_clock(T_START)
    assert wait_for(lambda: node.get_clock().now().nanoseconds >= T_START, 30)
    from rclpy.lifecycle import TransitionCallbackReturn

    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    # both directions matched before anything is sent (reliable + volatile: earlier messages are not kept)
    assert wait_for(lambda: probe.speaker.get_subscription_count() >= 1
                    and probe.listener.get_subscription_count() >= 1
                    and node._outputs.pubs["latent"].get_subscription_count() >= 1
                    and node._outputs.pubs["state"].get_subscription_count() >= 1, 30)
    yield Sim(node, probe)
    spinner.shutdown()
    node.release_for_exit()
    node.destroy_node()
    probe.destroy_node()
    rclpy.try_shutdown()


def _bad(probe, stamp, *, data=b"", rate=16000, channels=1, encoding="pcm_s16le", channel="speaker"):
    m = AudioChunk()
    m.header.stamp = to_time(stamp)
    m.sample_rate, m.channels, m.encoding = rate, channels, encoding
    m.data = data
    probe.send(channel, m)
    time.sleep(0.01)


def test_malformed_messages_are_counted_logged_and_survived(sim):
    sim.reset()
    p, t = sim.probe, sim.t
    nan = np.full(320, 0.1, np.float32)
    nan[[3, 50, 100]] = [np.nan, np.inf, -np.inf]
    p.send("speaker", chunk_msg(nan, 16000, t, encoding="pcm_f32le"))
    _bad(p, t)  # empty
    _bad(p, t, data=b"\x00" * 640, encoding="pcm_u8")  # unknown encoding
    _bad(p, t, data=b"\xff\xfb" * 320, encoding="mp3")  # compressed
    _bad(p, t, data=b"\x00" * 640, rate=0)  # sample rate 0
    # in range, but not an accepted rate (no cheap filter); on the listener: logs are throttled per channel
    _bad(p, t, data=b"\x00" * 640, rate=383999, channel="listener")
    _bad(p, t, data=b"\x00" * 640, channels=0)
    _bad(p, t, data=b"\x00" * 1001)  # odd byte count: 500 samples + 1 byte
    _bad(p, t, data=b"\x00" * (16000 * 61 * 2))  # 61 s in one message > max_message_s (60)
    # 9 MiB of 48 kHz stereo S16 is 49 s (< max_message_s) but > max_message_bytes (8 MiB); on the
    # listener, as logs are throttled per reason and channel
    _bad(p, t, data=b"\x00" * (9 * 1024 * 1024), rate=48000, channels=2, channel="listener")
    _bad(p, t + 100 * MS, data=b"\x00" * (16000 * 40 * 2))  # 40 s at once > buffer_s (30): overflow
    s = {}

    def counted():
        s.update(sim.snap())
        return (s.get("bad_messages_empty", 0) >= 1 and s.get("bad_messages_encoding", 0) >= 1
                and s.get("bad_messages_compressed", 0) >= 1 and s.get("bad_messages_sample_rate", 0) >= 2
                and s.get("bad_messages_channels", 0) >= 1 and s.get("nonfinite_samples", 0) >= 3
                and s.get("trailing_bytes_dropped", 0) >= 1 and s.get("bad_messages_too_large", 0) >= 2
                and s.get("speaker_overflow_samples", 0) >= 9 * 16000)

    assert wait_for(counted, 20), s
    for needle in ("NaN/Inf", "mp3", "pcm_u8", "sample_rate 0", "383999 Hz is not one of sample_rates",
                   "channel count 0", "no complete sample frame",
                   "trailing byte", "exceeds the limit", "bytes exceeds the limit", "buffer full"):
        assert wait_for(lambda n=needle: p.logs(n), 10), f"no log mentioning {needle!r}"
    # Rate-limited: a flood of NaN messages gives no flood of logs.
    before = len(p.logs("NaN/Inf"))
    for _ in range(30):
        p.send("speaker", chunk_msg(nan, 16000, t, encoding="pcm_f32le"))
    assert wait_for(lambda: sim.snap()["nonfinite_samples"] >= 3 * 31, 20)
    time.sleep(0.5)
    assert len(p.logs("NaN/Inf")) - before <= 2
    # Every message sent arrived (reliable) and ended in exactly one counter.
    assert wait_for(lambda: sim.received_all() and sim.snap()["messages_unaccounted"] == 0, 30), sim.snap()
    s = sim.snap()
    assert sum(s[f"{c}_messages_received"] for c in ("speaker", "listener")) == sum(p.sent.values())
    # Still alive and producing finite frames.
    resume = sim.t + 20 * MS
    sim.advance(sim.t + 1 * NS, feed=sim.stream(1.0, resume))
    assert sim.wait(lambda: len(sim.frames("latent", resume)) >= 10)
    assert all(np.isfinite(np.asarray(m.latent)).all() for m in sim.frames("latent", resume))


def test_best_effort_publisher_is_reported_incompatible(sim):
    """The default input QoS is reliable; a best-effort publisher cannot match it, so its audio would never
    arrive: the node logs which topic and what to change, and counts the publisher."""
    from rclpy.qos import qos_profile_sensor_data

    before = sim.snap()["listener_incompatible_publishers"]
    pub = sim.probe.create_publisher(AudioChunk, "listener_audio", qos_profile_sensor_data)
    try:
        assert wait_for(lambda: sim.snap()["listener_incompatible_publishers"] >= before + 1, 30), sim.snap()
        assert wait_for(lambda: sim.probe.logs("listener_audio: a publisher's QoS is incompatible"), 10)
        assert pub.get_subscription_count() == 0
    finally:
        sim.probe.destroy_publisher(pub)


def test_backwards_clock_jump_restarts_the_stream(sim):
    sim.reset()
    start = sim.t
    sim.advance(start + 1 * NS, feed=sim.stream(1.0, start))
    assert sim.wait(lambda: len(sim.frames("latent", start)) >= 15)
    resets = sim.snap()["clock_resets"]
    sim.t = start - 20 * NS  # bag loop / sim restart
    sim.probe.publish_clock(sim.t)
    sim.advance(sim.t + 200 * MS)
    assert sim.wait(lambda: sim.snap()["clock_resets"] == resets + 1)
    assert wait_for(lambda: sim.probe.logs("clock jumped back"), 10)
    sim.probe.clear()
    new_start = sim.t
    sim.advance(new_start + 1 * NS, feed=sim.stream(1.0, new_start))
    assert sim.wait(lambda: len(sim.frames("latent", new_start, 2.0)) >= 10)
    first = min(sim.frames("latent", new_start, 2.0), key=lambda m: m.frame_index)
    assert first.frame_index == 0 and stamp_ns(first.header) == new_start


def test_30s_gap_becomes_silence(sim):
    sim.reset()
    before = sim.snap()
    start = sim.t
    sim.advance(start + 1 * NS, feed=sim.stream(1.0, start))
    sim.advance(start + 31 * NS, step=40 * MS, sleep=0.002)  # 30 s without audio (paced by the node)
    resume = start + 31 * NS
    sim.advance(resume + 1 * NS, feed=sim.stream(1.0, resume))
    target = (resume + 500 * MS - start) // FRAME
    ok = sim.wait(lambda: any(m.frame_index >= target for m in sim.frames("latent", start)))
    s = sim.snap()
    assert ok, (target, max((m.frame_index for m in sim.frames("latent", start)), default=None), s)
    for ch in ("speaker", "listener"):
        assert s[f"{ch}_gap_samples"] - before[f"{ch}_gap_samples"] >= 29 * 16000
        assert s[f"{ch}_overflow_samples"] == before[f"{ch}_overflow_samples"]
    lat = sorted(sim.frames("latent", start), key=lambda m: m.frame_index)
    idx = [m.frame_index for m in lat]
    assert idx == sorted(set(idx)), "frames repeated or out of order"
    off = [(m.frame_index, (stamp_ns(m.header) - start) / 1e6) for m in lat
           if stamp_ns(m.header) != start + FRAME * m.frame_index]
    assert not off, f"stamps off the grid: {off[:5]}"
    # every frame index up to the last one was either published or counted as skipped; the clock never
    # ran ahead of the node, so none was skipped
    assert len(idx) + s["skipped_frames_session"] >= idx[-1] + 1
    assert s["skipped_frames_session"] == 0, s["skipped_frames_session"]
    states = {m.frame_index: m for m in sim.frames("state", start)}
    quiet = [st for i, st in states.items() if 40 <= i < 700]
    assert quiet and all(st.state == 0 for st in quiet), "silence during the gap must read as idle"


def test_10x_realtime_burst_is_buffered_and_paced(sim):
    sim.reset()
    before = sim.snap()
    start = sim.t + 40 * MS
    rate, n_s = 44100, 10.0
    x = (0.2 * np.sin(np.arange(int(rate * n_s)) * 2 * np.pi * 150 / rate)).astype(np.float32)
    x16 = (x * 32767).astype(np.int16)
    chunks = [(start + i * NS // rate, x16[i:i + 4096]) for i in range(0, len(x16), 4096)]
    per_step = int(np.ceil(len(chunks) / 25))  # 10 s of audio within 1 s of clock

    def feed(t):
        for _ in range(per_step):
            if chunks:
                st, c = chunks.pop(0)
                sim.probe.send("speaker", chunk_msg(c, rate, st))

    sim.advance(start + 1 * NS, step=FRAME, sleep=0.02, feed=feed)
    assert not chunks
    assert wait_for(lambda: sim.snap()["speaker_buffer_ms"] > 6000, 20), sim.snap()["speaker_buffer_ms"]
    sim.advance(sim.t + 2 * NS, step=FRAME, sleep=0.01)
    s = sim.snap()
    assert s["speaker_overflow_samples"] == before["speaker_overflow_samples"]
    assert s["speaker_late_samples"] == before["speaker_late_samples"]
    with sim.probe.lock:
        pairs = list(zip(sim.probe.msgs["latent"], sim.probe.clock_at["latent"], strict=True))
    pairs = [(m, clock) for m, clock in pairs if stamp_ns(m.header) >= start]  # this stream's frames
    assert pairs
    for m, clock in pairs:
        assert stamp_ns(m.header) <= clock, "frame produced ahead of the clock"
    n_frames = len({m.frame_index for m, _ in pairs})
    assert n_frames <= (sim.t - start) // FRAME + 1, "frames produced faster than 25 Hz of clock"
    assert s["speaker_buffer_ms"] > 3000  # still buffered: the burst plays out at the clock's pace


def test_overload_is_skipped_and_counted(sim):
    """A 2 s clock jump (below max_clock_jump_s, so lateness, not a restart) with the audio already
    buffered: 50 frames fall due at once, the node produces the newest catch_up_limit of them, skips the
    rest, counts each one, logs it, and then keeps pace again."""
    sim.reset()
    start = sim.t
    feed = sim.stream(4.0, start)
    sim.advance(start + 1 * NS, feed=feed)
    feed(start + 4 * NS)  # the rest of the 4 s of audio, ahead of the clock
    sim.settle()
    assert sim.wait(lambda: sim.snap()["frames_pending"] == 0)
    before = sim.snap()
    n0 = before["next_frame"]
    sim.t += 2 * NS
    sim.probe.publish_clock(sim.t)  # the overload: one tick finds ~50 frames due
    assert sim.wait(lambda: sim.snap()["frames_pending"] == 0 and sim.snap()["next_frame"] >= n0 + 49)
    after = sim.snap()
    n1 = after["next_frame"]
    skipped = after["skipped_frames"] - before["skipped_frames"]
    assert skipped >= (n1 - n0) - CATCH_UP_LIMIT - MAX_BACKLOG and skipped > 0, (skipped, n0, n1)
    assert after["clock_resets"] == before["clock_resets"]  # lateness, not a new stream
    # every frame of the jump was published or counted as skipped, and the skipped ones are the oldest.
    # A frame of this stream is stamped start + index * FRAME; a frame of the previous test's stream, still
    # in flight after the reset, can fall in the same time range (seen once: its frame 75 stamped at start)
    def origin(m):
        return stamp_ns(m.header) - FRAME * m.frame_index

    def got():
        return {m.frame_index for m in sim.frames("latent", start)
                if origin(m) == start and n0 <= m.frame_index < n1}

    assert wait_for(lambda: len(got()) == n1 - n0 - skipped, 60), \
        (sorted(got()), n0, n1, skipped, before, after)
    published = sorted(got())
    assert published == list(range(n0 + skipped, n1)), (published[:3], n0, skipped, n1)
    # off this stream's grid, only frames of a stream that started earlier (one of this stream stamped
    # later than its slot would be here; one stamped earlier is missing from got() above)
    wrong = [(m.frame_index, origin(m) - start) for m in sim.frames("latent", start) if origin(m) > start]
    assert not wrong, ("(frame index, stamp error ns) of frames stamped off the stream's grid", wrong[:10],
                       n0, n1, skipped)
    assert wait_for(lambda: sim.probe.logs("behind the clock: skipped"), 10)
    # and it keeps pace afterwards: no more skips while the clock moves at the node's pace
    sim.advance(sim.t + 500 * MS)
    assert sim.snap()["skipped_frames"] == after["skipped_frames"]


def test_one_bad_stamp_costs_only_its_own_samples(sim):
    """A +5 s outlier chunk and a duplicated stamp in a live speaker stream: each is counted and dropped,
    nothing after it is late or shifted, and the face's audio levels follow the input frame by frame
    (an on/off pattern in 200 ms steps, so a shift of a chunk would flip the levels at its edges)."""
    sim.reset()
    before = sim.snap()
    start = sim.t
    rate, chunk, n = 16000, 320, 16000 * 3
    on = (np.arange(n) // (rate // 5)) % 2 == 0  # 200 ms on, 200 ms off
    x = np.where(on, 0.3 * np.sin(np.arange(n) * 2 * np.pi * 300 / rate), 0.0).astype(np.float32)
    pending = [(start + i * NS // rate, x[i:i + chunk]) for i in range(0, n, chunk)]
    bad = {40: 5 * NS, 80: -chunk * NS // rate}  # chunk 40 stamped +5 s; chunk 80 reuses chunk 79's stamp
    sent = [0]

    def feed(t):
        while pending and pending[0][0] + chunk * NS // rate <= t:
            st, c = pending.pop(0)
            k = sent[0]
            sent[0] += 1
            sim.probe.send("speaker", chunk_msg(c, rate, st + bad.get(k, 0), encoding="pcm_f32le"))
            sim.probe.send("listener", chunk_msg(np.zeros_like(c), rate, st, encoding="pcm_f32le"))

    sim.advance(start + 3 * NS, feed=feed)
    assert sim.wait(lambda: sim.snap()["next_frame"] >= 70)
    s = sim.snap()
    assert s["speaker_stamp_outliers"] - before["speaker_stamp_outliers"] == 1
    assert s["speaker_outlier_samples"] - before["speaker_outlier_samples"] == chunk
    assert s["speaker_stamp_overlaps"] - before["speaker_stamp_overlaps"] == 1
    assert s["speaker_overlap_samples"] - before["speaker_overlap_samples"] == chunk
    assert s["speaker_late_samples"] == before["speaker_late_samples"]
    assert s["speaker_reanchors"] == before["speaker_reanchors"]
    states = {m.frame_index: m.speaker_level_db for m in sim.frames("state", start)}
    thr = -45.0
    checked = 0
    for i, level in states.items():
        if i >= 70:
            continue
        seg = on[i * 640:(i + 1) * 640]
        lost = {40: (40 * chunk, 41 * chunk), 80: (80 * chunk, 81 * chunk)}  # the two dropped chunks
        touches_lost = any(a < (i + 1) * 640 and b > i * 640 for a, b in lost.values())
        if touches_lost or 0 < seg.mean() < 1:
            continue  # frames holding a dropped chunk or an on/off edge
        assert (level > thr) == bool(seg[0]), (i, level)
        checked += 1
    assert checked >= 40
