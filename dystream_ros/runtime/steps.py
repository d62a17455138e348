"""Per-frame step functions: pure tensor code with static shapes, shared by every backend.

Each is a small ``nn.Module`` wrapping parts of a :class:`DyStreamModel`; the torch backend calls them
directly and the ONNX exporter traces exactly the same modules. ``Q`` is the number of guidance branches
(1..4, the only dynamic axis); every other shape is fixed by the config.

- ``AudioStep``: windows (1, 2, window_samples) -> features (1, 2, F)
- ``GeneratorStep``: prev (1, D), audio (1, 2, F), anchor (1, D), drop (Q, 3) bool, k_cache/v_cache
  (L, H, W, hd), pos int64 () -> cond (Q, Wh), k_cache, v_cache
- ``HeadCondition``: cond (Q, Wh) -> cond_mod (Q, M)
- ``HeadTime``: t (N,) -> time_mod (N, M)
- ``HeadStep``: x (1, D), time_mod (1, M), dt (1,), cond_mod (Q, M), coef (Q,) -> x (1, D)
- ``ReferenceStep``: image (1, 3, S, S) -> appearance (1, A, s, s), m0 (1, D)
- ``MotionStep``: image (1, 3, S, S) -> m0 (1, D)
- ``DecodeStep``: latent (1, D), m0 (1, D), appearance (1, A, s, s), reference (1, 3, S, S)
  -> image (1, 3, S, S)
"""

from __future__ import annotations

import torch
from torch import nn

from dystream_ros.model.dystream import DyStreamModel

__all__ = [
    "AudioStep",
    "DecodeStep",
    "GeneratorStep",
    "HeadCondition",
    "HeadStep",
    "HeadTime",
    "MotionStep",
    "ReferenceStep",
]


class AudioStep(nn.Module):
    def __init__(self, model: DyStreamModel) -> None:
        super().__init__()
        self.audio = model.audio

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.audio(windows)


class GeneratorStep(nn.Module):
    def __init__(self, model: DyStreamModel) -> None:
        super().__init__()
        self.generator = model.generator

    def forward(
        self,
        prev: torch.Tensor,
        audio: torch.Tensor,
        anchor: torch.Tensor,
        drop: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        pos: torch.Tensor,
    ):
        q = drop.shape[0]
        tokens = self.generator.embed(prev.expand(q, -1), audio.expand(q, -1, -1), anchor.expand(q, -1), drop)
        return self.generator.step(tokens, k_cache, v_cache, pos)


class HeadCondition(nn.Module):
    def __init__(self, model: DyStreamModel) -> None:
        super().__init__()
        self.head = model.head

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self.head.cond_modulation(cond)


class HeadTime(nn.Module):
    def __init__(self, model: DyStreamModel) -> None:
        super().__init__()
        self.head = model.head

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.head.time_modulation(t)


class HeadStep(nn.Module):
    def __init__(self, model: DyStreamModel) -> None:
        super().__init__()
        self.head = model.head

    def forward(
        self,
        x: torch.Tensor,
        time_mod: torch.Tensor,
        dt: torch.Tensor,
        cond_mod: torch.Tensor,
        coef: torch.Tensor,
    ) -> torch.Tensor:
        return self.head.euler_step(x, time_mod, dt, cond_mod, coef)


class MotionStep(nn.Module):
    def __init__(self, model: DyStreamModel) -> None:
        super().__init__()
        self.motion = model.autoencoder.motion

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.motion(image)


class ReferenceStep(nn.Module):
    def __init__(self, model: DyStreamModel) -> None:
        super().__init__()
        self.motion = model.autoencoder.motion
        self.appearance = model.autoencoder.appearance

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.appearance(image), self.motion(image)


class DecodeStep(nn.Module):
    def __init__(self, model: DyStreamModel) -> None:
        super().__init__()
        self.decoder = model.autoencoder.decoder

    def forward(
        self, latent: torch.Tensor, m0: torch.Tensor, appearance: torch.Tensor, reference: torch.Tensor
    ) -> torch.Tensor:
        return self.decoder(latent, m0, appearance, reference)["image"]
