"""``dystream bench``: per-stage latency of the streaming pipeline on this machine.

Streams synthetic speech-like audio on both channels through one session (all audio buffered up front, so
every ``step()`` produces a frame) and reports the median and p95 of each stage (audio encode, generator,
flow head with CFG, render, total), plus the step time around frame 100 against the last frames to show
that the per-frame cost stays flat (the KV ring has a fixed size). Besides wall time it reports the CPU
time of the stepping thread, which is insensitive to other processes competing for the cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from dystream_ros.config import BACKENDS, ModelConfig

STAGES = ("audio", "generator", "head", "render", "total")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synthetic_audio(seconds: float, sample_rate: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Speaker and listener signals: voiced syllables (harmonics + noise) with turn-taking gaps."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    out = []
    for f0, phase in ((140.0, 0.0), (210.0, np.pi)):
        env = np.clip(np.sin(2 * np.pi * 3.5 * t + phase), 0, None) * (
            np.sin(2 * np.pi * 0.2 * t + phase) > 0
        )
        voice = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
        x = 0.25 * env * voice + 0.01 * rng.standard_normal(t.size)
        out.append(np.clip(x, -1, 1).astype(np.float32))
    return out[0], out[1]


def _stats(values: np.ndarray) -> dict[str, float]:
    return {"median_ms": float(np.median(values)), "p95_ms": float(np.percentile(values, 95))}


def run_bench(
    profile: str | ModelConfig = "lite",
    frames: int = 200,
    render: bool = True,
    threads: int | None = None,
    backend: str = "auto",
    checkpoint: str | None = "random",
    steps: int | None = None,
    warmup: int = 10,
    progress: bool = True,
    renderer: str = "learned",
    reference: str | Path | None = None,
    image_size: int = 0,
) -> dict:
    import torch
    from tqdm import tqdm

    from dystream_ros.runtime.engine import AvatarEngine, model_sampler
    from dystream_ros.runtime.session import load_pipeline
    from dystream_ros.runtime.settings import Settings

    if threads is not None:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    pipe = load_pipeline(checkpoint=checkpoint, profile=profile, render=render, backend=backend)
    load_s = time.perf_counter() - t0
    # the model's own sampler defaults, torch's thread count as set above
    sampler = {**model_sampler(pipe), **({} if steps is None else {"steps": steps})}
    settings = Settings(num_threads=0, warmup_frames=0, renderer=renderer, image_size=image_size, **sampler)
    if reference is not None:
        from dystream_ros.io.images import load_image_file

        ref = load_image_file(str(reference))
    else:
        try:
            ref = pipe.default_reference()
        except FileNotFoundError:
            yy, xx = np.mgrid[0 : pipe.image_size, 0 : pipe.image_size]
            ref = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
    engine = AvatarEngine(settings, pipe=pipe, reference=ref)
    build_ms = None
    if engine.renderer == "photo":  # per-reference build after the first (FaceMesh set up already)
        from dystream_ros.runtime.renderers import build_face, photo_size

        times = []
        for _ in range(3):
            b0 = time.perf_counter()
            build_face("photo", engine.session, ref, photo_size(image_size))
            times.append((time.perf_counter() - b0) * 1000.0)
        build_ms = float(np.median(times))
    sess = engine.session
    total_frames = warmup + frames
    spk, lis = synthetic_audio(total_frames / pipe.fps, pipe.sample_rate, seed=0)
    rows = np.zeros((total_frames, len(STAGES)))
    cpu = np.zeros(total_frames)  # CPU time of this thread per step: robust to other load on the machine
    stream = engine.offline(spk, lis)
    bar = tqdm(
        range(total_frames), desc=f"bench {pipe.profile}", unit="frame", disable=not progress, file=sys.stderr
    )
    for i in bar:
        c0 = time.thread_time()
        out = next(stream)
        cpu[i] = (time.thread_time() - c0) * 1000.0
        rows[i] = [out.frame.timings.get(s, 0.0) for s in STAGES]  # no render stage: 0
    meas = rows[warmup:]
    result = {
        "profile": pipe.profile,
        "checkpoint": pipe.checkpoint_id,
        "backend": pipe.backend.name,
        "render": render,
        "renderer": engine.renderer,
        "image_size": engine.image_size if render else None,
        "reference_build_ms": build_ms,
        "torch_threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "frames": frames,
        "warmup_frames": warmup,
        "euler_steps": sess.steps,
        "guidance": {
            "speaker": sess.guidance.speaker,
            "listener": sess.guidance.listener,
            "anchor": sess.guidance.anchor,
        },
        "load_s": round(load_s, 3),
        "stages": {s: _stats(meas[:, i]) for i, s in enumerate(STAGES)},
        "cpu_ms": _stats(cpu[warmup:]),
    }
    total = rows[:, STAGES.index("total")]
    if total_frames >= 250:  # flat cost: frames 50..150 against the last 101 frames
        result["flat"] = {
            "around_frame": 100,
            "median_ms_around": float(np.median(total[50:151])),
            "cpu_ms_around": float(np.median(cpu[50:151])),
            "last_frame": total_frames - 1,
            "median_ms_last": float(np.median(total[-101:])),
            "cpu_ms_last": float(np.median(cpu[-101:])),
        }
    return result


def format_report(r: dict) -> str:
    size = f"{r['image_size']}x{r['image_size']}" if r["render"] else "off"
    lines = [
        f"dystream bench: profile={r['profile']} checkpoint={r['checkpoint']} backend={r['backend']} "
        f"render={size} renderer={r['renderer']}",
        f"cpu: {r['cpu']} | torch threads: {r['torch_threads']} | euler steps: {r['euler_steps']} | "
        f"guidance: {r['guidance']} | frames: {r['frames']} (+{r['warmup_frames']} warm-up) | "
        f"load {r['load_s']} s",
        f"{'stage':<10}{'median ms':>11}{'p95 ms':>10}",
    ]
    names = {
        "audio": "audio",
        "generator": "generator",
        "head": "flow head",
        "render": "render",
        "total": "total",
    }
    for s in STAGES:
        st = r["stages"][s]
        lines.append(f"{names[s]:<10}{st['median_ms']:>11.2f}{st['p95_ms']:>10.2f}")
    c = r["cpu_ms"]
    lines.append(f"{'cpu/step':<10}{c['median_ms']:>11.2f}{c['p95_ms']:>10.2f}   (thread CPU time)")
    if r.get("reference_build_ms") is not None:
        lines.append(f"photo rig build per reference (after the first): {r['reference_build_ms']:.1f} ms")
    if "flat" in r:
        f = r["flat"]
        lines.append(
            f"step time, frames 50-150: median {f['median_ms_around']:.2f} ms "
            f"(cpu {f['cpu_ms_around']:.2f}); "
            f"last 101 frames (to {f['last_frame']}): median {f['median_ms_last']:.2f} ms "
            f"(cpu {f['cpu_ms_last']:.2f})"
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    if args.renderer == "photo" and args.reference is None:
        from dystream_ros.photo import ASTRONAUT

        args.reference = str(ASTRONAUT)
    if args.frames < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        print("dystream bench: --frames must be >= 1, --warmup >= 0, --threads >= 1", file=sys.stderr)
        return 2
    try:
        r = run_bench(
            profile=args.profile,
            frames=args.frames,
            render=not args.no_render,
            threads=args.threads,
            backend=args.backend,
            checkpoint=None if args.checkpoint == "default" else args.checkpoint,
            steps=args.steps,
            warmup=args.warmup,
            progress=not args.no_progress,
            renderer=args.renderer,
            reference=args.reference,
            image_size=args.image_size,
        )
    except (NotImplementedError, FileNotFoundError, ValueError) as e:
        print(f"dystream bench: {e}", file=sys.stderr)
        return 2
    print(json.dumps(r, indent=2) if args.json else format_report(r))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="per-stage latency of the model pipeline on this machine")
    p.add_argument("--profile", default="lite", choices=("lite", "base"))
    p.add_argument("--frames", type=int, default=200, help="measured frames (after warm-up)")
    p.add_argument("--warmup", type=int, default=10, help="frames run before measuring")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-render", action="store_true", help="latents only (skip the decoder)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--backend", default="auto", choices=BACKENDS)
    p.add_argument(
        "--checkpoint", default="random", help="'random' (default), 'default' (embedded) or a path"
    )
    p.add_argument("--steps", type=int, default=None, help="Euler steps (default: the profile's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--renderer", default="learned", choices=("learned", "photo", "auto"),
                   help="learned decoder (default) or the photo rig (needs a checkpoint with an articulation "
                   "read-out, and a photograph: --reference, default the shipped astronaut)")
    p.add_argument("--reference", help="reference image (default: the embedded avatar; with --renderer "
                   "photo the shipped astronaut photo)")
    p.add_argument("--image-size", type=int, default=0, choices=(0, 256, 512),
                   help="photo rig output side (0: 256)")
    p.set_defaults(func=main)
