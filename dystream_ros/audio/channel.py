"""One audio input channel: stamped chunks at any rate -> 16 kHz samples at stream-timeline indices.

A :class:`ChannelBuffer` places each decoded chunk on the stream timeline by its stamp (the time of its
first sample), resamples it with a streaming resampler and stores it in a :class:`SampleRing`.

Consecutive chunks form a *run*. Stamps are checked against the run's end (docs/STREAM_TIMING.md):

* within ``tolerance_ns`` of it: the run continues sample-exactly (stamp jitter is ignored and the
  resampler state carries over, so chunk boundaries are inaudible);
* later by up to ``jump_ns``: a *gap* (lost chunks, a pause): the run is closed, a new one starts at the
  chunk's stamp and the samples in between read as silence (``gap_samples``, ``gaps``);
* later by more than ``jump_ns``, or earlier than the run's end (a duplicated or overlapping stamp): the
  chunk is *held* and the next chunk decides. If the next one continues the run, the held chunk was the
  odd one out and is dropped (``outliers`` / ``overlaps``, with its samples), so one bad stamp costs
  only its own samples. Otherwise the publisher's timeline really moved (sustained evidence): the held
  chunk is placed (a jump ahead becomes a gap and a new run; a step back is appended to the run, as a
  TTS node that stamps every chunk of a burst with one time needs) and ``reanchors`` counts it;
* a change of sample rate starts a new run; so does overflow (a burst longer than the buffer): the
  samples beyond the buffer are dropped (``overflow_samples``) and the next chunk is placed by its own
  stamp, so the channel realigns instead of appending after audio that was never stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dystream_ros.config import NS

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
    overlaps: int = 0  # chunks whose stamp lay before the run's end (dropped, or appended on re-anchor)
    overlap_samples: int = 0  # samples of overlapping chunks that were dropped
    outliers: int = 0  # chunks stamped far ahead that the next chunk contradicted (dropped)
    outlier_samples: int = 0
    reanchors: int = 0  # held chunks that the next chunk confirmed: the publisher's timeline moved
    rate_changes: int = 0
    interrupts: int = 0  # barge-ins: queued audio dropped on request
    interrupted_samples: int = 0  # accepted samples an interrupt dropped before they were used

    @property
    def dropped_samples(self) -> int:
        return self.late_samples + self.overflow_samples + self.overlap_samples + self.outlier_samples


@dataclass
class PushResult:
    write: WriteResult = field(default_factory=WriteResult)
    gap_samples: int = 0
    overlap_ns: int = 0  # > 0 when the chunk was appended despite an earlier stamp
    new_run: bool = False
    held: bool = False  # the chunk's stamp disagrees with the run: kept until the next chunk decides
    dropped_held: int = 0  # samples of a previously held chunk that this chunk showed to be wrong
    reanchored: bool = False  # this chunk confirmed a held one: the stream's timeline moved
    restamped: bool = False  # the scheduler replaced a zero or far-off stamp by the receive time


class ChannelBuffer:
    """Stamp-keyed, resampling, bounded buffer of one channel on a stream timeline at ``rate`` Hz."""

    def __init__(self, name: str, capacity_samples: int, *, rate: int = 16000,
                 tolerance_ns: int = 10_000_000, jump_ns: int = NS):
        self.name = name
        self.rate = int(rate)
        self.tolerance_ns = int(tolerance_ns)
        self.jump_ns = int(jump_ns)
        self._held: tuple[np.ndarray, int, int, float] | None = None  # (samples, rate, stamp, arrival)
        self.ring = SampleRing(capacity_samples)
        self.stats = ChannelStats()
        self._resampler: StreamResampler | None = None
        self._run_index0 = 0  # timeline index of the run's first output sample
        self._run_stamp0 = 0  # stamp of the run's first input sample
        self._run_rate = 0
        self.received_end_ns: int | None = None  # stamp after the latest audio received (late or held too)

    # ------------------------------------------------------------------------------------------
    def reset(self, read_pos: int = 0) -> None:
        """Drop all buffered audio and the current run (counters are kept)."""
        self.ring.reset(read_pos)
        self._resampler = None
        self._held = None
        self.received_end_ns = None

    @property
    def held_samples(self) -> int:
        """Samples (at the channel rate) of a chunk held until the next one decides."""
        if self._held is None:
            return 0
        x, rate = self._held[0], self._held[1]
        return x.size * self.rate // rate

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
        return self._run_stamp0 + self._resampler.samples_in * NS // self._run_rate

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
        rate, stamp = int(sample_rate), int(stamp_ns)
        end = stamp + x.size * NS // rate
        self.received_end_ns = end if self.received_end_ns is None else max(self.received_end_ns, end)
        if self._held is not None:
            self._resolve_held(rate, stamp, origin_ns, res)
        if self._resampler is not None and rate == self._run_rate:
            d = stamp - self.run_end_stamp_ns()
            if d > self.jump_ns or d < -self.tolerance_ns:
                self._held = (x, rate, stamp, arrival)
                res.held = True
                return res
        self._place(x, rate, stamp, arrival, origin_ns, res)
        return res

    def _resolve_held(self, rate: int, stamp: int, origin_ns: int, res: PushResult) -> None:
        """The chunk after a held one decides: the run was right (drop the held one) or it moved."""
        end = self.run_end_stamp_ns()
        if end is None or rate != self._run_rate or not -self.tolerance_ns <= stamp - end <= self.jump_ns:
            self._place_held(origin_ns, res)
            return
        n = self.held_samples
        held_stamp = self._held[2]
        self._held = None
        res.dropped_held = n
        if held_stamp > end:
            self.stats.outliers += 1
            self.stats.outlier_samples += n
        else:
            self.stats.overlaps += 1
            self.stats.overlap_samples += n

    def _place_held(self, origin_ns: int, res: PushResult) -> None:
        """Accept the held chunk at its stamp: the publisher's timeline moved (a re-anchor)."""
        hx, hrate, hstamp, harrival = self._held
        self._held = None
        self.stats.reanchors += 1
        res.reanchored = True
        self._place(hx, hrate, hstamp, harrival, origin_ns, res)

    def _place(self, x: np.ndarray, rate: int, stamp: int, arrival: float, origin_ns: int,
               res: PushResult) -> None:
        """Write a chunk accepted at ``stamp``: continue the run, or close it and start a new one."""
        if self._resampler is not None and rate != self._run_rate:
            self.stats.rate_changes += 1
            self._close_run(arrival, res)
        if self._resampler is not None:
            d = stamp - self.run_end_stamp_ns()
            if d > self.tolerance_ns:
                end = self._close_run(arrival, res)
                gap = max(0, self.index_of(stamp, origin_ns) - end)
                res.gap_samples += gap
                self.stats.gap_samples += gap
                self.stats.gaps += 1
            elif d < -self.tolerance_ns:  # only on a re-anchor: the publisher stepped back for good
                res.overlap_ns = -d
                self.stats.overlaps += 1
        if self._resampler is None:
            self._resampler = StreamResampler(rate, self.rate)
            self._run_rate = rate
            self._run_stamp0 = stamp
            self._run_index0 = self.index_of(stamp, origin_ns)
            res.new_run = True
        r = self._resampler
        start = self._run_index0 + r.samples_out
        overflow_before = res.write.overflow
        self._write(start, r.process(x), arrival, res)
        if res.write.overflow > overflow_before:  # beyond the buffer: realign on the next chunk's stamp
            self._close_run(arrival, res)

    def interrupt(self, from_index: int, arrival: float) -> int:
        """Barge-in: everything queued at or after ``from_index`` becomes silence that arrived at
        ``arrival`` (so frames do not wait for it), audio still arriving for that span counts as late, a
        held chunk and the current run are dropped (the next chunk starts a new run). Returns the samples
        dropped, also counted in ``stats.interrupted_samples``."""
        end = max(self.ring.high_water, int(from_index))
        dropped = self.ring.blank(from_index, end, arrival)
        self.ring.seal(end)
        dropped += self.held_samples
        self._held = None
        if self._resampler is not None:
            dropped += self._resampler.flush().size  # its held-back tail never reaches the ring
            self._resampler = None
        self.stats.interrupts += 1
        self.stats.interrupted_samples += dropped
        return dropped

    def flush(self, arrival: float, origin_ns: int = 0) -> PushResult:
        """Close the current run (write the resampler's held-back tail), e.g. at the end of a stream;
        a held chunk is placed first (``origin_ns``: the stream origin, as in :meth:`push`)."""
        res = PushResult()
        if self._held is not None:  # the stream ends: nothing contradicts the held chunk, so it is placed
            self._place_held(origin_ns, res)
        if self._resampler is not None:
            self._close_run(arrival, res)
        return res
