"""``dystream_speaker``: plays the avatar's speaker audio in sync with the face (PortAudio output).

Subscribes ``audio`` (``dystream_ros/AudioChunk``: the same speech the avatar's ``speaker_audio`` is
driven by, e.g. ``/speaker/audio``), ``state`` (the avatar's ``AvatarState``, e.g. ``/dystream/state``)
and ``interrupt`` (``std_msgs/Empty``, e.g. ``/dystream/interrupt``: the dialogue manager's "stop
speaking"); service ``~/interrupt`` (``std_srvs/Trigger``). Publishes ``~/timing`` (``std_msgs/String``,
JSON: when each chunk's first sample actually left the DAC, and each frame's residual A/V offset) and
``/diagnostics`` (1 Hz).

Timing. Every sample of a chunk stamped ``s`` is heard at ``s + playback_delay`` on the node's clock:
the output buffer's PortAudio ``outputBufferDacTime`` is mapped onto the clock and the sample placed
in it to the sample (:mod:`dystream_ros.sound.queue`). ``playback_delay`` is a number of seconds or
``auto``: the delay is then measured per utterance (contiguous chunks) as the avatar's frame latency (receive
time of a ``state`` message minus its frame's stamp): when the frame covering the utterance's first
stamp arrives, the least latency of the last three frames produced since the utterance's audio
arrived. The frame published for audio time ``f`` and the sample of time ``f`` then
leave at the same moment. The audio of an utterance is held until then; when no frame comes by
``stamp + fallback_delay_s - output latency`` (0.5 s by default), the median frame latency of the last
second (or ``fallback_delay_s`` when no frames came) is used and counted (``auto_fallbacks``). A TTS
burst stamped in the near future thus plays exactly when its frames are published, with nothing added
on top of the avatar's own latency. The avatar's latency can change within an utterance (its frames
speed up once speech arrives on a channel that was waiting for audio): audio is sent to the device only
``send_ahead_s`` ahead, and in the utterance's pauses (10 ms blocks below ``silence_dbfs``) the delay
moves one block at a time towards the median latency of the utterance's frames in the
last 2 s (a silent block left out or added, counted in ``sync_skipped_samples`` /
``sync_inserted_samples``); a stall of the avatar shorter than about a second does not move it.

Barge-in: ``interrupt`` flushes the device queue and the held audio at once (the rest of the
interrupted utterance arriving later is dropped too); ``last_interrupt_to_silence_ms`` is the time
from the interrupt to the DAC time of the first buffer without it. Every received sample ends in one
counter (played, late, overflow, flushed, interrupted, no device), and ``samples_unaccounted`` is 0.

The output stream runs in a supervised worker process (:mod:`dystream_ros.sound.worker`): a missing
or lost device is retried every ``retry_s``; audio that arrives meanwhile is dropped and counted.
"""

from __future__ import annotations

import collections
import json
import math
import threading
from dataclasses import dataclass, field

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from std_msgs.msg import Empty, String
from std_srvs.srv import Trigger

from dystream_ros.audio import AudioFormatError, decode_pcm
from dystream_ros.audio.messages import from_audio_chunk
from dystream_ros.audio.resample import StreamResampler
from dystream_ros.config import FPS, NS, stamp_to_ns
from dystream_ros.msg import AudioChunk, AvatarState
from dystream_ros.runtime.settings import Param
from dystream_ros.runtime.stats import Window
from dystream_ros.sound.worker import Player

from .mic import declare_params
from .outputs import qos_profile
from .support import ThrottledLog, diagnostic_array, guarded, spin

__all__ = ["SpeakerNode", "main", "parse_delay"]

NODE_NAME = "dystream_speaker"
FRAME_NS = NS // FPS

PARAMS: tuple[Param, ...] = (
    Param("device", "", "output device: '' = the default, an index, or part of its name", read_only=True),
    Param("channels", 0, "output channels (the mono speech on each); 0 = the device's, at most 2",
          read_only=True, lo=0, hi=64),
    Param("block_size", 0, "frames per output buffer; 0 = the host's choice (JACK: its period)",
          read_only=True, lo=0, hi=1 << 16),
    Param("playback_delay", "auto", "seconds from a sample's stamp to its playback, or 'auto': the avatar's "
          "measured frame latency per utterance (sound and face leave together)", read_only=True),
    Param("fallback_delay_s", 0.5, "auto: how long an utterance waits for its first frame; when none came "
          "by then, the median latency of the last second of frames (or this value when there were "
          "none) is its delay", read_only=True, lo=0.0, hi=10.0),
    Param("contiguous_s", 0.01, "a chunk whose stamp is within this of the previous chunk's end continues "
          "its utterance (same delay, seamless)", read_only=True, lo=0.0, hi=1.0),
    Param("send_ahead_s", 0.25, "audio is sent to the device this far ahead of its playback time (what "
          "is not sent yet can still be re-timed in a pause, and an interrupt drops it here)",
          read_only=True, lo=0.05, hi=60.0),
    Param("silence_dbfs", -45.0, "a 10 ms block below this peak level is a pause, where the delay may be "
          "moved by one block towards the latency of the utterance's recent frames", read_only=True,
          lo=-120.0, hi=0.0),
    Param("max_queue_s", 30.0, "audio queued for playback at most; more is refused and counted (overflow)",
          read_only=True, lo=0.1, hi=600.0),
    Param("max_message_bytes", 8 * 1024 * 1024, "larger audio messages are refused and counted",
          read_only=True, lo=1, hi=1 << 30),
    Param("retry_s", 1.0, "seconds between attempts to open a missing device", read_only=True,
          lo=0.05, hi=60.0),
    Param("input_qos", "reliable", "audio subscription: reliable or sensor_data", read_only=True,
          choices=("reliable", "sensor_data")),
    Param("input_qos_depth", 200, "audio subscription depth (deep enough for TTS bursts)", read_only=True,
          lo=1, hi=10000),
    Param("diagnostics_period_s", 1.0, "period of /diagnostics", read_only=True, lo=0.05, hi=60.0),
)


def parse_delay(text: str) -> float | None:
    """``playback_delay`` as seconds, or None for ``auto`` (ValueError otherwise)."""
    t = str(text).strip().lower()
    if t == "auto":
        return None
    try:
        v = float(t)
    except ValueError:
        raise ValueError(f"playback_delay must be 'auto' or seconds >= 0, got {text!r}") from None
    if not (math.isfinite(v) and 0.0 <= v <= 10.0):
        raise ValueError(f"playback_delay must be in [0, 10] s, got {text!r}")
    return v


@dataclass
class _Utterance:
    start_ns: int  # stamp of its first sample (audio time)
    src_rate: int
    next_ns: float  # stamp the next contiguous chunk would have
    resampler: StreamResampler
    deadline_ns: int  # auto: lock with the fallback delay at this clock time
    out_samples: int = 0  # samples at the device rate produced so far
    delay_ns: int | None = None  # locked delay (the first frame's latency, fixed, or a fallback)
    shift_ns: int = 0  # adjustments made in pauses since (the delay in force is delay_ns + shift_ns)
    unsent: list = field(default_factory=list)  # samples not yet sent to the device, in order
    sent: int = 0  # output samples sent (or skipped) so far
    lats: collections.deque = field(default_factory=lambda: collections.deque(maxlen=50))  # 2 s of frames
    segments: collections.deque = field(default_factory=lambda: collections.deque(maxlen=4000))
    interrupted: bool = False
    overflowed: bool = False  # more than max_queue_s arrived ahead of playback: the rest is refused

    def offset_at(self, f: int) -> int | None:
        """The delay the sample of audio time ``f`` was sent with (None if not sent)."""
        for s0, s1, off in reversed(self.segments):
            if s0 <= f < s1:
                return off
        return None

    def end_ns(self, rate: int) -> float:
        return self.start_ns + self.out_samples * NS / rate


class SpeakerNode(Node):
    """See the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self.p = p = declare_params(self, PARAMS, text=("playback_delay",))
        self.fixed_delay = parse_delay(p["playback_delay"])
        self._log = ThrottledLog(self.get_logger())
        self._lock = threading.Lock()
        self.c = collections.Counter()  # every received sample ends in one of these (at the input rate)
        self._utt: _Utterance | None = None
        self._recent_utts: collections.deque[_Utterance] = collections.deque(maxlen=32)
        self._frame_lat: collections.deque[tuple[int, int]] = collections.deque(maxlen=250)  # (recv, lat)
        self._residual = Window(500)
        self._residual_abs = Window(500)
        self._played_err = Window(500)
        self._last_silence_ms = float("nan")
        self._silence = Window(50)
        self._delay_ms = float("nan")
        self._interrupt_at: list[int] = []
        self._silence_level = 10.0 ** (float(p["silence_dbfs"]) / 20.0)
        self.player = Player({"device": p["device"], "channels": int(p["channels"]),
                              "blocksize": int(p["block_size"]), "max_queued_s": float(p["max_queue_s"])},
                             retry_s=float(p["retry_s"]), log=self._worker_log)
        in_qos = qos_profile(p["input_qos"] == "reliable", int(p["input_qos_depth"]))
        self.create_subscription(AudioChunk, "audio", self._on_audio, in_qos)
        self.create_subscription(AvatarState, "state", self._on_state, qos_profile(True, 50))
        self.create_subscription(Empty, "interrupt", lambda _m: self.interrupt("interrupt topic"),
                                 qos_profile(True, 10))
        self.create_service(Trigger, "~/interrupt",
                            guarded(self.get_logger(), "interrupt", self._interrupt_srv))
        self._timing_pub = self.create_publisher(String, "~/timing", qos_profile(True, 500))
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(0.005, self._poll)
        self.create_timer(float(p["diagnostics_period_s"]), self._publish_diagnostics)
        self.player.start()

    def _worker_log(self, level: str, msg: str) -> None:
        self._log(f"worker:{level}:{msg[:40]}", msg, level="error" if level == "error" else
                  ("warning" if level == "warning" else "info"))

    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    # ------------------------------------------------------------------------------------------
    # audio in
    def _on_audio(self, msg) -> None:
        try:
            self._take_audio(msg)
        except Exception as e:  # noqa: BLE001 - one message never takes the node down
            self.c["bad_messages_internal"] += 1
            self._log("internal", f"audio message dropped after an internal error: {type(e).__name__}: {e}",
                      "error")

    def _take_audio(self, msg) -> None:
        raw = from_audio_chunk(msg)
        try:
            dec = decode_pcm(raw.data, raw.encoding, raw.channels, raw.sample_rate,
                             max_bytes=int(self.p["max_message_bytes"]))
        except AudioFormatError as e:
            self.c[f"bad_messages_{e.kind}"] += 1
            self._log(f"bad:{e.kind}", f"audio: {e}; message dropped")
            return
        x, rate, stamp = dec.samples, dec.sample_rate, raw.stamp_ns
        self.c["messages"] += 1
        self.c["samples_received"] += x.size
        out_rate = self.player.rate
        if not self.player.is_open or out_rate <= 0:
            self.c["samples_no_device"] += x.size
            self._log("nodev", "audio arrived while no output device is open: dropped (counted)")
            return
        with self._lock:
            u = self._utt
            tol = float(self.p["contiguous_s"]) * NS
            contiguous = u is not None and u.src_rate == rate and abs(stamp - u.next_ns) <= tol
            if contiguous and u.interrupted:
                self.c["samples_interrupted"] += x.size
                u.next_ns = stamp + x.size * NS / rate
                return
            if not contiguous:
                if u is not None and not u.interrupted:
                    self._emit(u, u.resampler.flush(), out_rate)
                    if u.delay_ns is None:
                        d, how = self._fallback_delay(self.now_ns())
                        self._lock_delay(u, d, how)
                    self._send_due(u, self.now_ns() + 3600 * NS)  # all of it: the device queue holds it
                u = self._new_utterance(stamp, rate, out_rate)
            self.c["samples_accepted"] += x.size
            self._emit(u, u.resampler.process(x), out_rate)
            u.next_ns = stamp + x.size * NS / rate

    def _new_utterance(self, stamp: int, rate: int, out_rate: int) -> _Utterance:
        margin = self.player.status.get("output_latency_ms", 10.0) * 1e6 + 5e6
        u = _Utterance(start_ns=int(stamp), src_rate=int(rate), next_ns=float(stamp),
                       resampler=StreamResampler(rate, out_rate),
                       deadline_ns=int(stamp + float(self.p["fallback_delay_s"]) * NS - margin))
        if self.fixed_delay is not None:
            self._lock_delay(u, int(round(self.fixed_delay * NS)), "fixed")
        self._utt = u
        self._recent_utts.append(u)
        self.c["utterances"] += 1
        return u

    def _emit(self, u: _Utterance, y: np.ndarray, out_rate: int) -> None:
        if not y.size:
            return
        room = int(float(self.p["max_queue_s"]) * out_rate) - sum(a.size for a in u.unsent)
        if u.overflowed or y.size > room:
            # a burst longer than the queue: the rest of the utterance is refused (counted); keeping
            # later chunks would move them into the refused part's time
            u.overflowed = True
            self.c["output_samples_overflow"] += y.size
            self._log("overflow", f"more than max_queue_s={self.p['max_queue_s']} s of audio waiting: the "
                                  f"rest of the utterance is dropped (counted in output_samples_overflow)")
            return
        u.out_samples += y.size
        u.unsent.append(y)

    def _lock_delay(self, u: _Utterance, delay_ns: int, how: str) -> None:
        u.delay_ns = int(delay_ns)
        self._delay_ms = delay_ns / 1e6
        self.c[f"delay_locks_{how}"] += 1
        if how != "fixed":
            lats = ", ".join(f"{v / 1e6:.0f}" for v in list(u.lats)[-5:])
            self.get_logger().info(f"utterance at {u.start_ns / 1e9:.3f} s: delay {delay_ns / 1e6:.1f} ms "
                                   f"({how}; latest frame latencies {lats} ms)")
        self._send_due(u, self.now_ns())

    def _send_due(self, u: _Utterance, now: int) -> None:
        """Send the utterance's audio due within ``send_ahead_s`` to the device, in 10 ms blocks; in a
        silent block, move the delay one block towards the latency of the utterance's recent frames
        (skip the block or add one of silence; counted)."""
        if u.delay_ns is None or not u.unsent or u.interrupted:
            return
        rate = self.player.rate
        x = np.concatenate(u.unsent) if len(u.unsent) > 1 else u.unsent[0]
        blk = max(1, rate // 100)
        horizon = now + int(float(self.p["send_ahead_s"]) * NS)
        adjust = self.fixed_delay is None and len(u.lats) >= 3
        # the median of the last 2 s of frames: follows a lasting change of the avatar's latency, not a
        # stall of up to about a second (which would leave the sound late once the avatar catches up)
        target = int(np.median(u.lats)) if adjust else 0
        pos, piece_start = 0, 0

        def send(a: int, b: int) -> None:
            if b <= a:
                return
            idx = u.sent + a
            src = u.start_ns + int(round(idx * NS / rate))
            off = u.delay_ns + u.shift_ns
            u.segments.append((src, u.start_ns + int(round((u.sent + b) * NS / rate)), off))
            if not self.player.schedule(x[a:b], src + off, src):
                self.c["output_samples_no_device"] += b - a

        while pos < x.size:
            src = u.start_ns + int(round((u.sent + pos) * NS / rate))
            if src + u.delay_ns + u.shift_ns > horizon:
                break
            end = min(pos + blk, x.size)
            if adjust and end - pos == blk and float(np.abs(x[pos:end]).max()) < self._silence_level:
                diff = target - (u.delay_ns + u.shift_ns)
                step = blk * NS // rate
                if diff < -step // 2:  # play earlier: leave this silent block out
                    send(piece_start, pos)
                    u.shift_ns -= step
                    self.c["sync_skipped_samples"] += blk
                    self.c["sync_adjustments"] += 1
                    piece_start = end
                elif diff > step // 2:  # play later: a block of silence before this one
                    send(piece_start, pos)
                    u.shift_ns += step
                    self.c["sync_inserted_samples"] += blk
                    self.c["sync_adjustments"] += 1
                    piece_start = pos
            pos = end
        send(piece_start, pos)
        u.sent += pos
        u.unsent = [x[pos:]] if pos < x.size else []
        self._delay_ms = (u.delay_ns + u.shift_ns) / 1e6

    # ------------------------------------------------------------------------------------------
    # the avatar's frames
    def _on_state(self, msg) -> None:
        recv = self.now_ns()
        f = stamp_to_ns(msg.header.stamp)
        lat = recv - f
        with self._lock:
            self._frame_lat.append((recv, lat))
            u = self._utt
            if u is not None and not u.interrupted:
                # frames produced since this utterance's audio arrived: the avatar's latency with it
                u.lats.append(lat)
                if u.delay_ns is None and f + FRAME_NS > u.start_ns and f < u.start_ns + 2 * FRAME_NS:
                    self._lock_delay(u, int(min(list(u.lats)[-3:])), "frame")
            rate = self.player.rate
            for v in reversed(self._recent_utts):
                if rate and v.start_ns <= f < v.end_ns(rate):
                    off = v.offset_at(f)
                    if off is None:
                        break
                    resid_ms = (recv - (f + off)) / 1e6
                    self._residual.add(resid_ms)
                    self._residual_abs.add(abs(resid_ms))
                    self.c["frames_matched"] += 1
                    self._publish_timing({"kind": "frame", "frame_stamp_ns": f, "recv_ns": recv,
                                          "play_ns": f + off, "residual_ms": resid_ms})
                    break

    def _fallback_delay(self, now: int) -> tuple[int, str]:
        recent = [lat for t, lat in self._frame_lat if now - t < NS]
        if recent:
            return int(np.median(recent)), "recent"
        return int(round(float(self.p["fallback_delay_s"]) * NS)), "fallback"

    # ------------------------------------------------------------------------------------------
    def _poll(self) -> None:
        """5 ms: lock overdue utterances, report what the device played and when silence began."""
        now = self.now_ns()
        with self._lock:
            u = self._utt
            if u is not None and u.delay_ns is None and now >= u.deadline_ns:
                d, how = self._fallback_delay(now)
                self._lock_delay(u, d, how)
                self.c["auto_fallbacks"] += 1
            if u is not None:
                self._send_due(u, now)
        for r in self.player.take_played():
            err_us = (r.played_ns - r.scheduled_ns) / 1e3
            self._played_err.add(err_us)
            self._publish_timing({"kind": "played", "source_stamp_ns": r.source_stamp_ns,
                                  "scheduled_ns": r.scheduled_ns, "played_ns": r.played_ns,
                                  "samples": r.samples, "error_us": err_us})
        for fl in self.player.take_flushes():
            ms = (fl["silent_from"] - fl["at"]) / 1e6
            self._last_silence_ms = ms
            self._silence.add(ms)
            self._publish_timing({"kind": "flushed", "at_ns": fl["at"], "silent_from_ns": fl["silent_from"],
                                  "samples": fl["samples"], "to_silence_ms": ms})

    def _publish_timing(self, d: dict) -> None:
        try:
            self._timing_pub.publish(String(data=json.dumps(d)))
        except Exception:  # noqa: BLE001 - context shutting down
            pass

    # ------------------------------------------------------------------------------------------
    # barge-in
    def interrupt(self, source: str) -> tuple[bool, str]:
        at = self.now_ns()
        sent = self.player.flush(at)
        with self._lock:
            held = 0
            u = self._utt
            if u is not None:
                held = sum(y.size for y in u.unsent)
                u.unsent = []
                u.interrupted = True
            self.c["interrupts"] += 1
            self.c["output_samples_interrupted_held"] += held
        self.get_logger().info(f"interrupt ({source}): playback flushed ({held} held samples dropped)")
        if not sent:
            return False, "no output device open; held audio dropped"
        return True, f"playback flushed; {held} held samples dropped"

    def _interrupt_srv(self, request, response):
        response.success, response.message = self.interrupt("~/interrupt")
        return response

    # ------------------------------------------------------------------------------------------
    def stats(self) -> dict:
        pl = self.player
        st = pl.status
        with self._lock:
            d = {k: v for k, v in sorted(self.c.items())}
            d["delay_mode"] = "auto" if self.fixed_delay is None else "fixed"
            d["delay_ms"] = self._delay_ms
            d["av_residual_median_ms"] = self._residual.pct(50)
            d["av_residual_p95_abs_ms"] = self._residual_abs.pct(95)
            d["play_error_p99_us"] = self._played_err.pct(99)
            d["last_interrupt_to_silence_ms"] = self._last_silence_ms
        d.update(pl.counters())
        for k in ("samples_scheduled", "samples_played", "samples_late", "samples_overflow",
                  "samples_flushed", "resyncs", "underflow_flags"):
            d[f"device_{k}"] = int(pl.totals(k))
        d["device_samples_queued"] = int(st.get("samples_queued", 0))
        d["device_samples_unaccounted"] = int(pl.totals("samples_unaccounted"))
        d["output_latency_ms"] = float(st.get("output_latency_ms", float("nan")))
        d["samples_unaccounted"] = (d.get("samples_received", 0) - d.get("samples_accepted", 0)
                                    - d.get("samples_no_device", 0) - d.get("samples_interrupted", 0))
        return d

    def _publish_diagnostics(self) -> None:
        d = self.stats()
        if not d["device_open"]:
            level, msg = "error", f"no output device: {d['last_error'] or 'opening'}"
        elif d["device_samples_late"] or d["device_samples_overflow"] or d["device_underflow_flags"]:
            level, msg = "warn", "playing; late/overflow/underflow counted"
        else:
            level, msg = "ok", f"playing on {d['device']} at {d['rate']} Hz"
        try:
            name = f"{self.get_fully_qualified_name()}: speaker"
            self._diag_pub.publish(diagnostic_array(name, d, level, msg, self.get_clock().now().to_msg(),
                                                    str(d["device"])))
        except Exception:  # noqa: BLE001 - context shutting down
            pass

    def release(self) -> None:
        self.player.stop()


def main(args=None) -> int:
    return spin(SpeakerNode, NODE_NAME, release=lambda n: n.release(), args=args)


if __name__ == "__main__":
    raise SystemExit(main())
