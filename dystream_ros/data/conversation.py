"""Synthetic dyadic conversations: turn-taking, backchannels, and the avatar's behaviour.

Two parties talk: **A** is the avatar (its voice is the "speaker" channel, its face is rendered),
**B** is the other person (the "listener" channel, a microphone in deployment). A conversation is
generated from one integer seed:

- Turns alternate between A and B with pauses (mostly 0.15-1.2 s, sometimes 1-2 s) and short
  overlaps (the next speaker starts 50-350 ms before the other finishes). Turn text comes from
  :mod:`dystream_ros.data.corpus`, speech from espeak-ng (:mod:`dystream_ros.data.speech`), with the
  voice's rate and pitch varied a little per turn.
- During a turn, the other party may backchannel ("mm-hm", "yeah", "right"...) at the speaker's
  pauses or mid-turn.
- A's articulation (:data:`~dystream_ros.data.face.ARTICULATION_FIELDS`, 25 fps):
  mouth from A's phonemes (:mod:`dystream_ros.data.visemes`); while **speaking**: head motion
  following the speech envelope, brow raises on emphasis, gaze aversion at turn starts; while
  **listening** (B speaks): nods (head-pitch oscillation bursts), smiling, more blinking, gaze
  and a slight head turn towards B; always: breathing sway, idle drift, saccades, random blinks.
- Audio: ``speaker`` (A) and ``listener`` (B), 16 kHz mono float32, exactly ``num_frames * 640``
  samples; B's channel carries a faint noise floor like a room microphone.

:func:`generate_conversation` builds a :class:`Conversation`; :meth:`Conversation.write` stores
``speaker.wav``, ``listener.wav`` (16-bit PCM), ``params.npy`` (T x 13 float32, column order
:data:`~dystream_ros.data.face.ARTICULATION_FIELDS`) and ``meta.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

from dystream_ros.config import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from dystream_ros.data import corpus
from dystream_ros.data.face import (
    ARTICULATION_FIELDS,
    HELDOUT_IDENTITIES,
    TRAIN_IDENTITIES,
    FaceIdentity,
    clip_params,
    identity_from_seed,
    render_params,
)
from dystream_ros.data.speech import Voice, is_pause, synthesize, voices_for_split
from dystream_ros.data.visemes import articulate
from dystream_ros.io.wav import write_wav

FORMAT = "dystream-synth-v1"
_COL = {name: i for i, name in enumerate(ARTICULATION_FIELDS)}


def identities_for_split(split: str) -> range:
    if split in ("train", "train-wide"):
        return TRAIN_IDENTITIES
    if split == "heldout":
        return HELDOUT_IDENTITIES
    raise ValueError(f"unknown split {split!r} (train, train-wide or heldout)")


@dataclass
class Segment:
    """One stretch of speech by one party; times in seconds from the conversation start."""

    party: str  # "A" (avatar) or "B" (other person)
    kind: str  # "turn" or "backchannel"
    start: float
    end: float
    text: str
    voice: Voice
    phonemes: list[tuple[str, float, float]]
    words: list[tuple[str, float, float]]
    truncated: bool = False

    def to_dict(self) -> dict:
        r = lambda x: round(float(x), 4)  # noqa: E731
        return {
            "party": self.party,
            "kind": self.kind,
            "start_s": r(self.start),
            "end_s": r(self.end),
            "text": self.text,
            "rate": self.voice.rate,
            "pitch": self.voice.pitch,
            "truncated": self.truncated,
            "words": [[w, r(s), r(e)] for w, s, e in self.words],
            "phonemes": [[p, r(s), r(e)] for p, s, e in self.phonemes],
        }


@dataclass
class Conversation:
    """A generated conversation (see the module docstring)."""

    seed: int
    split: str
    identity: FaceIdentity
    voice_a: Voice
    voice_b: Voice
    segments: list[Segment]
    speaker: np.ndarray
    listener: np.ndarray
    params: np.ndarray
    extra: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.params.shape[0])

    @property
    def duration(self) -> float:
        return self.num_frames / FPS

    def meta(self) -> dict:
        return {
            "format": FORMAT,
            "seed": int(self.seed),
            "split": self.split,
            "fps": FPS,
            "sample_rate": SAMPLE_RATE,
            "num_frames": self.num_frames,
            "duration_s": self.duration,
            "identity_seed": int(self.identity.seed),
            "identity": self.identity.to_dict(),
            "voices": {"A": self.voice_a.to_dict(), "B": self.voice_b.to_dict()},
            "params_columns": list(ARTICULATION_FIELDS),
            "segments": [s.to_dict() for s in self.segments],
            **self.extra,
        }

    def write(self, out_dir) -> Path:
        """Write speaker.wav, listener.wav, params.npy and meta.json into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_wav(out / "speaker.wav", self.speaker)
        write_wav(out / "listener.wav", self.listener)
        np.save(out / "params.npy", self.params.astype(np.float32))
        (out / "meta.json").write_text(json.dumps(self.meta(), indent=1))
        return out

    def frames(self, size: int = 256):
        """Rendered frames of the avatar (generator of size x size x 3 uint8 RGB)."""
        return render_params(self.identity, self.params, size)


# --------------------------------------------------------------------------------------------
# Turn-taking


def _speak(party, kind, text, spoken, voice: Voice, start) -> tuple[Segment, np.ndarray]:
    utt = synthesize(spoken, voice)
    seg = Segment(
        party=party,
        kind=kind,
        start=start,
        end=start + utt.duration,
        text=text,
        voice=voice,
        phonemes=[(p, s + start, e + start) for p, s, e in utt.phonemes],
        words=[(w, s + start, e + start) for w, s, e in utt.words]
        if kind == "turn"
        else [(text, start, start + utt.duration)],
    )
    return seg, utt.audio


def _schedule(rng: np.random.Generator, duration: float, voices: dict[str, Voice]):
    """Turns and backchannels until ``duration``: list of (Segment, audio)."""
    out = []
    party = "A" if rng.random() < 0.5 else "B"
    t = float(rng.uniform(0.2, 1.2))
    asked = False
    while t < duration - 0.6:
        text = corpus.sample_turn_text(rng, max_sentences=3, after_question=asked)
        voice = voices[party].jittered(rng)
        seg, audio = _speak(party, "turn", text, text, voice, t)
        out.append((seg, audio))
        asked = text.rstrip().endswith("?")
        other = "B" if party == "A" else "A"
        # backchannels from the other party: at the speaker's internal pauses, or mid-turn
        pauses = [
            s
            for p, s, e in seg.phonemes
            if is_pause(p) and e - s > 0.08 and seg.start + 0.8 < s < seg.end - 0.8
        ]
        candidates = list(pauses)
        if seg.end - seg.start > 2.5:
            candidates.append(float(rng.uniform(seg.start + 1.0, seg.end - 1.2)))
        last_bc_end = -1.0
        for c in sorted(candidates):
            if rng.random() < 0.55 and c > last_bc_end + 0.8:
                shown, spoken = corpus.sample_backchannel(rng)
                bc_voice = voices[other].jittered(rng)
                bc_voice = Voice(
                    bc_voice.key,
                    bc_voice.name,
                    int(bc_voice.rate * rng.uniform(0.7, 0.95)),
                    bc_voice.pitch,
                    bc_voice.range,
                )
                bstart = c + float(rng.uniform(0.0, 0.25))
                bseg, baudio = _speak(other, "backchannel", shown, spoken, bc_voice, bstart)
                if bseg.end < seg.end - 0.15:
                    out.append((bseg, baudio))
                    last_bc_end = bseg.end
        # gap to the next turn: pause, long pause or overlap
        r = rng.random()
        if r < 0.22:
            gap = float(rng.uniform(-0.35, -0.05))
        elif r < 0.85:
            gap = float(np.clip(rng.normal(0.5, 0.22), 0.15, 1.2))
        else:
            gap = float(rng.uniform(1.0, 2.0))
        t = max(seg.end + gap, seg.start + 0.6, last_bc_end + 0.3)
        party = other
    return out


def _mix(segments_audio, party: str, n_samples: int, gain: float):
    buf = np.zeros(n_samples, np.float32)
    for seg, audio in segments_audio:
        if seg.party != party:
            continue
        i0 = int(round(seg.start * SAMPLE_RATE))
        if i0 >= n_samples:
            continue
        chunk = audio[: n_samples - i0]
        buf[i0 : i0 + len(chunk)] += gain * chunk
    return buf


# --------------------------------------------------------------------------------------------
# Behaviour


def _noise(rng, n: int, sigma_frames: float) -> np.ndarray:
    """Smooth unit-variance random signal (Gaussian-filtered white noise)."""
    x = gaussian_filter1d(rng.standard_normal(n + 200), sigma_frames, mode="wrap")[100 : 100 + n]
    return x / (x.std() + 1e-8)


def _activity(segments, party: str, n: int, kinds=("turn", "backchannel")) -> np.ndarray:
    """Per-frame bool: does ``party`` produce speech (a non-pause phoneme) at the frame centre."""
    centres = (np.arange(n) + 0.5) / FPS
    act = np.zeros(n, bool)
    for seg in segments:
        if seg.party != party or seg.kind not in kinds:
            continue
        for p, s, e in seg.phonemes:
            if not is_pause(p):
                act |= (centres >= s) & (centres < e)
    # bridge gaps shorter than 0.3 s inside speech
    idx = np.flatnonzero(act)
    if len(idx):
        gaps = np.diff(idx)
        for k in np.flatnonzero((gaps > 1) & (gaps <= int(0.3 * FPS))):
            act[idx[k] : idx[k + 1]] = True
    return act


def _blink_track(rng, n: int, rate_per_s: np.ndarray, forced: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Blink closure for left/right eyes from a Poisson process with time-varying rate."""
    starts = set(forced)
    p = rate_per_s / FPS
    starts.update(np.flatnonzero(rng.random(n) < p).tolist())
    bl = np.zeros(n, np.float32)
    br = np.zeros(n, np.float32)
    last = -100
    for s in sorted(starts):
        if s - last < int(0.35 * FPS):
            continue
        last = s
        close = int(rng.integers(1, 3))
        open_ = int(rng.integers(2, 5))
        shape = np.concatenate([np.linspace(0.5, 1.0, close), np.linspace(1.0, 0.0, open_ + 2)[1:-1]])
        asym = 1.0 - (rng.uniform(0.1, 0.3) if rng.random() < 0.12 else 0.0)
        right_first = rng.random() < 0.5
        for k, v in enumerate(shape):
            if s + k < n:
                bl[s + k] = max(bl[s + k], v * (asym if right_first else 1.0))
                br[s + k] = max(br[s + k], v * (1.0 if right_first else asym))
    return bl, br


def _nod(n: int, start: int, amp: float, freq: float, cycles: float) -> np.ndarray:
    """Head-pitch offset of one nod burst (chin goes down first), frames ``start``.."""
    out = np.zeros(n, np.float32)
    length = int(round(cycles / freq * FPS))
    k = np.arange(max(0, min(length, n - start)))
    if len(k) == 0:
        return out
    tt = k / FPS
    env = np.sin(np.pi * k / max(length, 1)) ** 0.5
    out[start : start + len(k)] = -amp * np.sin(2 * np.pi * freq * tt) * env
    return out


def _saccade_track(rng, n: int, targets_fn, dwell_fn) -> np.ndarray:
    """Piecewise-constant gaze with fast (1-2 frame) transitions; returns (n, 2)."""
    out = np.zeros((n, 2), np.float32)
    i = 0
    prev = np.asarray(targets_fn(0), np.float32)
    while i < n:
        tgt = np.asarray(targets_fn(i), np.float32)
        dwell = max(2, int(dwell_fn(i) * FPS))
        j = min(n, i + dwell)
        out[i:j] = tgt
        if i > 0:
            out[i] = 0.5 * (prev + tgt)  # mid-saccade frame
        prev = tgt
        i = j
    return out


def behaviour(
    rng: np.random.Generator, segments: list[Segment], n: int, speaker_audio: np.ndarray
) -> tuple[np.ndarray, dict]:
    """A's full articulation (n, P) from the schedule; returns (params, extra metadata)."""
    P = np.zeros((n, len(ARTICULATION_FIELDS)), np.float32)
    t = np.arange(n) / FPS
    a_phon = [p for s in segments if s.party == "A" for p in s.phonemes]
    mouth = articulate(a_phon, n)
    strength = float(rng.uniform(0.85, 1.15))
    P[:, _COL["jaw_open"]] = np.clip(mouth[:, 0] * strength, 0, 1)
    P[:, _COL["lip_spread"]] = mouth[:, 1]
    P[:, _COL["lip_round"]] = mouth[:, 2]
    P[:, _COL["lip_close"]] = mouth[:, 3]

    a_speak = _activity(segments, "A", n)
    b_speak = _activity(segments, "B", n, kinds=("turn",))
    listening = b_speak & ~a_speak
    listen_s = gaussian_filter1d(listening.astype(np.float32), 4)
    speak_s = gaussian_filter1d(a_speak.astype(np.float32), 3)

    # speech envelope of A (per frame, log energy, 0..1)
    frames = speaker_audio[: n * SAMPLES_PER_FRAME].reshape(n, SAMPLES_PER_FRAME)
    energy = np.log10(np.mean(frames**2, axis=1) + 1e-6)
    env = np.clip((energy + 5.0) / 4.0, 0.0, 1.0)
    env_hp = env - gaussian_filter1d(env, 6)

    partner = np.array([rng.uniform(-0.45, 0.45), rng.uniform(-0.12, 0.18)], np.float32)
    mood = float(rng.uniform(-0.05, 0.25))

    # --- head ---
    breath_f = rng.uniform(0.2, 0.3)
    yaw = 0.035 * _noise(rng, n, 12) + 0.05 * _noise(rng, n, 5) * speak_s
    pitch = (
        0.012 * np.sin(2 * np.pi * breath_f * t + rng.uniform(0, 6.3))
        + 0.02 * _noise(rng, n, 10)
        + 0.05 * gaussian_filter1d(env_hp, 1.0) * speak_s
    )
    roll = 0.02 * _noise(rng, n, 14) + 0.04 * np.sign(partner[0]) * listen_s * rng.uniform(0.3, 1.0)
    yaw += 0.35 * partner[0] * listen_s * 0.5
    # nods while listening: at B's phrase ends and every few seconds, and with A's backchannels
    nod_starts = []
    for seg in segments:
        if seg.party == "B" and seg.kind == "turn":
            for p, s, e in seg.phonemes:
                if is_pause(p) and e - s > 0.1 and rng.random() < 0.6:
                    nod_starts.append(int(s * FPS) + int(rng.integers(0, 5)))
        if seg.party == "A" and seg.kind == "backchannel":
            nod_starts.append(int(seg.start * FPS))
    k = 0
    while k < n:
        if listening[k]:
            nod_starts.append(k + int(rng.integers(0, 10)))
            k += int(rng.uniform(1.2, 3.0) * FPS)
        else:
            k += 1
    nods = np.zeros(n, np.float32)
    last = -100
    for s0 in sorted(nod_starts):
        if s0 >= n or s0 - last < int(0.9 * FPS):
            continue
        if not (
            listening[min(s0, n - 1)]
            or any(
                seg.party == "A" and seg.kind == "backchannel" and abs(seg.start * FPS - s0) < 2
                for seg in segments
            )
        ):
            continue
        last = s0
        nods += _nod(n, s0, rng.uniform(0.05, 0.11), rng.uniform(1.8, 2.6), rng.uniform(1.2, 2.2))
    pitch += nods

    # --- gaze: partner while listening, aversion at own turn starts, wandering when idle ---
    turn_starts = [int(s.start * FPS) for s in segments if s.party == "A" and s.kind == "turn"]

    def gaze_target(i):
        if listening[i]:
            return partner + rng.normal(0, 0.05, 2)
        if a_speak[i]:
            if any(0 <= i - ts < 1.2 * FPS for ts in turn_starts):
                return np.array([rng.choice([-1, 1]) * rng.uniform(0.35, 0.8), rng.uniform(-0.6, 0.1)])
            return partner + rng.normal(0, 0.15, 2) if rng.random() < 0.7 else rng.uniform(-0.5, 0.5, 2)
        return rng.normal(0, 0.25, 2) + 0.4 * partner

    def dwell(i):
        return rng.uniform(0.6, 2.0) if listening[i] else rng.uniform(0.3, 1.2)

    gaze = _saccade_track(rng, n, gaze_target, dwell)
    yaw += 0.1 * gaussian_filter1d(gaze[:, 0], 4)  # the head follows the eyes a little
    pitch -= 0.05 * gaussian_filter1d(gaze[:, 1], 4)

    # --- blinks: more while listening, at turn boundaries and with big saccades ---
    rate = 0.25 + 0.3 * listening  # per second: ~15/min, ~33/min while listening
    forced = [ts for ts in turn_starts if rng.random() < 0.3]
    jumps = np.flatnonzero(np.linalg.norm(np.diff(gaze, axis=0), axis=1) > 0.5)
    forced += [int(j) for j in jumps if rng.random() < 0.4]
    blink_l, blink_r = _blink_track(rng, n, rate, forced)

    # --- smile and brows ---
    smile = mood + 0.08 * _noise(rng, n, 20) + rng.uniform(0.15, 0.35) * listen_s
    for _ in range(int(rng.integers(0, 3 + n // (10 * FPS)))):
        c = int(rng.integers(0, n))
        w = rng.uniform(0.8, 2.5) * FPS
        smile += rng.uniform(0.15, 0.35) * np.exp(-0.5 * ((np.arange(n) - c) / (w / 2)) ** 2)
    brow = 0.08 * _noise(rng, n, 15)
    for seg in segments:
        if seg.party == "A" and seg.kind == "turn":
            for _w, s, _e in seg.words:
                if rng.random() < 0.12:
                    c = int(s * FPS)
                    brow += rng.uniform(0.3, 0.7) * np.exp(-0.5 * ((np.arange(n) - c - 3) / 3.0) ** 2)
            if seg.text.rstrip().endswith("?"):
                brow += 0.5 * np.exp(-0.5 * ((np.arange(n) - seg.end * FPS + 5) / 6.0) ** 2)
    brow += 0.25 * listen_s * (rng.random() < 0.5)

    P[:, _COL["smile"]] = smile
    P[:, _COL["blink_l"]] = blink_l
    P[:, _COL["blink_r"]] = blink_r
    P[:, _COL["brow"]] = brow
    P[:, _COL["head_yaw"]] = yaw
    P[:, _COL["head_pitch"]] = pitch
    P[:, _COL["head_roll"]] = roll
    P[:, _COL["gaze_x"]] = gaze[:, 0]
    P[:, _COL["gaze_y"]] = gaze[:, 1]
    extra = {
        "partner_gaze": [round(float(partner[0]), 4), round(float(partner[1]), 4)],
        "articulation_strength": round(strength, 4),
        "state_per_frame": "".join(np.where(a_speak, "S", np.where(listening, "L", "I")).tolist()),
    }
    return clip_params(P), extra


# --------------------------------------------------------------------------------------------


def generate_conversation(
    seed: int,
    split: str = "train",
    duration_s: float = 30.0,
    identity_seed: int | None = None,
    voice_a: Voice | None = None,
    voice_b: Voice | None = None,
) -> Conversation:
    """Generate one conversation, deterministic from ``seed`` (and the split's voices/identities)."""
    if duration_s < 2.0:
        raise ValueError("duration_s must be at least 2 s")
    rng = np.random.default_rng([int(seed), 0xC0DE])
    ids = identities_for_split(split)
    voices = voices_for_split(split)
    if identity_seed is None:
        identity_seed = int(ids[int(rng.integers(len(ids)))])
    ia, ib = rng.choice(len(voices), size=2, replace=False)
    va = voice_a or voices[int(ia)]
    vb = voice_b or voices[int(ib)]
    n = int(round(duration_s * FPS))
    n_samples = n * SAMPLES_PER_FRAME
    end_s = n / FPS

    sched = _schedule(rng, end_s, {"A": va, "B": vb})
    segments = []
    for seg, _audio in sched:
        if seg.start >= end_s:
            continue
        if seg.end > end_s:
            seg.truncated = True
            seg.end = end_s
            seg.phonemes = [(p, s, min(e, end_s)) for p, s, e in seg.phonemes if s < end_s]
            seg.words = [(w, s, min(e, end_s)) for w, s, e in seg.words if s < end_s]
        segments.append(seg)
    sched = [(s, a) for s, a in sched if s.start < end_s]
    gain_a = float(rng.uniform(0.7, 1.0))
    gain_b = float(rng.uniform(0.5, 1.0))
    speaker = _mix(sched, "A", n_samples, gain_a)
    listener = _mix(sched, "B", n_samples, gain_b)
    noise_floor = float(rng.uniform(0.0005, 0.004))
    listener += noise_floor * rng.standard_normal(n_samples).astype(np.float32)
    params, extra = behaviour(rng, segments, n, speaker)
    extra.update(
        {"gain_a": round(gain_a, 4), "gain_b": round(gain_b, 4), "listener_noise_rms": round(noise_floor, 5)}
    )
    return Conversation(
        seed=int(seed),
        split=split,
        identity=identity_from_seed(identity_seed),
        voice_a=va,
        voice_b=vb,
        segments=sorted(segments, key=lambda s: s.start),
        speaker=np.clip(speaker, -1.0, 1.0),
        listener=np.clip(listener, -1.0, 1.0),
        params=params,
        extra=extra,
    )
