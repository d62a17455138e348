"""Training the synthetic-face mouth reader on ground-truth renders only, its held-out metrics and the
``python -m dystream_ros.eval.mouth_reader train|eval`` command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .network import (
    DEFAULT_WEIGHTS,
    FORMAT,
    FORMAT_VERSION,
    TRAIN_COMMAND,
    ReaderConfig,
    build_net,
    preprocess,
    to_tensor,
)
from .readers import SyntheticMouthReader

__all__ = ["TrainConfig", "heldout_metrics", "main", "train"]


def sample_articulation(rng: np.random.Generator):
    """A random articulation over the full parameter ranges, with extra mass where speech lives (closed or
    nearly closed mouth, neutral pose) so the reader is accurate there too."""
    from dystream_ros.data.face import PARAM_RANGES, Articulation

    u = rng.uniform

    def mix(p_special, special, lo, hi):
        return float(special() if u() < p_special else u(lo, hi))

    def pose(name, sd):
        lo, hi = PARAM_RANGES[name]
        return float(np.clip(rng.normal(0, sd), lo, hi) if u() < 0.5 else u(lo, hi))

    blink = mix(0.7, lambda: u(0, 0.15), 0, 1)
    r = u()
    lip_close = 0.0 if r < 0.6 else (u(0.7, 1.0) if r < 0.8 else u(0, 1))
    return Articulation(
        jaw_open=mix(0.25, lambda: u(0, 0.08), 0, 1),
        lip_spread=mix(0.4, lambda: 0.0, 0, 1),
        lip_round=mix(0.4, lambda: 0.0, 0, 1),
        lip_close=float(lip_close),
        smile=mix(0.4, lambda: u(-0.2, 0.4), -1, 1),
        blink_l=blink,
        blink_r=(float(np.clip(blink + rng.normal(0, 0.1), 0, 1)) if u() < 0.8
                 else mix(0.6, lambda: 0.0, 0, 1)),
        brow=float(u(-1, 1)),
        head_yaw=pose("head_yaw", 0.2),
        head_pitch=pose("head_pitch", 0.12),
        head_roll=pose("head_roll", 0.1),
        gaze_x=float(u(-1, 1)),
        gaze_y=float(u(-1, 1)),
    )


def targets_of(art, cfg: ReaderConfig) -> np.ndarray:
    vals = {
        "jaw_open": art.jaw_open,
        "lip_close": art.lip_close,
        "head_pitch": art.head_pitch,
        "mouth": art.jaw_open * (1.0 - art.lip_close),
    }
    return np.array([vals[n] for n in cfg.outputs], np.float32)


def augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Imperfect-render robustness: shift/scale/rotation, resolution loss, blur, colour, noise, JPEG."""
    import cv2

    u = rng.uniform
    h, w = img.shape[:2]
    s = u(0.92, 1.08)
    ang = u(-3, 3)
    m = cv2.getRotationMatrix2D((w / 2, h * 0.45), ang, s)
    m[:, 2] += (u(-0.04, 0.04) * w, u(-0.04, 0.04) * h)
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if u() < 0.35:  # resolution loss (a generator rendering at lower resolution, upsampled)
        k = u(0.35, 0.8)
        small = cv2.resize(out, (max(16, int(w * k)), max(16, int(h * k))), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if u() < 0.4:
        sig = u(0.3, 1.8)
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=sig, sigmaY=sig)
    f = out.astype(np.float32)
    gain = u(0.8, 1.2) * rng.uniform(0.93, 1.07, size=3)
    mean = f.mean(axis=(0, 1), keepdims=True)
    f = (f - mean) * u(0.8, 1.2) + mean
    f = f * gain + u(-15, 15)
    if u() < 0.6:
        f += rng.normal(0, u(1, 7), size=f.shape)
    out = np.clip(f, 0, 255).astype(np.uint8)
    if u() < 0.3:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(u(35, 95))])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


def _render_chunk(args) -> tuple[np.ndarray, np.ndarray]:
    """Render ``n`` augmented training (or held-out) samples; runs in a worker process."""
    seed, n, identity_seeds, cfg_dict, do_augment = args
    from dystream_ros.data.face import identity_from_seed, render

    cfg = ReaderConfig.from_dict(cfg_dict)
    rng = np.random.default_rng(seed)
    xs = np.empty((n, cfg.input_size, cfg.input_size, 3), np.uint8)
    ys = np.empty((n, len(cfg.outputs)), np.float32)
    for i in range(n):
        ident = identity_from_seed(int(rng.choice(identity_seeds)))
        art = sample_articulation(rng)
        img = render(ident, art, 256)
        if do_augment:
            img = augment(img, rng)
        xs[i] = preprocess(img[None], cfg)[0]
        ys[i] = targets_of(art, cfg)
    return xs, ys


def render_dataset(n: int, identity_seeds, seed: int, cfg: ReaderConfig, workers: int = 2,
                   augment_: bool = True, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``n`` preprocessed renders of random identities from ``identity_seeds`` with random articulations."""
    from tqdm import tqdm

    chunk = 256
    jobs = [(seed * 1_000_003 + i, min(chunk, n - i * chunk), list(identity_seeds), cfg.to_dict(), augment_)
            for i in range((n + chunk - 1) // chunk)]
    xs, ys = [], []
    bar = tqdm(total=n, desc="render", unit="img", disable=not progress, file=sys.stderr)
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            for x, y in pool.imap(_render_chunk, jobs):
                xs.append(x)
                ys.append(y)
                bar.update(len(x))
    else:
        for job in jobs:
            x, y = _render_chunk(job)
            xs.append(x)
            ys.append(y)
            bar.update(len(x))
    bar.close()
    return np.concatenate(xs), np.concatenate(ys)




@dataclass
class TrainConfig:
    seed: int = 0
    samples: int = 8192
    epochs: int = 8
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    workers: int = 2
    threads: int = 1
    heldout_samples: int = 512
    reader: ReaderConfig = field(default_factory=ReaderConfig)


def _batch_augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cheap per-epoch augmentation of preprocessed uint8 batches: mirror, +-3 px shift, noise."""
    x = x.copy()
    flip = rng.random(len(x)) < 0.5
    x[flip] = x[flip, :, ::-1]
    dy, dx = rng.integers(-3, 4, size=2)
    x = np.roll(x, (int(dy), int(dx)), axis=(1, 2))
    return x


def train(cfg: TrainConfig, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train the synthetic-face reader on ground-truth renders of training identities and write
    safetensors (config, training settings and held-out metrics in the metadata). Returns the metrics."""
    import torch
    from safetensors.torch import save_file
    from tqdm import tqdm

    from dystream_ros.data.face import HELDOUT_IDENTITIES, TRAIN_IDENTITIES

    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    fingerprint = renderer_fingerprint()  # the renderer the training data comes from
    rng = np.random.default_rng(cfg.seed)
    t0 = time.time()
    x, y = render_dataset(cfg.samples, TRAIN_IDENTITIES, cfg.seed, cfg.reader, cfg.workers, True, progress)
    scale = np.asarray(cfg.reader.target_scale, np.float32)
    yn = y / scale
    net = build_net(cfg.reader)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(x) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15)
    bar = tqdm(total=total, desc="train", unit="step", disable=not progress, file=sys.stderr)
    net.train()
    for _epoch in range(cfg.epochs):
        order = rng.permutation(len(x))
        run = 0.0
        for s in range(steps_per_epoch):
            idx = np.sort(order[s * cfg.batch_size : (s + 1) * cfg.batch_size])
            xb = to_tensor(_batch_augment(x[idx], rng))
            yb = torch.from_numpy(yn[idx])
            loss = torch.nn.functional.smooth_l1_loss(net(xb), yb, beta=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            lv = float(loss.detach())
            run = 0.98 * run + 0.02 * lv if s else lv
            bar.set_postfix(loss=f"{run:.4f}")
            bar.update(1)
    bar.close()
    net.eval()
    reader = SyntheticMouthReader(cfg.reader, net)
    metrics = heldout_metrics(reader, n=cfg.heldout_samples, seed=cfg.seed + 1, workers=cfg.workers,
                              progress=progress)
    training = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "reader"}
    training.update(identities=f"TRAIN_IDENTITIES {TRAIN_IDENTITIES.start}..{TRAIN_IDENTITIES.stop - 1}",
                    renderer_sha256=fingerprint,
                    command=f"{TRAIN_COMMAND} --seed {cfg.seed}", seconds=round(time.time() - t0, 1),
                    torch=torch.__version__)
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(cfg.reader.to_dict()),
        "training": json.dumps(training),
        "heldout": json.dumps({**metrics, "identities": f"HELDOUT_IDENTITIES {HELDOUT_IDENTITIES.start}.."
                                                         f"{HELDOUT_IDENTITIES.stop - 1}"}),
    }
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata=meta)
    out.chmod(0o644)
    return metrics


def renderer_fingerprint() -> str:
    """SHA-256 (16 hex) of the renderer source the reader was trained on (to spot renderer drift)."""
    import hashlib

    import dystream_ros.data.face as face

    return hashlib.sha256(Path(face.__file__).read_bytes()).hexdigest()[:16]


def heldout_metrics(reader: SyntheticMouthReader, n: int = 512, seed: int = 1, workers: int = 2,
                    augment_: bool = False, progress: bool = False) -> dict[str, float]:
    """Correlation and MAE per output on renders of the held-out identities (random articulations;
    ``augment_`` adds the training degradations)."""
    from dystream_ros.data.face import HELDOUT_IDENTITIES, identity_from_seed, render

    # Render full frames here (the reader does its own preprocessing, as on real input).
    rng = np.random.default_rng(seed)
    frames, ys = [], []
    for _ in range(n):
        art = sample_articulation(rng)
        img = render(identity_from_seed(int(rng.choice(list(HELDOUT_IDENTITIES)))), art, 256)
        frames.append(augment(img, rng) if augment_ else img)
        ys.append(targets_of(art, reader.cfg))
    y = np.stack(ys)
    p = reader.predict(np.stack(frames))
    out: dict[str, float] = {"samples": int(n)}
    for i, name in enumerate(reader.cfg.outputs):
        out[f"{name}_corr"] = float(np.corrcoef(p[:, i], y[:, i])[0, 1])
        out[f"{name}_mae"] = float(np.abs(p[:, i] - y[:, i]).mean())
    if "jaw_open" in reader.cfg.outputs and "lip_close" in reader.cfg.outputs:
        # Pressed lips hide the jaw (only the chin shows it): also report the jaw where the lips are apart.
        j, c = reader.cfg.outputs.index("jaw_open"), reader.cfg.outputs.index("lip_close")
        apart = y[:, c] < 0.3
        if apart.sum() > 2:
            out["jaw_open_lips_apart_samples"] = int(apart.sum())
            out["jaw_open_lips_apart_corr"] = float(np.corrcoef(p[apart, j], y[apart, j])[0, 1])
            out["jaw_open_lips_apart_mae"] = float(np.abs(p[apart, j] - y[apart, j]).mean())
    return out




def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dystream_ros.eval.mouth_reader",
                                 description="Train / evaluate the synthetic-face mouth reader.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train on ground-truth renders of training identities")
    t.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    t.add_argument("--seed", type=int, default=0)
    d = TrainConfig()
    t.add_argument("--samples", type=int, default=d.samples)
    t.add_argument("--epochs", type=int, default=d.epochs)
    t.add_argument("--workers", type=int, default=d.workers, help="render processes")
    t.add_argument("--threads", type=int, default=d.threads, help="torch threads")
    t.add_argument("--heldout-samples", type=int, default=d.heldout_samples)
    t.add_argument("--quiet", action="store_true")
    e = sub.add_parser("eval", help="held-out-identity accuracy of a weights file")
    e.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    e.add_argument("--samples", type=int, default=512)
    e.add_argument("--seed", type=int, default=12345)
    e.add_argument("--augment", action="store_true", help="apply the training degradations too")
    args = ap.parse_args(argv)
    if args.cmd == "train":
        cfg = TrainConfig(seed=args.seed, samples=args.samples, epochs=args.epochs, workers=args.workers,
                          threads=args.threads, heldout_samples=args.heldout_samples)
        m = train(cfg, args.out, progress=not args.quiet)
        print(json.dumps({"out": str(args.out), "heldout": m}, indent=2))
        return 0
    import torch

    torch.set_num_threads(1)
    reader = SyntheticMouthReader.from_file(args.weights)
    m = heldout_metrics(reader, n=args.samples, seed=args.seed, augment_=args.augment)
    print(json.dumps({"weights": str(args.weights), "heldout": m}, indent=2))
    return 0
