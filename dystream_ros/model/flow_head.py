"""Flow-matching head: a per-frame MLP with AdaLN, Euler sampling and classifier-free guidance.

Shapes: ``N`` rows (frames in training, 1 at inference), ``Q`` guidance branches, ``D`` latent,
``W`` head width, ``Hb`` blocks.

Interpolant (rectified flow): ``x_t = (1 - t) * noise + t * data`` for t in [0, 1]; the head predicts the
velocity ``data - noise``. Sampling integrates from t = 0 (noise) to 1 with N uniform Euler steps.

AdaLN modulation of each block is ``time_mod(t) + cond_mod(c)``: two linear maps of SiLU'd inputs
added, i.e. one linear map of ``[silu(t_emb), silu(c)]``. Splitting it lets inference compute the
condition part once per frame and the time part once per step count (the Euler grid is fixed).

Guidance (velocity space), branch 0 fully conditioned, branch k with stream k nulled:
``v = v_0 + sum_k w_k (v_0 - v_k) = sum_b coef_b v_b`` with ``coef = [1 + sum w, -w_1, ...]``;
branches with weight 0 are left out, so all-zero weights give exactly the unguided ``v_0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dystream_ros.config import HeadConfig, sampler_value

__all__ = ["FlowHead", "Guidance", "guidance_branches", "head_guidance_coef"]


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance weights per stream; 0 skips that branch. Validated on construction
    (ranges: ``config.SAMPLER_LIMITS``)."""

    speaker: float
    listener: float
    anchor: float
    head: float = 0.0  # extra listener weight along the head-pose directions (SamplerConfig.guidance_head)

    def __post_init__(self) -> None:
        for name in ("speaker", "listener", "anchor", "head"):
            v = sampler_value(f"guidance_{name}", getattr(self, name), owner="Guidance")
            object.__setattr__(self, name, v)


def guidance_branches(g: Guidance) -> tuple[torch.Tensor, torch.Tensor]:
    """Branch layout for ``g``: drop (Q, 3) bool over (speaker, listener, anchor) and coef (Q,) float32.

    A branch whose weight is 0 is skipped, except the listener-free one while ``g.head`` needs it."""
    return _branches(g, g.listener)


def head_guidance_coef(g: Guidance) -> torch.Tensor | None:
    """coef (Q,) of :func:`guidance_branches`' layout with the listener weight ``g.listener + g.head``:
    the weights along the head-pose directions; None when ``g.head`` is 0."""
    return None if g.head == 0.0 else _branches(g, g.listener + g.head)[1]


def _branches(g: Guidance, listener: float) -> tuple[torch.Tensor, torch.Tensor]:
    drops = [[False, False, False]]
    coefs = [1.0 + g.speaker + listener + g.anchor]
    for i, w in enumerate((g.speaker, listener, g.anchor)):
        if w != 0.0 or (i == 1 and g.head != 0.0):  # the listener-free branch also serves head guidance
            d = [False, False, False]
            d[i] = True
            drops.append(d)
            coefs.append(-w)
    return torch.tensor(drops, dtype=torch.bool), torch.tensor(coefs, dtype=torch.float32)


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1] (scaled by 1000): (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    ang = (t.to(torch.float32) * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=-1)


class AdaLNBlock(nn.Module):
    """x + gate * mlp(ln(x) * (1 + scale) + shift); (shift, scale, gate) from the modulation input."""

    def __init__(self, width: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.fc1 = nn.Linear(width, mlp_ratio * width)
        self.fc2 = nn.Linear(mlp_ratio * width, width)

    def forward(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        """x (..., W), mod (..., 3W)."""
        shift, scale, gate = mod.chunk(3, dim=-1)
        h = self.norm(x) * (1 + scale) + shift
        return x + gate * self.fc2(F.silu(self.fc1(h)))


class FlowHead(nn.Module):
    def __init__(self, cfg: HeadConfig, latent_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        w, nb = cfg.width, cfg.blocks
        self.time_mlp = nn.Sequential(nn.Linear(cfg.time_freq_dim, w), nn.SiLU(), nn.Linear(w, w))
        # Modulations of all blocks in one matmul each: Hb x (shift, scale, gate) + final (shift, scale).
        self.time_mod = nn.Linear(w, (3 * nb + 2) * w)
        self.cond_mod = nn.Linear(w, (3 * nb + 2) * w)
        self.in_proj = nn.Linear(latent_dim, w)
        self.blocks = nn.ModuleList(AdaLNBlock(w, cfg.mlp_ratio) for _ in range(nb))
        self.out_norm = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.out_proj = nn.Linear(w, latent_dim)

    # -- the two halves of the modulation ---------------------------------------------------------
    def time_modulation(self, t: torch.Tensor) -> torch.Tensor:
        """t (N,) in [0, 1] -> (N, (3Hb+2)W)."""
        return self.time_mod(F.silu(self.time_mlp(timestep_features(t, self.cfg.time_freq_dim))))

    def cond_modulation(self, cond: torch.Tensor) -> torch.Tensor:
        """Generator condition (..., W) -> (..., (3Hb+2)W)."""
        return self.cond_mod(F.silu(cond))

    def velocity(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        """x_t (..., D), summed modulation (..., (3Hb+2)W) -> velocity (..., D)."""
        w = self.cfg.width
        h = self.in_proj(x)
        for i, blk in enumerate(self.blocks):
            h = blk(h, mod[..., 3 * i * w : 3 * (i + 1) * w])
        shift, scale = mod[..., -2 * w :].chunk(2, dim=-1)
        return self.out_proj(self.out_norm(h) * (1 + scale) + shift)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Training: x_t (N, D), t (N,), cond (N, W) -> velocity (N, D)."""
        return self.velocity(x, self.time_modulation(t) + self.cond_modulation(cond))

    # -- sampling ---------------------------------------------------------------------------------
    def euler_step(
        self,
        x: torch.Tensor,
        time_mod: torch.Tensor,
        dt: torch.Tensor,
        cond_mod: torch.Tensor,
        coef: torch.Tensor,
    ) -> torch.Tensor:
        """One guided Euler step: x (1, D), time_mod (1, M), dt (1,), cond_mod (Q, M), coef (Q,) -> (1, D).

        All branches share x_t and t; they differ only in the condition.
        """
        v = self.velocity(x.expand(cond_mod.shape[0], -1), cond_mod + time_mod)  # (Q, D)
        return x + dt * (coef[:, None] * v).sum(dim=0, keepdim=True)

    def sample(self, noise: torch.Tensor, cond: torch.Tensor, coef: torch.Tensor, steps: int) -> torch.Tensor:
        """Integrate from noise (1, D) to a latent with ``steps`` guided Euler steps; cond (Q, W)."""
        cond_mod = self.cond_modulation(cond)
        time_mod = self.time_modulation(euler_times(steps, noise.device))
        return euler_integrate(lambda x, tm, dt: self.euler_step(x, tm, dt, cond_mod, coef), noise, time_mod)


def euler_times(steps: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(steps,) the fixed Euler grid t = i / steps the head is sampled on."""
    return torch.arange(steps, dtype=torch.float32, device=device) / steps


def euler_integrate(step, noise: torch.Tensor, time_mod: torch.Tensor) -> torch.Tensor:
    """The Euler loop over the grid of :func:`euler_times`: ``x <- step(x, time_mod[i:i+1], dt)`` for each
    of the ``len(time_mod)`` steps, from ``noise`` (1, D); ``step`` is one guided step (the module's own
    :meth:`FlowHead.euler_step`, or a backend's exported one)."""
    steps = time_mod.shape[0]
    dt = torch.full((1,), 1.0 / steps, device=noise.device)
    x = noise
    for i in range(steps):
        x = step(x, time_mod[i : i + 1], dt)
    return x
