"""Sample-indexed ring buffer and stamp-keyed channel buffer (no ROS)."""

import numpy as np

from dystream_ros.audio import SampleRing
from dystream_ros.audio.channel import ChannelBuffer
from dystream_ros.config import NS

MS = 1_000_000


def test_write_read_wraparound_and_holes():
    r = SampleRing(100)
    w = r.write(10, np.ones(20, np.float32), arrival=1.0)
    assert (w.accepted, w.late, w.overflow) == (20, 0, 0)
    assert r.high_water == 30 and r.depth == 30
    x, arr = r.read(0, 40)
    assert x[:10].sum() == 0 and np.isnan(arr[:10]).all()  # never written: silence
    assert x[10:30].sum() == 20 and (arr[10:30] == 1.0).all()
    r.consume(90)
    w = r.write(95, np.full(50, 2.0, np.float32), arrival=2.0)  # wraps the physical end
    assert w.accepted == 50 and w.overflow == 0
    x, arr = r.read(90, 150)
    assert x[:5].sum() == 0 and (x[5:55] == 2.0).all() and (arr[5:55] == 2.0).all()


def test_late_and_overflow_are_counted_not_stored():
    r = SampleRing(100)
    r.consume(50)
    w = r.write(40, np.ones(20, np.float32), arrival=0.0)
    assert (w.accepted, w.late) == (10, 10)
    w = r.write(140, np.ones(20, np.float32), arrival=0.0)
    assert (w.accepted, w.overflow) == (10, 10)
    assert w.dropped == 10
    w = r.write(50, np.ones(5, np.float32), arrival=0.0)
    assert w.overwritten == 5


def test_channel_jitter_is_contiguous_and_gaps_are_silence():
    ch = ChannelBuffer("speaker", 16000 * 10, tolerance_ns=20 * MS)
    origin = 1_000 * MS
    x = np.ones(1600, np.float32)  # 100 ms at 16 kHz
    ch.push(x, 16000, origin, 0.0, origin)
    ch.push(x, 16000, origin + 100 * MS + 7 * MS, 0.1, origin)  # 7 ms jitter: contiguous
    assert ch.high_water == 3200 and ch.stats.gaps == 0
    res = ch.push(x, 16000, origin + 500 * MS, 0.2, origin)  # 300 ms gap
    assert res.gap_samples == 4800 and ch.stats.gaps == 1
    assert ch.high_water == 8000 + 1600
    y, arr = ch.ring.read(0, ch.high_water)
    assert y[3200:8000].sum() == 0 and np.isnan(arr[3200:8000]).all()


def test_overlapping_stamps_are_appended_when_sustained():
    # A TTS node stamping every chunk of a burst with the same publish time: each chunk after the first
    # is behind the run; the next one confirms it (sustained), so it is appended. The last one waits
    # for the next chunk or the end of the stream.
    ch = ChannelBuffer("speaker", 16000 * 10)
    x = np.ones(1600, np.float32)
    for _ in range(3):
        ch.push(x, 16000, 0, 0.0, 0)
    assert ch.high_water == 3200 and ch.held_samples == 1600 and ch.stats.reanchors == 1
    ch.flush(0.0)
    assert ch.high_water == 4800 and ch.stats.overlaps == 2 and ch.stats.overwritten_samples == 0
    assert ch.stats.overlap_samples == 0  # nothing dropped


def _stream(ch, n_chunks, start_stamp, chunk=320, origin=0, value=1.0, skip=(), stamp_of=None):
    """20 ms chunks at 16 kHz stamped by their first sample; ``skip``: chunk numbers never sent."""
    for k in range(n_chunks):
        if k in skip:
            continue
        st = stamp_of(k) if stamp_of else start_stamp + k * chunk * NS // 16000
        ch.push(np.full(chunk, value * (k + 1), np.float32), 16000, st, 0.0, origin)


def test_one_lost_chunk_is_a_counted_gap():
    ch = ChannelBuffer("listener", 16000 * 10)  # default tolerance 10 ms < a 20 ms chunk
    _stream(ch, 10, 0, skip={4})
    assert ch.stats.gaps == 1 and ch.stats.gap_samples == 320
    y, _ = ch.ring.read(0, ch.high_water)
    assert (y[4 * 320:5 * 320] == 0).all() and (y[5 * 320:6 * 320] == 6).all()  # later audio in place


def test_far_future_outlier_costs_only_its_own_samples():
    ch = ChannelBuffer("speaker", 16000 * 30)
    _stream(ch, 10, 0, stamp_of=lambda k: 5 * NS if k == 3 else k * 20 * MS)  # chunk 3 stamped +5 s
    assert ch.stats.outliers == 1 and ch.stats.outlier_samples == 320 and ch.stats.gaps == 1
    assert ch.high_water == 3200 and ch.stats.late_samples == 0  # the rest is where it belongs
    y, _ = ch.ring.read(0, 3200)
    assert (y[2 * 320:3 * 320] == 3).all() and (y[3 * 320:4 * 320] == 0).all() and (y[-320:] == 10).all()


def test_duplicated_stamp_does_not_shift_the_channel():
    ch = ChannelBuffer("speaker", 16000 * 30)
    _stream(ch, 10, 0, stamp_of=lambda k: (k - 1 if k == 4 else k) * 20 * MS)  # chunk 4 reuses 3's stamp
    assert ch.stats.overlaps == 1 and ch.stats.overlap_samples == 320
    y, _ = ch.ring.read(0, ch.high_water)
    assert ch.high_water == 3200 and (y[5 * 320:6 * 320] == 6).all() and (y[-320:] == 10).all()


def test_a_real_jump_is_followed_after_one_chunk():
    ch = ChannelBuffer("speaker", 16000 * 30)
    _stream(ch, 10, 0, stamp_of=lambda k: k * 20 * MS + (5 * NS if k >= 3 else 0))  # clock jumped +5 s
    assert ch.stats.reanchors == 1 and ch.stats.outliers == 0 and ch.stats.gaps == 1
    assert ch.high_water == 5 * 16000 + 3200


def test_a_burst_beyond_the_buffer_realigns_on_the_next_stamp():
    ch = ChannelBuffer("speaker", 16000 * 30)
    ch.push(np.full(16000 * 40, 0.5, np.float32), 16000, 0, 0.0, 0)  # 40 s at once into a 30 s buffer
    assert ch.stats.overflow_samples >= 16000 * 10 and not ch.has_run
    ch.push(np.full(320, 0.9, np.float32), 16000, 2 * NS, 1.0, 0)  # live audio, stamped by its time
    y, _ = ch.ring.read(2 * 16000, 2 * 16000 + 320)
    assert (y == np.float32(0.9)).all()  # placed by its own stamp, not appended 30 s later


def test_resampled_channel_timing():
    ch = ChannelBuffer("listener", 16000 * 10)
    x = np.ones(4410, np.float32)  # 100 ms at 44.1 kHz
    for k in range(5):
        ch.push(x, 44100, k * 100 * MS, float(k), 0)
    ch.flush(9.0)
    assert ch.high_water == 8000  # 500 ms at 16 kHz, exactly
    y, arr = ch.ring.read(0, 8000)
    assert np.abs(y[200:-200] - 1.0).max() < 1e-3
    # arrival is recorded per sample: the first chunk's samples arrived at t=0
    assert arr[0] == 0.0 and arr[4000] in (2.0, 3.0)
