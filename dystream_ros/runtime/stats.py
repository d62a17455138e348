"""The stream's accounting: counters and latency windows the node reports as diagnostics (ROS-free).

:class:`StreamStats` holds what the node's callbacks count (messages by outcome, repaired samples,
published frames, latencies) under its own :attr:`~StreamStats.lock`; :meth:`StreamStats.snapshot`
adds the engine's scheduler and channel counters. Every received message ends in exactly one counter
(``<channel>_messages_accepted``, ``bad_messages_<reason>`` or ``messages_dropped_inactive``), so
``messages_unaccounted`` is 0 unless something escaped them (the tests assert it).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time

import numpy as np

__all__ = ["StreamStats", "Throttle", "Window"]

CHANNELS = ("speaker", "listener")


class Window:
    """Recent values of one latency series for percentiles."""

    def __init__(self, n: int = 250):
        self._d: collections.deque[float] = collections.deque(maxlen=n)

    def add(self, v: float) -> None:
        if v is not None and math.isfinite(v):
            self._d.append(float(v))

    def pct(self, q: float) -> float:
        return float(np.percentile(np.fromiter(self._d, float), q)) if self._d else float("nan")

    def __len__(self) -> int:
        return len(self._d)


class Throttle:
    """Rate-limits log messages per key and reports how many were suppressed."""

    def __init__(self, period_s: float = 5.0):
        self.period = period_s
        self._last: dict[str, float] = {}
        self._suppressed: collections.Counter = collections.Counter()
        self._lock = threading.Lock()

    def __call__(self, key: str) -> int | None:
        """None: suppress; else the number suppressed since the last emitted message."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period:
                self._suppressed[key] += 1
                return None
            self._last[key] = now
            return self._suppressed.pop(key, 0)


def _counter():
    return dataclasses.field(default_factory=collections.Counter)


def _window():
    return dataclasses.field(default_factory=Window)


@dataclasses.dataclass
class StreamStats:
    """Counters (per channel where keyed by channel) and latency windows; change them under :attr:`lock`."""

    frames: int = 0
    idle_frames: int = 0
    received: collections.Counter = _counter()
    accepted: collections.Counter = _counter()
    dropped_inactive: int = 0  # audio that arrived while the node was not active
    transport_lost: collections.Counter = _counter()  # DDS message_lost events (best effort)
    incompatible_publishers: collections.Counter = _counter()
    bad_messages: collections.Counter = _counter()  # by reason
    nonfinite_samples: int = 0
    clipped_samples: int = 0
    trailing_bytes: int = 0
    step_errors: int = 0
    audio_cb_ms: Window = _window()  # audio callback durations
    audio_cb_ms_max: float = 0.0
    step_ms: Window = _window()  # whole model step incl. rendering
    render_ms: Window = _window()
    processing_ms: Window = _window()
    av_offset_ms: Window = _window()
    publish_times: collections.deque = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=256))
    last_skipped_reported: int = 0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)

    def callback_done(self, ms: float) -> None:
        with self.lock:
            self.audio_cb_ms.add(ms)
            self.audio_cb_ms_max = max(self.audio_cb_ms_max, ms)

    def frame_published(self, step_ms: float, render_ms: float, processing_ms: float, av_ms: float,
                        wall: float) -> None:
        with self.lock:
            self.frames += 1
            self.step_ms.add(step_ms)
            self.render_ms.add(render_ms)
            self.processing_ms.add(processing_ms)
            self.av_offset_ms.add(av_ms)
            self.publish_times.append(wall)

    def snapshot(self, engine=None, now_ns: int = 0) -> dict:
        """Every counter and percentile as one flat dict; with ``engine``, its scheduler's too."""
        with self.lock:
            d = {
                "frames_published": self.frames, "idle_frames_published": self.idle_frames,
                "step_ms_p50": self.step_ms.pct(50), "step_ms_p95": self.step_ms.pct(95),
                "render_ms_p50": self.render_ms.pct(50),
                "processing_ms_p50": self.processing_ms.pct(50),
                "processing_ms_p95": self.processing_ms.pct(95),
                "processing_ms_p99": self.processing_ms.pct(99),
                "av_offset_ms_p50": self.av_offset_ms.pct(50), "av_offset_ms_p95": self.av_offset_ms.pct(95),
                "nonfinite_samples": self.nonfinite_samples, "clipped_samples": self.clipped_samples,
                "trailing_bytes_dropped": self.trailing_bytes, "step_errors": self.step_errors,
                "bad_messages": sum(self.bad_messages.values()),
            }
            for kind, n in sorted(self.bad_messages.items()):
                d[f"bad_messages_{kind}"] = n
            for ch in CHANNELS:
                d[f"{ch}_messages_received"] = self.received[ch]
                d[f"{ch}_messages_accepted"] = self.accepted[ch]
                d[f"{ch}_messages_lost"] = self.transport_lost[ch]  # by DDS, before the callback
                d[f"{ch}_incompatible_publishers"] = self.incompatible_publishers[ch]
            d["messages_dropped_inactive"] = self.dropped_inactive
            d["messages_unaccounted"] = (sum(self.received.values()) - sum(self.accepted.values())
                                         - sum(self.bad_messages.values()) - self.dropped_inactive)
            d["audio_callback_ms_p99"] = self.audio_cb_ms.pct(99)
            d["audio_callback_ms_max"] = self.audio_cb_ms_max
            now = time.monotonic()
            recent = [t for t in self.publish_times if now - t <= 5.0]
            d["output_rate_hz"] = ((len(recent) - 1) / (recent[-1] - recent[0])
                                   if len(recent) >= 2 and recent[-1] > recent[0] else 0.0)
        if engine is not None:
            with engine.lock:
                d.update(_scheduler_stats(engine.scheduler, now_ns))
        return d

    def health(self, d: dict, *, configure_error: str | None, step_warn_ms: float) -> tuple[str, str]:
        """(``ok`` / ``warn`` / ``error``, message) of a :meth:`snapshot` ``d`` (plus ``lifecycle_state``):
        a failed configure, not active, a slow step p95, frames skipped since the last call."""
        msgs: list[str] = []
        if configure_error and d["lifecycle_state"] == "unconfigured":
            return "error", f"configure failed: {configure_error}"
        if d["lifecycle_state"] != "active":
            return "warn", f"{d['lifecycle_state']}: not producing frames"
        p95 = d["step_ms_p95"]
        if math.isfinite(p95) and p95 > step_warn_ms:
            msgs.append(f"step p95 {p95:.1f} ms > {step_warn_ms:.0f} ms")
        skipped = d.get("skipped_frames", 0)
        with self.lock:
            new_skips, self.last_skipped_reported = skipped - self.last_skipped_reported, skipped
        if new_skips > 0:
            msgs.append(f"skipped {new_skips} frame(s)")
        if msgs:
            return "warn", "; ".join(msgs)
        return "ok", (f"{d['output_rate_hz']:.1f} fps" if d["frames_published"] else "idle (no audio yet)")


def _scheduler_stats(sched, now_ns: int) -> dict:
    st = sched.stats
    d = dict(skipped_frames=st.skipped_frames, skipped_frames_session=st.session_skipped_frames,
             streams=st.streams, clock_resets=st.clock_resets, restamped_messages=st.restamped_messages,
             silence_samples=st.silence_samples, discarded_samples=st.discarded_samples,
             next_frame=sched.next_frame, frames_pending=sched.pending_frames(now_ns))
    dropped = 0
    for name, ch in sched.channels.items():
        cs = ch.stats
        dropped += cs.dropped_samples
        d[f"{name}_late_samples"] = cs.late_samples
        d[f"{name}_overflow_samples"] = cs.overflow_samples
        d[f"{name}_gap_samples"] = cs.gap_samples
        d[f"{name}_stamp_overlaps"] = cs.overlaps
        d[f"{name}_overlap_samples"] = cs.overlap_samples
        d[f"{name}_stamp_outliers"] = cs.outliers
        d[f"{name}_outlier_samples"] = cs.outlier_samples
        d[f"{name}_reanchors"] = cs.reanchors
        d[f"{name}_interrupts"] = cs.interrupts
        d[f"{name}_interrupted_samples"] = cs.interrupted_samples
        d[f"{name}_messages"] = cs.messages
        d[f"{name}_buffer_ms"] = sched.depth_samples(name) * 1000.0 / sched.config.sample_rate
    d["dropped_samples"] = dropped
    return d
