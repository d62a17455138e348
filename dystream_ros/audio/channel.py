"""One audio input channel: stamped chunks at any rate -> 16 kHz samples at stream-timeline indices.

A :class:`ChannelBuffer` places each decoded chunk on the stream timeline by its stamp (the time of its
first sample), resamples it with a streaming resampler and stores it in a :class:`SampleRing`.

Consecutive chunks form a *run*. A chunk whose stamp matches the end of the run within
``tolerance_ns`` continues it sample-exactly (stamp jitter of real publishers is ignored, and the
resampler state carries over, so chunk boundaries are inaudible). A chunk that starts later than that
is a *gap*: the run is closed (the resampler tail is flushed) and a new run starts at the chunk's stamp;
the samples in between stay unwritten and read as silence (counted as ``gap_samples``). A chunk that
starts *earlier* than the end of the run (overlapping stamps, e.g. a TTS node that stamps every chunk of
a burst with its publish time) is appended to the run instead of overwriting audio (counted as
``overlaps``). A change of input sample rate also starts a new run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .resample import StreamResampler
from .ring import SampleRing, WriteResult


@dataclass
class ChannelStats:
    """Cumulative counters of one channel (samples are 16 kHz output samples)."""

    messages: int = 0
    samples_in: int = 0  # samples accepted into the ring
    late_samples: int = 0  # dropped: arrived after that part of the timeline was consumed
    overflow_samples: int = 0  # dropped: beyond the bounded buffer
    overwritten_samples: int = 0
    gap_samples: int = 0  # silence between runs (stamp gaps)
    gaps: int = 0
    overlaps: int = 0  # chunks whose stamp overlapped the previous audio (appended)
    rate_changes: int = 0

    @property
    def dropped_samples(self) -> int:
        return self.late_samples + self.overflow_samples


@dataclass
class PushResult:
    write: WriteResult = field(default_factory=WriteResult)
    gap_samples: int = 0
    overlap_ns: int = 0  # > 0 when the chunk was appended despite an earlier stamp
    new_run: bool = False


class ChannelBuffer:
    """Stamp-keyed, resampling, bounded buffer of one channel on a stream timeline at ``rate`` Hz."""

    def __init__(self, name: str, capacity_samples: int, *, rate: int = 16000,
                 tolerance_ns: int = 20_000_000):
        self.name = name
        self.rate = int(rate)
        self.tolerance_ns = int(tolerance_ns)
        self.ring = SampleRing(capacity_samples)
        self.stats = ChannelStats()
        self._resampler: StreamResampler | None = None
        self._run_index0 = 0  # timeline index of the run's first output sample
        self._run_stamp0 = 0  # stamp of the run's first input sample
        self._run_rate = 0

    # ------------------------------------------------------------------------------------------
    def reset(self, read_pos: int = 0) -> None:
        """Drop all buffered audio and the current run (counters are kept)."""
        self.ring.reset(read_pos)
        self._resampler = None

    @property
    def high_water(self) -> int:
        return self.ring.high_water

    @property
    def has_run(self) -> bool:
        return self._resampler is not None

    def run_end_stamp_ns(self) -> int | None:
        """Stamp just after the last input sample of the current run (None without a run)."""
        if self._resampler is None:
            return None
        return self._run_stamp0 + self._resampler.samples_in * 1_000_000_000 // self._run_rate

    def index_of(self, stamp_ns: int, origin_ns: int) -> int:
        """Timeline index of a stamp (nearest sample)."""
        return int(round((stamp_ns - origin_ns) * self.rate / 1e9))

    # ------------------------------------------------------------------------------------------
    def _write(self, start: int, y: np.ndarray, arrival: float, res: PushResult) -> None:
        if y.size == 0:
            return
        w = self.ring.write(start, y, arrival)
        res.write.accepted += w.accepted
        res.write.late += w.late
        res.write.overflow += w.overflow
        res.write.overwritten += w.overwritten
        self.stats.samples_in += w.accepted
        self.stats.late_samples += w.late
        self.stats.overflow_samples += w.overflow
        self.stats.overwritten_samples += w.overwritten

    def _close_run(self, arrival: float, res: PushResult) -> int:
        """Flush the resampler tail into the ring; return the timeline index just after the run."""
        r = self._resampler
        assert r is not None
        start = self._run_index0 + r.samples_out
        tail = r.flush()
        self._write(start, tail, arrival, res)
        self._resampler = None
        return start + tail.size

    def push(self, samples: np.ndarray, sample_rate: int, stamp_ns: int, arrival: float,
             origin_ns: int) -> PushResult:
        """Add mono float32 ``samples`` at ``sample_rate`` whose first sample has ``stamp_ns``."""
        res = PushResult()
        self.stats.messages += 1
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if x.size == 0:
            return res
        rate = int(sample_rate)
        if self._resampler is not None and rate != self._run_rate:
            self.stats.rate_changes += 1
            self._close_run(arrival, res)
        if self._resampler is not None:
            expected = self.run_end_stamp_ns()
            d = stamp_ns - expected
            if d > self.tolerance_ns:
                end = self._close_run(arrival, res)
                gap = max(0, self.index_of(stamp_ns, origin_ns) - end)
                res.gap_samples = gap
                self.stats.gap_samples += gap
                self.stats.gaps += 1
            elif d < -self.tolerance_ns:
                res.overlap_ns = -d
                self.stats.overlaps += 1
        if self._resampler is None:
            self._resampler = StreamResampler(rate, self.rate)
            self._run_rate = rate
            self._run_stamp0 = int(stamp_ns)
            self._run_index0 = self.index_of(stamp_ns, origin_ns)
            res.new_run = True
        r = self._resampler
        start = self._run_index0 + r.samples_out
        y = r.process(x)
        self._write(start, y, arrival, res)
        return res

    def flush(self, arrival: float) -> PushResult:
        """Close the current run (write the resampler's held-back tail), e.g. at the end of a stream."""
        res = PushResult()
        if self._resampler is not None:
            self._close_run(arrival, res)
        return res
