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
