"""A bounded, sample-indexed ring buffer with per-sample arrival times.

Samples live at absolute indices on a stream timeline (index 0 = the stream start, 16 kHz). The buffer
holds the window ``[read_pos, read_pos + capacity)``: writes before ``read_pos`` are *late* (that audio
was already consumed, e.g. a frame was produced with silence in its place) and writes at or beyond
``read_pos + capacity`` *overflow*; both are dropped and counted. A consumer that has already handed
samples on (but still wants to read them back) can :meth:`SampleRing.seal` them: writes below the seal are
late too. Indices that were never written read
as silence. Every written sample remembers the wall time it arrived at, so latency can be measured per
sample (DESIGN.md §3 ``processing_ms`` / ``av_offset_ms``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class WriteResult:
    accepted: int = 0  # samples stored
    late: int = 0  # dropped: before read_pos (already consumed)
    overflow: int = 0  # dropped: beyond the capacity window
    overwritten: int = 0  # stored over samples that had already been written

    @property
    def dropped(self) -> int:
        return self.late + self.overflow


class SampleRing:
    """Bounded buffer of float32 samples addressed by absolute sample index."""

    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self._data = np.zeros(self.capacity, dtype=np.float32)
        self._arrival = np.full(self.capacity, np.nan, dtype=np.float64)
        self.reset()

    def reset(self, read_pos: int = 0) -> None:
        self._data[:] = 0.0
        self._arrival[:] = np.nan
        self.read_pos = int(read_pos)
        self.write_floor = int(read_pos)  # writes below this index are late (>= read_pos)
        self._high = int(read_pos)  # 1 + highest index ever written (never below read_pos)

    # ------------------------------------------------------------------------------------------
    @property
    def high_water(self) -> int:
        """One past the highest sample index written (audio has arrived up to here; holes are silence)."""
        return max(self._high, self.read_pos)

    @property
    def depth(self) -> int:
        """Samples buffered ahead of the read position (up to the high-water mark)."""
        return self.high_water - self.read_pos

    def _slices(self, start: int, stop: int):
        """Physical slices covering absolute [start, stop) (at most capacity long)."""
        a = start % self.capacity
        n = stop - start
        if a + n <= self.capacity:
            return [(slice(a, a + n), slice(0, n))]
        k = self.capacity - a
        return [(slice(a, self.capacity), slice(0, k)), (slice(0, n - k), slice(k, n))]

    def write(self, start: int, samples: np.ndarray, arrival: float) -> WriteResult:
        """Store ``samples`` at absolute indices ``[start, start + len)``, stamped with ``arrival``."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        res = WriteResult()
        start = int(start)
        stop = start + x.size
        lo = max(start, self.write_floor)
        hi = min(stop, self.read_pos + self.capacity)
        res.late = max(0, min(stop, self.write_floor) - start)
        res.overflow = max(0, stop - max(start, self.read_pos + self.capacity))
        if hi <= lo:
            return res
        for phys, logical in self._slices(lo, hi):
            off = lo - start
            seg = slice(logical.start + off, logical.stop + off)
            res.overwritten += int(np.count_nonzero(~np.isnan(self._arrival[phys])))
            self._data[phys] = x[seg]
            self._arrival[phys] = arrival
        res.accepted = hi - lo
        self._high = max(self._high, hi)
        return res

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Samples and arrival times for absolute ``[start, stop)``.

        Indices outside the buffered window or never written read as 0.0 with arrival NaN.
        """
        start, stop = int(start), int(stop)
        n = max(0, stop - start)
        out = np.zeros(n, dtype=np.float32)
        arr = np.full(n, np.nan, dtype=np.float64)
        lo = max(start, self.read_pos)
        hi = min(stop, self.read_pos + self.capacity)
        if hi > lo:
            for phys, logical in self._slices(lo, hi):
                off = lo - start
                seg = slice(logical.start + off, logical.stop + off)
                out[seg] = self._data[phys]
                arr[seg] = self._arrival[phys]
        return out, arr

    def blank(self, start: int, stop: int, arrival: float) -> int:
        """Overwrite ``[start, stop)`` (within the window, the seal ignored) with silence that arrived at
        ``arrival``; returns how many written samples it replaced (a barge-in drops queued speech)."""
        lo, hi = max(int(start), self.read_pos), min(int(stop), self.read_pos + self.capacity)
        if hi <= lo:
            return 0
        replaced = 0
        for phys, _ in self._slices(lo, hi):
            replaced += int(np.count_nonzero(~np.isnan(self._arrival[phys])))
            self._data[phys] = 0.0
            self._arrival[phys] = arrival
        self._high = max(self._high, hi)
        return replaced

    def seal(self, upto: int) -> None:
        """Refuse (count as late) later writes below ``upto``; the samples stay readable."""
        self.write_floor = max(self.write_floor, int(upto))

    def consume(self, upto: int) -> int:
        """Release everything before ``upto`` (the read position only moves forward).

        Returns the number of *written* samples released without having been read by the caller's
        bookkeeping (for callers that skip ahead; normal consumption after :meth:`read` can ignore it).
        """
        upto = int(upto)
        if upto <= self.read_pos:
            return 0
        hi = min(upto, self.read_pos + self.capacity)
        released = 0
        if hi > self.read_pos:
            for phys, _ in self._slices(self.read_pos, hi):
                released += int(np.count_nonzero(~np.isnan(self._arrival[phys])))
                self._data[phys] = 0.0
                self._arrival[phys] = np.nan
        self.read_pos = upto
        self.write_floor = max(self.write_floor, upto)
        return released
