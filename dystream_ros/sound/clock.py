"""Clock mapping for PortAudio streams (pure Python).

PortAudio reports, in each stream callback, times in the stream's own time base (seconds, arbitrary
origin): ``currentTime`` (when the callback was invoked), ``inputBufferAdcTime`` (when the first input
sample of the buffer was captured at the ADC) and ``outputBufferDacTime`` (when the first output sample
will leave the DAC). :class:`StreamClock` maps that time base onto a system clock in nanoseconds (the
ROS clock of a node) from pairs ``(currentTime, now_ns)`` taken inside the callback. A callback is never
invoked before ``currentTime``; it may be invoked late (scheduling), which only makes ``now - current``
larger. The estimate is therefore the *minimum* offset over a sliding window (a few seconds), which
removes the scheduling delay and still follows a slow drift between the two clocks.

:class:`CaptureStamper` turns the mapped ADC time of each input block into the stamp of its first
sample. Consecutive blocks are contiguous in samples, so a block's stamp is predicted from the previous
one plus its duration; the prediction is slewed towards the measured ADC time by a small gain (bounded
per block), which keeps the stamps monotonic and free of callback jitter while following the clock. A
measured time later than the prediction by more than the tolerance *in a block PortAudio flags as an
input overflow* means samples were lost before this block (an overrun): their number is counted
(``lost_samples``) and the stamp jumps to the measurement. Without the flag such a jump is the clock
mapping moving (a late callback burst, a host clock step; JACK's dummy driver on a loaded machine does
it): it is counted in ``clock_jumps`` and slewed like any other error, so no samples are invented.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from dystream_ros.config import NS

__all__ = ["CaptureStamper", "StampResult", "StreamClock"]


class StreamClock:
    """Stream time (s) -> system clock (ns): minimum of ``now_ns - current_time`` over ``window_s``."""

    def __init__(self, window_s: float = 2.0):
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_ns = int(window_s * NS)
        self._mins: collections.deque[tuple[int, int]] = collections.deque()  # (now_ns, offset) increasing
        self.observations = 0

    def reset(self) -> None:
        """Forget every observation (a reopened stream starts a new time base)."""
        self._mins.clear()
        self.observations = 0

    @property
    def ready(self) -> bool:
        return bool(self._mins)

    def observe(self, current_time_s: float, now_ns: int) -> None:
        """A pair read together inside a callback: the stream's ``currentTime`` and the system clock."""
        off = int(now_ns) - int(round(float(current_time_s) * NS))
        d = self._mins
        while d and d[-1][1] >= off:  # a monotonic deque: the window minimum is d[0]
            d.pop()
        d.append((int(now_ns), off))
        while d[0][0] < now_ns - self.window_ns and len(d) > 1:
            d.popleft()
        self.observations += 1

    @property
    def offset_ns(self) -> int:
        """System clock minus stream time (ns); raises before the first observation."""
        if not self._mins:
            raise RuntimeError("no clock observation yet")
        return self._mins[0][1]

    def to_ns(self, stream_time_s: float) -> int:
        """A stream time (e.g. ``outputBufferDacTime``) on the system clock."""
        return int(round(float(stream_time_s) * NS)) + self.offset_ns


@dataclass
class StampResult:
    stamp_ns: int  # first sample of the block
    lost_samples: int = 0  # samples lost just before this block (0 when contiguous)
    error_ns: int = 0  # measured minus predicted (before the correction)


class CaptureStamper:
    """First-sample stamps of consecutive capture blocks at ``rate`` Hz (see the module docstring).

    ``tolerance_s``: a measured time this much later than the prediction is a gap (lost samples);
    ``gain``: fraction of the prediction error corrected per block; ``max_slew_s``: the most one block's
    stamp is moved (keeps stamps monotonic: much less than any block's duration).
    """

    def __init__(self, rate: int, *, tolerance_s: float = 0.004, gain: float = 0.02,
                 max_slew_s: float = 0.0005):
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = int(rate)
        self.tolerance_ns = int(tolerance_s * NS)
        self.gain = float(gain)
        self.max_slew_ns = float(max_slew_s * NS)
        self.reset()

    def reset(self) -> None:
        # predicted stamp of the next block's first sample, in ns after the first block's stamp: a float
        # of absolute epoch ns (~1.8e18) would hold it to 256 ns only
        self._next: float | None = None
        self.blocks = 0
        self.samples = 0
        self.lost_samples = 0
        self.gaps = 0
        self.clock_jumps = 0
        self.first_ns: int | None = None

    def stamp(self, n_frames: int, adc_ns: int, overflow: bool = False) -> StampResult:
        """Stamp of a block of ``n_frames`` whose first sample's mapped ADC time is ``adc_ns``;
        ``overflow``: PortAudio flagged input lost before this block."""
        n = int(n_frames)
        if self._next is None:
            self.first_ns = int(adc_ns)
            t = 0.0
            res = StampResult(stamp_ns=int(adc_ns))
        else:
            rel = float(int(adc_ns) - self.first_ns)
            err = rel - self._next
            if abs(err) > self.tolerance_ns and not (overflow and err > 0):
                self.clock_jumps += 1
            if err > self.tolerance_ns and overflow:
                lost = int(round(err * self.rate / NS))
                self.lost_samples += lost
                self.gaps += 1
                t = rel
                res = StampResult(stamp_ns=int(adc_ns), lost_samples=lost, error_ns=int(err))
            else:
                corr = max(-self.max_slew_ns, min(self.max_slew_ns, err * self.gain))
                t = self._next + corr
                res = StampResult(stamp_ns=self.first_ns + int(round(t)), error_ns=int(err))
        self._next = t + n * NS / self.rate
        self.blocks += 1
        self.samples += n
        return res

    @property
    def next_ns(self) -> int | None:
        """The predicted stamp of the next block (epoch ns), None before the first block."""
        return None if self._next is None else self.first_ns + int(round(self._next))
