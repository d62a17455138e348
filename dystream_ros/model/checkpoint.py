"""Checkpoints: safetensors weights with the model config as JSON in the file's metadata.

Loading rebuilds the model from the stored config and checks every tensor name and shape against the
architecture before copying anything; a missing, unexpected or mis-shaped tensor fails with
:class:`CheckpointError` naming it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dystream_ros.config import ConfigError, ModelConfig
from dystream_ros.model.dystream import DyStreamModel

__all__ = ["CheckpointError", "checkpoint_id", "load_checkpoint", "read_config", "save_checkpoint"]

FORMAT = "dystream_ros/1"


class CheckpointError(RuntimeError):
    """A checkpoint that does not match the architecture its config describes."""


def save_checkpoint(model: DyStreamModel, path: str | Path, extra: dict[str, str] | None = None) -> Path:
    """Write ``model``'s weights and config. Extra metadata values must be strings."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": model.cfg.to_json(), "render": json.dumps(model.render)}
    for k, v in (extra or {}).items():
        if k in meta or not isinstance(v, str):
            raise ValueError(f"extra metadata {k!r} must be a new key with a str value")
        meta[k] = v
    save_file(tensors, str(path), metadata=meta)
    return path


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(
            f"{path}: not a dystream_ros checkpoint (metadata format={meta.get('format')!r}, "
            f"expected {FORMAT!r} with a 'config' entry)"
        )
    return meta


def read_config(path: str | Path) -> ModelConfig:
    """The config stored in a checkpoint."""
    path = Path(path)
    try:
        return ModelConfig.from_json(_metadata(path)["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: invalid config in metadata: {e}") from None


def _expected_shapes(cfg: ModelConfig, render: bool) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of the architecture, without allocating it."""
    with torch.device("meta"):
        model = DyStreamModel(cfg, render=render)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_checkpoint(
    path: str | Path, render: bool = True, device: str | torch.device = "cpu"
) -> DyStreamModel:
    """Rebuild the model from the checkpoint's config and load its weights, strictly.

    Every tensor of the architecture the file was saved from (full, or latents-only when saved with
    ``render=False``) must be present with its exact shape and nothing else may be. Loading with
    ``render=False`` leaves the appearance encoder and decoder out (their tensors are still checked).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    cfg = read_config(path)
    saved_render = json.loads(_metadata(path).get("render", "true"))
    if render and not saved_render:
        raise CheckpointError(
            f"{path}: saved latents-only (no appearance encoder/decoder); load with render=False"
        )
    expected = _expected_shapes(cfg, saved_render)
    with safe_open(str(path), framework="pt") as f:
        names = set(f.keys())
        missing = sorted(set(expected) - names)
        unexpected = sorted(names - set(expected))
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing tensor(s) {missing[:8]}" + (" ..." if len(missing) > 8 else ""))
            if unexpected:
                parts.append(
                    f"unexpected tensor(s) {unexpected[:8]}" + (" ..." if len(unexpected) > 8 else "")
                )
            raise CheckpointError(f"{path}: {'; '.join(parts)} for profile {cfg.profile!r}")
        for name in sorted(names):
            shape = tuple(f.get_slice(name).get_shape())
            if shape != expected[name]:
                raise CheckpointError(
                    f"{path}: tensor {name!r} has shape {shape}, the architecture needs {expected[name]}"
                )
        model = DyStreamModel(cfg, render=render)
        state = {name: f.get_tensor(name) for name in model.state_dict()}
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def checkpoint_id(path: str | Path) -> str:
    """``<file name>@<first 8 hex digits of its sha256>``."""
    path = Path(path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return f"{path.name}@{h.hexdigest()[:8]}"
