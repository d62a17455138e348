"""Generator training helpers: CFG dropout, anchor sampling, noisy history, flow-matching loss.

Shapes: ``B`` batch, ``T`` frames in the training window, ``D`` latent, ``S`` audio samples.

A training batch (see :func:`generator_loss`):

- ``audio``: (B, 2, S) float, speaker and listener, ``S = context + 640*T + lookahead`` samples
  (``model.audio.frame_windows(clip, first_frame, T, cfg.audio)`` cuts it from a clip, zero-filled
  outside the clip), so frame t's feature is exactly what streaming computes for it;
- ``motion``: (B, T + 1, D): ``motion[:, 0]`` is the latent before the window (m0 at a clip start) and
  ``motion[:, 1:]`` are the targets. Token t carries ``motion[:, t]`` (the previous latent) and frame t's
  audio; its condition predicts ``motion[:, t + 1]``.

The generator is run over the whole window with the same banded sliding-window mask inference uses, so
with ``T > window`` the model learns exactly the context it will see from the KV ring.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dystream_ros.config import TrainConfig
from dystream_ros.model.dystream import DyStreamModel

__all__ = ["cfg_dropout", "corrupt_history", "flow_interpolant", "generator_loss", "sample_anchor"]


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device)


def cfg_dropout(
    batch: int, frames: int, cfg: TrainConfig, generator: torch.Generator | None = None, device="cpu"
) -> torch.Tensor:
    """Per-frame, per-stream dropout for classifier-free guidance: (B, T, 3) bool over (speaker,
    listener, anchor); True selects the stream's learned null embedding.

    Per frame (not per sample) because inference guidance nulls a stream in the current frame's token
    only, against the conditioned history (see ``generator``).
    """
    p = torch.tensor([cfg.drop_speaker, cfg.drop_listener, cfg.drop_anchor], device=device)
    return _rand((batch, frames, 3), generator, torch.device(device)) < p


def sample_anchor(motion: torch.Tensor, last: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Anchor per sample, drawn uniformly from the last ``last`` frames: (B, T, D) -> (B, D)."""
    b, t, _ = motion.shape
    k = min(last, t)
    idx = t - 1 - torch.randint(0, k, (b,), generator=generator, device=motion.device)
    return motion[torch.arange(b, device=motion.device), idx]


def corrupt_history(
    history: torch.Tensor, p: float, max_noise: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Noisy history against exposure bias: (B, T, D) -> (B, T, D).

    Each frame, with probability ``p``, moves towards Gaussian noise along the flow interpolant:
    ``(1 - s) * h + s * eps`` with ``s ~ U(0, max_noise)`` per corrupted frame; other frames stay clean.
    """
    b, t, _ = history.shape
    dev = history.device
    hit = _rand((b, t, 1), generator, dev) < p
    s = _rand((b, t, 1), generator, dev) * max_noise * hit
    eps = torch.randn(history.shape, generator=generator, device=dev)
    return (1 - s) * history + s * eps


def flow_interpolant(
    x1: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rectified-flow training pair for data x1 (N, D): (x_t, t (N,), target velocity x1 - x0)."""
    n = x1.shape[0]
    t = torch.rand((n,), generator=generator, device=x1.device)
    x0 = torch.randn(x1.shape, generator=generator, device=x1.device)
    return (1 - t[:, None]) * x0 + t[:, None] * x1, t, x1 - x0


def generator_loss(
    model: DyStreamModel, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Flow-matching loss of audio encoder + generator + head on one batch (see module docstring).

    Returns the scalar loss (mean squared velocity error, one independent t per frame) and floats for
    logging.
    """
    cfg = model.cfg
    audio, motion = batch["audio"], batch["motion"]
    _, t1, d = motion.shape
    t = t1 - 1
    if d != cfg.latent_dim or t < 1:
        raise ValueError(f"motion must be (B, T+1, {cfg.latent_dim}) with T >= 1, got {tuple(motion.shape)}")
    feats = model.audio.encode_sequence(audio, t)  # (B, T, 2, F)
    loss, drop = flow_matching_loss(cfg, model.generator, model.head, feats, motion, generator)
    return loss, {"loss": float(loss.detach()), "drop_rate": float(drop.float().mean())}


def flow_matching_loss(
    cfg, transformer, head, feats: torch.Tensor, motion: torch.Tensor,
    generator: torch.Generator | None = None, anchor: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training recipe after the audio encoder, shared by :func:`generator_loss` and the trainer.

    feats (B, T, 2, F) fused-audio inputs, motion (B, T+1, D) latents (frame 0 = the first history
    latent) -> (loss, per-frame CFG drop mask). Noisy history, anchor from the last frames, per-frame CFG
    dropout, rectified-flow velocity loss with one independent t per frame. ``anchor`` (B, D): each
    window's anchor instead of one drawn from its last ``anchor_last`` frames (e.g. the reference motion
    m0, the anchor a session conditions on). ``cfg.train.loss_weight`` weighs the motion columns.
    """
    b, t1, d = motion.shape
    t = t1 - 1
    targets = motion[:, 1:]
    history = corrupt_history(
        motion[:, :-1], cfg.train.history_noise_p, cfg.train.history_noise_max, generator
    )
    if anchor is None:
        anchor = sample_anchor(targets, cfg.train.anchor_last, generator)
    elif anchor.shape != (b, d):
        raise ValueError(f"anchor must be (B, D) = {(b, d)}, got {tuple(anchor.shape)}")
    anchor = anchor[:, None].expand(b, t, d)
    drop = cfg_dropout(b, t, cfg.train, generator, motion.device)
    tokens = transformer.embed(history, feats, anchor, drop)
    cond = transformer(tokens)  # (B, T, Wh)
    x_t, tt, v = flow_interpolant(targets.reshape(b * t, d), generator)
    pred = head(x_t, tt, cond.reshape(b * t, -1))
    if not cfg.train.loss_weight:
        return F.mse_loss(pred, v), drop
    w = torch.tensor(cfg.train.loss_weight, dtype=pred.dtype, device=pred.device)
    return ((pred - v).square() * (w / w.mean())).mean(), drop
