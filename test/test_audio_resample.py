"""Streaming resampler: chunk-size invariance, exact timing, anti-aliasing (no ROS)."""

import numpy as np
import pytest

from dystream_ros.audio import StreamResampler, resample


def _tone(freq, rate, seconds, amp=0.5, phase=0.0):
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 11025])
def test_tone_is_preserved_with_exact_timing(rate):
    x = _tone(440.0, rate, 1.0)
    y = resample(x, rate, 16000)
    assert len(y) == int(np.ceil(len(x) * 16000 / rate))
    ref = _tone(440.0, 16000, len(y) / 16000)[: len(y)]
    # Sample j of the output is the input at time j / 16000 (no delay, no drift).
    assert np.abs(y - ref)[100:-100].max() < 1e-3


@pytest.mark.parametrize("chunks", [[512], [4096], [1, 7, 333, 4096, 2], [100000]])
def test_chunking_does_not_change_the_output(chunks):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(44100).astype(np.float32) * 0.1
    whole = resample(x, 44100)
    r = StreamResampler(44100)
    parts, i, k = [], 0, 0
    while i < len(x):
        n = chunks[k % len(chunks)]
        parts.append(r.process(x[i:i + n]))
        i += n
        k += 1
    parts.append(r.flush())
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-6)


def test_aliasing_is_suppressed():
    # 12 kHz is above the 8 kHz output Nyquist: it must vanish, not fold to 4 kHz.
    y = resample(_tone(12000.0, 44100, 1.0, amp=1.0), 44100)
    rms = float(np.sqrt(np.mean(y[200:-200] ** 2)))
    assert 20 * np.log10(rms + 1e-12) < -60


def test_held_back_samples_and_passthrough():
    r = StreamResampler(48000)
    out = r.process(np.zeros(10, np.float32))
    assert out.size == 0  # the centred filter needs half_width future samples first
    assert r.delay_samples_in == r.half_width
    p = StreamResampler(16000)
    x = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(p.process(x), x)
    assert p.flush().size == 0


def test_filter_bank_is_built_once_per_rate_pair():
    a, b = StreamResampler(44100, 16000), StreamResampler(44100, 16000)
    assert a._bank is b._bank and not a._bank.flags.writeable  # shared, and nobody can change it
    assert StreamResampler(48000, 16000)._bank is not a._bank
    x = np.random.default_rng(1).standard_normal(4410).astype(np.float32)
    np.testing.assert_array_equal(a.process(x), b.process(x))
