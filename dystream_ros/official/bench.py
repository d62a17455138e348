"""Per-frame cost and release-vs-streaming departure of the official model.

``python -m dystream_ros.official.bench speed --checkpoint official.safetensors`` streams speech-like audio
through one session per mode (all audio buffered up front, so every ``step()`` makes a frame) and prints the
median per-stage milliseconds; ``--random`` uses seeded random weights of the full-size config instead.

``python -m dystream_ros.official.bench departure --checkpoint ...`` runs ``release`` and ``streaming``
(over ``--grid`` lookahead:window settings) on the same audio with the same per-frame noise and reports
the latent RMS difference relative to the release latents' spread (per-dimension std over time).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np
import torch

from dystream_ros.official.config import OfficialConfig
from dystream_ros.official.pipeline import OfficialPipeline, load

__all__ = ["departure", "run_mode", "speech_like"]


_TEXTS = (
    "The quick brown fox jumps over the lazy dog while we talk about the weather.",
    "Yes, I see what you mean, that sounds really interesting to me.",
)


def speech_like(seconds: float, seed: int = 0, sample_rate: int = 16000) -> tuple[np.ndarray, np.ndarray]:
    """Speaker and listener tracks of espeak-ng speech (data/speech.py): the speaker talks throughout, the
    listener answers once in the middle; both exactly ``seconds`` long."""
    from dystream_ros.data.speech import TRAIN_VOICES, synthesize

    n = int(seconds * sample_rate)
    spk = np.zeros(0, np.float32)
    i = seed
    while len(spk) < n:
        u = synthesize(_TEXTS[i % 2], TRAIN_VOICES[i % len(TRAIN_VOICES)])
        spk = np.concatenate([spk, u.audio, np.zeros(sample_rate // 5, np.float32)])
        i += 1
    lis = np.zeros(n, np.float32)
    reply = synthesize(_TEXTS[1], TRAIN_VOICES[(seed + 1) % len(TRAIN_VOICES)]).audio[: n // 3]
    lis[n // 3 : n // 3 + len(reply)] = 0.5 * reply
    return spk[:n].astype(np.float32), lis


def run_mode(
    pipe: OfficialPipeline,
    spk: np.ndarray,
    lis: np.ndarray,
    frames: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> tuple[np.ndarray, list[dict[str, float]]]:
    """All audio pushed, then frames stepped: (latents (N, D), per-frame timings)."""
    from tqdm import tqdm

    ref = np.full((64, 64, 3), 128, np.uint8)
    s = pipe.start_session(ref, seed=seed)
    s.push_audio(speaker=spk, listener=lis)
    n = s.frames_available() if frames is None else min(frames, s.frames_available())
    lat, tim = [], []
    for _ in tqdm(range(n), desc=pipe.mode, unit="frame", disable=not progress):
        f = s.step()
        lat.append(f.latent)
        tim.append(f.timings)
    return np.stack(lat), tim


def departure(release: np.ndarray, streaming: np.ndarray) -> dict[str, float]:
    """RMS(streaming - release) / mean per-dimension std of the release latents; and their correlation."""
    k = min(len(release), len(streaming))
    r, s = release[:k], streaming[:k]
    spread = float(r.std(axis=0).mean())
    rms = float(np.sqrt(((r - s) ** 2).mean()))
    rc, sc = r - r.mean(0), s - s.mean(0)
    corr = float((rc * sc).sum() / np.sqrt((rc**2).sum() * (sc**2).sum()))
    return {"frames": k, "rms": rms, "spread": spread, "rel_rms": rms / spread, "corr": corr}


def _medians(tim: list[dict[str, float]], skip: int) -> dict[str, float]:
    t = tim[skip:] or tim
    return {k: round(statistics.median(x[k] for x in t), 1) for k in t[0]}


_MODEL: dict = {}


def _load(args, mode: str, **streaming) -> OfficialPipeline:
    """A pipeline in ``mode``; the weights are loaded once and shared (other streaming settings allowed)."""
    if "model" not in _MODEL:
        src = OfficialConfig() if args.random else args.checkpoint
        _MODEL["model"] = load(src, device=args.device, render=args.render, half=args.half).model
        _MODEL["cfg"] = _MODEL["model"].cfg
    model = _MODEL["model"]
    model.cfg = _MODEL["cfg"].replace(streaming=streaming) if streaming else _MODEL["cfg"]
    return OfficialPipeline(model, "bench", args.device, mode, args.render)


def _speed(args) -> dict:
    spk, lis = speech_like(args.seconds, seed=1)
    if args.speaker_only:
        lis = np.zeros_like(lis)
    out = {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "device": args.device,
        "render": args.render,
        "seconds": args.seconds,
    }
    for mode in args.modes.split(","):
        pipe = _load(args, mode)
        t0 = time.perf_counter()
        _, tim = run_mode(pipe, spk, lis, frames=args.frames)
        wall = time.perf_counter() - t0
        out[mode] = {
            "frames": len(tim),
            "median_ms": _medians(tim, skip=2),
            "first_frame_ms": tim[0],
            "wall_per_frame_ms": round(1000 * wall / len(tim), 1),
        }
        print(json.dumps({mode: out[mode]}), flush=True)
    return out


def _departure(args) -> dict:
    spk, lis = speech_like(args.seconds, seed=2)
    rel, _ = run_mode(_load(args, "release"), spk, lis)
    out = {"seconds": args.seconds, "runs": []}
    for item in args.grid.split(","):
        la, win = (int(x) for x in item.split(":"))
        pipe = _load(args, "streaming", lookahead_frames=la, audio_window_frames=win)
        st, tim = run_mode(pipe, spk, lis)
        d = departure(rel, st)
        d.update(lookahead_frames=la, audio_window_frames=win, step_ms=_medians(tim, 2)["total"])
        out["runs"].append(d)
        print(json.dumps(d), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("speed", "departure"))
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--random", action="store_true", help="seeded random full-size weights")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--half", default="none", choices=("none", "float16", "bfloat16"))
    ap.add_argument("--render", action="store_true")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--modes", default="release,streaming")
    ap.add_argument("--speaker-only", action="store_true")
    ap.add_argument(
        "--grid",
        default="0:50,1:50,3:50,1:25,1:96",
        help="streaming settings to compare, lookahead_frames:audio_window_frames,...",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.random and not args.checkpoint:
        ap.error("--checkpoint or --random")
    torch.set_grad_enabled(False)
    res = _speed(args) if args.what == "speed" else _departure(args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
