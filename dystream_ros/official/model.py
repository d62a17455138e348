"""The whole released model (``profile="official"``) and its safetensors checkpoint.

:class:`OfficialModel` holds the two audio encoders, the GPT, the time embedding, the flow head and
(unless latents-only) the autoencoder. A converted checkpoint (``dystream convert-official``) stores
exactly this model's tensors plus its :class:`OfficialConfig` in the metadata; :func:`load_official` checks
every name and shape before copying anything and fails naming the tensor.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from dystream_ros.official.audio import Wav2Vec2Encoder
from dystream_ros.official.autoencoder import OfficialAutoencoderNet
from dystream_ros.official.config import PROFILE, OfficialConfig
from dystream_ros.official.gpt import OfficialGPTNet
from dystream_ros.official.head import FlowHead, TimeEmbedding

__all__ = [
    "FORMAT",
    "OfficialCheckpointError",
    "OfficialModel",
    "is_official",
    "load_official",
    "save_official",
]

FORMAT = "dystream_ros/official/1"


class OfficialCheckpointError(RuntimeError):
    """A checkpoint that does not match the released architecture (the message names the tensor)."""


class OfficialModel(nn.Module):
    def __init__(self, cfg: OfficialConfig, render: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.render = render
        self.audio_self = Wav2Vec2Encoder(cfg.audio)
        self.audio_other = Wav2Vec2Encoder(cfg.audio)
        self.gpt = OfficialGPTNet(cfg.gpt, cfg.latent_dim, cfg.audio.hidden)
        self.time_embed = TimeEmbedding(cfg.head.width)
        self.head = FlowHead(cfg.head, cfg.latent_dim)
        self.ae = OfficialAutoencoderNet(cfg.autoencoder) if render else None


def _expected(cfg: OfficialConfig, render: bool) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        m = OfficialModel(cfg, render=render)
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def save_official(
    tensors: dict[str, torch.Tensor],
    cfg: OfficialConfig,
    path: str | Path,
    render: bool,
    extra: dict[str, str] | None = None,
) -> Path:
    """Write converted tensors (checked against the architecture first) with the config in the metadata."""
    check_tensors(tensors, cfg, render, where="converted")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "profile": PROFILE, "config": cfg.to_json(), "render": json.dumps(render)}
    meta.update(extra or {})
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(path), metadata=meta)
    return path


def check_tensors(tensors: dict[str, object], cfg: OfficialConfig, render: bool, where: str) -> None:
    """Every name and shape of the architecture, nothing else: raise naming the first offender."""
    expected = _expected(cfg, render)
    shapes = {k: tuple(getattr(v, "shape", v)) for k, v in tensors.items()}
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    if missing:
        raise OfficialCheckpointError(
            f"{where}: missing tensor {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    if unexpected:
        raise OfficialCheckpointError(
            f"{where}: unexpected tensor {unexpected[0]!r}"
            + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
        )
    for k, s in expected.items():
        if shapes[k] != s:
            raise OfficialCheckpointError(
                f"{where}: tensor {k!r} has shape {shapes[k]}, the architecture needs {s}"
            )


def read_meta(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def is_official(path: str | Path) -> bool:
    """A safetensors file written by ``dystream convert-official`` (metadata profile == official)."""
    try:
        meta = read_meta(path)
    except Exception:  # not a safetensors file at all
        return False
    return meta.get("profile") == PROFILE and meta.get("format") == FORMAT


def load_official(
    path: str | Path,
    device: str | torch.device = "cpu",
    render: bool = True,
    dtype: torch.dtype = torch.float32,
) -> OfficialModel:
    """Rebuild the model from the file's config and load its weights strictly (names and shapes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    meta = read_meta(path)
    if meta.get("format") != FORMAT:
        raise OfficialCheckpointError(
            f"{path}: not a converted official checkpoint (format={meta.get('format')!r})"
        )
    cfg = OfficialConfig.from_json(meta["config"])
    saved_render = json.loads(meta.get("render", "true"))
    if render and not saved_render:
        raise OfficialCheckpointError(f"{path}: converted without the autoencoder; load with render=False")
    with safe_open(str(path), framework="pt") as f:
        names = list(f.keys())
        shapes = {n: tuple(f.get_slice(n).get_shape()) for n in names}
        check_tensors(shapes, cfg, saved_render, where=str(path))
        model = OfficialModel(cfg, render=render)
        state = {n: f.get_tensor(n) for n in model.state_dict()}
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval()
