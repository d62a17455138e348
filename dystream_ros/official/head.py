"""The released flow head, its time embedding, scheduler and 5-branch guidance in x0 space.

Shapes: ``B`` guidance branches (5), ``D`` latent, ``W`` head width.

Head (dystream_reference.md §4.1): ``h = noisy_proj(x_t)``, ``g = gpt_proj(c)``; per block two AdaLN-MLP
sub-blocks ``h += gate * MLP(LN(h) * (1 + scale) + shift)`` (LN without affine, computed in fp32), the first
modulated by the time embedding, the second by ``g``; then ``output_proj(output_norm(h))`` = the x0
prediction. The time embedding truncates t to an integer, takes a [cos, sin] sinusoid over W channels
(frequency_j = exp(-ln(1e4) j / (W/2))) and a Linear-SiLU-Linear.

Sampler: FlowMatchEulerDiscrete with ``train_steps`` (1000) and ``shift``: N steps at
``t = linspace(1000, 1000 * sigma_min, N)``, ``sigma = t / 1000`` plus a terminal 0. Each step combines
the 5 branch predictions in x0 space, turns the result into ``v = (x - x0) / (sigma + 1e-9)`` and moves
``x += (sigma_next - sigma) v`` in fp32.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dystream_ros.official.config import OfficialHead, OfficialSampler

__all__ = ["BRANCHES", "FlowHead", "TimeEmbedding", "branch_keep", "guidance_weights", "sample", "schedule"]

#: guidance branches in the released order; each keeps (self audio, other audio, anchor)
BRANCHES = ("uncond", "anchor", "audio", "other", "all")
_KEEP = ((0, 0, 0), (0, 0, 1), (1, 0, 0), (0, 1, 0), (1, 1, 1))


def branch_keep(device=None, dtype=torch.float32) -> torch.Tensor:
    """(5, 3) 0/1 keep mask over (self, other, anchor), in :data:`BRANCHES` order."""
    return torch.tensor(_KEEP, device=device, dtype=dtype)


def guidance_weights(s: OfficialSampler) -> torch.Tensor:
    """(5,) weights w_b of ``x0 = u + sum_b w_b (x0_b - u)`` in :data:`BRANCHES` order (w_uncond = 0)."""
    return torch.tensor([0.0, s.cfg_anchor, s.cfg_audio, s.cfg_other, s.cfg_all], dtype=torch.float32)


class TimeEmbedding(nn.Module):
    """(N,) timesteps -> (N, W): int(t) -> [cos, sin] sinusoid -> linear_1 -> SiLU -> linear_2."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        self.linear_1 = nn.Linear(width, width)
        self.linear_2 = nn.Linear(width, width)

    def sinusoid(self, t: torch.Tensor) -> torch.Tensor:
        half = self.width // 2
        freq = torch.exp(
            -math.log(10000) * torch.arange(0, half, dtype=torch.float32, device=t.device) / half
        )
        arg = t.to(torch.int64)[:, None].float() * freq[None, :]
        return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        s = self.sinusoid(t).to(self.linear_1.weight.dtype)
        return self.linear_2(F.silu(self.linear_1(s)))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class HeadBlock(nn.Module):
    def __init__(self, cfg: OfficialHead) -> None:
        super().__init__()
        W = cfg.width
        self.mlp1 = Mlp(W, cfg.mlp)
        self.mlp2 = Mlp(W, cfg.mlp)
        self.mod1 = nn.Linear(W, 3 * W)  # from the time embedding
        self.mod2 = nn.Linear(W, 3 * W)  # from gpt_proj(c)

    def modulation(self, temb: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(shift, scale, gate) of both sub-blocks."""
        return (*self.mod1(F.silu(temb)).chunk(3, dim=-1), *self.mod2(F.silu(g)).chunk(3, dim=-1))

    def forward(self, h: torch.Tensor, mods: tuple[torch.Tensor, ...]) -> torch.Tensor:
        s1, c1, g1, s2, c2, g2 = mods
        W = h.shape[-1]
        n = (F.layer_norm(h.float(), (W,), eps=1e-5) * (1 + c1) + s1).type_as(h)
        h = (h.float() + self.mlp1(n).float() * g1).type_as(h)
        n = (F.layer_norm(h.float(), (W,), eps=1e-5) * (1 + c2) + s2).type_as(h)
        return (h.float() + self.mlp2(n).float() * g2).type_as(h)


class FlowHead(nn.Module):
    """x_t (1|B, 1, D), c (B, 1, D), temb (1|B, 1, W) -> x0 prediction (B, 1, D)."""

    def __init__(self, cfg: OfficialHead, latent_dim: int) -> None:
        super().__init__()
        W = cfg.width
        self.noisy_proj = nn.Linear(latent_dim, W)
        self.gpt_proj = nn.Linear(latent_dim, W)
        self.blocks = nn.ModuleList(HeadBlock(cfg) for _ in range(cfg.blocks))
        self.output_norm = nn.LayerNorm(W)
        self.output_proj = nn.Linear(W, latent_dim)

    def modulations(self, c: torch.Tensor, temb: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        g = self.gpt_proj(c)
        return [blk.modulation(temb, g) for blk in self.blocks]

    def forward(self, x_t: torch.Tensor, c: torch.Tensor, temb: torch.Tensor, mods=None) -> torch.Tensor:
        mods = self.modulations(c, temb) if mods is None else mods
        h = self.noisy_proj(x_t)
        for blk, m in zip(self.blocks, mods, strict=True):
            h = blk(h, m)
        return self.output_proj(self.output_norm(h))


def schedule(s: OfficialSampler, steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigmas (N+1,) incl. the terminal 0, timesteps (N,)) float32, as FlowMatchEulerDiscrete sets them."""
    n = s.steps if steps is None else int(steps)
    one = torch.tensor(1.0, dtype=torch.float32)
    smin = one / s.train_steps
    smin = float(s.shift * smin / (1 + (s.shift - 1) * smin))  # float32 value, as the scheduler keeps it
    t = np.linspace(s.train_steps * 1.0, smin * s.train_steps, n)
    sig = t / s.train_steps
    sig = s.shift * sig / (1 + (s.shift - 1) * sig)
    sig = torch.from_numpy(sig).to(torch.float32)
    timesteps = sig * s.train_steps
    return torch.cat([sig, torch.zeros(1)]), timesteps


@torch.no_grad()
def sample(
    head: FlowHead,
    time_embed: TimeEmbedding,
    c: torch.Tensor,
    noise: torch.Tensor,
    weights: torch.Tensor,
    sigmas: torch.Tensor,
    timesteps: torch.Tensor,
    temb_cache: list[torch.Tensor] | None = None,
    record: dict | None = None,
) -> torch.Tensor:
    """Guided Euler sampling of one latent: c (5, 1, D) branch conditions, noise (1, 1, D) -> (1, 1, D).

    ``weights`` (5,) are the guidance weights (:func:`guidance_weights`); branches with weight 0 are
    still computed when ``record`` is given (it collects ``x0`` (steps, 5, 1, D), ``traj``, ``velocity``),
    and skipped otherwise.
    """
    dev = c.device
    wl = [float(v) for v in weights]
    keep = [0] + [b for b in range(1, 5) if record is not None or wl[b] != 0.0]
    cc = c[keep]
    x = noise
    x0s, traj, vel = [], [x], []
    g = F.silu(head.gpt_proj(cc))
    cond_mods = [blk.mod2(g).chunk(3, dim=-1) for blk in head.blocks]  # the condition's part: once per frame
    for i, t in enumerate(timesteps):
        if temb_cache is not None:
            temb = temb_cache[i]
        else:
            temb = time_embed(t.reshape(1).to(dev)).unsqueeze(1)
        mods = [
            (*blk.mod1(F.silu(temb)).chunk(3, dim=-1), *cm)
            for blk, cm in zip(head.blocks, cond_mods, strict=True)
        ]
        x0 = head(x, cc, temb, mods)  # (Q, 1, D)
        u = x0[0:1]
        x0_cfg = u
        for b in (2, 3, 1, 4):  # the released summation order
            if b in keep:
                j = keep.index(b)
                x0_cfg = x0_cfg + wl[b] * (x0[j : j + 1] - u)
        sigma, sigma_next = sigmas[i].to(dev), sigmas[i + 1].to(dev)
        v = (x - x0_cfg) / (sigma + 1e-9)
        x = (x.float() + (sigma_next - sigma) * v).to(v.dtype)
        x0s.append(x0)
        vel.append(v)
        traj.append(x)
    if record is not None:
        record["x0"] = torch.stack(x0s)
        record["traj"] = torch.stack(traj)
        record["velocity"] = torch.stack(vel)
    return x
