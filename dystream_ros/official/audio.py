"""Audio front end of the released model: two wav2vec2-base encoders (self, other), 50 Hz -> 25 Hz.

Shapes: ``S`` samples at 16 kHz, ``N`` wav2vec frames at 50 Hz (hop 320), ``T`` 25 Hz frames, ``C`` the
encoder width (768).

Per track (dystream_reference.md §2, README §7 of the parity harness):
  1. normalise the whole given waveform: ``(x - mean) / sqrt(var + 1e-7)`` (population variance, float32);
  2. append 80 zeros, so ``640 T`` samples give exactly ``N = 2T`` frames;
  3. the first ``layers`` layers of wav2vec2-base, bidirectional, last hidden state (B, N, C);
  4. linear interpolation to 25 Hz with ``align_corners=True`` and scale 0.5 (T = floor(N / 2)).

The encoders are ``transformers.Wav2Vec2Model`` built from a ``Wav2Vec2Config`` (nothing is fetched):
their tensor names are the released ones (``feature_extractor.*``, ``feature_projection.*``,
``encoder.*``) and the positional convolution's weight norm is a torch parametrization
(``encoder.pos_conv_embed.conv.parametrizations.weight.original0/1``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dystream_ros.official.config import OfficialAudio

__all__ = ["Wav2Vec2Encoder", "normalise", "prepare", "to_25hz"]


def normalise(wave: np.ndarray) -> np.ndarray:
    """(S,) float32 -> zero mean, unit (population) variance over the whole input, in float32."""
    x = np.asarray(wave, dtype=np.float32)
    return (x - x.mean()) / np.sqrt(x.var() + 1e-7)


def prepare(wave: np.ndarray, pad: int = 80) -> torch.Tensor:
    """(S,) -> (1, S + pad) float32: normalised, then ``pad`` zeros appended."""
    x = normalise(wave)
    return torch.from_numpy(np.concatenate([x, np.zeros(pad, dtype=np.float32)]))[None]


def to_25hz(feat50: torch.Tensor) -> torch.Tensor:
    """(B, N, C) at 50 Hz -> (B, floor(N/2), C): linear, align_corners=True (not a pairwise mean)."""
    return F.interpolate(
        feat50.transpose(1, 2), scale_factor=0.5, mode="linear", align_corners=True
    ).transpose(1, 2)


class Wav2Vec2Encoder(nn.Module):
    """wav2vec2-base truncated to ``cfg.layers`` layers: (B, S) normalised samples -> (B, N, C) at 50 Hz."""

    def __init__(self, cfg: OfficialAudio) -> None:
        super().__init__()
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        conf = Wav2Vec2Config(**cfg.wav2vec2_kwargs())
        conf._attn_implementation = "sdpa"
        base = Wav2Vec2Model(conf)
        # the three parts the released wrapper keeps, under the same names
        self.feature_extractor = base.feature_extractor
        self.feature_projection = base.feature_projection
        self.encoder = base.encoder
        self.cfg = cfg

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        low = self.feature_extractor(wave).transpose(1, 2)  # (B, N, conv_dim)
        h, _ = self.feature_projection(low)
        return self.encoder(h, return_dict=False)[0]

    def features(self, wave: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """One track, the released way: (S,) raw samples -> (1, floor((S + 80) / 640) ... , C) at 25 Hz."""
        x = prepare(wave, self.cfg.pad_samples).to(device=device, dtype=next(self.parameters()).dtype)
        return to_25hz(self(x))
