"""One audio message from its raw fields to the engine, counted, with what to tell the operator (ROS-free).

:class:`AudioIntake` applies the per-message limits (``sample_rates``, ``max_message_s``,
``max_message_bytes``), decodes (:func:`dystream_ros.audio.decode_pcm`), pushes into the
:class:`~dystream_ros.runtime.engine.AvatarEngine` and counts the outcome in :class:`StreamStats`:
accepted, ``bad_messages_<reason>`` or ``dropped_inactive``. It returns :class:`Notice` s (a throttle
key, a level and a text) for the caller to log; the node logs them throttled per key.
"""

from __future__ import annotations

from dataclasses import dataclass

from dystream_ros.audio import AudioFormatError, decode_pcm
from dystream_ros.runtime.settings import Settings
from dystream_ros.runtime.stats import StreamStats

__all__ = ["AudioIntake", "Notice"]


@dataclass(frozen=True)
class Notice:
    key: str  # throttle key: one message per key and period
    level: str  # info / warning
    text: str


class AudioIntake:
    """Decode, check and push audio messages; every one ends in exactly one counter of ``stats``."""

    def __init__(self, settings: Settings, stats: StreamStats):
        self.settings = settings
        self.stats = stats
        self.rates = frozenset(settings.sample_rates)

    def take(self, engine, channel: str, data, encoding: str, channels: int, sample_rate: int, stamp_ns: int,
             *, arrival: float, now_ns: int, want_due: bool = False) -> tuple[list[Notice], bool]:
        """One message (``engine`` None while inactive). Returns the notices and, with ``want_due``,
        whether a frame became due (the caller may produce it now instead of at its next tick)."""
        s, st = self.settings, self.stats
        try:
            max_samples = None  # rate <= 0 is refused by decode_pcm with its own message
            if sample_rate > 0:
                if sample_rate not in self.rates:
                    raise AudioFormatError("sample_rate", f"sample_rate {sample_rate} Hz is not one of "
                                                          f"sample_rates {sorted(self.rates)}")
                max_samples = int(s.max_message_s * sample_rate)
            dec = decode_pcm(data, encoding, channels, sample_rate, max_samples=max_samples,
                             max_bytes=s.max_message_bytes)
        except AudioFormatError as e:
            with st.lock:
                st.bad_messages[e.kind] += 1
            return [Notice(f"bad:{e.kind}:{channel}", "warning",
                           f"{channel}_audio: {e}; message dropped")], False
        if now_ns == 0:
            with st.lock:
                st.bad_messages["no_clock"] += 1
            return [Notice("no_clock", "warning",
                           "node clock is 0 (use_sim_time without /clock?): audio dropped")], False
        notes = []
        if dec.nonfinite or dec.trailing_bytes or dec.clipped:
            with st.lock:
                st.nonfinite_samples += dec.nonfinite
                st.trailing_bytes += dec.trailing_bytes
                st.clipped_samples += dec.clipped
            if dec.nonfinite:
                notes.append(Notice(f"nonfinite:{channel}", "warning",
                                    f"{channel}_audio: {dec.nonfinite} NaN/Inf sample(s) replaced by 0"))
            if dec.trailing_bytes:
                notes.append(Notice(f"trailing:{channel}", "warning",
                                    f"{channel}_audio: {len(data)} bytes is not a whole number of "
                                    f"{channels}-channel {encoding} frames; {dec.trailing_bytes} trailing "
                                    f"byte(s) dropped"))
            if dec.clipped:
                notes.append(Notice(f"clipped:{channel}", "info", f"{channel}_audio: {dec.clipped} float "
                                    f"sample(s) outside [-1, 1] clipped"))
        with st.lock:
            if engine is None:
                st.dropped_inactive += 1
                return notes, False
            res = engine.push(channel, dec.samples, dec.sample_rate, stamp_ns, arrival=arrival, now_ns=now_ns)
            st.accepted[channel] += 1
        return notes + self._push_notices(channel, res, stamp_ns, now_ns), want_due and engine.has_due(now_ns)

    def _push_notices(self, channel: str, res, stamp_ns: int, now_ns: int) -> list[Notice]:
        """What the stream timing policy did with the samples (docs/STREAM_TIMING.md)."""
        out = []
        if res.restamped:
            out.append(Notice(f"restamp:{channel}", "warning",
                              f"{channel}_audio: header.stamp {stamp_ns / 1e9:.3f} s is zero or more than "
                              f"max_stamp_skew_s from the node clock {now_ns / 1e9:.3f} s (wall-clock stamps "
                              f"under use_sim_time?); using the receive time instead"))
        if res.write.overflow:
            out.append(Notice(f"overflow:{channel}", "warning", f"{channel}_audio: buffer full (buffer_s="
                              f"{self.settings.buffer_s}): {res.write.overflow} sample(s) dropped"))
        if res.write.late:
            out.append(Notice(f"late:{channel}", "warning",
                              f"{channel}_audio: {res.write.late} sample(s) arrived after their frames were "
                              f"produced (raise {channel}_wait_ms?); dropped"))
        if res.gap_samples:
            out.append(Notice(f"gap:{channel}", "info", f"{channel}_audio: stamp gap of "
                              f"{res.gap_samples / 16.0:.0f} ms filled with silence"))
        if res.dropped_held:
            out.append(Notice(f"outlier:{channel}", "warning",
                              f"{channel}_audio: a chunk whose stamp disagreed with the stream (duplicated, "
                              f"overlapping or far ahead) was dropped: {res.dropped_held} sample(s)"))
        if res.reanchored:
            out.append(Notice(f"reanchor:{channel}", "info",
                              f"{channel}_audio: the publisher's stamps moved for good; following them"))
        return out
