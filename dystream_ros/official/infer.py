"""Per-frame computations of the released model, shared by both inference modes and ``parity-io``.

Shapes: ``T`` 25 Hz frames, ``C`` audio feature width, ``D`` latent, ``R`` history (94), 5 guidance
branches in :data:`~dystream_ros.official.head.BRANCHES` order.

``release`` (:func:`offline`): the released offline procedure. Both tracks get a 94-frame zero prefix, are
encoded once over the whole clip; frame k uses the window of features ``F[k+1 .. k+94]`` (of the prefixed
clip), the history of the last 94 latents (first filled with m0), the anchor m0, and one guided sampling.

``streaming``: see :mod:`dystream_ros.official.pipeline`; it shares :class:`Engine` (tokens, anchor terms,
sampling).
"""

from __future__ import annotations

import numpy as np
import torch

from dystream_ros.official.audio import Wav2Vec2Encoder, prepare, to_25hz
from dystream_ros.official.head import branch_keep, guidance_weights, sample, schedule
from dystream_ros.official.model import OfficialModel

__all__ = ["Engine", "offline"]


class Engine:
    """A loaded :class:`OfficialModel` on a device, with the sampler's grid and time embeddings cached."""

    def __init__(self, model: OfficialModel, device: str | torch.device = "cpu") -> None:
        self.model = model
        self.cfg = model.cfg
        self.device = torch.device(device)
        self.dtype = next(model.gpt.parameters()).dtype  # GPT, time embedding and head
        self.audio_dtype = next(model.audio_self.parameters()).dtype
        self.keep = branch_keep(self.device, self.dtype)
        self.weights = guidance_weights(self.cfg.sampler)
        self._grids: dict[int, tuple] = {}

    def grid(self, steps: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(sigmas, timesteps, time embeddings (1, 1, W) per step) for ``steps`` sampler steps."""
        if steps not in self._grids:
            sig, ts = schedule(self.cfg.sampler, steps)
            with torch.no_grad():
                temb = [self.model.time_embed(t.reshape(1).to(self.device)).unsqueeze(1) for t in ts]
            self._grids[steps] = (sig.to(self.device), ts, temb)
        return self._grids[steps]

    # -- audio ------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_track(self, enc: Wav2Vec2Encoder, wave: np.ndarray) -> torch.Tensor:
        """(S,) raw samples -> (1, T, C) 25 Hz features of exactly this input (normalised as a whole)."""
        x = prepare(wave, self.cfg.audio.pad_samples).to(self.device, self.audio_dtype)
        return to_25hz(enc(x)).to(self.dtype)

    # -- conditioning -----------------------------------------------------------------------------
    @torch.no_grad()
    def anchor_terms(self, anchor: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """anchor (1, 1, D) -> (anchor tokens (5, 1, W), per-block anchor terms)."""
        tok = self.model.gpt.anchor_tokens(anchor.to(self.device, self.dtype), self.keep)
        return tok, self.model.gpt.anchor_terms(tok)

    @torch.no_grad()
    def audio_tokens(self, f_self: torch.Tensor, f_other: torch.Tensor) -> torch.Tensor:
        """(1, L, C) x 2 -> (5, L, W) fused audio tokens per branch."""
        return self.model.gpt.audio_tokens(f_self, f_other, self.keep)

    @torch.no_grad()
    def window_condition(
        self,
        history: torch.Tensor,
        f_self: torch.Tensor,
        f_other: torch.Tensor,
        anchor_terms: list[torch.Tensor],
        branches: list[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The released window: history (1, R, D), features (1, R, C) aligned with it ->
        (c (5, 1, D), last hidden (5, R, W), audio tokens (5, R, W)).

        ``branches``: compute only these (the other rows of c are zero); the branches are independent, so
        this is exact for the ones computed."""
        if branches is None:
            audio = self.audio_tokens(f_self, f_other)
            c, h = self.model.gpt.window_forward(history.to(self.device, self.dtype), audio, anchor_terms)
            return c[:, None], h, audio
        idx = torch.tensor(branches, device=self.device)
        audio = self.model.gpt.audio_tokens(f_self, f_other, self.keep[idx])
        anc = [a[idx] for a in anchor_terms]
        c_sub, h = self.model.gpt.window_forward(history.to(self.device, self.dtype), audio, anc)
        c = torch.zeros(5, c_sub.shape[-1], device=self.device, dtype=c_sub.dtype)
        c[idx] = c_sub
        return c[:, None], h, audio

    @torch.no_grad()
    def sample(
        self, c: torch.Tensor, noise: torch.Tensor, steps: int | None = None, record: dict | None = None
    ) -> torch.Tensor:
        """c (5, 1, D), noise (1, 1, D) -> latent (1, 1, D)."""
        sig, ts, temb = self.grid(self.cfg.sampler.steps if steps is None else steps)
        return sample(
            self.model.head,
            self.model.time_embed,
            c,
            noise.to(self.device, self.dtype),
            self.weights,
            sig,
            ts,
            temb_cache=temb,
            record=record,
        )


@torch.no_grad()
def offline(
    engine: Engine,
    self_wave: np.ndarray,
    other_wave: np.ndarray | None,
    m0: torch.Tensor,
    noises: torch.Tensor | None = None,
    frames: int | None = None,
    seed: int = 0,
    record: dict | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """The released offline run: (S,) tracks, m0 (1, D) -> latents (N, D), N = floor(S/640) - 1.

    ``frames`` stops after that many frames.

    Frame k starts from ``noises[k]`` (1, D) when given, else from seeded N(0, I).
    """
    from tqdm import tqdm

    cfg = engine.cfg
    R, spf = cfg.gpt.history, cfg.samples_per_frame
    self_wave = np.asarray(self_wave, dtype=np.float32)
    other_wave = np.zeros_like(self_wave) if other_wave is None else np.asarray(other_wave, dtype=np.float32)
    pre = np.zeros(R * spf, dtype=np.float32)
    a = np.concatenate([pre, self_wave])
    b = np.concatenate([pre, other_wave])
    T = len(a) // spf
    fs = engine.encode_track(engine.model.audio_self, a)
    fo = engine.encode_track(engine.model.audio_other, b)
    if record is not None:
        record["feat25_self"], record["feat25_other"], record["gpt_cond"] = fs, fo, []
    n = T - (R + 1) if frames is None else min(frames, T - (R + 1))
    m0 = m0.reshape(1, 1, -1).to(engine.device, engine.dtype)
    _, anc = engine.anchor_terms(m0)
    history = m0.expand(1, R, -1).clone()
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for k in tqdm(range(n), desc="official release", unit="frame", disable=not progress):
        c, _, _ = engine.window_condition(history, fs[:, k + 1 : k + 1 + R], fo[:, k + 1 : k + 1 + R], anc)
        if noises is not None:
            z = noises[k].reshape(1, 1, -1)
        else:
            z = torch.randn(1, 1, cfg.latent_dim, generator=g) * cfg.sampler.temperature
        x = engine.sample(c, z)
        if record is not None:
            record["gpt_cond"].append(c)
        out.append(x[0, 0])
        history = torch.cat([history[:, 1:], x], dim=1)
    return torch.stack(out) if out else torch.zeros(0, cfg.latent_dim)
