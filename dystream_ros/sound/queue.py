"""The playback queue: mono samples scheduled at absolute clock times, filled into output buffers.

Producers (the speaker node's subscription) :meth:`PlaybackQueue.schedule` chunks of samples at the
output rate with the clock time their first sample must be heard (``stamp + playback_delay``); the
audio callback calls :meth:`PlaybackQueue.fill` with each output buffer and the clock time its first
sample leaves the DAC. Each scheduled sample lands at its own position in the buffer (sample accurate);
a chunk that continues the previous one without a gap (its time within ``contiguous_s`` of the previous
chunk's end) continues it sample for sample, so playback of one utterance never clicks on a
rounding of the clock mapping; a continuing chunk whose placement has drifted by more than
``resync_s`` is placed afresh (counted in ``resyncs``).

Every scheduled sample ends in exactly one counter: ``played``, ``late`` (its time had passed when it
reached the callback: dropped), ``overflow`` (the queue already held ``max_queued_s``: refused),
``flushed`` (a barge-in emptied the queue), or is still ``queued``. Pure numpy, one lock; ``fill`` is
called from the audio thread and does no allocation beyond slicing.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass

import numpy as np

from dystream_ros.config import NS

__all__ = ["Played", "PlaybackQueue", "QueueStats"]


@dataclass
class Played:
    """When the first sample of one scheduled chunk was played."""

    source_stamp_ns: int  # the chunk's stamp in its input message (audio time)
    scheduled_ns: int  # when it was meant to be heard (stamp + delay)
    played_ns: int  # when its first sample left the DAC (mapped clock)
    samples: int  # samples of the chunk


@dataclass
class QueueStats:
    scheduled: int = 0
    played: int = 0
    late: int = 0
    overflow: int = 0
    flushed: int = 0
    flushes: int = 0
    resyncs: int = 0
    chunks: int = 0
    overflow_chunks: int = 0

    def as_dict(self) -> dict:
        return {f"samples_{k}" if k in ("scheduled", "played", "late", "overflow", "flushed") else k: v
                for k, v in self.__dict__.items()}


@dataclass
class _Entry:
    samples: np.ndarray
    start_ns: float  # scheduled time of samples[0]
    source_stamp_ns: int
    contiguous: bool  # continues the previous entry without a gap
    pos: int = 0  # next sample to play
    started: bool = False


@dataclass
class _FlushMark:
    at_ns: int  # clock time of the flush
    samples: int  # samples it removed
    silent_from_ns: int | None = None  # DAC time of the first buffer filled after it


class PlaybackQueue:
    """See the module docstring. ``rate``: output sample rate (Hz)."""

    def __init__(self, rate: int, *, max_queued_s: float = 30.0, contiguous_s: float = 0.002,
                 resync_s: float = 0.005):
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = int(rate)
        self.max_queued = int(round(max_queued_s * rate))
        self.contiguous_ns = contiguous_s * NS
        self.resync_ns = resync_s * NS
        self._lock = threading.Lock()
        self._entries: collections.deque[_Entry] = collections.deque()
        self._queued = 0
        self._end_ns: float | None = None  # scheduled end of the last entry
        self._last_placed: tuple[_Entry, float] | None = None  # entry playing at the end of the last buffer
        self.stats = QueueStats()
        self._played: collections.deque[Played] = collections.deque(maxlen=10000)
        self._flushes: collections.deque[_FlushMark] = collections.deque(maxlen=100)
        self._pending_flush: list[_FlushMark] = []

    @property
    def period_ns(self) -> float:
        return NS / self.rate

    def queued_samples(self) -> int:
        with self._lock:
            return self._queued

    def end_ns(self) -> float | None:
        """Scheduled time just after the last queued sample (None when empty)."""
        with self._lock:
            return self._end_ns if self._entries else None

    # ------------------------------------------------------------------------------------------
    def schedule(self, samples: np.ndarray, play_ns: int, source_stamp_ns: int | None = None) -> int:
        """Queue mono float32 ``samples`` whose first one is heard at ``play_ns``; returns how many were
        taken (the rest is counted as overflow)."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        with self._lock:
            self.stats.chunks += 1
            self.stats.scheduled += x.size
            room = max(0, self.max_queued - self._queued)
            if x.size > room:
                self.stats.overflow += x.size - room
                self.stats.overflow_chunks += 1
                x = x[:room]
            if x.size == 0:
                return 0
            contiguous = (self._entries and self._end_ns is not None
                          and abs(play_ns - self._end_ns) <= self.contiguous_ns)
            start = self._end_ns if contiguous else float(play_ns)
            if self._entries and start < self._entries[-1].start_ns:
                # out of order in time: keep the deque sorted (rare: a re-ordered or overlapping chunk)
                entries = sorted([*self._entries, _Entry(x, start, int(source_stamp_ns or play_ns), False)],
                                 key=lambda e: e.start_ns)
                self._entries = collections.deque(entries)
            else:
                self._entries.append(_Entry(x, start, int(source_stamp_ns if source_stamp_ns is not None
                                                          else play_ns), bool(contiguous)))
            self._queued += x.size
            end = start + x.size * self.period_ns
            self._end_ns = end if self._end_ns is None else max(end, self._end_ns)
            return x.size

    def flush(self, at_ns: int) -> int:
        """Drop everything queued (barge-in); returns the number of samples dropped. The DAC time of
        the first buffer filled afterwards (the start of silence) is recorded in :meth:`flushes`."""
        with self._lock:
            n = self._queued
            self.stats.flushed += n
            self.stats.flushes += 1
            self._entries.clear()
            self._queued = 0
            self._end_ns = None
            self._last_placed = None
            mark = _FlushMark(at_ns=int(at_ns), samples=n)
            self._flushes.append(mark)
            self._pending_flush.append(mark)
            return n

    # ------------------------------------------------------------------------------------------
    def fill(self, out: np.ndarray, dac_ns: int) -> None:
        """Write the samples due in ``out`` (1-D float32, zeroed first) whose first sample leaves the DAC
        at ``dac_ns``. Called from the audio callback."""
        n = out.shape[0]
        out[:] = 0.0
        T = self.period_ns
        with self._lock:
            for mark in self._pending_flush:
                mark.silent_from_ns = int(dac_ns)
            self._pending_flush.clear()
            last = self._last_placed
            self._last_placed = None
            i_prev_end = 0
            prev: _Entry | None = None
            while self._entries:
                e = self._entries[0]
                rem = e.samples.size - e.pos
                # where this entry's next sample falls in the buffer
                exact = (e.start_ns + e.pos * T - dac_ns) / T
                if e.started and last is not None and last[0] is e:
                    i = 0  # it was playing at the end of the last buffer: continue sample for sample
                    if abs(exact) * T > self.resync_ns:
                        i = int(round(exact))
                        self.stats.resyncs += 1
                elif e.contiguous and prev is not None and prev.pos >= prev.samples.size:
                    i = i_prev_end  # continues the entry that just ended in this buffer
                    if abs(exact - i) * T > self.resync_ns:
                        i = int(round(exact))
                        self.stats.resyncs += 1
                elif (e.contiguous and last is not None and last[1] == 0 and not e.started
                      and abs(exact) * T <= self.resync_ns):
                    i = 0  # continues an entry that ended exactly at the end of the last buffer
                else:
                    i = int(round(exact))
                if i < 0:  # late: its time has passed
                    drop = min(-i, rem)
                    e.pos += drop
                    self.stats.late += drop
                    self._queued -= drop
                    rem -= drop
                    i = 0
                    if rem == 0:
                        self._entries.popleft()
                        prev = e
                        i_prev_end = 0
                        continue
                if i >= n:
                    break  # in the future
                m = min(n - i, rem)
                if not e.started:
                    e.started = True
                    self._played.append(Played(e.source_stamp_ns, int(round(e.start_ns + e.pos * T)),
                                               int(round(dac_ns + i * T)), e.samples.size))
                out[i:i + m] += e.samples[e.pos:e.pos + m]
                e.pos += m
                self._queued -= m
                self.stats.played += m
                prev, i_prev_end = e, i + m
                if e.pos >= e.samples.size:
                    self._entries.popleft()
                    if i + m == n:  # ended exactly at the buffer's end: the next may continue it
                        self._last_placed = (e, 0)
                    continue
                self._last_placed = (e, 1)  # still playing at the end of this buffer
                break
            if not self._entries:
                self._end_ns = None

    # ------------------------------------------------------------------------------------------
    def take_played(self) -> list[Played]:
        """The play records since the last call (oldest first)."""
        with self._lock:
            out = list(self._played)
            self._played.clear()
            return out

    def flushes(self) -> list[_FlushMark]:
        with self._lock:
            return list(self._flushes)

    def snapshot(self) -> dict:
        with self._lock:
            d = self.stats.as_dict()
            d["samples_queued"] = self._queued
            d["samples_unaccounted"] = (self.stats.scheduled - self.stats.played - self.stats.late
                                        - self.stats.overflow - self.stats.flushed - self._queued)
            return d

