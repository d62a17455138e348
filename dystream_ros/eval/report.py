"""report.json (DESIGN.md §6): the per-frame record, the report itself, lip-sync scoring glue, the
conversation mix and the plots (matplotlib, Agg).

Shared by the offline replay and the live demo so both reports have the same shape.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dystream_ros.eval import lipsync


def stats(values: Sequence[float] | np.ndarray, keys: Sequence[str] = ("p50", "p95", "p99", "max")) -> dict:
    """Percentiles (linear interpolation) of the finite values, rounded to 0.01; ``None`` when empty."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    x = x[np.isfinite(x)]
    out = {}
    for k in keys:
        if x.size == 0:
            out[k] = None
        elif k == "max":
            out[k] = round(float(x.max()), 2)
        elif k == "mean":
            out[k] = round(float(x.mean()), 2)
        else:
            out[k] = round(float(np.percentile(x, float(k[1:]))), 2)
    return out


class MouthTracker:
    """Reads the mouth opening of rendered frames in batches as they are produced (memory stays flat).

    Uses the project's generator-independent reader (``dystream_ros.eval.mouth_reader``, the
    synthetic-face CNN by default). When it is unavailable, :attr:`note` says why and nothing is read.
    """

    def __init__(self, kind: str = "synthetic", batch: int = 64):
        self.kind, self.batch = kind, batch
        self.note: str | None = None
        self._buf: list[np.ndarray] = []
        self._parts: dict[str, list[np.ndarray]] = {}
        self.frames = 0
        try:
            from dystream_ros.eval.mouth_reader.readers import MouthReader

            self.reader = MouthReader.load(kind)
        except Exception as err:  # missing module or weights: report it, never fail the replay
            self.reader = None
            self.note = f"mouth reader unavailable: {err}"

    def add(self, image: np.ndarray) -> None:
        if self.reader is None:
            return
        self._buf.append(np.asarray(image, dtype=np.uint8))
        if len(self._buf) >= self.batch:
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        out = self.reader.read(np.stack(self._buf))
        for k in ("mouth", "pitch"):
            if out.get(k) is not None:
                self._parts.setdefault(k, []).append(np.asarray(out[k], dtype=np.float64))
        self.frames += len(self._buf)
        self._buf = []

    def readings(self) -> dict[str, np.ndarray] | None:
        if self.reader is None:
            return None
        self._flush()
        if not self._parts.get("mouth"):
            return None
        out = {k: np.concatenate(v) for k, v in self._parts.items()}
        out.setdefault("pitch", np.zeros_like(out["mouth"]))
        return out


def lipsync_entry(readings: dict[str, np.ndarray] | None, speaker_16k: np.ndarray,
                  listener_16k: np.ndarray | None = None, fps: int = 25, note: str | None = None,
                  reader: str = "synthetic") -> tuple[dict, np.ndarray | None, np.ndarray | None]:
    """(report ``lipsync`` entry, mouth per frame, speaker envelope per frame).

    Mouth opening read from the rendered frames (independent of the generator) against the envelope
    of the avatar's own (speaker) audio over ±15 frames (``dystream_ros.eval.lipsync.evaluate``):
    best ``offset_frames`` (positive = video lags audio), SyncNet-style ``confidence`` and the peak
    ``correlation``.
    """
    empty = {"offset_frames": None, "confidence": None, "correlation": None}
    if readings is None:
        return {**empty, "note": note or "no rendered frames"}, None, None
    mouth = readings["mouth"]
    n = len(mouth)
    env = np.asarray(lipsync.audio_envelope(speaker_16k, fps, n_frames=n), dtype=np.float64)
    if n < 8:
        return {**empty, "note": f"too few frames ({n}) to score"}, mouth, env
    res = lipsync.evaluate(None, speaker_16k, listener_16k, reader=reader, fps=fps, readings=readings)
    entry = {k: res.get(k) for k in ("offset_frames", "confidence", "correlation", "offset_ms",
                                     "correlation_at_zero")}
    entry["reader"] = reader
    entry["reference"] = "speaker audio envelope"
    if res.get("listener") is not None:
        entry["listener"] = res["listener"]
    return lipsync.jsonable(entry, digits=4), mouth, env


def write_report(path: str | Path, report: dict) -> None:
    Path(path).write_text(json.dumps(lipsync.jsonable(report, digits=4), indent=2, sort_keys=False) + "\n")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_latency(path: str | Path, step_ms: Sequence[float], processing_ms: Sequence[float] | None = None,
                 av_offset_ms: Sequence[float] | None = None, title: str = "") -> None:
    """Histogram of the per-frame step time (and processing latency / A/V offset when known)."""
    plt = _plt()
    series = [("step_ms (compute per frame)", step_ms), ("processing_ms", processing_ms),
              ("av_offset_ms", av_offset_ms)]
    series = [(n, np.asarray([v for v in s if v is not None], float)) for n, s in series if s is not None]
    series = [(n, s[np.isfinite(s)]) for n, s in series if len(s)]
    fig, axes = plt.subplots(1, max(1, len(series)), figsize=(4.5 * max(1, len(series)), 3.4), squeeze=False)
    for ax, (name, s) in zip(axes[0], series, strict=False):
        ax.hist(s, bins=min(60, max(10, s.size // 10)), color="tab:blue", alpha=0.8)
        for q, c in ((50, "tab:green"), (99, "tab:red")):
            v = float(np.percentile(s, q))
            ax.axvline(v, color=c, ls="--", lw=1, label=f"p{q} {v:.1f} ms")
        ax.set_xlabel(name)
        ax.set_ylabel("frames")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    plt.close(fig)


def plot_lipsync(path: str | Path, mouth: np.ndarray | None, envelope: np.ndarray | None, fps: int = 25,
                 scores: dict | None = None) -> None:
    """Mouth opening (rendered frames) against the audio envelope over time, both normalised."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 3.2))

    def norm(x):
        x = np.asarray(x, float)
        lo, hi = np.nanmin(x), np.nanmax(x)
        return (x - lo) / (hi - lo) if hi > lo else x * 0

    if envelope is not None and len(envelope):
        ax.plot(np.arange(len(envelope)) / fps, norm(envelope), color="tab:gray", lw=1,
                label="audio envelope")
    if mouth is not None and len(mouth):
        ax.plot(np.arange(len(mouth)) / fps, norm(mouth), color="tab:red", lw=1, label="mouth opening")
    ax.set_xlabel("audio time (s)")
    ax.set_ylabel("normalised")
    sub = ""
    if scores and scores.get("offset_frames") is not None:
        sub = (f"offset {scores['offset_frames']} frames, confidence {scores['confidence']}, "
               f"correlation {scores['correlation']}")
    elif scores and scores.get("note"):
        sub = scores["note"]
    ax.set_title(f"lip sync: mouth opening vs audio envelope  {sub}", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    plt.close(fig)


@dataclass
class FrameRecord:
    index: int
    stamp_ns: int
    step_ms: float
    processing_ms: float
    av_offset_ms: float
    state: int
    speaker_level_db: float
    listener_level_db: float
    timings: dict = field(default_factory=dict)


def mix(speaker: np.ndarray, listener: np.ndarray) -> np.ndarray:
    """Both parties in one mono track (sum; scaled down only if it would clip)."""
    n = max(len(speaker), len(listener))
    m = np.zeros(n, np.float32)
    m[: len(speaker)] += speaker
    m[: len(listener)] += listener
    peak = float(np.max(np.abs(m))) if n else 0.0
    return m / peak if peak > 1.0 else m


def build_report(records: list[FrameRecord], *, fps: int, skipped: int, lipsync: dict, pipe=None,
                 backend: str | None = None, profile: str | None = None, checkpoint: str | None = None,
                 mode: str, latency_model: str, extra: dict | None = None) -> dict:
    """report.json (DESIGN.md §6 fields first, then context)."""
    if pipe is not None:
        backend = backend or str(getattr(pipe, "backend_name", None) or "torch")
        profile = profile or str(pipe.profile)
        checkpoint = checkpoint or str(pipe.checkpoint_id)
    stage = {}
    keys = sorted({k for r in records for k in r.timings})
    for k in keys:
        stage[k] = stats([r.timings.get(k) for r in records], ("p50", "p95", "max"))
    rep = {
        "frames": len(records),
        "fps": fps,
        "step_ms": stats([r.step_ms for r in records]),
        "processing_ms": stats([r.processing_ms for r in records]),
        "av_offset_ms": stats([r.av_offset_ms for r in records], ("p50", "p95", "p99")),
        "skipped_frames": int(skipped),
        "lipsync": lipsync,
        "backend": backend,
        "profile": profile,
        "checkpoint": checkpoint,
        "mode": mode,
        "latency_model": latency_model,
        "stage_ms": stage,
    }
    rep.update(extra or {})
    return rep
