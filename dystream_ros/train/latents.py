"""``dystream train extract``: motion latents and log-mels of every conversation, cached for the generator.

Two steps:

1. ``--standardise`` (on the training set): the flow-matching head draws its noise from N(0, I), so the
   motion latent should have zero mean and unit variance per dimension. The per-dimension mean and
   std of the latents of the training frames are *folded into the weights* (the motion encoder's last
   linear layer and the decoder's first layer), an exact reparametrisation: images decoded from a
   latent and its standardised version are identical. The folded autoencoder is written to
   ``OUT/autoencoder.safetensors``; extract the held-out set with that file and no ``--standardise``.
2. For every conversation: ``latents.npy`` (T, D) float32 (motion encoder on every frame),
   ``ref_latent.npy`` (D,) (the reference image's latent m0) and ``mel.npy`` (2, n_mels, M) float32 (the
   encoder's log-mel front end over the whole clip, both channels, zero-padded by the encoder's left
   context and lookahead, so the window of any frame range is a slice; see
   :func:`dystream_ros.train.generator.encode_mels`). ``index.json`` lists them with the autoencoder's
   fingerprint.

Deterministic: the same data and checkpoint give bit-identical files (eval mode, fixed batch order).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dystream_ros.config import AudioConfig
from dystream_ros.model.checkpoint import load_checkpoint, save_checkpoint
from dystream_ros.model.dystream import DyStreamModel
from dystream_ros.train.data import FrameBank, to_tensor

__all__ = [
    "INDEX_FORMAT",
    "clip_mels",
    "extract",
    "fit_head_basis",
    "fold_latent_normalisation",
    "load_latent_set",
    "motion_fingerprint",
    "padded_length",
]

INDEX_FORMAT = "dystream-latents/1"


def motion_fingerprint(model: DyStreamModel) -> str:
    """sha256 (16 hex) of the motion encoder's weights: identifies the latent space."""
    h = hashlib.sha256()
    for k, v in sorted(model.autoencoder.motion.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def fold_latent_normalisation(model: DyStreamModel, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Make the motion latent ``(m - mean) / std`` without changing any decoded image (in place)."""
    d = model.cfg.latent_dim
    mean, std = mean.double(), std.double()
    out = model.autoencoder.motion.out
    w, b = out.weight.double(), out.bias.double()
    out.weight.copy_((w / std[:, None]).float())
    out.bias.copy_(((b - mean) / std).float())
    if model.render:
        fc = model.autoencoder.decoder.flow.fc  # input [m, m0], each D wide
        w, b = fc.weight.double(), fc.bias.double()
        bias = b + w[:, :d] @ mean + w[:, d:] @ mean
        w = torch.cat([w[:, :d] * std[None], w[:, d:] * std[None]], dim=1)
        fc.weight.copy_(w.float())
        fc.bias.copy_(bias.float())


@torch.no_grad()
def _latents(model: DyStreamModel, images: np.ndarray, batch: int = 64) -> np.ndarray:
    out = []
    for i in range(0, len(images), batch):
        out.append(model.autoencoder.motion(to_tensor(images[i : i + batch])).numpy())
    return np.concatenate(out).astype(np.float32)


def padded_length(num_frames: int, cfg: AudioConfig) -> int:
    """Samples of the padded clip whose mels ``mel.npy`` stores."""
    return cfg.context_samples + num_frames * cfg.samples_per_frame + cfg.lookahead_samples


@torch.no_grad()
def clip_mels(model: DyStreamModel, speaker: np.ndarray, listener: np.ndarray, num_frames: int) -> np.ndarray:
    """Log-mels (2, n_mels, M) of both channels padded with the encoder's context and lookahead."""
    cfg = model.cfg.audio
    n = padded_length(num_frames, cfg)
    wave = np.zeros((2, n), np.float32)
    for i, a in enumerate((speaker, listener)):
        a = np.asarray(a, np.float32)[: num_frames * cfg.samples_per_frame]
        wave[i, cfg.context_samples : cfg.context_samples + len(a)] = a
    return model.audio.mel(torch.from_numpy(wave)).numpy().astype(np.float32)


def _stats(
    model: DyStreamModel, bank: FrameBank, per_conv: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    imgs = []
    for c in range(len(bank)):
        n = bank.num_frames(c)
        for t in np.sort(rng.choice(n, size=min(per_conv, n), replace=False)):
            imgs.append(bank.frame(c, int(t)))
    lat = torch.from_numpy(_latents(model, np.stack(imgs))).double()
    std = lat.std(dim=0).clamp_min(1e-4)
    return lat.mean(dim=0), std


@torch.no_grad()
def extract(
    data: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    standardise: bool = False,
    stats_frames: int = 24,
    seed: int = 0,
    max_conversations: int | None = None,
    batch: int = 64,
    progress: bool = True,
    workers: int = 1,
) -> dict:
    """Write the latent set (see module docstring); returns the index."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_checkpoint(checkpoint, render=True).eval()
    bank = FrameBank(data, size=model.cfg.autoencoder.image_size, max_conversations=max_conversations)
    norm = None
    if standardise:
        mean, std = _stats(model, bank, stats_frames, seed)
        fold_latent_normalisation(model, mean, std)
        norm = {"mean": mean.tolist(), "std": std.tolist()}
    ae_path = save_checkpoint(
        model,
        out / "autoencoder.safetensors",
        extra={"stage": "autoencoder", "standardised": str(standardise)},
    )
    jobs = [(str(data), str(ae_path), str(out), c, max_conversations, batch) for c in range(len(bank))]
    if workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as pool:
            entries = list(
                tqdm(
                    pool.map(_extract_one, jobs),
                    total=len(jobs),
                    desc="extract",
                    unit="conv",
                    disable=not progress,
                )
            )
    else:
        _WORKER.update(model=model, bank=bank)
        entries = [_extract_one(j) for j in tqdm(jobs, desc="extract", unit="conv", disable=not progress)]
    index = {
        "format": INDEX_FORMAT,
        "data": str(Path(data)),
        "autoencoder": ae_path.name,
        "motion_fingerprint": motion_fingerprint(model),
        "latent_dim": model.cfg.latent_dim,
        "audio": model.cfg.to_dict()["audio"],
        "standardised": standardise,
        "normalisation": norm,
        "conversations": entries,
    }
    tmp = out / "index.json.tmp"
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, out / "index.json")
    return index


_WORKER: dict = {}


def _extract_one(job: tuple) -> dict:
    """Latents, reference latent, mels (and params) of conversation ``c`` -> ``OUT/<name>/``."""
    data, ae_path, out, c, max_conversations, batch = job
    if "model" not in _WORKER or _WORKER.get("ae_path", ae_path) != ae_path:
        torch.set_num_threads(1)
        _WORKER["model"] = load_checkpoint(ae_path, render=False).eval()
        _WORKER["bank"] = FrameBank(
            data, size=_WORKER["model"].cfg.autoencoder.image_size, max_conversations=max_conversations
        )
    _WORKER["ae_path"] = ae_path
    model, bank = _WORKER["model"], _WORKER["bank"]
    conv = bank.convs[c]
    d = Path(out) / conv.name
    d.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        frames = np.stack([bank.frame(c, t) for t in range(bank.num_frames(c))])
        lat = _latents(model, frames, batch)
        ref = _latents(model, bank.reference(c)[None])[0]
        mel = clip_mels(model, conv.speaker, conv.listener, conv.num_frames)
    np.save(d / "latents.npy", lat)
    np.save(d / "ref_latent.npy", ref)
    np.save(d / "mel.npy", mel)
    if conv.params is not None:
        np.save(d / "params.npy", conv.params.astype(np.float32))
    return {"dir": conv.name, "num_frames": int(conv.num_frames), "mel_frames": int(mel.shape[-1])}


#: Index entries that may differ between latent sets combined into one (the rest must agree).
_PER_SET_KEYS = ("conversations", "data", "autoencoder")


class LatentSet:
    """A loaded latent set: per conversation mels (2, n_mels, M), latents (T, D), reference latent (D,).

    ``root`` is one set's directory or several (``train generator --latents A B``): their conversations are
    concatenated in order, and the sets must agree on everything but the conversations (motion encoder
    fingerprint, motion space and its normalisation, audio front end; not the source ``data`` nor the
    autoencoder's file name), else ``ValueError``. ``root`` and ``index`` are then the first set's, with
    ``index["conversations"]`` the concatenation."""

    def __init__(self, root: str | Path | Sequence[str | Path], max_conversations: int | None = None) -> None:
        roots = [Path(root)] if isinstance(root, (str, Path)) else [Path(r) for r in root]
        if not roots:
            raise ValueError("LatentSet: no latent set given")
        indices = [json.loads((r / "index.json").read_text()) for r in roots]
        first, base = roots[0], indices[0]
        for r, index in zip(roots, indices, strict=True):
            if index.get("format") != INDEX_FORMAT:
                raise ValueError(f"{r}: not a latent set (run `dystream train extract`)")
            for key in sorted(set(index) | set(base)):
                if key not in _PER_SET_KEYS and index.get(key) != base.get(key):
                    raise ValueError(f"{r}: its {key!r} differs from {first}'s (sets cannot combine)")
        self.root = first
        self.index = dict(base)
        dirs = [(r, e) for r, index in zip(roots, indices, strict=True) for e in index["conversations"]]
        dirs = dirs[:max_conversations]
        self.index["conversations"] = [e for _, e in dirs]
        self.names = [e["dir"] if len(roots) == 1 else f"{r.name}/{e['dir']}" for r, e in dirs]
        paths = [r / e["dir"] for r, e in dirs]
        self.mels = [np.load(d / "mel.npy") for d in paths]
        self.latents = [np.load(d / "latents.npy") for d in paths]
        self.refs = [np.load(d / "ref_latent.npy") for d in paths]
        # Ground-truth articulation per frame (synthetic data only): None unless every conversation has it.
        have = all((d / "params.npy").is_file() for d in paths)
        self.params = [np.load(d / "params.npy") for d in paths] if have else None

    def __len__(self) -> int:
        return len(self.names)

    @property
    def fingerprint(self) -> str:
        return self.index["motion_fingerprint"]


HEAD_POSE = ("head_yaw", "head_pitch", "head_roll")


def fit_head_basis(latents: list[np.ndarray], params: list[np.ndarray]) -> np.ndarray:
    """(3, D) orthonormal rows spanning the latent directions head yaw, pitch and roll move along.

    Least squares of the latents (T, D) on the head-pose parameters (plus an intercept) over all frames;
    the three regression directions are orthonormalised (QR).
    """
    from dystream_ros.data.face import ARTICULATION_FIELDS

    cols = [ARTICULATION_FIELDS.index(n) for n in HEAD_POSE]
    lat = np.concatenate([np.asarray(x, np.float64) for x in latents])
    pose = np.concatenate(
        [np.asarray(p, np.float64)[: len(x), cols] for x, p in zip(latents, params, strict=True)]
    )
    if len(pose) != len(lat):
        raise ValueError("fit_head_basis: fewer articulation frames than latent frames")
    design = np.concatenate([pose, np.ones((len(pose), 1))], axis=1)  # (N, 4)
    coef, *_ = np.linalg.lstsq(design, lat, rcond=None)  # (4, D)
    q, _ = np.linalg.qr(coef[: len(HEAD_POSE)].T)  # (D, 3)
    return q.T.astype(np.float32)


def load_latent_set(root: str | Path, max_conversations: int | None = None) -> LatentSet:
    return LatentSet(root, max_conversations)


def add_arguments(p) -> None:
    p.add_argument("--data", required=True, help="conversations (a `dystream synth` dir or a video folder)")
    p.add_argument("--checkpoint", required=True, help="trained autoencoder checkpoint")
    p.add_argument("--out", required=True, help="output directory of the latent set")
    p.add_argument(
        "--standardise",
        action="store_true",
        help="fold per-dimension latent mean/std into the weights first (training set)",
    )
    p.add_argument("--stats-frames", type=int, default=24, help="frames per conversation for the stats")
    p.add_argument("--max-conversations", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="parallel processes (one torch thread each)")


def extract_main(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    index = extract(
        args.data,
        args.checkpoint,
        args.out,
        standardise=args.standardise,
        stats_frames=args.stats_frames,
        seed=args.seed,
        max_conversations=args.max_conversations,
        workers=args.workers,
    )
    frames = sum(e["num_frames"] for e in index["conversations"])
    print(
        f"{len(index['conversations'])} conversations, {frames} frames -> {args.out} "
        f"(motion fingerprint {index['motion_fingerprint']})"
    )
    return 0
