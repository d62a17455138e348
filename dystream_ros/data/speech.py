"""Speech synthesis with phoneme timing from libespeak-ng (through ctypes).

espeak-ng is the Debian package ``espeak-ng`` (library ``libespeak-ng1``); no Python binding is
needed. The engine is initialised in synchronous mode with phoneme events enabled, so every
synthesis call returns audio (22.05 kHz int16) plus events; events of type PHONEME carry the
phoneme mnemonic (espeak's ASCII names, e.g. ``m``, ``u:``, ``aI``) and its position in ms.
:func:`synthesize` returns 16 kHz mono float32 audio and ``(phoneme, start_s, end_s)`` triples
(pause phonemes are named ``_``, ``_:`` ...).

Voices: :data:`TRAIN_VOICES` (12) and :data:`HELDOUT_VOICES` (4) are a fixed split. Held-out voices
use accents (Caribbean, New York, West Midlands) and voice variants that no training voice uses. The
``train-wide`` split adds :data:`WIDE_VOICES` (24 more espeak-ng variants on the training accents, a
wider spread of pitch, range and rate) to the training voices; it shares no variant or accent with the
held-out voices either.

Determinism: espeak-ng keeps state between calls (pitch flutter, noise), so the library runs in a
helper process that serves each request from a fresh fork of the same initialised state
(:mod:`dystream_ros.data._espeak`): the same text and voice always give the same samples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from dystream_ros.audio.resample import resample
from dystream_ros.config import SAMPLE_RATE
from dystream_ros.data._espeak import EVENT_PHONEME, EVENT_WORD, EspeakClient

# --- voices ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice: ``name`` is ``language[+variant]``; rate in words per minute
    (80-450), pitch and pitch range 0-100 (50 = the voice's default)."""

    key: str
    name: str
    rate: int = 170
    pitch: int = 50
    range: int = 50

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Voice:
        return cls(**d)

    def jittered(self, rng: np.random.Generator, amount: float = 0.06) -> Voice:
        """The same voice with rate/pitch varied by up to ``amount`` (relative), e.g. per turn."""
        return replace(
            self,
            rate=int(round(self.rate * (1.0 + rng.uniform(-amount, amount)))),
            pitch=int(np.clip(round(self.pitch * (1.0 + rng.uniform(-amount, amount))), 0, 100)),
        )


TRAIN_VOICES: tuple[Voice, ...] = (
    Voice("us_m1", "en-us+m1", 170, 45, 55),
    Voice("us_f1", "en-us+f1", 165, 60, 60),
    Voice("gb_m2", "en+m2", 160, 40, 45),
    Voice("gb_f2", "en+f2", 178, 64, 60),
    Voice("scot_m3", "en-gb-scotland+m3", 155, 48, 50),
    Voice("rp_f3", "en-gb-x-rp+f3", 170, 56, 55),
    Voice("us_m4", "en-us+m4", 185, 36, 45),
    Voice("lanc_f4", "en-gb-x-gbclan+f4", 160, 68, 65),
    Voice("us_andy", "en-us+Andy", 175, 50, 50),
    Voice("gb_linda", "en+linda", 165, 58, 60),
    Voice("us_david", "en-us+david", 150, 42, 45),
    Voice("rp_m5", "en-gb-x-rp+m5", 192, 52, 55),
)
HELDOUT_VOICES: tuple[Voice, ...] = (
    Voice("car_m7", "en-029+m7", 165, 45, 55),
    Voice("nyc_f5", "en-us-nyc+f5", 175, 62, 60),
    Voice("wmid_m6", "en-gb-x-gbcwmd+m6", 158, 38, 45),
    Voice("us_annie", "en-us+Annie", 170, 66, 65),
)
# More speakers for training only (the ``train-wide`` split): other variants on the training accents,
# pitch 25-80 and rates 140-205 wpm, so a model hears more than twelve vocal tracts and glottal sources.
WIDE_VOICES: tuple[Voice, ...] = (
    Voice("us_alicia", "en-us+Alicia", 168, 70, 62),
    Voice("gb_andrea", "en+Andrea", 160, 62, 70),
    Voice("rp_auntie", "en-gb-x-rp+Auntie", 150, 74, 58),
    Voice("us_belinda", "en-us+Belinda", 182, 66, 66),
    Voice("scot_benjamin", "en-gb-scotland+Benjamin", 158, 40, 42),
    Voice("us_caleb", "en-us+Caleb", 176, 45, 52),
    Voice("gb_ed", "en+Ed", 165, 35, 48),
    Voice("rp_edward", "en-gb-x-rp+Edward", 145, 42, 50),
    Voice("us_gene", "en-us+Gene", 190, 48, 55),
    Voice("lanc_hugo", "en-gb-x-gbclan+Hugo", 170, 38, 44),
    Voice("us_jacky", "en-us+Jacky", 200, 58, 60),
    Voice("gb_john", "en+John", 172, 30, 40),
    Voice("us_lee", "en-us+Lee", 160, 52, 58),
    Voice("scot_max", "en-gb-scotland+Max", 180, 46, 54),
    Voice("us_michael", "en-us+Michael", 166, 34, 46),
    Voice("rp_paul", "en-gb-x-rp+Paul", 178, 44, 50),
    Voice("us_steph", "en-us+Steph", 172, 72, 68),
    Voice("gb_travis", "en+Travis", 188, 50, 56),
    Voice("us_anika", "en-us+anika", 164, 68, 64),
    Voice("lanc_shelby", "en-gb-x-gbclan+shelby", 158, 76, 70),
    Voice("us_grandma", "en-us+grandma", 140, 64, 60),
    Voice("gb_norbert", "en+norbert", 174, 28, 40),
    Voice("us_klatt", "en-us+klatt", 170, 50, 50),
    Voice("rp_klatt3", "en-gb-x-rp+klatt3", 185, 60, 55),
)
VOICES: dict[str, Voice] = {v.key: v for v in TRAIN_VOICES + HELDOUT_VOICES + WIDE_VOICES}


def voices_for_split(split: str) -> tuple[Voice, ...]:
    if split == "train":
        return TRAIN_VOICES
    if split == "train-wide":
        return TRAIN_VOICES + WIDE_VOICES
    if split == "heldout":
        return HELDOUT_VOICES
    raise ValueError(f"unknown split {split!r} (train, train-wide or heldout)")


# --- results --------------------------------------------------------------------------------


@dataclass
class Utterance:
    """One synthesised text: 16 kHz mono float32 audio, phonemes and words with times in s."""

    text: str
    voice: Voice
    audio: np.ndarray
    phonemes: list[tuple[str, float, float]]
    words: list[tuple[str, float, float]]

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def is_pause(phoneme: str) -> bool:
    """espeak pause phonemes: ``_``, ``_:``, ``_!``, ``_^_``, ..."""
    return phoneme.startswith("_") or phoneme == ""


# --- synthesis ------------------------------------------------------------------------------


def synthesize(text: str, voice: Voice, trim: bool = True) -> Utterance:
    """Speak ``text`` with ``voice``: 16 kHz float32 audio and phoneme/word timings (seconds).

    With ``trim`` the leading and trailing pauses are cut (keeping 30 ms before the first and 60 ms
    after the last spoken phoneme) and all times are shifted accordingly.
    """
    raw_bytes, events, native = EspeakClient.get().synth(
        text, voice.name, voice.rate, voice.pitch, voice.range
    )
    raw = np.frombuffer(raw_bytes, dtype=np.int16)
    total_ms = 1000.0 * len(raw) / native
    audio = resample(raw.astype(np.float32) / 32768.0, native, SAMPLE_RATE)

    # phoneme i lasts until the next phoneme starts (the last one until the end of the audio);
    # espeak reports a zero-length pause before some words, those are dropped
    phon_events = [(pos / 1000.0, name) for typ, pos, _, _, name in events if typ == EVENT_PHONEME]
    total_s = total_ms / 1000.0
    phonemes = []
    for k, (start, name) in enumerate(phon_events):
        end = phon_events[k + 1][0] if k + 1 < len(phon_events) else total_s
        end = min(end, total_s)
        if end > start:
            phonemes.append((name, start, end))
    encoded = text.encode("utf-8")
    word_events = [(pos, tp, ln) for typ, pos, tp, ln, _ in events if typ == EVENT_WORD]
    words = []
    for k, (pos, tp, ln) in enumerate(word_events):
        end = word_events[k + 1][0] if k + 1 < len(word_events) else total_ms
        word = encoded[max(tp - 1, 0) : max(tp - 1, 0) + ln].decode("utf-8", "replace").strip()
        if word and any(ch.isalnum() for ch in word):
            words.append((word, pos / 1000.0, end / 1000.0))

    if trim:
        spoken = [p for p in phonemes if not is_pause(p[0])]
        if spoken:
            t0 = max(0.0, spoken[0][1] - 0.03)
            t1 = min(len(audio) / SAMPLE_RATE, spoken[-1][2] + 0.06)
            i0, i1 = int(round(t0 * SAMPLE_RATE)), int(round(t1 * SAMPLE_RATE))
            t0, t1 = i0 / SAMPLE_RATE, i1 / SAMPLE_RATE
            audio = audio[i0:i1]
            phonemes = [(n, max(s, t0) - t0, min(e, t1) - t0) for n, s, e in phonemes if e > t0 and s < t1]
            words = [(w, max(s, t0) - t0, min(e, t1) - t0) for w, s, e in words if e > t0 and s < t1]
    return Utterance(text=text, voice=voice, audio=audio, phonemes=phonemes, words=words)
