"""espeak-ng speech through ctypes: real audio and phoneme events with times, voice split."""

from __future__ import annotations

import numpy as np
import pytest

from dystream_ros.config import SAMPLE_RATE
from dystream_ros.data.speech import (
    HELDOUT_VOICES,
    TRAIN_VOICES,
    WIDE_VOICES,
    Voice,
    is_pause,
    synthesize,
    voices_for_split,
)


def _f0(audio: np.ndarray) -> float:
    """Median autocorrelation pitch of voiced 64 ms windows."""
    out = []
    for i in range(0, len(audio) - 1024, 512):
        x = audio[i : i + 1024]
        if np.sqrt(np.mean(x**2)) < 0.05:
            continue
        c = np.correlate(x, x, "full")[1023:]
        lag = int(np.argmax(c[40:400])) + 40
        out.append(SAMPLE_RATE / lag)
    return float(np.median(out))


def test_real_speech_with_phoneme_times():
    utt = synthesize("Maybe my mom can come, later.", TRAIN_VOICES[0])
    a = utt.audio
    assert a.dtype == np.float32 and a.ndim == 1
    assert 0.8 < utt.duration < 4.0
    assert np.sqrt(np.mean(a**2)) > 0.03 and np.abs(a).max() <= 1.0
    names = [p for p, _, _ in utt.phonemes]
    assert names.count("m") >= 3
    starts = np.array([s for _, s, _ in utt.phonemes])
    ends = np.array([e for _, _, e in utt.phonemes])
    assert np.all(np.diff(starts) >= 0) and np.all(ends > starts)
    assert starts[0] >= 0 and ends[-1] <= utt.duration + 1e-6
    assert [w.lower() for w, _, _ in utt.words][:3] == ["maybe", "my", "mom"]


def test_phoneme_times_match_the_audio():
    """Vowels carry energy; the pause at the comma is quiet: times are aligned with the sound."""
    utt = synthesize("Ahh, ... aaah.", TRAIN_VOICES[2])

    def rms(s, e):
        seg = utt.audio[int(s * SAMPLE_RATE) : int(e * SAMPLE_RATE)]
        return float(np.sqrt(np.mean(seg**2))) if len(seg) else 0.0

    vowels = [rms(s, e) for p, s, e in utt.phonemes if p in ("A:", "a", "aa")]
    pauses = [rms(s + 0.03, e - 0.03) for p, s, e in utt.phonemes if is_pause(p) and e - s > 0.15]
    assert vowels and pauses
    assert min(vowels) > 5 * max(pauses)


def test_deterministic():
    a = synthesize("Who knew?", TRAIN_VOICES[3])
    b = synthesize("Who knew?", TRAIN_VOICES[3])
    assert np.array_equal(a.audio, b.audio) and a.phonemes == b.phonemes


def test_voices_split_and_differ():
    assert len(TRAIN_VOICES) >= 10 and len(HELDOUT_VOICES) >= 3
    assert voices_for_split("train") == TRAIN_VOICES and voices_for_split("heldout") == HELDOUT_VOICES
    train_names = {v.name for v in TRAIN_VOICES}
    assert not train_names & {v.name for v in HELDOUT_VOICES}
    # held-out voices use accents and variants that no training voice uses
    train_variants = {v.name.split("+")[1] for v in TRAIN_VOICES}
    train_langs = {v.name.split("+")[0] for v in TRAIN_VOICES}
    for v in HELDOUT_VOICES:
        lang, variant = v.name.split("+")
        assert variant not in train_variants
    assert {v.name.split("+")[0] for v in HELDOUT_VOICES} - train_langs
    # every voice speaks; a female and a male voice differ in pitch
    for v in TRAIN_VOICES + HELDOUT_VOICES:
        u = synthesize("Hello there.", v)
        assert u.duration > 0.3 and np.sqrt(np.mean(u.audio**2)) > 0.02, v.key
    f_female = _f0(synthesize("The weather is lovely today.", TRAIN_VOICES[1]).audio)  # us_f1
    f_male = _f0(synthesize("The weather is lovely today.", TRAIN_VOICES[6]).audio)  # us_m4
    assert f_female > 1.5 * f_male


def test_the_wide_training_pool_adds_voices_but_none_of_the_held_out_ones():
    assert voices_for_split("train-wide") == TRAIN_VOICES + WIDE_VOICES
    keys = [v.key for v in TRAIN_VOICES + WIDE_VOICES + HELDOUT_VOICES]
    assert len(keys) == len(set(keys)) and len({v.name for v in WIDE_VOICES}) == len(WIDE_VOICES) >= 20
    held_variants = {v.name.split("+")[1].lower() for v in HELDOUT_VOICES}
    train_langs = {v.name.split("+")[0] for v in TRAIN_VOICES}  # the held-out-only accents stay unused
    for v in WIDE_VOICES:
        lang, variant = v.name.split("+")
        assert variant.lower() not in held_variants and lang in train_langs, v.key
        u = synthesize("Hello there.", v)
        assert u.duration > 0.3 and np.sqrt(np.mean(u.audio**2)) > 0.01, v.key


def test_rate_changes_duration():
    v = TRAIN_VOICES[0]
    slow = synthesize("This sentence is spoken at two different rates.", Voice(v.key, v.name, 110, v.pitch))
    fast = synthesize("This sentence is spoken at two different rates.", Voice(v.key, v.name, 260, v.pitch))
    assert slow.duration > 1.5 * fast.duration


def test_phoneme_code_input_and_bad_voice():
    u = synthesize("[[m,m'hm]]", TRAIN_VOICES[0])
    assert [p for p, _, _ in u.phonemes if not is_pause(p)] == ["m", "m", "h", "m"]
    with pytest.raises(ValueError):
        synthesize("hello", Voice("bad", "xx-no-such-language"))
