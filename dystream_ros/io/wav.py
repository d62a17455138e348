"""WAV files and sample arrays of any integer or float type as float32 audio.

* :func:`to_float` — samples as float32 in nominal [-1, 1], channels kept: unsigned 8-bit is offset
  binary (``(x - 128) / 128``), signed integers are divided by ``2**(bits - 1)`` (24-bit WAVs arrive
  left-justified in int32 and scale the same), floats are taken as they are.
* :func:`to_float_mono` — the same, ``(N, C)`` channels averaged, NaN/Inf set to 0 and values clipped
  to [-1, 1] (what the node's PCM decoder does with a float message).
* :func:`read_wav_frames` — a WAV file as it is stored (``(N, C)`` in the file's dtype, rate).
* :func:`read_wav` — a WAV file (any rate, PCM 8/16/24/32/64-bit or float, any channel count) as mono
  float32 at ``rate``.
  Resampled by :func:`dystream_ros.audio.resample`, the node's own filter (offline audio is heard as
  the live node hears it).
* :func:`write_wav` — mono float audio as a 16-bit PCM WAV.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dystream_ros.audio.resample import resample
from dystream_ros.config import SAMPLE_RATE

__all__ = ["read_wav", "read_wav_frames", "to_float", "to_float_mono", "write_wav"]


def to_float(data: np.ndarray) -> np.ndarray:
    """Integer or float samples as float32 in nominal [-1, 1] (shape kept, no clipping)."""
    a = np.asarray(data)
    if a.dtype == np.uint8:
        return (a.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(a.dtype, np.integer):
        return (a.astype(np.float64) / float(-np.iinfo(a.dtype).min)).astype(np.float32)
    return a.astype(np.float32, copy=False)


def to_float_mono(data: np.ndarray) -> np.ndarray:
    """Samples ``(N,)`` or ``(N, channels)`` of any WAV dtype as mono float32 in [-1, 1]."""
    a = to_float(data)
    if a.ndim == 2:
        a = a.mean(axis=1, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"audio must be 1-D or (samples, channels), got shape {np.shape(data)}")
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(a, -1.0, 1.0).astype(np.float32, copy=False)


def read_wav_frames(path: str | Path) -> tuple[np.ndarray, int]:
    """(samples ``(N, C)`` in the file's dtype, sample rate) of a WAV file."""
    from scipy.io import wavfile

    rate, data = wavfile.read(str(path))
    if data.ndim == 1:
        data = data[:, None]
    return data, int(rate)


def read_wav(path: str | Path, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A WAV file as mono float32 in [-1, 1] at ``rate`` Hz (resampled when the file has another rate)."""
    data, file_rate = read_wav_frames(path)
    mono = to_float_mono(data)
    return resample(mono, file_rate, rate)


def write_wav(path: str | Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Mono float audio as a 16-bit PCM WAV (clipped to [-1, 1], scaled by 32767)."""
    from scipy.io import wavfile

    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    wavfile.write(str(path), int(rate), pcm)
