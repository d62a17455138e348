"""The ROS-free parts of dystream_ros.sound without a device: clock mapping, capture stamps, playback queue.

The PortAudio paths themselves run against a real JACK server in test_sound_jack.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from dystream_ros.config import NS
from dystream_ros.sound.clock import CaptureStamper, StreamClock
from dystream_ros.sound.queue import PlaybackQueue
from dystream_ros.sound.streams import Block, BlockQueue, DirectCapture

RATE = 48000
T = NS / RATE


# --- clock ----------------------------------------------------------------------------------------
def test_stream_clock_takes_the_least_delayed_callback():
    """Callbacks run late by a random delay; the mapping keeps the smallest, i.e. the true offset."""
    rng = np.random.default_rng(0)
    clk = StreamClock(window_s=2.0)
    base = 1_000 * NS
    for k in range(400):  # 400 callbacks of 5.33 ms: about 2 s
        t = k * 256 / RATE
        delay = int(rng.exponential(2e6)) + 50_000  # 50 us .. several ms late
        clk.observe(t, base + int(t * NS) + delay)
    assert 50_000 <= clk.offset_ns - base < 200_000
    assert abs(clk.to_ns(1.0) - (base + NS + 50_000)) < 200_000


def test_stream_clock_window_follows_a_step():
    clk = StreamClock(window_s=0.5)
    for k in range(100):
        clk.observe(k * 0.01, k * 10_000_000 + 5_000)  # offset 5 us
    for k in range(100, 300):
        clk.observe(k * 0.01, k * 10_000_000 + 3_000_000)  # the host clock stepped by +3 ms
    assert clk.offset_ns == 3_000_000  # the old minimum left the window
    with pytest.raises(RuntimeError):
        StreamClock().offset_ns  # noqa: B018


# --- capture stamps -------------------------------------------------------------------------------
def test_capture_stamps_are_contiguous_and_ignore_jitter():
    rng = np.random.default_rng(1)
    st = CaptureStamper(RATE)
    n = 960
    stamps = []
    for k in range(2000):
        true = 10 * NS + k * n * NS // RATE
        adc = true + int(rng.normal(0, 300_000))  # 0.3 ms of mapping jitter
        r = st.stamp(n, adc)
        assert r.lost_samples == 0
        stamps.append(r.stamp_ns)
    d = np.diff(stamps)
    assert (d > 0).all()  # monotonic
    assert np.abs(d - n * NS / RATE).max() <= 0.5e6  # each step is the block (+- the bounded slew)
    assert abs(stamps[-1] - (10 * NS + 1999 * n * NS / RATE)) < 0.5e6  # no drift against the count
    assert st.lost_samples == 0 and st.gaps == 0


def test_capture_stamps_keep_nanoseconds_at_epoch_times():
    """Stamps are epoch nanoseconds (~1.8e18, where a float64 steps by 256 ns): a clock that jumps by
    seconds (a stalled VM) is followed by the bounded slew exactly, to the nanosecond, not to 256 ns."""
    st = CaptureStamper(RATE)
    n, t0 = 961, 1_796_319_103_686_343_680  # 961 frames: a block whose duration is not whole ns
    stamps, adc = [], t0
    for k in range(400):
        if k == 100:
            adc += 3 * NS  # the mapped ADC time jumps ahead without an overflow flag
        stamps.append(st.stamp(n, adc).stamp_ns)
        adc += n * NS // RATE
    step = np.diff(np.array(stamps, dtype=np.int64)) - n * NS / RATE
    assert st.clock_jumps > 0 and st.lost_samples == 0
    assert np.abs(step).max() <= 0.5e6 + 1  # the slew's bound plus the stamp's own rounding
    assert (np.abs(step) > 0.5e6 - 1).sum() > 200  # slewing at its bound for those blocks


def test_capture_does_not_believe_an_adc_time_off_by_a_day():
    """The capture callback driven with PortAudio's time info (no device): a block whose ADC time maps
    2**32 samples ahead (what JACK reported after stalled cycles), with an overflow flag, is counted in
    ``bad_adc_times`` and stamped by the prediction; no day of samples is counted lost."""
    from types import SimpleNamespace

    clock = {"now": 1_796_319_103_686_343_680}
    cap = DirectCapture(rate=RATE, now_ns=lambda: clock["now"])
    cap.rate = RATE
    cap._prepare(RATE, 1)
    n, stream_t = 480, 100.0
    for k in range(60):
        clock["now"] += n * NS // RATE
        stream_t += n / RATE
        adc = stream_t - 0.012 + (2**32 / RATE if k == 40 else 0.0)
        cap._callback(np.zeros((n, 1), np.int16), n,
                      SimpleNamespace(currentTime=stream_t, inputBufferAdcTime=adc),
                      SimpleNamespace(input_overflow=k == 40))
    blocks = [cap.read(0) for _ in range(60)]
    st = cap.status()
    assert st["bad_adc_times"] == 1 and st["lost_samples"] == 0 and st["overflow_flags"] == 1
    stamps = np.array([b.stamp_ns for b in blocks], dtype=np.int64)
    assert np.abs(np.diff(stamps) - n * NS / RATE).max() <= 0.5e6 + 1
    assert blocks[-1].index == 59 * n


def test_capture_gap_counts_lost_samples():
    st = CaptureStamper(RATE)
    n = 480
    t = 5 * NS
    for _ in range(10):
        st.stamp(n, t)
        t += n * NS // RATE
    t += 2400 * NS // RATE  # an overrun lost 2400 samples (50 ms)
    r = st.stamp(n, t, overflow=True)
    assert r.lost_samples == 2400 and r.stamp_ns == t
    assert st.lost_samples == 2400 and st.gaps == 1


def test_block_queue_carries_drops_and_losses_onto_the_next_block_delivered():
    """A full queue drops blocks, and the device lost samples before some of the dropped ones (an
    overrun): the next block delivered carries both, so the sample index between delivered blocks is
    their samples plus what was dropped plus what was lost (the index counts lost samples)."""
    q = BlockQueue(2)
    n, index, lost = 480, 0, {2: 240, 4: 96}  # blocks 2..5 do not fit; 2 and 4 came after overruns
    for k in range(7):
        if k == 6:  # the consumer wakes up, drains, and the next block goes in
            got = [q.get(0), q.get(0)]
            assert q.get(0) is None
        index += lost.get(k, 0)
        q.put(Block(data=np.zeros((n, 1), np.int16), stamp_ns=0, rate=RATE, lost_before=lost.get(k, 0),
                    index=index))
        index += n
    got.append(q.get(0))
    assert [b.index for b in got[:2]] == [0, n] and q.dropped_blocks == 4 and q.dropped_samples == 4 * n
    assert got[2].dropped_before == 4 * n and got[2].lost_before == 240 + 96
    assert got[2].index - got[0].index == 2 * n + got[2].dropped_before + got[2].lost_before


def test_capture_clock_jump_without_overflow_is_slewed_not_lost():
    st = CaptureStamper(RATE, max_slew_s=0.0005)
    n = 960
    t = 5 * NS
    stamps = []
    for k in range(200):
        adc = t + k * n * NS // RATE + (20_000_000 if k >= 100 else 0)  # the mapping jumps by 20 ms
        r = st.stamp(n, adc)
        assert r.lost_samples == 0
        stamps.append(r.stamp_ns)
    d = np.diff(stamps) - n * NS / RATE
    assert st.lost_samples == 0 and st.clock_jumps >= 1
    assert d.min() > -1 and d.max() <= 0.5e6 + 1  # contiguous, moved by the bounded slew only
    assert abs(stamps[-1] - (t + 199 * n * NS // RATE + 20_000_000)) < 4e6  # most of the way back


def test_capture_follows_a_slow_clock():
    """The audio clock runs 100 ppm slow against the host: the stamps follow the host clock."""
    st = CaptureStamper(RATE)
    n = 960
    last = None
    for k in range(3000):  # 60 s
        adc = int(k * n * NS / RATE * (1 + 100e-6))
        last = st.stamp(n, adc)
    assert abs(last.stamp_ns - int(2999 * n * NS / RATE * (1 + 100e-6))) < 1e6
    assert st.lost_samples == 0


# --- playback queue -------------------------------------------------------------------------------
def _play(q: PlaybackQueue, t0: int, n_buffers: int, period: int = 256) -> np.ndarray:
    out = []
    for k in range(n_buffers):
        buf = np.zeros(period, np.float32)
        q.fill(buf, t0 + int(round(k * period * T)))
        out.append(buf)
    return np.concatenate(out)


def test_queue_places_samples_to_the_sample():
    q = PlaybackQueue(RATE)
    t0 = 100 * NS
    x = np.arange(1, 1001, dtype=np.float32)
    q.schedule(x, t0 + int(round(777 * T)), source_stamp_ns=42)
    y = _play(q, t0, 10)
    first = int(np.flatnonzero(y)[0])
    assert first == 777
    np.testing.assert_array_equal(y[777:1777], x)  # across buffer boundaries, without a gap or repeat
    rec = q.take_played()
    assert len(rec) == 1 and rec[0].source_stamp_ns == 42
    assert abs(rec[0].played_ns - rec[0].scheduled_ns) <= T
    snap = q.snapshot()
    assert snap["samples_played"] == 1000 and snap["samples_unaccounted"] == 0


def test_queue_contiguous_chunks_play_seamlessly_under_clock_jitter():
    rng = np.random.default_rng(2)
    q = PlaybackQueue(RATE)
    t0 = 50 * NS
    x = rng.standard_normal(48000).astype(np.float32)
    for i in range(0, x.size, 1600):  # 100 chunks whose times are each rounded to ns
        q.schedule(x[i:i + 1600], t0 + int(round(i * T)) + 10 * NS // 1000)
    out = []
    for k in range(200):
        buf = np.zeros(256, np.float32)
        jitter = int(rng.normal(0, 20_000))  # 20 us of DAC-time mapping jitter per buffer
        q.fill(buf, t0 + int(round(k * 256 * T)) + jitter)
        out.append(buf)
    y = np.concatenate(out)
    start = int(np.flatnonzero(y)[0])
    np.testing.assert_array_equal(y[start:start + x.size], x)
    assert q.snapshot()["resyncs"] == 0


def test_queue_late_overflow_flush_are_counted():
    q = PlaybackQueue(RATE, max_queued_s=0.5)
    t0 = 10 * NS
    # late: the first 100 samples' time lies before the buffer
    q.schedule(np.ones(1000, np.float32), t0 - int(round(100 * T)))
    _play(q, t0, 8)
    s = q.snapshot()
    assert s["samples_late"] == 100 and s["samples_played"] == 900
    # overflow: one second offered to a half-second queue
    q.schedule(np.ones(RATE, np.float32), t0 + NS)
    s = q.snapshot()
    assert s["samples_overflow"] == RATE // 2 and s["samples_queued"] == RATE // 2
    # flush: everything queued goes, and the next buffer is the start of silence
    n = q.flush(t0 + 500_000_000)
    assert n == RATE // 2
    buf = np.zeros(256, np.float32)
    q.fill(buf, t0 + NS)
    assert not buf.any()
    marks = q.flushes()
    assert marks[-1].samples == RATE // 2 and marks[-1].silent_from_ns == t0 + NS
    s = q.snapshot()
    assert s["samples_flushed"] == RATE // 2 and s["samples_unaccounted"] == 0 and s["samples_queued"] == 0


def test_queue_flush_mid_utterance_silences_the_next_buffer():
    q = PlaybackQueue(RATE)
    t0 = 20 * NS
    q.schedule(np.full(RATE, 0.5, np.float32), t0)
    y = _play(q, t0, 4)
    assert (y == 0.5).all()
    q.flush(t0 + int(round(4 * 256 * T)))
    y = _play(q, t0 + int(round(4 * 256 * T)), 2)
    assert not y.any()
    assert q.snapshot()["samples_played"] + q.snapshot()["samples_flushed"] == RATE


def test_robot_launch_file_names_shipped_executables():
    """The launch file parses and starts only executables of bin/ (launch_ros itself is not installed
    in every test environment, so the file is read, not run)."""
    import ast
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    src = (repo / "launch" / "dystream_robot.launch.py").read_text()
    tree = ast.parse(src)
    exes = {kw.value.value for node in ast.walk(tree) if isinstance(node, ast.Call)
            for kw in node.keywords if kw.arg == "executable" and isinstance(kw.value, ast.Constant)}
    assert exes == {"dystream_mic", "dystream_speaker", "dystream_tts"}
    assert all((repo / "bin" / e).is_file() for e in exes)
    assert "dystream.launch.py" in src  # the avatar comes from its own launch file
