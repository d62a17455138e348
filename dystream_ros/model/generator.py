"""Autoregressive generator: a causal transformer over per-frame tokens with a sliding window.

Shapes: ``B`` batch, ``T`` frames, ``C`` width, ``H`` heads, ``hd`` head dim, ``W`` window (frames a query
sees, itself included), ``L`` layers, ``D`` motion latent, ``F`` audio feature, ``Q`` query branches
(classifier-free-guidance branches of one stream, batched).

Token for frame n: ``prev(m_{n-1}) + audio(fuse(speaker_n, listener_n)) + anchor(a)``; output
``c_n`` conditions the flow head that samples ``m_n``.

Positions are rotary with *periodic* frequencies: every frequency is an integer multiple of
``2*pi/P`` (``P = rope_period``), so rotating by position ``p`` equals rotating by ``p mod P`` exactly
and the angle ``2*pi*((k*p) mod P)/P`` is computed from integers, exactly, at any stream length. Scores
depend only on relative offsets, so keys can be rotated once when written to the cache.

Two paths, one set of weights:
- :meth:`Generator.forward` (training): all T tokens at once under the banded causal mask
  ``0 <= i - j < W``.
- :meth:`Generator.step` (inference): one frame, keys/values of the last ``W-1`` frames in a static
  ring of W slots per layer (``(L, H, W, hd)`` tensors, passed in and returned, gpt-fast style
  preallocated but functional so the step exports to ONNX with the ring as explicit inputs/outputs).
  Branch 0 is the fully conditioned stream; only its keys/values are written to the ring. The other
  branches (one stream nulled for guidance) attend to the same conditioned history plus their own
  current token, which matches training, where streams are dropped per frame.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dystream_ros.config import GeneratorConfig

__all__ = ["Generator", "PeriodicRotary", "TokenEmbedding", "band_mask", "empty_cache"]


def band_mask(num_frames: int, window: int, device: torch.device | None = None) -> torch.Tensor:
    """(T, T) bool, True where query i may attend key j: ``0 <= i - j < window``."""
    i = torch.arange(num_frames, device=device)
    d = i[:, None] - i[None, :]
    return (d >= 0) & (d < window)


class PeriodicRotary(nn.Module):
    """Rotary embedding whose frequencies are integer multiples of 2*pi/period (exact modulo period)."""

    def __init__(self, head_dim: int, base: float, period: int) -> None:
        super().__init__()
        inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # rad / frame
        k = torch.clamp(torch.round(inv * period / (2 * math.pi)), min=1).to(torch.int64)
        self.period = period
        self.register_buffer("mult", k, persistent=False)  # (hd/2,)

    def cos_sin(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pos: int64 (...,) -> cos, sin (..., hd/2), exact for any pos >= 0."""
        p = torch.remainder(pos, self.period)
        phase = torch.remainder(p[..., None] * self.mult, self.period).to(torch.float32)
        ang = phase * (2 * math.pi / self.period)
        return torch.cos(ang), torch.sin(ang)

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x (..., T, hd) with cos/sin broadcastable to (..., T, hd/2); pairs (i, i + hd/2)."""
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.heads, self.head_dim = cfg.heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)

    def _qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (B, H, T, hd)
        return PeriodicRotary.rotate(q, cos, sin), PeriodicRotary.rotate(k, cos, sin), v

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """x (B, T, C), cos/sin (T, hd/2), mask (T, T) bool -> (B, T, C)."""
        b, t, c = x.shape
        q, k, v = self._qkv(x, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))

    def step(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        k_ring: torch.Tensor,
        v_ring: torch.Tensor,
        mask: torch.Tensor,
        slot: torch.Tensor,
    ):
        """One frame.

        x (Q, 1, C); cos/sin (1, hd/2); k_ring/v_ring (H, W, hd) past keys (rotated) and values;
        mask (1, W + 1) bool over [ring slots, current]; slot (W,) bool, the slot branch 0 writes.
        Returns y (Q, 1, C) and the updated rings.
        """
        nq, _, c = x.shape
        q, k, v = self._qkv(x, cos, sin)  # (Q, H, 1, hd)
        keys = torch.cat([k_ring.expand(nq, -1, -1, -1), k], dim=2)  # (Q, H, W+1, hd)
        vals = torch.cat([v_ring.expand(nq, -1, -1, -1), v], dim=2)
        y = F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask)
        w = slot[None, :, None]
        k_ring = torch.where(w, k[0], k_ring)
        v_ring = torch.where(w, v[0], v_ring)
        return self.proj(y.transpose(1, 2).reshape(nq, 1, c)), k_ring, v_ring


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)); x + mlp(ln(x))."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width)
        self.attn = SelfAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.width)
        self.fc1 = nn.Linear(cfg.width, cfg.mlp_ratio * cfg.width)
        self.fc2 = nn.Linear(cfg.mlp_ratio * cfg.width, cfg.width)
        self.drop = nn.Dropout(cfg.dropout)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm2(x))))

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), cos, sin, mask))
        return x + self.drop(self.mlp(x))

    def step(self, x, cos, sin, k_ring, v_ring, mask, slot):
        a, k_ring, v_ring = self.attn.step(self.norm1(x), cos, sin, k_ring, v_ring, mask, slot)
        x = x + a
        return x + self.mlp(x), k_ring, v_ring


class TokenEmbedding(nn.Module):
    """Per-frame token from previous latent, both audio streams and the anchor, with null embeddings.

    ``drop`` (..., 3) bool selects the learned null for (speaker, listener, anchor): per-frame CFG dropout
    in training, guidance branches at inference.
    """

    def __init__(self, width: int, latent_dim: int, feature_dim: int) -> None:
        super().__init__()
        self.prev = nn.Linear(latent_dim, width)
        self.audio = nn.Linear(2 * feature_dim, width)
        self.anchor = nn.Linear(latent_dim, width)
        self.null_speaker = nn.Parameter(torch.randn(feature_dim) * 0.02)
        self.null_listener = nn.Parameter(torch.randn(feature_dim) * 0.02)
        self.null_anchor = nn.Parameter(torch.randn(width) * 0.02)

    def forward(
        self, prev: torch.Tensor, audio: torch.Tensor, anchor: torch.Tensor, drop: torch.Tensor
    ) -> torch.Tensor:
        """prev (..., D), audio (..., 2, F), anchor (..., D), drop (..., 3) bool -> (..., C)."""
        spk = torch.where(drop[..., 0:1], self.null_speaker, audio[..., 0, :])
        lis = torch.where(drop[..., 1:2], self.null_listener, audio[..., 1, :])
        anc = torch.where(drop[..., 2:3], self.null_anchor, self.anchor(anchor))
        return self.prev(prev) + self.audio(torch.cat([spk, lis], dim=-1)) + anc


class Generator(nn.Module):
    def __init__(self, cfg: GeneratorConfig, latent_dim: int, feature_dim: int, cond_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = TokenEmbedding(cfg.width, latent_dim, feature_dim)
        self.rotary = PeriodicRotary(cfg.head_dim, cfg.rope_base, cfg.rope_period)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.out_norm = nn.LayerNorm(cfg.width)
        self.out_proj = nn.Linear(cfg.width, cond_dim)
        self.drop = nn.Dropout(cfg.dropout)

    @property
    def cache_shape(self) -> tuple[int, int, int, int]:
        """(L, H, W, hd) of each of the key and value rings."""
        return (self.cfg.layers, self.cfg.heads, self.cfg.window, self.cfg.head_dim)

    def forward(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Training / reference pass: tokens (B, T, C) at positions start.. -> conditions (B, T, cond_dim)."""
        t = tokens.shape[1]
        cos, sin = self.rotary.cos_sin(torch.arange(start, start + t, device=tokens.device))
        mask = band_mask(t, self.cfg.window, tokens.device)
        x = self.drop(tokens)
        for blk in self.blocks:
            x = blk(x, cos, sin, mask)
        return self.out_proj(self.out_norm(x))

    def step(
        self, tokens: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, pos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One frame at position ``pos`` (int64 scalar tensor, number of frames already generated).

        tokens (Q, C), branch 0 fully conditioned; k_cache/v_cache (L, H, W, hd).
        Returns conditions (Q, cond_dim) and the updated caches (same shapes).
        """
        w = self.cfg.window
        ring = torch.arange(w, device=tokens.device)
        age = torch.remainder(pos - 1 - ring, w) + 1  # how many frames ago slot s was written (1..W)
        valid = (age < w) & (age <= pos)  # within the window and actually written
        mask = torch.cat([valid, torch.ones(1, dtype=torch.bool, device=tokens.device)])[None]  # (1, W+1)
        slot = ring == torch.remainder(pos, w)
        cos, sin = self.rotary.cos_sin(pos.reshape(1))
        x = tokens[:, None, :]
        ks, vs = [], []
        for i, blk in enumerate(self.blocks):
            x, k, v = blk.step(x, cos, sin, k_cache[i], v_cache[i], mask, slot)
            ks.append(k)
            vs.append(v)
        return self.out_proj(self.out_norm(x[:, 0])), torch.stack(ks), torch.stack(vs)


def empty_cache(
    generator: Generator, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeroed key and value rings for a new stream (slots are masked until written)."""
    shape = generator.cache_shape
    return torch.zeros(shape, device=device), torch.zeros(shape, device=device)
