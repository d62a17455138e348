"""The articulation motion space: a model whose motion is the renderer's articulation vector.

A model with ``ModelConfig.motion == "articulation"`` generates the 13 columns of
``dystream_ros.data.face.ARTICULATION_FIELDS`` (``D = 13``) directly, standardised per column:
``z = (a - mean) / std`` with ``a`` in ``PARAM_RANGES`` units. It has no warping autoencoder; in its
place (``model.autoencoder``) sits :class:`ArticulationSpace`, which holds the standardisation and the
reference articulation and plays the motion encoder's part for the session: ``autoencoder.motion(image)``
returns the reference motion m0 (the standardised articulation of the rest pose the synthetic corpus
renders its reference images in, ``Articulation(smile=0.2)``), whatever the image. Its tensors
(``autoencoder.motion.mean`` / ``std`` / ``reference``, each (13,)) are part of the checkpoint, so the
loader checks their names and shapes like every other tensor.

The generator, flow head and session run in the standardised space ``z`` (the flow's N(0, I) prior
matches it), so a session's ``Frame.latent`` is ``z``; :meth:`ArticulationSpace.to_articulation` (or
:class:`Readout`, which every model has) gives ``PARAM_RANGES`` units.

:class:`Readout` is the affine map latent -> articulation of any model: for an articulation model its
own de-standardisation, for a latent model a least-squares fit stored in a small side file next to the
checkpoint (``<name>.readout.safetensors``, see :func:`save_readout` / :func:`load_readout`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from dystream_ros.config import ARTICULATION_DIM

__all__ = [
    "READOUT_FORMAT",
    "ArticulationAutoencoder",
    "ArticulationSpace",
    "Readout",
    "load_readout",
    "readout_path",
    "save_readout",
]

READOUT_FORMAT = "dystream_ros-readout/1"


class ArticulationSpace(nn.Module):
    """Standardisation of the articulation vector and the reference motion (buffers, (D,) each).

    ``forward(image (B, 3, S, S)) -> m0 (B, D)``: the standardised reference articulation, repeated.
    """

    def __init__(self, dim: int = ARTICULATION_DIM) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("reference", torch.zeros(dim))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # (B, 3, S, S) -> (B, D). The image only gives the batch size (and keeps the exported graph's
        # input): the reference is taken to be in the rest pose.
        b = image.shape[0]
        return self.reference[None].expand(b, -1) + 0.0 * image.reshape(b, -1)[:, :1]

    @torch.no_grad()
    def set_statistics(self, mean, std, reference) -> None:
        """mean, std, reference: (D,) in ``PARAM_RANGES`` units (``reference`` is standardised here)."""
        mean = torch.as_tensor(np.asarray(mean, np.float32))
        std = torch.as_tensor(np.asarray(std, np.float32))
        ref = torch.as_tensor(np.asarray(reference, np.float32))
        d = self.mean.shape[0]
        if mean.shape != (d,) or std.shape != (d,) or ref.shape != (d,):
            raise ValueError(f"statistics must be ({d},) each, got {mean.shape}, {std.shape}, {ref.shape}")
        if not bool((std > 0).all()) or not bool(torch.isfinite(mean).all()):
            raise ValueError("std must be > 0 and mean finite")
        self.mean.copy_(mean)
        self.std.copy_(std)
        self.reference.copy_((ref - mean) / std)

    def to_articulation(self, z):
        """Standardised (..., D) -> ``PARAM_RANGES`` units (..., D) (numpy or torch, same kind back)."""
        if isinstance(z, torch.Tensor):
            return z * self.std.to(z) + self.mean.to(z)
        return np.asarray(z, np.float32) * self.std.cpu().numpy() + self.mean.cpu().numpy()

    def from_articulation(self, a):
        """``PARAM_RANGES`` units (..., D) -> standardised (..., D)."""
        if isinstance(a, torch.Tensor):
            return (a - self.mean.to(a)) / self.std.to(a)
        mean, std = self.mean.cpu().numpy(), self.std.cpu().numpy()
        return ((np.asarray(a, np.float32) - mean) / std).astype(np.float32)


class ArticulationAutoencoder(nn.Module):
    """What ``DyStreamModel.autoencoder`` is for an articulation model: only ``motion`` (the space)."""

    render = False

    def __init__(self, dim: int = ARTICULATION_DIM) -> None:
        super().__init__()
        self.motion = ArticulationSpace(dim)


@dataclass(frozen=True)
class Readout:
    """Affine map latent (..., D) -> articulation (..., 13) in ``PARAM_RANGES`` units:
    ``a = latent @ weight.T + bias``; ``weight`` (13, D), ``bias`` (13,), float32."""

    weight: np.ndarray
    bias: np.ndarray
    fields: tuple[str, ...]

    def __post_init__(self) -> None:
        w, b = np.asarray(self.weight), np.asarray(self.bias)
        if w.ndim != 2 or b.shape != (w.shape[0],) or len(self.fields) != w.shape[0]:
            raise ValueError(
                f"readout: weight {w.shape}, bias {b.shape} and {len(self.fields)} fields do not match"
            )
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise ValueError("readout: non-finite weights")

    @property
    def latent_dim(self) -> int:
        return int(np.asarray(self.weight).shape[1])

    def __call__(self, latent: np.ndarray) -> np.ndarray:
        z = np.asarray(latent, np.float32)
        if z.shape[-1] != self.latent_dim:
            raise ValueError(f"readout takes (..., {self.latent_dim}) latents, got {z.shape}")
        w, b = np.asarray(self.weight, np.float32), np.asarray(self.bias, np.float32)
        return (z @ w.T + b).astype(np.float32)

    @classmethod
    def of_model(cls, model) -> Readout:
        """An articulation model's own de-standardisation (diagonal)."""
        from dystream_ros.data.face import ARTICULATION_FIELDS

        if model.cfg.motion != "articulation":
            raise ValueError("Readout.of_model needs an articulation model; a latent model's readout is a "
                             "fitted side file (load_readout)")
        sp = model.autoencoder.motion
        return cls(np.diag(sp.std.cpu().numpy()).astype(np.float32), sp.mean.cpu().numpy().astype(np.float32),
                   tuple(ARTICULATION_FIELDS))


def readout_path(checkpoint: str | Path) -> Path:
    """The side file of a checkpoint: ``lite.safetensors`` -> ``lite.readout.safetensors``."""
    p = Path(checkpoint)
    return p.with_name(p.name.removesuffix(".safetensors") + ".readout.safetensors")


def save_readout(readout: Readout, path: str | Path, extra: dict[str, str] | None = None) -> Path:
    """Write ``weight`` / ``bias`` with the field names and any string metadata."""
    path = Path(path)
    meta = {"format": READOUT_FORMAT, "fields": json.dumps(list(readout.fields))}
    for k, v in (extra or {}).items():
        if k in meta or not isinstance(v, str):
            raise ValueError(f"extra metadata {k!r} must be a new key with a str value")
        meta[k] = v
    tensors = {
        "weight": torch.from_numpy(np.ascontiguousarray(readout.weight, np.float32)),
        "bias": torch.from_numpy(np.ascontiguousarray(readout.bias, np.float32)),
    }
    save_file(tensors, str(path), metadata=meta)
    return path


def load_readout(path: str | Path, latent_dim: int) -> Readout:
    """Load a readout side file, checking its format, tensor names, shapes and field names
    (``ValueError`` naming what is wrong)."""
    from dystream_ros.data.face import ARTICULATION_FIELDS

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"readout not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != READOUT_FORMAT:
            raise ValueError(
                f"{path}: not a readout file (format {meta.get('format')!r}, expected {READOUT_FORMAT!r})"
            )
        names = set(f.keys())
        if names != {"weight", "bias"}:
            raise ValueError(f"{path}: tensors {sorted(names)}, expected ['bias', 'weight']")
        w, b = f.get_tensor("weight").numpy(), f.get_tensor("bias").numpy()
    fields = tuple(json.loads(meta.get("fields", "[]")))
    if fields != tuple(ARTICULATION_FIELDS):
        raise ValueError(f"{path}: fields {list(fields)} are not ARTICULATION_FIELDS")
    n = len(ARTICULATION_FIELDS)
    if w.shape != (n, latent_dim) or b.shape != (n,):
        raise ValueError(
            f"{path}: weight {w.shape} / bias {b.shape}, the model needs ({n}, {latent_dim}) / ({n},)"
        )
    return Readout(w.astype(np.float32), b.astype(np.float32), fields)
