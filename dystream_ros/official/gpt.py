"""The released autoregressive transformer ("Audio2FaceGPT" blocks), exact, plus a KV ring for streaming.

Shapes: ``B`` batch (the 5 guidance branches at inference), ``L`` tokens, ``W`` width, ``H`` heads,
``E = W / H``, ``D`` latent, ``C`` audio feature width, ``R`` the ring (history) length.

Token ``i`` is ``face_embed(m[i])``; the fused audio token of the frame it predicts is added inside every
block. One block, pre-LN with a residual after each part (dystream_reference.md §3.2):

  1. ``x += SA(rot(LN1 x), rot(LN1 x), LN1 x)``: "RoPE" rotates the normed hidden state in interleaved
     pairs before the projection (theta_i = 10000^(-2i/W)); the value is not rotated;
  2. ``x += audio_linear(audio_token)``;
  3. ``x += anchor_term``: the anchor cross-attention has one key, so its softmax is exactly 1 and it adds
     ``out(W_v anchor + b_v)`` at every position, whatever the query (its q/k rows and ``norm_anchor`` are
     never used and are not part of this model);
  4. ``x += SA(p, p, p)`` with ``p = LN3 x + PE`` (standard sinusoidal table);
  5. ``x += MLP(LN4 x)`` (exact GELU).

Both self-attentions are causal. The released model restarts positions at 0 in every 94-token window
(:meth:`OfficialGPT.window_forward`). Streaming keeps each token's keys and values in a static ring of
``R`` slots (:meth:`OfficialGPT.ring_step`); a token's position is its index in the stream, saturated at
``R - 1`` (so the first window is exactly the released one); :meth:`OfficialGPT.banded_forward` is the
same computation written out over a whole sequence, for tests.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dystream_ros.official.config import OfficialGPT

__all__ = ["Attention", "GPTBlock", "OfficialGPTNet", "RingCache", "rotation_tables", "sinusoid_table"]


def rotation_tables(width: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of position * theta_i, theta_i = 10000^(-2i/width): (length, width/2) float32 each."""
    theta = 10000 ** (-2 * torch.arange(0, width // 2, dtype=torch.float) / width)
    angles = torch.arange(0, length, dtype=torch.float)[:, None] * theta
    return angles.cos(), angles.sin()


def sinusoid_table(width: int, length: int) -> torch.Tensor:
    """(length, width): sin on even channels, cos on odd, base 10000."""
    pe = torch.zeros(length, width)
    pos = torch.arange(0, length, dtype=torch.float)[:, None]
    div = torch.exp(torch.arange(0, width, 2).float() * (-math.log(10000.0) / width))
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """(B, L, W) rotated in pairs (2i, 2i+1) by (L, W/2) angles."""
    xe, xo = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = xe * cos - xo * sin
    out[..., 1::2] = xe * sin + xo * cos
    return out


class Attention(nn.Module):
    """Multi-head attention with packed q/k/v rows (the released ``in_proj`` layout) and an out projection."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def project(self, x: torch.Tensor, part: int) -> torch.Tensor:
        """(B, L, W) -> (B, H, L, E) for part 0 (q), 1 (k) or 2 (v)."""
        w = self.in_proj_weight.chunk(3)[part]
        b = self.in_proj_bias.chunk(3)[part]
        y = F.linear(x, w, b)
        B, L, W = y.shape
        return y.view(B, L, self.heads, W // self.heads).transpose(1, 2)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """(B, H, Lq, E) x (B, H, Lk, E) -> (B, Lq, W); ``mask`` (Lq, Lk) float, -inf where not allowed."""
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        B, H, L, E = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(B, L, H * E))


class AnchorTerm(nn.Module):
    """The anchor cross-attention with its single key: ``out(W_v a + b_v)`` (B, 1, W)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def forward(self, anchor: torch.Tensor) -> torch.Tensor:
        return self.out(self.value(anchor))


class GPTBlock(nn.Module):
    def __init__(self, cfg: OfficialGPT) -> None:
        super().__init__()
        W = cfg.width
        self.norm1 = nn.LayerNorm(W)
        self.norm3 = nn.LayerNorm(W)
        self.norm4 = nn.LayerNorm(W)
        self.attn_rope = Attention(W, cfg.heads)
        self.attn_pos = Attention(W, cfg.heads)
        self.anchor = AnchorTerm(W)
        self.audio_linear = nn.Linear(W, W)
        self.fc1 = nn.Linear(W, cfg.mlp)
        self.fc2 = nn.Linear(cfg.mlp, W)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))

    def _kv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pe: torch.Tensor):
        """Attention-1 inputs from x: (q, k, v), the rotated normed state for q/k and the plain one for v."""
        h = self.norm1(x)
        r = rotate(h, cos, sin)
        return self.attn_rope.project(r, 0), self.attn_rope.project(r, 1), self.attn_rope.project(h, 2)

    def forward(self, x, audio, anchor_term, cos, sin, pe, mask):
        """x (B, L, W), audio (B, L, W) fused tokens, anchor_term (B, 1, W), tables for the L positions,
        mask (L, L). Returns x and this block's (k1, v1, k2, v2), each (B, H, L, E)."""
        q1, k1, v1 = self._kv(x, cos, sin, pe)
        x = x + self.attn_rope.attend(q1, k1, v1, mask)
        x = x + self.audio_linear(audio)
        x = x + anchor_term
        p = self.norm3(x) + pe
        q2, k2, v2 = (self.attn_pos.project(p, i) for i in range(3))
        x = x + self.attn_pos.attend(q2, k2, v2, mask)
        x = x + self.mlp(self.norm4(x))
        return x, (k1, v1, k2, v2)

    def step(self, x, audio, anchor_term, cos, sin, pe, ring: RingCache, layer: int, slot: int, valid):
        """One token (B, 1, W) against the ring; writes its keys/values into ``slot`` first."""
        q1, k1, v1 = self._kv(x, cos, sin, pe)
        ring.write(layer, 0, slot, k1, v1)
        x = x + self.attn_rope.attend(q1, ring.k[layer, 0], ring.v[layer, 0], valid)
        x = x + self.audio_linear(audio)
        x = x + anchor_term
        p = self.norm3(x) + pe
        q2, k2, v2 = (self.attn_pos.project(p, i) for i in range(3))
        ring.write(layer, 1, slot, k2, v2)
        x = x + self.attn_pos.attend(q2, ring.k[layer, 1], ring.v[layer, 1], valid)
        return x + self.mlp(self.norm4(x))


class RingCache:
    """Keys and values of the last ``R`` tokens per block and attention: (blocks, 2, B, H, R, E) each.

    Attention does not depend on the order of its keys (positions are inside them), so token ``n`` simply
    lives in slot ``n mod R``.
    """

    def __init__(self, blocks: int, batch: int, heads: int, slots: int, head_dim: int, device, dtype) -> None:
        shape = (blocks, 2, batch, heads, slots, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.count = 0  # tokens written so far

    @property
    def slots(self) -> int:
        return self.k.shape[4]

    def write(self, layer: int, attn: int, slot: int, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k[layer, attn, :, :, slot : slot + k.shape[2]] = k
        self.v[layer, attn, :, :, slot : slot + v.shape[2]] = v


def causal_mask(length: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(L, L): 0 on and below the diagonal, -inf above (the released float mask)."""
    return torch.triu(torch.full((length, length), float("-inf"), device=device, dtype=dtype), diagonal=1)


class OfficialGPTNet(nn.Module):
    """Token embeddings, audio fusion, anchor embedding, the blocks and the output projection.

    ``audio_proj`` / ``audio_other_proj`` (C -> W) project each stream; a guidance mask zeroes a projected
    stream (bias included) before ``fusion`` (2W -> W), so a "zeroed" branch still carries the fusion bias.
    """

    def __init__(self, cfg: OfficialGPT, latent_dim: int, feature_dim: int) -> None:
        super().__init__()
        W = cfg.width
        self.cfg = cfg
        self.audio_proj = nn.Linear(feature_dim, W)
        self.audio_other_proj = nn.Linear(feature_dim, W)
        self.fusion = nn.Linear(2 * W, W)
        self.face_embed = nn.Linear(latent_dim, W)
        self.anchor_embed = nn.Linear(latent_dim, W)
        self.blocks = nn.ModuleList(GPTBlock(cfg) for _ in range(cfg.blocks))
        self.output_norm = nn.LayerNorm(W)
        self.output_proj = nn.Linear(W, latent_dim)
        cos, sin = rotation_tables(W, cfg.max_positions)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.register_buffer("pe", sinusoid_table(W, cfg.max_positions), persistent=False)

    # -- conditioning -----------------------------------------------------------------------------
    def audio_tokens(self, f_self: torch.Tensor, f_other: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(1|B, L, C) x 2 features, keep (B, 3) 0/1 over (self, other, anchor) -> (B, L, W)."""
        a = self.audio_proj(f_self) * keep[:, 0, None, None]
        o = self.audio_other_proj(f_other) * keep[:, 1, None, None]
        return self.fusion(torch.cat([a, o], dim=-1))

    def anchor_tokens(self, anchor: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(1, 1, D) anchor -> (B, 1, W) anchor embedding, zeroed where keep[:, 2] == 0."""
        return self.anchor_embed(anchor) * keep[:, 2, None, None]

    def anchor_terms(self, anchor_tok: torch.Tensor) -> list[torch.Tensor]:
        """What each block's anchor cross-attention adds: a list of (B, 1, W), constant per session."""
        return [blk.anchor(anchor_tok) for blk in self.blocks]

    def condition(self, x: torch.Tensor) -> torch.Tensor:
        """(B, W) last hidden state -> (B, D) condition c of the flow head."""
        return self.output_proj(self.output_norm(x))

    # -- the released window ----------------------------------------------------------------------
    def run(self, x, audio, anchor_terms, positions: torch.Tensor, mask: torch.Tensor):
        """All blocks over x (B, L, W) at ``positions`` (L,) -> (hidden (B, L, W), per-block kv)."""
        cos, sin, pe = self.cos[positions], self.sin[positions], self.pe[positions]
        kvs = []
        for blk, anc in zip(self.blocks, anchor_terms, strict=True):
            x, kv = blk(x, audio, anc, cos, sin, pe, mask)
            kvs.append(kv)
        return x, kvs

    def window_forward(self, history, audio, anchor_terms) -> tuple[torch.Tensor, torch.Tensor]:
        """The released window: history (1|B, L, D) latents, audio (B, L, W) tokens -> (c (B, D), hidden).

        Positions 0..L-1 and a causal mask, recomputed for every generated frame.
        """
        L = history.shape[1]
        x = self.face_embed(history).expand(audio.shape[0], -1, -1)
        pos = torch.arange(L, device=x.device)
        h, _ = self.run(x, audio, anchor_terms, pos, causal_mask(L, x.device, x.dtype))
        return self.condition(h[:, -1]), h

    # -- streaming: the KV ring -------------------------------------------------------------------
    def new_ring(self, batch: int, device, dtype) -> RingCache:
        c = self.cfg
        return RingCache(c.blocks, batch, c.heads, c.history, c.width // c.heads, device, dtype)

    def ring_prefill(self, ring: RingCache, history, audio, anchor_terms) -> torch.Tensor:
        """Fill an empty ring with R tokens (the released first window, positions 0..R-1) -> c (B, D)."""
        R = ring.slots
        if ring.count != 0 or history.shape[1] != R:
            raise ValueError(f"prefill needs an empty ring and {R} tokens, got {history.shape[1]}")
        x = self.face_embed(history).expand(audio.shape[0], -1, -1)
        pos = torch.arange(R, device=x.device)
        h, kvs = self.run(x, audio, anchor_terms, pos, causal_mask(R, x.device, x.dtype))
        for i, (k1, v1, k2, v2) in enumerate(kvs):
            ring.write(i, 0, 0, k1, v1)
            ring.write(i, 1, 0, k2, v2)
        ring.count = R
        return self.condition(h[:, -1])

    def ring_step(self, ring: RingCache, latent, audio, anchor_terms) -> torch.Tensor:
        """One token: latent (1|B, 1, D) + audio (B, 1, W) against the ring -> c (B, D)."""
        n = ring.count
        slot = n % ring.slots
        pos = min(n, ring.slots - 1)
        x = self.face_embed(latent).expand(audio.shape[0], -1, -1)
        cos, sin, pe = self.cos[pos : pos + 1], self.sin[pos : pos + 1], self.pe[pos : pos + 1]
        valid = None
        if n < ring.slots:  # before the ring is full only written slots count
            valid = torch.full((1, ring.slots), float("-inf"), device=x.device, dtype=x.dtype)
            valid[:, : n + 1] = 0.0
        for i, (blk, anc) in enumerate(zip(self.blocks, anchor_terms, strict=True)):
            x = blk.step(x, audio, anc, cos, sin, pe, ring, i, slot, valid)
        ring.count = n + 1
        return self.condition(x[:, -1])

    def banded_forward(self, latents, audio, anchor_terms) -> torch.Tensor:
        """The ring's computation over a whole sequence: token i sees tokens i-R+1..i and sits at position
        min(i, R-1). latents (1|B, N, D), audio (B, N, W) -> c of every token (B, N, D)."""
        N, R = latents.shape[1], self.cfg.history
        x = self.face_embed(latents).expand(audio.shape[0], -1, -1)
        i = torch.arange(N, device=x.device)
        allowed = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < R)
        mask = torch.zeros(N, N, device=x.device, dtype=x.dtype).masked_fill(~allowed, float("-inf"))
        h, _ = self.run(x, audio, anchor_terms, i.clamp(max=R - 1), mask)
        return self.condition(h)
