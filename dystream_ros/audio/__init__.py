"""Audio for the streaming core: PCM decoding, streaming resampling, sample-indexed ring buffers.

Everything here is pure numpy (no rclpy): the node, the offline replay and the tests share it.
Inside the core audio is mono float32 in [-1, 1] at 16 kHz (DESIGN.md §3).
"""

from .decode import (
    ENCODING_PCM_F32LE,
    ENCODING_PCM_S16LE,
    AudioFormatError,
    DecodedAudio,
    decode_pcm,
    mono_float,
    normalize_encoding,
)
from .resample import StreamResampler, resample
from .ring import SampleRing, WriteResult

__all__ = [
    "ENCODING_PCM_F32LE",
    "ENCODING_PCM_S16LE",
    "AudioFormatError",
    "DecodedAudio",
    "SampleRing",
    "StreamResampler",
    "WriteResult",
    "decode_pcm",
    "mono_float",
    "normalize_encoding",
    "resample",
]
