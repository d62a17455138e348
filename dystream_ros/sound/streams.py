"""PortAudio streams (through ``sounddevice``) as the sound worker process runs them.

These classes open one stream in the current process and serve its callback; :mod:`.worker` runs each
in a process of its own and supervises it (PortAudio's JACK host API aborts the process with a failed
assertion when the server disappears under an open stream or at ``Pa_Terminate``, so a lost device
is survived by replacing the process, not by re-initialising PortAudio in place). The device is looked
up (by index or name part) when the stream is opened; :meth:`DirectStream.stalled` tells the worker
that the stream stopped calling back (device unplugged, JACK server gone).

:class:`Capture` stamps each input block with the capture time of its first sample: PortAudio's
``inputBufferAdcTime`` mapped to the caller's clock (:class:`~.clock.StreamClock`) and made contiguous
(:class:`~.clock.CaptureStamper`, which counts samples lost in overruns). Blocks go to a bounded queue
that the caller drains (blocks that do not fit are counted as dropped).

:class:`Player` fills each output buffer from a :class:`~.queue.PlaybackQueue` at the buffer's
``outputBufferDacTime`` on the caller's clock, so every sample is heard at its scheduled time.

A sample-rate the device does not support is refused with the device's own rate in the message; with
``rate_fallback`` the stream opens at the device's default rate instead (the caller sees ``rate``).
"""

from __future__ import annotations

import queue as _queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from dystream_ros.config import NS

from .clock import CaptureStamper, StreamClock
from .queue import PlaybackQueue

__all__ = ["Block", "BlockQueue", "DeviceError", "DirectCapture", "DirectPlayer", "DirectStream",
           "StreamCounters", "import_sounddevice", "resolve_device"]


class DeviceError(RuntimeError):
    """The device cannot be opened as asked (message meant for the operator)."""


def import_sounddevice():
    """The ``sounddevice`` module, or ImportError with what to install."""
    try:
        import sounddevice
    except (ImportError, OSError) as e:  # OSError: the PortAudio library is missing
        raise ImportError(f"sounddevice/PortAudio not importable ({e}): pip install sounddevice and "
                          f"apt-get install libportaudio2") from e
    return sounddevice


def resolve_device(spec: str, kind: str) -> int:
    """The device index for ``spec``: '' = the default ``kind`` ('input'/'output') device, an integer,
    or a case-insensitive part of a device name (the first with ``kind`` channels)."""
    sd = import_sounddevice()
    devices = sd.query_devices()
    key = "max_input_channels" if kind == "input" else "max_output_channels"
    spec = (spec or "").strip()
    if not spec:
        idx = sd.default.device[0 if kind == "input" else 1]
        if idx is None or idx < 0:
            cands = [i for i, d in enumerate(devices) if d[key] > 0]
            if not cands:
                raise DeviceError(f"no {kind} device found (PortAudio lists {len(devices)} device(s); "
                                  f"host APIs: {', '.join(a['name'] for a in sd.query_hostapis())})")
            idx = cands[0]
        return int(idx)
    if spec.lstrip("-").isdigit():
        idx = int(spec)
        if not 0 <= idx < len(devices) or devices[idx][key] <= 0:
            raise DeviceError(f"device {idx} is not an {kind} device (have: {_listing(devices, key)})")
        return idx
    for i, d in enumerate(devices):
        if spec.lower() in d["name"].lower() and d[key] > 0:
            return i
    raise DeviceError(f"no {kind} device matching {spec!r} (have: {_listing(devices, key)})")


def _listing(devices, key) -> str:
    names = [f"{i}: {d['name']}" for i, d in enumerate(devices) if d[key] > 0]
    return "; ".join(names) or "none"


@dataclass
class StreamCounters:
    opens: int = 0
    open_failures: int = 0
    device_losses: int = 0
    callbacks: int = 0
    xruns: int = 0  # PortAudio's input_overflow / output_underflow flags
    bad_adc_times: int = 0  # input blocks whose mapped ADC time was not believed (see DirectCapture)
    last_error: str = ""
    latency_ms: float = float("nan")  # the opened stream's reported latency


@dataclass
class Block:
    """One captured block: interleaved ``(frames, channels)`` int16/float32 and its first sample's stamp."""

    data: np.ndarray
    stamp_ns: int
    rate: int
    lost_before: int = 0  # samples lost just before this block (an overrun)
    adc_ns: int = 0  # the mapped ADC time itself (diagnostics)
    index: int = 0  # sample index of data[0] since the stream opened (lost samples included)
    dropped_before: int = 0  # samples of blocks a full queue dropped since the previous block delivered


class BlockQueue:
    """Bounded queue of :class:`Block` s. A block that does not fit is dropped and counted, and its
    samples (with the drops it carried) go on the next block delivered (``dropped_before``); so do the
    samples the device lost before it (``lost_before``), which stay counted as lost."""

    def __init__(self, maxsize: int):
        self._q: _queue.Queue[Block] = _queue.Queue(maxsize=int(maxsize))
        self.dropped_blocks = 0
        self.dropped_samples = 0
        self._pending = 0  # dropped since the last block that went in
        self._pending_lost = 0  # lost by the device before the blocks dropped since then

    def put(self, blk: Block) -> None:
        blk.dropped_before += self._pending
        blk.lost_before += self._pending_lost
        try:
            self._q.put_nowait(blk)
            self._pending = self._pending_lost = 0
        except _queue.Full:
            self.dropped_blocks += 1
            self.dropped_samples += blk.data.shape[0]
            self._pending = blk.dropped_before + blk.data.shape[0]
            self._pending_lost = blk.lost_before

    def get(self, timeout: float) -> Block | None:
        try:
            return self._q.get(timeout=timeout) if timeout > 0 else self._q.get_nowait()
        except _queue.Empty:
            return None


class DirectStream:
    """One PortAudio stream in this process (see the module docstring)."""

    kind = "input"

    def __init__(self, *, device: str = "", rate: int = 0, channels: int = 1, blocksize: int = 0,
                 block_ms: float = 0.0, latency: str | float = "low", dtype: str = "int16",
                 rate_fallback: bool = True, stall_s: float = 1.0, now_ns=time.time_ns, log=None):
        self.device_spec = device
        self.requested_rate = int(rate)
        self.channels = int(channels)
        self.blocksize = int(blocksize)
        self.block_ms = float(block_ms)  # with blocksize 0: blocks of this duration (0: the host's choice)
        self.latency = latency
        self.dtype = dtype
        self.rate_fallback = bool(rate_fallback)
        self.stall_s = float(stall_s)
        self.now_ns = now_ns
        self._log = log or (lambda level, msg: None)
        self.counters = StreamCounters()
        self.clock = StreamClock()
        self.rate = 0
        self.device_name = ""
        self._stream = None
        self._lock = threading.Lock()
        self._last_callback = 0.0

    # ------------------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._stream is not None

    def stalled(self) -> str | None:
        """Why the open stream is no longer running (None while it is)."""
        stream = self._stream
        if stream is None:
            return "not open"
        if time.monotonic() - self._last_callback > self.stall_s:
            return "stopped calling back"
        if not stream.active:
            return "stopped"
        return None

    def open_once(self) -> None:
        """Open the stream now (raises :class:`DeviceError`); the watchdog calls this."""
        sd = import_sounddevice()
        idx = resolve_device(self.device_spec, self.kind)
        info = sd.query_devices(idx)
        max_ch = info["max_input_channels" if self.kind == "input" else "max_output_channels"]
        channels = self.channels or min(2, max_ch)
        if channels > max_ch:
            raise DeviceError(f"device {idx} ({info['name']}) has {max_ch} {self.kind} channel(s), "
                              f"{channels} requested")
        rate = self.requested_rate or int(info["default_samplerate"])
        check = sd.check_input_settings if self.kind == "input" else sd.check_output_settings
        try:
            check(device=idx, channels=channels, samplerate=rate, dtype=self.dtype)
        except Exception as e:  # noqa: BLE001 - PortAudioError / ValueError
            dev_rate = int(info["default_samplerate"])
            if not self.rate_fallback or dev_rate == rate:
                raise DeviceError(f"device {idx} ({info['name']}) refuses {rate} Hz x {channels} ch "
                                  f"{self.dtype}: {e} (its default rate is {dev_rate} Hz)") from e
            self._log("warning", f"device {idx} ({info['name']}) refuses {rate} Hz ({e}); opening it at its "
                                 f"default rate {dev_rate} Hz instead (rate_fallback)")
            rate = dev_rate
        cls = sd.InputStream if self.kind == "input" else sd.OutputStream
        self.clock.reset()
        self.rate = rate
        self._prepare(rate, channels)
        blocksize = self.blocksize or int(round(rate * self.block_ms / 1000.0))
        stream = cls(device=idx, channels=channels, samplerate=rate, blocksize=blocksize,
                     dtype=self.dtype, latency=self.latency, callback=self._callback)
        self._last_callback = time.monotonic()
        stream.start()
        with self._lock:
            self._stream = stream
            self.channels_open = channels
            self.device_name = info["name"]
            self.counters.opens += 1
            self.counters.latency_ms = float(stream.latency) * 1000.0
        self._log("info", f"{self.kind} stream open: device {idx} ({info['name']}), {rate} Hz, "
                          f"{channels} ch, block {blocksize or 'auto'}, "
                          f"latency {stream.latency * 1000:.1f} ms")

    def _prepare(self, rate: int, channels: int) -> None:
        """Per-opening state (subclasses)."""

    def close(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort(ignore_errors=True)
                stream.close(ignore_errors=True)
            except Exception:  # noqa: BLE001 - the device is already gone
                pass

    def _callback(self, *args) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def status(self) -> dict:
        c = self.counters
        return {f"{self.kind}_open": self._stream is not None, "device": self.device_name, "rate": self.rate,
                "opens": c.opens, "open_failures": c.open_failures, "device_losses": c.device_losses,
                "callbacks": c.callbacks, "xruns": c.xruns, "stream_latency_ms": c.latency_ms,
                "last_error": c.last_error}


class DirectCapture(DirectStream):
    """Input stream -> stamped :class:`Block` s in a bounded queue (``read``).

    A block's ADC time, mapped to the system clock, must lie before its callback's own time and less than
    ``MAX_ADC_AGE_NS`` before it. One that does not (seen with JACK after stalled cycles: a time off by
    2**32 samples, about a day at 48 kHz) is not an observation: the block keeps the stamper's prediction
    and ``bad_adc_times`` counts it, so no day of lost samples is invented."""

    kind = "input"
    MAX_ADC_AGE_NS = 5 * NS
    ADC_AHEAD_NS = 5_000_000  # the mapping's own slack (the clock offset is the least-delayed callback's)

    def __init__(self, *, queue_blocks: int = 500, **kw):
        super().__init__(**kw)
        self.blocks = BlockQueue(queue_blocks)
        self.stamper: CaptureStamper | None = None
        self.lost_samples_total = 0  # over every opening
        self._index = 0

    def _prepare(self, rate: int, channels: int) -> None:
        if self.stamper is not None:
            self.lost_samples_total += self.stamper.lost_samples
        self.stamper = CaptureStamper(rate)
        self._index = 0

    def _callback(self, indata, frames, t, status) -> None:
        now = self.now_ns()
        self._last_callback = time.monotonic()
        c = self.counters
        c.callbacks += 1
        if status.input_overflow:
            c.xruns += 1
        self.clock.observe(t.currentTime, now)
        adc = t.inputBufferAdcTime
        adc_ns = self.clock.to_ns(adc) if adc else now  # 0: the host API does not report it
        if adc and not now - self.MAX_ADC_AGE_NS <= adc_ns <= now + self.ADC_AHEAD_NS:
            c.bad_adc_times += 1
            nxt = self.stamper.next_ns
            adc_ns = now if nxt is None else nxt
        res = self.stamper.stamp(frames, adc_ns, overflow=bool(status.input_overflow))
        self._index += res.lost_samples
        blk = Block(data=indata.copy(), stamp_ns=res.stamp_ns, rate=self.rate, lost_before=res.lost_samples,
                    adc_ns=adc_ns, index=self._index)
        self._index += frames
        self.blocks.put(blk)

    def read(self, timeout: float = 0.1) -> Block | None:
        return self.blocks.get(timeout)

    def status(self) -> dict:
        d = super().status()
        st = self.stamper
        d.update({"overflow_flags": self.counters.xruns, "bad_adc_times": self.counters.bad_adc_times,
                  "lost_samples": self.lost_samples_total + (st.lost_samples if st else 0),
                  "gaps": st.gaps if st else 0, "clock_jumps": st.clock_jumps if st else 0,
                  "dropped_blocks": self.blocks.dropped_blocks,
                  "dropped_samples": self.blocks.dropped_samples,
                  "captured_samples": st.samples if st else 0})
        return d


class DirectPlayer(DirectStream):
    """Output stream playing a :class:`PlaybackQueue` (created on open at the stream's rate; ``queue``)."""

    kind = "output"

    def __init__(self, *, max_queued_s: float = 30.0, dtype: str = "float32", on_open=None, **kw):
        super().__init__(dtype=dtype, **kw)
        self.max_queued_s = float(max_queued_s)
        self.queue: PlaybackQueue | None = None
        self._mono = np.zeros(0, np.float32)
        self._on_open = on_open
        self.output_latency_ns = 0  # DAC time minus callback time, last buffer
        self.last_dac_ns = 0

    def _prepare(self, rate: int, channels: int) -> None:
        if self.queue is None or self.queue.rate != rate:
            self.queue = PlaybackQueue(rate, max_queued_s=self.max_queued_s)
        self._mono = np.zeros(1 << 16, np.float32)
        if self._on_open is not None:
            self._on_open(rate)

    def _callback(self, outdata, frames, t, status) -> None:
        now = self.now_ns()
        self._last_callback = time.monotonic()
        c = self.counters
        c.callbacks += 1
        if status.output_underflow:
            c.xruns += 1
        self.clock.observe(t.currentTime, now)
        dac = t.outputBufferDacTime
        dac_ns = self.clock.to_ns(dac) if dac else now
        self.output_latency_ns = dac_ns - now
        self.last_dac_ns = dac_ns
        if frames > self._mono.size:
            self._mono = np.zeros(frames, np.float32)
        buf = self._mono[:frames]
        self.queue.fill(buf, dac_ns)
        outdata[:] = buf[:, None]

    def status(self) -> dict:
        d = super().status()
        d.update({"underflow_flags": self.counters.xruns,
                  "output_latency_ms": self.output_latency_ns / 1e6})
        return d
