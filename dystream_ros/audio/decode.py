"""Decode raw interleaved PCM bytes into mono float32.

Accepted sample encodings: signed 16-bit little-endian (``pcm_s16le``) and 32-bit float little-endian
(``pcm_f32le``), with a few common aliases (``S16LE``/``F32LE`` as used by audio_common's ``AudioInfo``,
``int16``/``float32``). Compressed audio (MP3, Opus, ...) and anything unknown is refused with an
:class:`AudioFormatError` whose ``kind`` names the problem, so callers can count and rate-limit logs
per kind. Decoding never raises for bad *values*: NaN/Inf samples become 0 and are counted, float
samples outside [-1, 1] are clipped and counted, and a trailing partial frame (a byte count that is
not a multiple of channels x sample size) is dropped and counted.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

ENCODING_PCM_S16LE = "pcm_s16le"
ENCODING_PCM_F32LE = "pcm_f32le"

_ALIASES = {
    ENCODING_PCM_S16LE: ENCODING_PCM_S16LE,
    "s16le": ENCODING_PCM_S16LE,
    "s16": ENCODING_PCM_S16LE,
    "int16": ENCODING_PCM_S16LE,
    "pcm16": ENCODING_PCM_S16LE,
    "linear16": ENCODING_PCM_S16LE,
    "16sc1": ENCODING_PCM_S16LE,
    ENCODING_PCM_F32LE: ENCODING_PCM_F32LE,
    "f32le": ENCODING_PCM_F32LE,
    "f32": ENCODING_PCM_F32LE,
    "float32": ENCODING_PCM_F32LE,
    "32fc1": ENCODING_PCM_F32LE,
}
_COMPRESSED = ("mp3", "mpeg", "mp2", "aac", "m4a", "opus", "ogg", "vorbis", "flac", "speex", "amr", "g711",
               "mulaw", "alaw")
_BYTES = {ENCODING_PCM_S16LE: 2, ENCODING_PCM_F32LE: 4}
_DTYPE = {ENCODING_PCM_S16LE: np.dtype("<i2"), ENCODING_PCM_F32LE: np.dtype("<f4")}

#: Limits that reject clearly broken messages before any allocation.
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384000
MAX_CHANNELS = 64


class AudioFormatError(ValueError):
    """A message that cannot be decoded. ``kind`` is a short stable key (for counters and throttled logs):
    ``compressed``, ``encoding``, ``sample_rate``, ``channels``, ``empty``, ``too_large``."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class DecodedAudio:
    """Mono float32 samples at ``sample_rate`` plus what had to be repaired while decoding."""

    samples: np.ndarray
    sample_rate: int
    nonfinite: int = 0  # NaN/Inf samples replaced by 0 (counted per interleaved sample)
    clipped: int = 0  # float samples outside [-1, 1] clipped
    trailing_bytes: int = 0  # bytes of a trailing partial frame that were dropped

    @property
    def duration_s(self) -> float:
        return len(self.samples) / float(self.sample_rate)


def normalize_encoding(encoding: str) -> str:
    """Map an encoding name (case-insensitive, aliases allowed) to ``pcm_s16le`` or ``pcm_f32le``.

    Raises :class:`AudioFormatError` (kind ``compressed`` or ``encoding``) for anything else.
    """
    key = (encoding or "").strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    if any(c in key for c in _COMPRESSED):
        raise AudioFormatError(
            "compressed",
            f"compressed audio encoding {encoding!r} is not supported: publish raw PCM "
            f"({ENCODING_PCM_S16LE} or {ENCODING_PCM_F32LE}); for audio_capture set format:=wave")
    raise AudioFormatError(
        "encoding",
        f"unknown audio encoding {encoding!r}: expected {ENCODING_PCM_S16LE} or {ENCODING_PCM_F32LE}")


def decode_pcm(data, encoding: str, channels: int, sample_rate: int, *,
               max_samples: int | None = None, max_bytes: int | None = None) -> DecodedAudio:
    """Decode interleaved little-endian PCM ``data`` (bytes, bytearray, array.array('B'), memoryview or
    a uint8 ndarray) into mono float32 in [-1, 1] at the input ``sample_rate``.

    Multi-channel audio is mixed down by averaging the channels. ``max_samples`` bounds the number of
    frames (samples per channel) in one message and ``max_bytes`` its size (both kind ``too_large``).
    """
    enc = normalize_encoding(encoding)
    try:
        rate = int(sample_rate)
        nch = int(channels)
    except (TypeError, ValueError):
        raise AudioFormatError("sample_rate",
                               f"invalid sample_rate/channels {sample_rate!r}/{channels!r}") from None
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioFormatError(
            "sample_rate", f"invalid sample_rate {rate} Hz (must be {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE})")
    if not 1 <= nch <= MAX_CHANNELS:
        raise AudioFormatError("channels", f"invalid channel count {nch} (must be 1..{MAX_CHANNELS})")

    raw = np.frombuffer(memoryview(data).cast("B") if not isinstance(data, np.ndarray) else data,
                        dtype=np.uint8)
    if max_bytes is not None and raw.size > max_bytes:
        raise AudioFormatError(
            "too_large", f"audio message of {raw.size} bytes exceeds the limit of {max_bytes} bytes")
    frame_bytes = _BYTES[enc] * nch
    n_frames = raw.size // frame_bytes
    trailing = raw.size - n_frames * frame_bytes
    if n_frames == 0:
        raise AudioFormatError(
            "empty", f"audio message has no complete sample frame ({raw.size} bytes, "
                     f"{frame_bytes} bytes per frame of {nch} x {enc})")
    if max_samples is not None and n_frames > max_samples:
        raise AudioFormatError(
            "too_large", f"audio message of {n_frames} samples ({n_frames / rate:.1f} s) exceeds the "
                         f"limit of {max_samples} samples ({max_samples / rate:.1f} s)")

    vals = raw[: n_frames * frame_bytes].view(_DTYPE[enc])
    if sys.byteorder != "little":  # pragma: no cover - big-endian hosts
        vals = vals.astype(_DTYPE[enc].newbyteorder("="))
    nonfinite = clipped = 0
    if enc == ENCODING_PCM_S16LE:
        x = vals.astype(np.float32) * np.float32(1.0 / 32768.0)
    else:
        x = vals.astype(np.float32, copy=True)
        bad = ~np.isfinite(x)
        nonfinite = int(bad.sum())
        if nonfinite:
            x[bad] = 0.0
        over = np.abs(x) > 1.0
        clipped = int(over.sum())
        if clipped:
            np.clip(x, -1.0, 1.0, out=x)
    if nch > 1:
        x = x.reshape(n_frames, nch).mean(axis=1, dtype=np.float32)
    return DecodedAudio(samples=np.ascontiguousarray(x, dtype=np.float32), sample_rate=rate,
                        nonfinite=nonfinite, clipped=clipped, trailing_bytes=int(trailing))


def mono_float(x: object, name: str) -> np.ndarray:
    """Samples pushed into a streaming session: None -> empty; 1-D float only (int16 must be converted
    first, with its scale), as float32."""
    if x is None:
        return np.zeros(0, dtype=np.float32)
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} audio must be 1-D mono samples, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{name} audio must be float in [-1, 1] (got dtype {a.dtype}); convert int16 first")
    return a.astype(np.float32, copy=False)
