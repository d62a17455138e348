"""Phonemes -> visemes -> per-frame mouth articulation, with coarticulation.

Each espeak phoneme (ASCII mnemonic, see :mod:`dystream_ros.data.speech`) maps to a viseme: a
target for the four mouth parameters ``jaw_open, lip_spread, lip_round, lip_close`` plus, per
parameter, a dominance (how strongly the phoneme imposes its target) and how far its influence
reaches before (anticipation) and after (carry-over) the segment. Diphthongs are two or three
consecutive targets. The trajectory is the dominance-weighted average of all targets (the
Cohen-Massaro coarticulation model):

    value_p(t) = sum_i D_ip(t) * T_ip / sum_i D_ip(t),
    D_ip(t) = a_ip inside segment i, a_ip * exp(-distance / tau) outside it.

Consequences: bilabials (p, b, m) dominate ``lip_close`` and always seal the lips; rounding of
o/u/w spreads ~150 ms ahead into neutral consonants (anticipatory lip rounding, "s" in "soon" is
rounded); consonants like t/d/k/h barely constrain the jaw, which follows neighbouring vowels;
open vowels (a, A:) open the jaw more than close ones (i:, u:); pauses close the mouth.

The trajectory is evaluated at 200 Hz and reduced to 25 fps frames (frame n covers
[40n, 40n+40) ms): mean for jaw/spread/round; for ``lip_close`` the max over the central 20 ms, so
short closures stay visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dystream_ros.config import FPS

VISEME_FIELDS = ("jaw_open", "lip_spread", "lip_round", "lip_close")
_RATE = 200  # internal evaluation rate (Hz)


@dataclass(frozen=True)
class Viseme:
    """Target (jaw, spread, round, close), dominance per parameter, reach before/after (s)."""

    name: str
    target: tuple[float, float, float, float]
    dominance: tuple[float, float, float, float]
    anticipation: tuple[float, float, float, float] = (0.06, 0.06, 0.06, 0.03)
    carryover: tuple[float, float, float, float] = (0.06, 0.06, 0.06, 0.03)


_VOWEL_DOM = (1.0, 1.0, 1.0, 1.0)
_ROUND_REACH = (0.06, 0.06, 0.16, 0.03)  # rounding anticipated well ahead


def _vowel(name, jaw, spread, rnd):
    return Viseme(name, (jaw, spread, rnd, 0.0), _VOWEL_DOM, _ROUND_REACH, (0.06, 0.06, 0.1, 0.03))


VISEMES: dict[str, Viseme] = {
    # silence: mouth closes, relaxed
    "SIL": Viseme("SIL", (0.0, 0.05, 0.0, 0.1), (1.0, 1.0, 1.0, 0.5), (0.04, 0.04, 0.04, 0.02), (0.05,) * 4),
    # consonants
    "PBM": Viseme(
        "PBM",
        (0.04, 0.05, 0.05, 1.0),
        (1.2, 0.8, 0.3, 12.0),
        (0.05, 0.05, 0.05, 0.009),
        (0.05, 0.05, 0.05, 0.008),
    ),
    "FV": Viseme("FV", (0.1, 0.2, 0.0, 0.55), (1.5, 0.6, 0.2, 6.0)),
    "TH": Viseme("TH", (0.22, 0.2, 0.0, 0.0), (0.6, 0.4, 0.1, 1.0)),
    "SZ": Viseme("SZ", (0.1, 0.45, 0.0, 0.0), (1.2, 0.5, 0.08, 1.0)),
    "SH": Viseme("SH", (0.16, 0.0, 0.6, 0.0), (1.0, 0.8, 2.0, 1.0), (0.06, 0.06, 0.12, 0.03)),
    "TDNL": Viseme("TDNL", (0.2, 0.25, 0.0, 0.0), (0.3, 0.25, 0.08, 1.0)),
    "KG": Viseme("KG", (0.28, 0.15, 0.0, 0.0), (0.25, 0.2, 0.08, 1.0)),
    "H": Viseme("H", (0.3, 0.1, 0.0, 0.0), (0.05, 0.05, 0.05, 0.5)),
    "R": Viseme("R", (0.18, 0.0, 0.35, 0.0), (0.6, 0.6, 1.5, 1.0), (0.06, 0.06, 0.12, 0.03)),
    "W": Viseme("W", (0.1, 0.0, 1.0, 0.0), (1.0, 1.0, 4.0, 1.0), (0.06, 0.06, 0.18, 0.03)),
    "Y": Viseme("Y", (0.14, 0.6, 0.0, 0.0), (0.7, 0.8, 0.3, 1.0)),
    # vowels: jaw by height, spread for front, rounding for back rounded
    "II": _vowel("II", 0.16, 0.85, 0.0),  # i:  "see"
    "IH": _vowel("IH", 0.24, 0.6, 0.0),  # I   "sit"
    "EH": _vowel("EH", 0.45, 0.5, 0.0),  # e/E "bed"
    "AE": _vowel("AE", 0.75, 0.4, 0.0),  # a   "cat"
    "AA": _vowel("AA", 0.95, 0.12, 0.05),  # A:  "father"
    "AH": _vowel("AH", 0.58, 0.15, 0.0),  # V   "cup"
    "SCHWA": _vowel("SCHWA", 0.32, 0.1, 0.0),  # @
    "ER": _vowel("ER", 0.35, 0.05, 0.2),  # 3:  "bird"
    "OO": _vowel("OO", 0.7, 0.0, 0.4),  # 0   "hot" (British)
    "AO": _vowel("AO", 0.62, 0.0, 0.6),  # O:  "thought"
    "OH": _vowel("OH", 0.45, 0.0, 0.8),  # o   "go" onset
    "UH": _vowel("UH", 0.28, 0.0, 0.75),  # U   "book"
    "UW": _vowel("UW", 0.18, 0.0, 1.0),  # u:  "blue"
}

# espeak English phoneme mnemonic -> viseme sequence (diphthongs have several parts)
_PHONEME_MAP: dict[str, tuple[str, ...]] = {
    "p": ("PBM",),
    "b": ("PBM",),
    "m": ("PBM",),
    "m-": ("PBM",),
    "f": ("FV",),
    "v": ("FV",),
    "T": ("TH",),
    "D": ("TH",),
    "s": ("SZ",),
    "z": ("SZ",),
    "z#": ("SZ",),
    "S": ("SH",),
    "Z": ("SH",),
    "tS": ("SH",),
    "dZ": ("SH",),
    "t": ("TDNL",),
    "d": ("TDNL",),
    "n": ("TDNL",),
    "l": ("TDNL",),
    "t#": ("TDNL",),
    "d#": ("TDNL",),
    "n-": ("TDNL",),
    "l/": ("TDNL",),
    "t2": ("TDNL",),
    "d2": ("TDNL",),
    "?": ("H",),
    "k": ("KG",),
    "g": ("KG",),
    "N": ("KG",),
    "x": ("KG",),
    "h": ("H",),
    "r": ("R",),
    "r-": ("R",),
    "*": ("TDNL",),
    "w": ("W",),
    "j": ("Y",),
    "i": ("IH",),
    "i:": ("II",),
    "I": ("IH",),
    "I#": ("IH",),
    "I2": ("IH",),
    "y": ("II",),
    "e": ("EH",),
    "E": ("EH",),
    "E2": ("EH",),
    "E:": ("EH",),
    "a": ("AE",),
    "aa": ("AE",),
    "a2": ("SCHWA",),
    "a#": ("AH",),
    "A:": ("AA",),
    "A@": ("AA", "SCHWA"),
    "A": ("AA",),
    "V": ("AH",),
    "@": ("SCHWA",),
    "@2": ("SCHWA",),
    "@5": ("SCHWA",),
    "@L": ("SCHWA", "TDNL"),
    "3": ("ER",),
    "3:": ("ER",),
    "0": ("OO",),
    "02": ("OO",),
    "O": ("AO",),
    "O:": ("AO",),
    "O@": ("AO", "SCHWA"),
    "o@": ("OH", "SCHWA"),
    "o": ("OH",),
    "U": ("UH",),
    "u:": ("UW",),
    "u": ("UW",),
    "u@": ("UH", "SCHWA"),
    "U@": ("UH", "SCHWA"),
    "aI": ("AE", "IH"),
    "aI@": ("AE", "IH", "SCHWA"),
    "aI3": ("AE", "IH", "ER"),
    "aU": ("AE", "UH"),
    "aU@": ("AE", "UH", "SCHWA"),
    "eI": ("EH", "IH"),
    "oU": ("OH", "UH"),
    "OI": ("AO", "IH"),
    "O2": ("AO",),
    "@-": ("SCHWA",),
    ";": ("H",),
    "aI2": ("AE", "IH"),
    "w#": ("W",),
    "IR": ("IH", "R"),
    "t[": ("TDNL",),
    "i@": ("IH", "SCHWA"),
    "i@3": ("IH", "ER"),
    "e@": ("EH", "SCHWA"),
}


def phoneme_visemes(phoneme: str) -> tuple[str, ...]:
    """Viseme names for an espeak phoneme mnemonic (unknown symbols fall back by first letter)."""
    if not phoneme or phoneme.startswith("_"):
        return ("SIL",)
    ph = phoneme.strip("'\",%=")
    if ph in _PHONEME_MAP:
        return _PHONEME_MAP[ph]
    while len(ph) > 1:  # strip trailing modifiers: "u:#" -> "u:" -> "u"
        ph = ph[:-1]
        if ph in _PHONEME_MAP:
            return _PHONEME_MAP[ph]
    return ("H",)  # unknown: neutral, weak constraint


def _segments(phonemes):
    """Expand phonemes into (viseme, start, end) sub-segments (diphthong parts split in time)."""
    out = []
    for ph, start, end in phonemes:
        vis = phoneme_visemes(ph)
        if len(vis) == 1:
            out.append((VISEMES[vis[0]], start, end))
            continue
        # first part a little longer than the glide
        w = np.array([1.3] + [1.0] * (len(vis) - 1))
        edges = start + (end - start) * np.concatenate([[0.0], np.cumsum(w) / w.sum()])
        for k, name in enumerate(vis):
            out.append((VISEMES[name], float(edges[k]), float(edges[k + 1])))
    return out


def articulate_curves(phonemes, duration_s: float, rate: int = _RATE) -> np.ndarray:
    """Mouth trajectory at ``rate`` Hz: (ceil(duration*rate), 4) in :data:`VISEME_FIELDS` order.

    ``phonemes`` are ``(mnemonic, start_s, end_s)``; times outside any phoneme are silence.
    """
    n = int(np.ceil(duration_s * rate))
    t = (np.arange(n) + 0.5) / rate
    rest = VISEMES["SIL"]
    num = np.tile(np.asarray(rest.target) * 0.02, (n, 1))  # weak rest pose where nothing is said
    den = np.full((n, 4), 0.02)
    reach = 0.6  # s: beyond this a segment's influence is negligible
    for vis, start, end in _segments(phonemes):
        i0 = max(0, int((start - reach) * rate))
        i1 = min(n, int((end + reach) * rate) + 1)
        if i1 <= i0:
            continue
        tt = t[i0:i1, None]
        before = np.clip(start - tt, 0.0, None)
        after = np.clip(tt - end, 0.0, None)
        dom = np.asarray(vis.dominance) * np.exp(
            -before / np.asarray(vis.anticipation) - after / np.asarray(vis.carryover)
        )
        # very short segments weigh less (a 20 ms flap should not hold a full pose); pauses weigh
        # by their length, so a long pause relaxes the mouth fully and a short one barely
        if vis.name == "SIL":
            dom = dom * min(2.0, max(0.1, (end - start) / 0.15))
        else:
            dom = dom * min(1.0, (end - start) / 0.05 + 0.3)
        num[i0:i1] += dom * np.asarray(vis.target)
        den[i0:i1] += dom
    return num / den


def articulate(phonemes, num_frames: int, fps: int = FPS) -> np.ndarray:
    """Per-frame mouth articulation: (num_frames, 4) float32 in :data:`VISEME_FIELDS` order."""
    rate = _RATE
    per = rate // fps
    curves = articulate_curves(phonemes, num_frames / fps, rate)
    need = num_frames * per
    if len(curves) < need:
        curves = np.concatenate([curves, np.repeat(curves[-1:], need - len(curves), axis=0)])
    blocks = curves[:need].reshape(num_frames, per, 4)
    out = blocks.mean(axis=1)
    # lip closure: max over the central half of the frame, so closures of one frame's length show
    out[:, 3] = blocks[:, per // 4 : per - per // 4, 3].max(axis=1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
