"""PCM decoding: encodings, mixdown, repairs and refusals (no ROS)."""

import array

import numpy as np
import pytest

from dystream_ros.audio import AudioFormatError, decode_pcm, normalize_encoding


def test_int16_stereo_mixdown_and_scale():
    left = np.array([0, 16384, -32768, 32767], dtype="<i2")
    right = np.array([0, 16384, 0, -32767], dtype="<i2")
    inter = np.stack([left, right], axis=1).reshape(-1)
    d = decode_pcm(inter.tobytes(), "pcm_s16le", 2, 44100)
    assert d.samples.dtype == np.float32 and d.sample_rate == 44100
    np.testing.assert_allclose(d.samples, [0.0, 0.5, -0.5, 0.0], atol=1e-4)
    assert d.nonfinite == 0 and d.trailing_bytes == 0


def test_float32_accepts_array_of_bytes_like_rclpy():
    x = np.linspace(-1, 1, 10, dtype="<f4")
    d = decode_pcm(array.array("B", x.tobytes()), "PCM_F32LE", 1, 16000)
    np.testing.assert_array_equal(d.samples, x)


def test_nonfinite_replaced_and_counted_and_clipped():
    x = np.array([0.1, np.nan, np.inf, -np.inf, 2.0, -0.5], dtype="<f4")
    d = decode_pcm(x.tobytes(), "pcm_f32le", 1, 16000)
    assert d.nonfinite == 3 and d.clipped == 1
    np.testing.assert_allclose(d.samples, [0.1, 0, 0, 0, 1.0, -0.5], atol=1e-7)
    assert np.isfinite(d.samples).all()


def test_trailing_partial_frame_dropped_and_counted():
    data = np.arange(5, dtype="<i2").tobytes() + b"\x01"  # 11 bytes, stereo frames of 4 bytes
    d = decode_pcm(data, "s16le", 2, 16000)
    assert d.samples.size == 2 and d.trailing_bytes == 3


@pytest.mark.parametrize("enc,kind", [("mp3", "compressed"), ("audio/mpeg", "compressed"),
                                      ("opus", "compressed"), ("pcm_u8", "encoding"), ("", "encoding"),
                                      ("S24LE", "encoding")])
def test_rejected_encodings(enc, kind):
    with pytest.raises(AudioFormatError) as e:
        decode_pcm(b"\x00" * 64, enc, 1, 16000)
    assert e.value.kind == kind
    assert enc in str(e.value) or kind == "encoding"


@pytest.mark.parametrize("rate,ch,kind", [(0, 1, "sample_rate"), (500, 1, "sample_rate"),
                                          (10**7, 1, "sample_rate"), (16000, 0, "channels"),
                                          (16000, 1000, "channels")])
def test_rejected_rates_and_channels(rate, ch, kind):
    with pytest.raises(AudioFormatError) as e:
        decode_pcm(b"\x00" * 64, "pcm_s16le", ch, rate)
    assert e.value.kind == kind


def test_empty_and_too_large():
    with pytest.raises(AudioFormatError) as e:
        decode_pcm(b"", "pcm_s16le", 1, 16000)
    assert e.value.kind == "empty"
    with pytest.raises(AudioFormatError) as e:
        decode_pcm(b"\x00", "pcm_s16le", 1, 16000)
    assert e.value.kind == "empty"
    with pytest.raises(AudioFormatError) as e:
        decode_pcm(b"\x00" * 4000, "pcm_s16le", 1, 16000, max_samples=1000)
    assert e.value.kind == "too_large"
    with pytest.raises(AudioFormatError) as e:
        decode_pcm(b"\x00" * 4002, "pcm_s16le", 1, 16000, max_bytes=4000)
    assert e.value.kind == "too_large" and "4002 bytes" in str(e.value)
    assert len(decode_pcm(b"\x00" * 4000, "pcm_s16le", 1, 16000, max_bytes=4000).samples) == 2000


def test_aliases():
    assert normalize_encoding("S16LE") == "pcm_s16le"
    assert normalize_encoding("float32") == "pcm_f32le"
