"""Phonemes -> visemes -> per-frame mouth articulation (closures, rounding, jaw height, silence)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from dystream_ros.data.corpus import SENTENCES
from dystream_ros.data.speech import TRAIN_VOICES, is_pause, synthesize
from dystream_ros.data.visemes import _PHONEME_MAP, VISEME_FIELDS, articulate, phoneme_visemes

JAW, SPREAD, ROUND, CLOSE = range(4)


def _frames_in(phonemes, names, n, fps=25):
    """Frames whose centre falls inside a phoneme in ``names``."""
    centres = (np.arange(n) + 0.5) / fps
    sel = np.zeros(n, bool)
    for p, s, e in phonemes:
        if p in names:
            sel |= (centres >= s) & (centres < e)
    return sel


def test_output_format():
    out = articulate([("a", 0.1, 0.3)], 10)
    assert out.shape == (10, len(VISEME_FIELDS)) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_bilabials_close_the_lips():
    ph = [
        ("_", 0.0, 0.3),
        ("m", 0.3, 0.4),
        ("A:", 0.4, 0.6),
        ("p", 0.6, 0.68),
        ("i:", 0.68, 0.9),
        ("b", 0.9, 0.98),
        ("a", 0.98, 1.2),
        ("_", 1.2, 1.6),
    ]
    n = 40
    a = articulate(ph, n)
    closed = _frames_in(ph, {"m", "p", "b"}, n)
    vowels = _frames_in(ph, {"A:", "i:", "a"}, n)
    assert closed.sum() >= 5
    assert a[closed, CLOSE].min() > 0.8
    assert a[vowels, CLOSE].mean() < 0.35


def test_rounding_for_oo_and_w_and_spread_for_ee():
    who = [("_", 0.0, 0.2), ("h", 0.2, 0.28), ("u:", 0.28, 0.6), ("_", 0.6, 0.9)]
    wee = [("_", 0.0, 0.2), ("w", 0.2, 0.3), ("i:", 0.3, 0.6), ("_", 0.6, 0.9)]
    see = [("_", 0.0, 0.2), ("s", 0.2, 0.3), ("i:", 0.3, 0.6), ("_", 0.6, 0.9)]
    a_who, a_wee, a_see = articulate(who, 23), articulate(wee, 23), articulate(see, 23)
    u = _frames_in(who, {"u:"}, 23)
    i = _frames_in(see, {"i:"}, 23)
    w = _frames_in(wee, {"w"}, 23)
    assert a_who[u, ROUND].mean() > 0.75
    assert a_wee[w, ROUND].max() > 0.6  # w rounds even before a spread vowel
    assert a_see[i, SPREAD].mean() > 0.6 and a_see[i, ROUND].mean() < 0.1
    assert a_who[u, SPREAD].mean() < 0.15
    # the "h" of "who" is already rounded (anticipation), unlike the "h" of "he"
    he = [("_", 0.0, 0.2), ("h", 0.2, 0.28), ("i:", 0.28, 0.6), ("_", 0.6, 0.9)]
    h = _frames_in(who, {"h"}, 23)
    assert a_who[h, ROUND].mean() > articulate(he, 23)[h, ROUND].mean() + 0.35


def test_anticipatory_rounding_through_consonants():
    soon = [("_", 0.0, 0.3), ("s", 0.3, 0.42), ("u:", 0.42, 0.7), ("_", 0.7, 1.0)]
    seen = [("_", 0.0, 0.3), ("s", 0.3, 0.42), ("i:", 0.42, 0.7), ("_", 0.7, 1.0)]
    n = 25
    s_frames = _frames_in(soon, {"s"}, n)
    assert articulate(soon, n)[s_frames, ROUND].mean() > articulate(seen, n)[s_frames, ROUND].mean() + 0.3


def test_open_vowels_open_the_jaw_more():
    ph = [
        ("_", 0.0, 0.2),
        ("A:", 0.2, 0.45),
        ("_", 0.45, 0.8),
        ("i:", 0.8, 1.05),
        ("_", 1.05, 1.4),
        ("a", 1.4, 1.65),
        ("_", 1.65, 2.0),
        ("u:", 2.0, 2.25),
        ("_", 2.25, 2.6),
    ]
    n = 65
    a = articulate(ph, n)
    open_ = _frames_in(ph, {"A:", "a"}, n)
    close = _frames_in(ph, {"i:", "u:"}, n)
    assert a[open_, JAW].mean() > a[close, JAW].mean() + 0.35


def test_silence_closes_the_mouth():
    ph = [("_", 0.0, 1.0), ("a", 1.0, 1.3), ("_", 1.3, 2.4)]
    a = articulate(ph, 60)
    quiet = np.r_[0:20, 45:60]
    assert a[quiet, JAW].max() < 0.05 and a[quiet, ROUND].max() < 0.05
    assert a[27:31, JAW].mean() > 0.5


def test_with_real_espeak_phonemes():
    utt = synthesize("Bob made a map of the moon.", TRAIN_VOICES[0])
    n = int(np.ceil(utt.duration * 25))
    a = articulate(utt.phonemes, n)
    closed = _frames_in(utt.phonemes, {"b", "m", "p"}, n)
    assert closed.sum() >= 4 and a[closed, CLOSE].mean() > 0.8
    moon = _frames_in(utt.phonemes, {"u:"}, n)
    assert a[moon, ROUND].mean() > 0.6


def test_espeak_phoneme_inventory_is_mapped():
    """The phonemes espeak emits for the corpus are (almost all) mapped explicitly."""
    counts = Counter()
    for text in SENTENCES[::4]:
        for p, _, _ in synthesize(text, TRAIN_VOICES[5]).phonemes:
            if not is_pause(p):
                counts[p] += 1
    total = sum(counts.values())
    unmapped = sum(c for p, c in counts.items() if p not in _PHONEME_MAP)
    assert total > 500 and unmapped / total < 0.01, {p: c for p, c in counts.items() if p not in _PHONEME_MAP}
    assert phoneme_visemes("u:#") == phoneme_visemes("u:")  # modifiers fall back to the base symbol
    assert phoneme_visemes("_:") == ("SIL",)
