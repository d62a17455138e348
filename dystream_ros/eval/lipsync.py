"""Lip-sync and listener-behaviour measurement that does not trust the generator.

The mouth is *read from the pixels* by :class:`~dystream_ros.eval.mouth_reader.MouthReader` (a small
CNN trained only on ground-truth renders of the synthetic face, or MediaPipe FaceMesh for
photographic faces) and compared with the audio that drove the avatar, SyncNet style:

- :func:`audio_envelope` turns 16 kHz audio into one speech-band energy value per video frame;
- :func:`sync_scores` band-passes the mouth signal and a reference (the envelope, or the ground-truth
  articulation where it is known) to the syllable rate (2-7 Hz), correlates them at every offset in
  ``[-max_offset, max_offset]`` frames and reports the best offset, the peak correlation and a
  confidence (peak minus median over the offsets, the same construction as SyncNet's LSE-C, on a
  correlation scale: about 0 for unrelated signals, up to 2). Not comparable to SyncNet's numbers; compare
  against ground-truth renders measured the same way (``gt`` in :func:`evaluate`);
- :func:`listener_behaviour` compares head motion while the other party speaks, while the avatar
  speaks and in silence;
- :func:`evaluate` combines them; the replay's ``report.json`` ``lipsync`` field is its output;
- ``dystream eval lipsync`` runs it on an MP4 (PyAV) or a directory of frames.

Conventions (tested in ``test/test_lipsync.py``):

- Frame ``t`` of the video covers audio samples ``[t * sr / fps, (t + 1) * sr / fps)``.
- ``offset_frames = k`` means the mouth signal matches the reference best when the video is read
  ``k`` frames *later* than the audio: ``mouth[t + k] ~ reference[t]``. **Positive = video lags audio**
  (the mouth moves after the sound), negative = video leads audio. One frame is 40 ms at 25 fps.
- ``speaker_audio`` is the avatar's own voice (what its lips should follow); ``listener_audio`` is the
  other party's voice (what the avatar hears while it listens). Either may be ``None``.

Everything returned by the public functions is plain Python (floats, ints, lists, dicts), so it can
be written to JSON directly.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dystream_ros.config import FPS, SAMPLE_RATE
from dystream_ros.io.wav import read_wav, to_float_mono

__all__ = [
    "MAX_OFFSET",
    "activity",
    "audio_envelope",
    "band_pass",
    "evaluate",
    "gt_columns",
    "jsonable",
    "listener_behaviour",
    "load_audio",
    "load_frames",
    "load_reader",
    "mouth_openness",
    "register",
    "sync_scores",
]

MAX_OFFSET = 15
#: Speech band of the envelope (Hz).
SPEECH_BAND = (250.0, 4000.0)
#: Envelope dynamic range: 0 is ``ENVELOPE_RANGE_DB`` below the loud frames, 1 at their level.
ENVELOPE_RANGE_DB = 40.0
#: Frames quieter than this (dBFS, RMS of the band-passed signal) are silence whatever the track's level.
SILENCE_DBFS = -60.0
#: An envelope value above this counts as voice activity (about 16 dB below the loud frames).
ACTIVITY_THRESHOLD = 0.6
#: Modulation band (Hz) in which mouth and envelope are compared: the syllable rate. It removes the slow
#: "talking turn on/off" component, which correlates at every offset and would flatten the confidence.
SYNC_BAND = (2.0, 7.0)


# --------------------------------------------------------------------------------------------
# Audio


def audio_envelope(
    audio_16k: np.ndarray,
    fps: float = FPS,
    *,
    n_frames: int | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Per-video-frame speech-band energy of mono audio, normalised to [0, 1].

    The audio is band-passed to :data:`SPEECH_BAND` (zero-phase, so no delay is introduced), its RMS is
    taken over each frame's samples (frame ``t`` = samples ``[t*sr/fps, (t+1)*sr/fps)``) in dB, and
    mapped linearly so that the track's loud frames (99th percentile) are 1 and everything
    :data:`ENVELOPE_RANGE_DB` below them, or below :data:`SILENCE_DBFS` absolute, is 0. A silent track
    gives all zeros. ``int16`` input is scaled by 1/32768.

    Returns float32 ``[T]`` with ``T = n_frames`` if given (zero-padded or cut) else
    ``ceil(len(audio) * fps / sample_rate)``.
    """
    from scipy.signal import butter, sosfiltfilt

    a = to_float_mono(audio_16k).astype(np.float64)
    spf = sample_rate / float(fps)
    if n_frames is None:
        n_frames = int(math.ceil(len(a) / spf - 1e-9))
    n_frames = int(n_frames)
    if n_frames <= 0:
        return np.zeros(0, np.float32)
    if len(a) > 27:
        lo, hi = SPEECH_BAND
        hi = min(hi, 0.45 * sample_rate)
        sos = butter(4, [lo, hi], btype="bandpass", fs=sample_rate, output="sos")
        a = sosfiltfilt(sos, a)
    need = int(math.ceil(n_frames * spf))
    if len(a) < need:
        a = np.concatenate([a, np.zeros(need - len(a))])
    edges = np.round(np.arange(n_frames + 1) * spf).astype(np.int64)
    csum = np.concatenate([[0.0], np.cumsum(a * a)])
    energy = (csum[edges[1:]] - csum[edges[:-1]]) / np.maximum(edges[1:] - edges[:-1], 1)
    db = 10.0 * np.log10(np.maximum(energy, 1e-12))
    top = float(np.percentile(db, 99))
    floor = max(top - ENVELOPE_RANGE_DB, SILENCE_DBFS)
    if top <= SILENCE_DBFS:
        return np.zeros(n_frames, np.float32)
    env = np.clip((db - floor) / (top - floor), 0.0, 1.0)
    return env.astype(np.float32)


def activity(envelope: np.ndarray, threshold: float = ACTIVITY_THRESHOLD, *, fill_frames: int = 5,
             min_frames: int = 3) -> np.ndarray:
    """Voice activity per frame from an :func:`audio_envelope`: above ``threshold``, with gaps shorter
    than ``fill_frames`` inside speech filled and bursts shorter than ``min_frames`` dropped."""
    act = np.asarray(envelope) > threshold
    return _drop_short(_fill_gaps(act, fill_frames), min_frames)


def _runs(mask: np.ndarray):
    """(start, end, value) of the constant runs of a boolean array."""
    if len(mask) == 0:
        return []
    change = np.flatnonzero(np.diff(mask.astype(np.int8))) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(mask)]])
    return [(int(s), int(e), bool(mask[s])) for s, e in zip(starts, ends, strict=True)]


def _fill_gaps(mask: np.ndarray, max_gap: int) -> np.ndarray:
    out = mask.copy()
    runs = _runs(mask)
    for i, (s, e, v) in enumerate(runs):
        if not v and 0 < i < len(runs) - 1 and e - s < max_gap:
            out[s:e] = True
    return out


def _drop_short(mask: np.ndarray, min_len: int) -> np.ndarray:
    out = mask.copy()
    for s, e, v in _runs(mask):
        if v and e - s < min_len:
            out[s:e] = False
    return out


# --------------------------------------------------------------------------------------------
# Sync


def _masked_corr(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return float("nan")
    x = x[ok] - x[ok].mean()
    y = y[ok] - y[ok].mean()
    den = math.sqrt(float(np.dot(x, x)) * float(np.dot(y, y)))
    if den < 1e-12:
        return float("nan")
    return float(np.dot(x, y) / den)


def _lag_corr(mouth: np.ndarray, reference: np.ndarray, k: int) -> float:
    """corr(mouth[t + k], reference[t]) over the frames where both exist."""
    n = len(mouth)
    if k >= 0:
        return _masked_corr(mouth[k:], reference[: n - k])
    return _masked_corr(mouth[: n + k], reference[-k:])


def band_pass(x: np.ndarray, fps: float = FPS,
              band: tuple[float, float] | None = SYNC_BAND) -> np.ndarray:
    """Zero-phase band-pass of a per-frame signal (NaN frames are bridged for filtering and stay NaN).
    ``band=None`` returns the signal unchanged; clips shorter than 8 frames are only mean-centred."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if band is None:
        return x
    from scipy.signal import butter, sosfiltfilt

    ok = np.isfinite(x)
    if ok.sum() < 8:
        return x - np.nanmean(x) if ok.any() else x
    idx = np.arange(len(x))
    filled = np.interp(idx, idx[ok], x[ok])
    lo, hi = band
    hi = min(hi, 0.45 * fps)
    sos = butter(2, [lo, hi], btype="bandpass", fs=fps, output="sos")
    y = sosfiltfilt(sos, filled - filled.mean(), padlen=min(3 * (2 * len(sos) + 1), len(x) - 1))
    y[~ok] = np.nan
    return y


def sync_scores(mouth: np.ndarray, reference: np.ndarray, max_offset: int = MAX_OFFSET, *,
                fps: float = FPS, band: tuple[float, float] | None = SYNC_BAND) -> dict[str, Any]:
    """Audio-visual offset and SyncNet-style confidence of a mouth signal against a reference.

    Both signals are band-passed to ``band`` Hz (:data:`SYNC_BAND`, the syllable rate; ``None``: raw), then
    ``curve[i]`` is the Pearson correlation of ``mouth[t + k]`` with ``reference[t]`` for
    ``k = offsets[i]`` in ``[-max_offset, max_offset]`` (NaN frames, e.g. no face found, are skipped).

    Returns ``offset_frames`` (the best ``k``; **positive = video lags audio**), ``correlation`` (the
    curve at that offset), ``correlation_at_zero``, ``confidence`` (peak minus median of the curve: about 0
    for unrelated signals, up to 2), ``offsets`` and ``curve`` (lists), ``band`` and the ``max_offset``
    actually used (reduced for short clips so that every offset keeps at least half the frames). A
    constant signal has no correlation: it gives offset 0, confidence 0 and correlation NaN.
    """
    m = np.asarray(mouth, dtype=np.float64).reshape(-1)
    r = np.asarray(reference, dtype=np.float64).reshape(-1)
    n = min(len(m), len(r))
    m, r = band_pass(m[:n], fps, band), band_pass(r[:n], fps, band)
    max_offset = int(max(0, min(int(max_offset), n // 2)))
    offsets = list(range(-max_offset, max_offset + 1))
    curve = np.array([_lag_corr(m, r, k) for k in offsets], dtype=np.float64)
    if not np.isfinite(curve).any():
        return {
            "offset_frames": 0,
            "confidence": 0.0,
            "correlation": float("nan"),
            "correlation_at_zero": float("nan"),
            "band": list(band) if band else None,
            "max_offset": max_offset,
            "offsets": offsets,
            "curve": [float("nan")] * len(offsets),
        }
    filled = np.where(np.isfinite(curve), curve, -1.0)
    best = int(np.argmax(filled))
    # Ties (e.g. a periodic signal): prefer the offset nearest to zero.
    ties = np.flatnonzero(filled >= filled[best] - 1e-12)
    best = int(ties[np.argmin(np.abs(np.array(offsets)[ties]))])
    peak = float(curve[best])
    return {
        "offset_frames": int(offsets[best]),
        "confidence": float(peak - np.nanmedian(curve)),
        "correlation": peak,
        "correlation_at_zero": float(curve[max_offset]),
        "band": list(band) if band else None,
        "max_offset": max_offset,
        "offsets": offsets,
        "curve": [float(c) for c in curve],
    }


# --------------------------------------------------------------------------------------------
# Listener behaviour


def _motion(signal: np.ndarray) -> np.ndarray:
    """Per-frame motion magnitude: |x[t] - x[t-1]| (1-D) or its L2 norm over columns (T x K); the first
    frame gets the second frame's value. NaN frames stay NaN."""
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"pitch_or_motion must be [T] or [T, K], got shape {x.shape}")
    if len(x) < 2:
        return np.zeros(len(x))
    d = np.sqrt((np.diff(x, axis=0) ** 2).sum(axis=1))
    return np.concatenate([d[:1], d])


def listener_behaviour(
    pitch_or_motion: np.ndarray,
    speaker_audio: np.ndarray | None,
    listener_audio: np.ndarray | None,
    *,
    fps: float = FPS,
    sample_rate: int = SAMPLE_RATE,
    mouth: np.ndarray | None = None,
) -> dict[str, Any]:
    """Head motion (and, with ``mouth``, mouth opening) by conversational state.

    ``pitch_or_motion`` is head pitch per frame ``[T]`` (or several pose angles ``[T, K]``); motion is
    the frame-to-frame change (radians per frame for a pitch in radians). States per frame, from voice
    activity (:func:`activity`) of the two tracks: ``other`` (only the other party speaks: the avatar
    listens), ``self`` (only the avatar speaks), ``both`` (overlap), ``silence``.

    Returns ``frames`` (count per state), ``motion`` (mean motion per state, NaN where a state has no
    frames), ``pitch_std`` (std of the signal per state), ``listen_vs_silence`` (motion ratio other /
    silence: > 1 means the avatar moves more while it listens than when nobody speaks),
    ``listen_vs_speak`` (other / self), and with ``mouth`` ``mouth`` (mean opening per state: a good
    listener keeps its mouth nearly closed in ``other``).
    """
    sig = np.asarray(pitch_or_motion, dtype=np.float64)
    n = len(sig)
    motion = _motion(sig)
    zeros = np.zeros(n, dtype=bool)
    act_self = zeros if speaker_audio is None else activity(
        audio_envelope(speaker_audio, fps, n_frames=n, sample_rate=sample_rate))
    act_other = zeros if listener_audio is None else activity(
        audio_envelope(listener_audio, fps, n_frames=n, sample_rate=sample_rate))
    states = {
        "other": act_other & ~act_self,
        "self": act_self & ~act_other,
        "both": act_self & act_other,
        "silence": ~act_self & ~act_other,
    }
    flat = sig if sig.ndim == 1 else sig[:, 0]

    def mean(x, m):
        v = x[m]
        v = v[np.isfinite(v)]
        return float(v.mean()) if len(v) else float("nan")

    def std(x, m):
        v = x[m]
        v = v[np.isfinite(v)]
        return float(v.std()) if len(v) > 1 else float("nan")

    out: dict[str, Any] = {
        "frames": {k: int(m.sum()) for k, m in states.items()},
        "motion": {k: mean(motion, m) for k, m in states.items()},
        "pitch_std": {k: std(flat, m) for k, m in states.items()},
    }

    def ratio(a, b):
        x, y = out["motion"][a], out["motion"][b]
        if not (math.isfinite(x) and math.isfinite(y)) or y <= 1e-9:
            return float("nan")
        return float(x / y)

    out["listen_vs_silence"] = ratio("other", "silence")
    out["listen_vs_speak"] = ratio("other", "self")
    if mouth is not None:
        mo = np.asarray(mouth, dtype=np.float64)[:n]
        if len(mo) < n:
            mo = np.concatenate([mo, np.full(n - len(mo), np.nan)])
        out["mouth"] = {k: mean(mo, m) for k, m in states.items()}
    return out


# --------------------------------------------------------------------------------------------
# Ground truth


def gt_columns(gt_params) -> dict[str, np.ndarray]:
    """Columns of a ground-truth articulation: a ``(T, P)`` array in ``ARTICULATION_FIELDS`` order
    (``params.npy`` of ``dystream synth``), a structured array, or a dict of name -> ``[T]``."""
    if isinstance(gt_params, dict):
        return {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in gt_params.items()}
    arr = np.asarray(gt_params)
    if arr.dtype.names:
        return {k: arr[k].astype(np.float64).reshape(-1) for k in arr.dtype.names}
    from dystream_ros.data.face import ARTICULATION_FIELDS

    if arr.ndim != 2 or arr.shape[1] != len(ARTICULATION_FIELDS):
        raise ValueError(f"gt_params: expected (T, {len(ARTICULATION_FIELDS)}) columns "
                         f"{ARTICULATION_FIELDS}, got shape {arr.shape}")
    return {f: arr[:, i].astype(np.float64) for i, f in enumerate(ARTICULATION_FIELDS)}


def gt_mouth(cols: dict[str, np.ndarray]) -> np.ndarray:
    """Visible mouth opening of a ground-truth articulation: ``jaw_open * (1 - lip_close)`` (lip_close = 1
    seals the mouth whatever the jaw); what the reader's ``mouth`` output estimates."""
    jaw = cols["jaw_open"]
    close = cols.get("lip_close", np.zeros_like(jaw))
    return jaw * (1.0 - close)


def _pad_to(x: np.ndarray, n: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)[:n]
    if len(x) < n:
        x = np.concatenate([x, np.full(n - len(x), np.nan)])
    return x


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.abs(a[ok] - b[ok]).mean()) if ok.any() else float("nan")


# --------------------------------------------------------------------------------------------
# Combined


_DEFAULT_READERS: dict[str, Any] = {}


def load_reader(kind_or_reader):
    """A loaded :class:`~dystream_ros.eval.mouth_reader.MouthReader`: ``kind_or_reader`` itself, or the
    shipped reader of that kind (``synthetic``, ``mediapipe``), loaded once per process."""
    from dystream_ros.eval.mouth_reader.readers import MouthReader

    if isinstance(kind_or_reader, str):
        if kind_or_reader not in _DEFAULT_READERS:
            _DEFAULT_READERS[kind_or_reader] = MouthReader.load(kind_or_reader)
        return _DEFAULT_READERS[kind_or_reader]
    return kind_or_reader


def mouth_openness(frames: np.ndarray, reader: Any = "synthetic") -> np.ndarray:
    """Mouth opening per frame of ``uint8 [T, H, W, 3]`` RGB frames, read by the shipped synthetic-face
    reader (or ``reader="mediapipe"``, or a loaded :class:`MouthReader`): float32 ``[T]``, NaN where
    no face was found."""
    return load_reader(reader).read(frames)["mouth"]


def jsonable(obj, digits: int | None = None):
    """Plain Python for strict JSON, recursively: numpy scalars and arrays as numbers and lists,
    NaN/inf as None, floats rounded to ``digits`` decimals when given."""
    if isinstance(obj, dict):
        return {k: jsonable(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, digits) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist(), digits)
    if isinstance(obj, np.generic):
        return jsonable(obj.item(), digits)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return None
        return float(obj) if digits is None else round(float(obj), digits)
    return obj


def evaluate(
    frames: np.ndarray,
    speaker_audio: np.ndarray | None,
    listener_audio: np.ndarray | None = None,
    gt_params=None,
    *,
    reader: Any = "synthetic",
    fps: float = FPS,
    sample_rate: int = SAMPLE_RATE,
    max_offset: int = MAX_OFFSET,
    readings: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Lip-sync and listener behaviour of a rendered clip.

    ``frames``: ``uint8 [T, H, W, 3]`` RGB at ``fps``, frame 0 aligned with audio sample 0.
    ``speaker_audio``: the avatar's own voice, mono at ``sample_rate`` (float in [-1, 1] or int16).
    ``listener_audio``: the other party's voice (or ``None``). ``gt_params``: the ground-truth
    articulation ``(T, P)`` (``params.npy``) when the clip is a render of known parameters, else ``None``.
    ``reader``: ``"synthetic"`` (default), ``"mediapipe"`` or a loaded ``MouthReader``; ``readings``:
    skip reading and use this ``{"mouth": [T], "pitch": [T]}``.

    Returns a JSON-ready dict (NaN -> ``None``):
    ``offset_frames``, ``confidence``, ``correlation`` (mouth vs the speaker's audio envelope, both
    band-passed to :data:`SYNC_BAND`; these three are the replay report's ``lipsync`` fields),
    ``offset_ms``, ``correlation_at_zero``, ``audio`` (the full :func:`sync_scores` result incl. ``curve``),
    ``gt`` (``None`` or, against the ground truth ``jaw_open * (1 - lip_close)``: ``mouth`` sync scores and,
    unfiltered at offset 0, ``mouth_correlation``, ``mouth_mae``, ``jaw_correlation``, ``pitch_correlation``,
    ``pitch_mae``), ``listener`` (:func:`listener_behaviour` of the read pitch), ``mouth_mean``,
    ``face_found`` (fraction of frames with a reading), ``reader``, ``frames``, ``fps``.
    """
    if readings is None:
        rd = load_reader(reader)
        readings = rd.read(frames)
        reader_name = rd.kind
    else:
        reader_name = str(reader) if isinstance(reader, str) else getattr(reader, "kind", "custom")
    mouth = np.asarray(readings["mouth"], dtype=np.float64)
    pitch = np.asarray(readings["pitch"], dtype=np.float64)
    n = len(mouth)
    if speaker_audio is not None:
        env = audio_envelope(speaker_audio, fps, n_frames=n, sample_rate=sample_rate)
        audio = sync_scores(mouth, env, max_offset, fps=fps)
    else:
        audio = sync_scores(mouth, np.zeros(n), max_offset, fps=fps)
    out: dict[str, Any] = {
        "offset_frames": audio["offset_frames"],
        "offset_ms": audio["offset_frames"] * 1000.0 / fps,
        "confidence": audio["confidence"],
        "correlation": audio["correlation"],
        "correlation_at_zero": audio["correlation_at_zero"],
        "reference": "audio_envelope" if speaker_audio is not None else None,
        "audio": audio,
        "gt": None,
    }
    if gt_params is not None:
        cols = gt_columns(gt_params)
        gm = _pad_to(gt_mouth(cols), n)
        gt: dict[str, Any] = {"mouth": sync_scores(mouth, gm, max_offset, fps=fps)}
        gt["mouth_correlation"] = _masked_corr(mouth, gm)
        gt["mouth_mae"] = _mae(mouth, gm)
        if "head_pitch" in cols:
            gp = _pad_to(cols["head_pitch"], n)
            gt["pitch_correlation"] = _masked_corr(pitch, gp)
            gt["pitch_mae"] = _mae(pitch, gp)
        if "jaw_open" in readings and readings["jaw_open"] is not None:
            gj = _pad_to(cols["jaw_open"], n)
            gt["jaw_correlation"] = _masked_corr(np.asarray(readings["jaw_open"], np.float64), gj)
        out["gt"] = gt
    out["listener"] = listener_behaviour(pitch, speaker_audio, listener_audio, fps=fps,
                                         sample_rate=sample_rate, mouth=mouth)
    finite = np.isfinite(mouth)
    out["mouth_mean"] = float(np.nanmean(mouth)) if finite.any() else float("nan")
    out["face_found"] = float(finite.mean()) if n else 0.0
    out["reader"] = reader_name
    out["frames"] = int(n)
    out["fps"] = float(fps)
    return jsonable(out)


# --------------------------------------------------------------------------------------------
# I/O


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 audio at ``sample_rate`` from a WAV file or any container PyAV reads."""
    path = Path(path)
    if path.suffix.lower() == ".wav":
        return read_wav(path, sample_rate)
    return _decode_audio_av(path, sample_rate)[0]  # decoded and resampled by FFmpeg


def _decode_audio_av(path: Path, sample_rate: int, start_time: float | None = None, stream: int = 0):
    """(mono float32 at sample_rate, sample_rate) of audio stream ``stream``; with ``start_time`` the
    samples are shifted so that index 0 is that time (zero-padded / cut)."""
    import av

    with av.open(str(path)) as c:
        if len(c.streams.audio) <= stream:
            raise ValueError(f"{path}: no audio stream #{stream}")
        st = c.streams.audio[stream]
        rs = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks, first = [], None
        for frame in c.decode(st):
            if first is None and frame.time is not None:
                first = float(frame.time)
            for f in rs.resample(frame):
                chunks.append(f.to_ndarray().reshape(-1))
        for f in rs.resample(None):
            chunks.append(f.to_ndarray().reshape(-1))
    a = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if start_time is not None and first is not None:
        shift = int(round((first - start_time) * sample_rate))
        a = np.concatenate([np.zeros(shift, np.float32), a]) if shift > 0 else a[-shift:]
    return a, sample_rate


def load_frames(video: str | Path | None = None, frames_dir: str | Path | None = None):
    """``(frames uint8 [T, H, W, 3] RGB, fps, audio, t0)`` from an MP4 (PyAV; ``audio`` is the list of its
    audio streams, mono 16 kHz, aligned to the first video frame) or from a directory of images (sorted
    by name; fps unknown -> ``None``, audio ``[]``)."""
    if (video is None) == (frames_dir is None):
        raise ValueError("give exactly one of video / frames_dir")
    if frames_dir is not None:
        import cv2

        d = Path(frames_dir)
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
        if not files:
            raise ValueError(f"{d}: no .png/.jpg frames")
        imgs = []
        for p in files:
            im = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if im is None:
                raise ValueError(f"{p}: unreadable image")
            imgs.append(cv2.cvtColor(im, cv2.COLOR_BGR2RGB))
        return np.stack(imgs), None, [], 0.0
    import av

    imgs, t0, fps = [], None, None
    with av.open(str(video)) as c:
        if not c.streams.video:
            raise ValueError(f"{video}: no video stream")
        st = c.streams.video[0]
        if st.average_rate:
            fps = float(st.average_rate)
        for frame in c.decode(st):
            if t0 is None and frame.time is not None:
                t0 = float(frame.time)
            imgs.append(frame.to_ndarray(format="rgb24"))
        n_audio = len(c.streams.audio)
    if not imgs:
        raise ValueError(f"{video}: no video frames")
    audio = [_decode_audio_av(Path(video), SAMPLE_RATE, start_time=t0 or 0.0, stream=i)[0]
             for i in range(n_audio)]
    return np.stack(imgs), fps, audio, float(t0 or 0.0)


# --------------------------------------------------------------------------------------------
# CLI: dystream eval lipsync


def _find_subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:  # argparse has no public accessor
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def register(subparsers) -> None:
    """Add ``eval lipsync`` to the ``dystream`` command (creating the ``eval`` group if no other module
    did, or joining the existing one)."""
    ev = subparsers.choices.get("eval") if hasattr(subparsers, "choices") else None
    if ev is None:
        ev = subparsers.add_parser("eval", help="evaluation tools (lip-sync, ...)",
                                   description="Evaluation tools.")
    sub = _find_subparsers(ev)
    if sub is None:
        sub = ev.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND")
        ev.set_defaults(func=lambda args: (ev.print_help(), 0)[1])
    p = sub.add_parser(
        "lipsync",
        help="lip-sync offset/confidence and listener behaviour of a rendered clip",
        description=(
            "Reads mouth opening and head pitch from every frame (a regressor trained only on ground-truth "
            "renders, or MediaPipe FaceMesh) and correlates the mouth with the speaker audio's envelope over "
            "+-MAX_OFFSET frames. offset_frames > 0 means the video lags the audio."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", type=Path, help="MP4 (or any PyAV-readable video)")
    src.add_argument("--frames-dir", type=Path, help="directory of frame images, sorted by name")
    p.add_argument("--speaker", type=Path,
                   help="the avatar's own voice (WAV); default: the video's first audio stream")
    p.add_argument("--listener", type=Path,
                   help="the other party's voice (WAV); default: the video's second audio stream, if any")
    p.add_argument("--gt", type=Path, help="ground-truth articulation params.npy (T x P)")
    p.add_argument("--reader", choices=("synthetic", "mediapipe"), default="synthetic")
    p.add_argument("--fps", type=float, default=None, help="frame rate (default: the video's, else 25)")
    p.add_argument("--max-offset", type=int, default=MAX_OFFSET)
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func=_cmd_lipsync)


def _fmt(x, spec=".3f"):
    return "n/a" if x is None else format(x, spec)


def _cmd_lipsync(args) -> int:
    from dystream_ros.eval.mouth_reader.readers import MouthReader

    frames, vfps, vaudio, _ = load_frames(video=args.video, frames_dir=args.frames_dir)
    fps = float(args.fps or vfps or FPS)
    if args.speaker is not None:
        speaker = load_audio(args.speaker)
    elif vaudio:
        speaker = vaudio[0]
    else:
        print("error: --speaker is required (the input has no audio track)", file=sys.stderr)
        return 2
    if args.listener is not None:
        listener = load_audio(args.listener)
    else:
        listener = vaudio[1] if len(vaudio) > 1 else None
    gt = np.load(args.gt) if args.gt else None
    reader = MouthReader.load(args.reader)
    res = evaluate(frames, speaker, listener, gt, reader=reader, fps=fps, max_offset=args.max_offset)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"frames {res['frames']} at {res['fps']:g} fps, reader {res['reader']}, "
          f"face found in {100 * (res['face_found'] or 0):.0f}% of frames")
    print(f"lip-sync vs audio envelope: offset {res['offset_frames']:+d} frames ({res['offset_ms']:+.0f} ms, "
          f"+ = video lags audio), confidence {_fmt(res['confidence'])}, "
          f"correlation {_fmt(res['correlation'])} "
          f"(at 0: {_fmt(res['correlation_at_zero'])})")
    if res["gt"]:
        g = res["gt"]
        print(f"vs ground truth: mouth r={_fmt(g['mouth_correlation'])} mae={_fmt(g['mouth_mae'])} "
              f"(best offset {g['mouth']['offset_frames']:+d}), pitch r={_fmt(g.get('pitch_correlation'))} "
              f"mae={_fmt(g.get('pitch_mae'))} rad")
    lb = res["listener"]
    fr, mo = lb["frames"], lb["motion"]
    print("head motion per frame (frames): " + ", ".join(
        f"{k} {_fmt(mo[k], '.4f')} ({fr[k]})" for k in ("other", "self", "both", "silence")))
    print(f"listening/silence motion ratio {_fmt(lb['listen_vs_silence'], '.2f')}, "
          f"listening/speaking {_fmt(lb['listen_vs_speak'], '.2f')}")
    if "mouth" in lb:
        print("mean mouth opening: " + ", ".join(f"{k} {_fmt(v)}" for k, v in lb["mouth"].items()))
    return 0
