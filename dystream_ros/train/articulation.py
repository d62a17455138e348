"""``dystream train articulation-set``: the training set of an articulation model (no latent extraction).

The synthetic conversations carry their ground-truth articulation per frame (``params.npy``, the 13
columns of ``ARTICULATION_FIELDS`` in ``PARAM_RANGES`` units). An articulation model
(``ModelConfig.motion == "articulation"``, :mod:`dystream_ros.model.articulation`) generates that vector,
standardised per column. This stage writes a set in the latent-set format
(:class:`~dystream_ros.train.latents.LatentSet`), so ``dystream train generator`` trains on it unchanged:

- ``latents.npy`` (T, 13): the standardised articulation ``(params - mean) / std``;
- ``ref_latent.npy`` (13,): the standardised rest pose the reference image is rendered in
  (``Articulation(smile=0.2)``, :meth:`FrameBank.reference`), the session's m0;
- ``mel.npy`` and ``params.npy`` as ``dystream train extract`` writes them;
- ``index.json`` with ``"motion": "articulation"`` and the statistics (``normalisation``: mean, std and
  the raw reference). ``mean``/``std`` are computed over every frame of the set, or copied from
  ``--stats-from`` (the training set's, for a held-out set). The set's fingerprint is a hash of them, so
  a validation set standardised differently is refused.

Also the linear read-out of a latent model (:func:`fit_readout`): least squares of ``params.npy`` on
the latents of an extracted latent set (plus an intercept), written next to the latent checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dystream_ros.config import ARTICULATION_DIM, load_profile
from dystream_ros.data.dataset import iter_dataset
from dystream_ros.data.face import ARTICULATION_FIELDS, Articulation
from dystream_ros.model.articulation import Readout
from dystream_ros.model.dystream import DyStreamModel, build_model
from dystream_ros.train.latents import INDEX_FORMAT, clip_mels

__all__ = [
    "REFERENCE_ARTICULATION",
    "articulation_config",
    "build_articulation_model",
    "build_articulation_set",
    "fit_readout",
    "head_axes",
    "readout_main",
    "readout_scores",
    "stats_fingerprint",
]

#: The rest pose the corpus renders reference images in (``FrameBank.reference``).
REFERENCE_ARTICULATION = Articulation(smile=0.2)
STD_FLOOR = 1e-3


def articulation_config(profile: str | Path = "lite"):
    """The config of a profile (a name, or a checkpoint file whose config gives the sizes) with the
    articulation motion space: the same audio encoder, generator and head sizes, D = 13."""
    if Path(str(profile)).suffix == ".safetensors":
        from dystream_ros.model.checkpoint import read_config

        cfg = read_config(profile)
    else:
        cfg = load_profile(str(profile))
    return cfg.replace(motion="articulation", latent_dim=ARTICULATION_DIM)


def stats_fingerprint(mean, std) -> str:
    """Identifies the standardisation (plays the motion fingerprint's part for articulation sets)."""
    h = hashlib.sha256()
    h.update(np.asarray(mean, np.float32).tobytes())
    h.update(np.asarray(std, np.float32).tobytes())
    return "articulation-" + h.hexdigest()[:16]


def head_axes(dim: int = ARTICULATION_DIM) -> np.ndarray:
    """(3, 13) unit rows on head yaw, pitch, roll: the head-pose directions of the articulation space."""
    from dystream_ros.train.latents import HEAD_POSE

    q = np.zeros((len(HEAD_POSE), dim), np.float32)
    for i, n in enumerate(HEAD_POSE):
        q[i, ARTICULATION_FIELDS.index(n)] = 1.0
    return q


def build_articulation_model(
    index: dict, profile: str | Path = "lite", seed: int | None = 0
) -> DyStreamModel:
    """A fresh articulation model (seeded init) carrying the set's standardisation and head axes."""
    model = build_model(articulation_config(profile), render=False, seed=seed)
    norm = index["normalisation"]
    model.articulation.set_statistics(norm["mean"], norm["std"], norm["reference"])
    with torch.no_grad():
        model.head_basis.copy_(torch.from_numpy(head_axes()))
    return model


@torch.no_grad()
def build_articulation_set(
    data: str | Path,
    out: str | Path,
    stats_from: str | Path | None = None,
    max_conversations: int | None = None,
    profile: str = "lite",
    progress: bool = True,
) -> dict:
    """Write the articulation set of ``data`` to ``out`` (module docstring); returns the index."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(articulation_config(profile), render=False, seed=0)  # only its log-mel front end
    convs = []
    for i, conv in enumerate(iter_dataset(Path(data))):
        if max_conversations is not None and i >= max_conversations:
            break
        if conv.params is None:
            raise ValueError(f"{data}/{conv.name}: no ground-truth articulation (params.npy)")
        convs.append((conv.name, conv.num_frames, conv.params.astype(np.float32), conv))
    if not convs:
        raise FileNotFoundError(f"no conversations under {data}")
    if stats_from is not None:
        src = json.loads((Path(stats_from) / "index.json").read_text())
        mean = np.asarray(src["normalisation"]["mean"], np.float32)
        std = np.asarray(src["normalisation"]["std"], np.float32)
    else:
        allp = np.concatenate([p[:n] for _, n, p, _ in convs]).astype(np.float64)
        mean = allp.mean(0).astype(np.float32)
        std = np.maximum(allp.std(0), STD_FLOOR).astype(np.float32)
    ref = REFERENCE_ARTICULATION.to_array()
    entries = []
    for name, n, params, conv in tqdm(convs, desc="articulation set", unit="conv", disable=not progress):
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        mel = clip_mels(model, conv.speaker, conv.listener, n)
        np.save(d / "latents.npy", ((params[:n] - mean) / std).astype(np.float32))
        np.save(d / "ref_latent.npy", ((ref - mean) / std).astype(np.float32))
        np.save(d / "mel.npy", mel)
        np.save(d / "params.npy", params[:n])
        entries.append({"dir": name, "num_frames": int(n), "mel_frames": int(mel.shape[-1])})
    index = {
        "format": INDEX_FORMAT,
        "motion": "articulation",
        "data": str(Path(data)),
        "autoencoder": None,
        "motion_fingerprint": stats_fingerprint(mean, std),
        "latent_dim": ARTICULATION_DIM,
        "fields": list(ARTICULATION_FIELDS),
        "audio": model.cfg.to_dict()["audio"],
        "standardised": True,
        "normalisation": {"mean": mean.tolist(), "std": std.tolist(), "reference": ref.tolist()},
        "conversations": entries,
    }
    tmp = out / "index.json.tmp"
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, out / "index.json")
    return index


def fit_readout(latents: list[np.ndarray], params: list[np.ndarray]) -> Readout:
    """Least squares articulation (PARAM_RANGES units) ~ latent @ W.T + b over all frames (float64)."""
    lat = np.concatenate([np.asarray(x, np.float64) for x in latents])
    par = np.concatenate([np.asarray(p, np.float64)[: len(x)] for x, p in zip(latents, params, strict=True)])
    if len(par) != len(lat):
        raise ValueError("fit_readout: fewer articulation frames than latent frames")
    design = np.concatenate([lat, np.ones((len(lat), 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, par, rcond=None)  # (D + 1, 13)
    return Readout(coef[:-1].T.astype(np.float32), coef[-1].astype(np.float32), tuple(ARTICULATION_FIELDS))


def readout_scores(readout: Readout, latents: list[np.ndarray], params: list[np.ndarray]) -> dict:
    """Per field R² and Pearson correlation of the read-out against the ground truth (pooled frames)."""
    pred = np.concatenate([readout(x) for x in latents]).astype(np.float64)
    gt = np.concatenate([np.asarray(p, np.float64)[: len(x)] for x, p in zip(latents, params, strict=True)])
    out = {}
    for i, f in enumerate(ARTICULATION_FIELDS):
        g, p = gt[:, i], pred[:, i]
        var = g.var()
        r2 = float(1.0 - ((g - p) ** 2).mean() / var) if var > 0 else float("nan")
        r = float(np.corrcoef(g, p)[0, 1]) if var > 0 and p.std() > 0 else float("nan")
        out[f] = {"r2": r2, "r": r}
    return out


@torch.no_grad()
def sample_latents(
    model: DyStreamModel, data: str | Path, every: int = 10, max_conversations: int | None = None,
    progress: bool = True,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Motion latents (T_c, D) and ground-truth articulation (T_c, 13) of every ``every``-th frame of each
    conversation of a synthetic corpus (frames rendered as ``train extract`` renders them): many
    identities for the read-out fit at a fraction of a full extraction's cost."""
    from dystream_ros.train.data import FrameBank
    from dystream_ros.train.latents import _latents

    bank = FrameBank(data, size=model.cfg.autoencoder.image_size, max_conversations=max_conversations,
                     keep_audio=False)
    if not bank.has_params:
        raise ValueError(f"{data}: no ground-truth articulation (params.npy)")
    lats, pars = [], []
    for c in tqdm(range(len(bank)), desc="read-out latents", unit="conv", disable=not progress):
        ts = range(0, bank.num_frames(c), every)
        lats.append(_latents(model, np.stack([bank.frame(c, t) for t in ts])))
        pars.append(np.stack([bank.params(c, t) for t in ts]).astype(np.float32))
    return lats, pars


def readout_main(args) -> int:
    """``dystream train readout``: fit a latent model's read-out and write its side file."""
    from dystream_ros.model.articulation import readout_path, save_readout
    from dystream_ros.model.checkpoint import checkpoint_id, load_checkpoint
    from dystream_ros.train.latents import LatentSet, motion_fingerprint

    if (args.latents is None) == (args.data is None):
        raise ValueError("give either --latents (an extracted latent set) or --data (a synthetic corpus)")
    model = load_checkpoint(args.checkpoint, render=False)
    if model.cfg.motion != "latent":
        raise ValueError(f"{args.checkpoint}: an articulation model needs no read-out")
    fp = motion_fingerprint(model)
    if args.latents is not None:
        data = LatentSet(args.latents, args.max_conversations)
        if data.params is None:
            raise ValueError(f"{args.latents}: no params.npy (a synthetic corpus is needed for the fit)")
        if fp != data.fingerprint:
            raise ValueError(
                f"{args.checkpoint}: its motion encoder is not the one {args.latents} was extracted with"
            )
        lats, pars, source = data.latents, data.params, f"{len(data)} conversations ({data.root.name})"
    else:
        lats, pars = sample_latents(model, args.data, args.every, args.max_conversations)
        source = f"every {args.every}th frame of {len(lats)} conversations ({Path(args.data).name})"
    ro = fit_readout(lats, pars)
    scores = {"train": readout_scores(ro, lats, pars)}
    if args.val_latents:
        val = LatentSet(args.val_latents)
        if val.fingerprint != fp:
            raise ValueError("validation latents come from a different motion encoder")
        scores["heldout"] = readout_scores(ro, val.latents, val.params)
    out = Path(args.out) if args.out else readout_path(args.checkpoint)
    frames = sum(len(x) for x in lats)
    save_readout(ro, out, extra={
        "checkpoint": checkpoint_id(args.checkpoint),
        "motion_fingerprint": fp,
        "fit": f"least squares over {frames} frames: {source}",
    })
    if args.scores:
        Path(args.scores).write_text(json.dumps(scores, indent=1))
    for split, sc in scores.items():
        print(split + ": " + ", ".join(f"{k} r={v['r']:.3f} R2={v['r2']:.3f}" for k, v in sc.items()))
    print(f"-> {out}")
    return 0


def add_readout_arguments(p) -> None:
    p.add_argument("--latents", default=None, help="latent set of training conversations (train extract)")
    p.add_argument("--data", default=None, help="or: a synthetic corpus, sampled every --every frames")
    p.add_argument("--every", type=int, default=10, help="frame stride with --data")
    p.add_argument("--checkpoint", required=True, help="the latent model the read-out is for")
    p.add_argument("--val-latents", default=None, help="held-out latent set to score the read-out on")
    p.add_argument("--out", default=None, help="side file (default: <checkpoint>.readout.safetensors)")
    p.add_argument("--scores", default=None, help="write per-field r / R² (train, held-out) to this JSON")
    p.add_argument("--max-conversations", type=int, default=None)


def add_arguments(p) -> None:
    p.add_argument("--data", required=True, help="conversations with params.npy (a `dystream synth` dir)")
    p.add_argument("--out", required=True, help="output directory of the articulation set")
    p.add_argument("--stats-from", default=None, help="take mean/std from this articulation set (held-out)")
    p.add_argument("--max-conversations", type=int, default=None)
    p.add_argument("--profile", default="lite", help="sizes: a profile name or a checkpoint file")
    p.add_argument("--threads", type=int, default=0)


def articulation_set_main(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    index = build_articulation_set(args.data, args.out, args.stats_from, args.max_conversations, args.profile)
    frames = sum(e["num_frames"] for e in index["conversations"])
    print(f"{len(index['conversations'])} conversations, {frames} frames -> {args.out} "
          f"({index['motion_fingerprint']})")
    return 0
