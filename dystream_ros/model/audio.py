"""Causal audio encoder with an explicit lookahead, shared by the speaker and listener channels.

Shapes: ``B`` batch, ``T`` video frames, ``S`` samples, ``M`` mel frames, ``C`` encoder channels,
``K`` = ``cfg.lookahead_frames``, ``F`` = ``cfg.feature_dim``. Audio tensors carry a channel axis of size 2
(0 = speaker, the avatar's own voice; 1 = listener, the other person).

Timing contract (see ``AudioConfig``): the feature of frame ``n`` is a function of exactly the samples
``[640n - context, 640(n+1) + lookahead)`` of each channel. Streaming computes it from that window alone
(:meth:`AudioEncoder.forward`, constant cost per frame); training computes all frames of a clip at once
(:meth:`AudioEncoder.encode_sequence`), which gives the same values because the mel hops and the valid
(unpadded) convolutions line up with the per-frame windows.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dystream_ros.config import AudioConfig

__all__ = [
    "AudioEncoder",
    "LogMel",
    "frame_windows",
    "hz_to_mel",
    "mel_centres",
    "mel_filterbank",
    "mel_to_hz",
]


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel of a frequency in Hz."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    """Frequency in Hz of an HTK mel value."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_centres(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Centre frequencies (Hz) of the :func:`mel_filterbank` filters: (n_mels,)."""
    return mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))[1:-1]


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular HTK-mel filters, area-normalised: (n_mels, n_fft // 2 + 1) float32."""
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    fb = np.clip(np.minimum(up, down), 0.0, None)
    fb *= 2.0 / (hi - lo)  # equal area per filter
    return fb.astype(np.float32)


class LogMel(nn.Module):
    """Waveform (N, S) -> log-mel (N, n_mels, M) with M = (S - win) // hop + 1, no padding.

    The STFT is a strided conv1d with a fixed windowed DFT basis, so it runs and exports (ONNX) like
    any other conv and mel frame ``j`` covers samples ``[j*hop, j*hop + win)`` exactly. The output is
    ``log(mel + FLOOR) * SCALE + OFFSET`` (a fixed affine: roughly zero-mean, unit-scale for speech).
    """

    FLOOR, SCALE, OFFSET = 1e-6, 0.25, 2.0

    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        win, n_fft = cfg.win_samples, cfg.n_fft
        n_bins = n_fft // 2 + 1
        t = np.arange(win)
        window = np.sin(np.pi * (t + 0.5) / win) ** 2  # Hann sampled at mid-points: no zero-weight sample
        phase = 2.0 * np.pi * np.outer(np.arange(n_bins), t) / n_fft
        scale = 2.0 / window.sum()
        basis = np.concatenate([np.cos(phase) * window, -np.sin(phase) * window]) * scale
        self.hop = cfg.hop_samples
        self.n_bins = n_bins
        # Derived from the config, so not part of the state dict (non-persistent buffers).
        self.register_buffer("dft", torch.from_numpy(basis.astype(np.float32))[:, None, :], persistent=False)
        fb = mel_filterbank(n_fft, cfg.n_mels, cfg.sample_rate, cfg.fmin, cfg.fmax)
        self.register_buffer("fb", torch.from_numpy(fb), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spec = F.conv1d(wave[:, None, :], self.dft, stride=self.hop)  # (N, 2*bins, M)
        re, im = spec[:, : self.n_bins], spec[:, self.n_bins :]
        power = re * re + im * im
        mel = torch.matmul(self.fb, power)  # (N, n_mels, M)
        return torch.log(mel + self.FLOOR) * self.SCALE + self.OFFSET


class ChannelNorm(nn.Module):
    """LayerNorm over the channel axis of (N, C, M), independently per time step (keeps causality)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class CausalConvBlock(nn.Module):
    """Pre-norm residual block with a valid dilated conv: (N, C, M) -> (N, C, M - (k-1)*d)."""

    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.trim = (kernel_size - 1) * dilation
        self.norm = ChannelNorm(channels)
        self.conv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation)
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, self.trim :] + self.proj(F.gelu(self.conv(self.norm(x))))


class AudioEncoder(nn.Module):
    """Log-mel -> causal conv encoder (with channel embedding) -> lookahead module -> (.., 2, F)."""

    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        self.mel = LogMel(cfg)
        self.in_proj = nn.Conv1d(cfg.n_mels, c, 1)
        self.channel_embed = nn.Parameter(torch.randn(2, c) * 0.02)
        self.blocks = nn.ModuleList(CausalConvBlock(c, cfg.kernel_size, d) for d in cfg.dilations)
        self.look_norm = nn.LayerNorm(c)
        self.look_in = nn.Linear(cfg.lookahead_frames * c, cfg.feature_dim)
        self.look_out = nn.Linear(cfg.feature_dim, cfg.feature_dim)

    def _encode(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, 2, S) -> encoder outputs (B, 2, M - R + 1, C); output q sits at mel frame q + R - 1."""
        b, ch, s = wave.shape
        x = self.in_proj(self.mel(wave.reshape(b * ch, s)))  # (B*2, C, M)
        c, m = x.shape[1], x.shape[2]
        x = (x.view(b, ch, c, m) + self.channel_embed[:, :, None]).view(b * ch, c, m)
        for blk in self.blocks:
            x = blk(x)
        return self.look_norm(x.transpose(1, 2)).reshape(b, ch, -1, c)

    def _lookahead(self, h: torch.Tensor) -> torch.Tensor:
        """(..., K, C) -> (..., F)."""
        return self.look_out(F.gelu(self.look_in(h.flatten(-2))))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """One frame per batch item from its own window: (B, 2, window_samples) -> (B, 2, F)."""
        if windows.shape[-1] != self.cfg.window_samples:
            raise ValueError(
                f"audio window must have {self.cfg.window_samples} samples, got {windows.shape[-1]}"
            )
        h = self._encode(windows)  # (B, 2, K, C): exactly the K outputs of this frame
        return self._lookahead(h)

    def encode_sequence(self, wave: torch.Tensor, num_frames: int) -> torch.Tensor:
        """All frames of a clip: (B, 2, S) -> (B, T, 2, F).

        ``wave`` holds ``context_samples`` before frame 0's start, then ``T`` frames, then
        ``lookahead_samples`` (``frame_windows`` builds it); frame t equals ``forward`` on samples
        ``[t*640, t*640 + window_samples)``.
        """
        cfg = self.cfg
        need = cfg.window_samples + (num_frames - 1) * cfg.samples_per_frame
        if wave.shape[-1] != need:
            raise ValueError(
                f"{num_frames} frames need {need} samples (context + frames + lookahead), "
                f"got {wave.shape[-1]}"
            )
        h = self._encode(wave)  # (B, 2, Q, C)
        h = h.unfold(2, cfg.lookahead_frames, cfg.hops_per_frame)  # (B, 2, T, C, K)
        return self._lookahead(h.transpose(-1, -2)).transpose(1, 2)


def frame_windows(
    wave: torch.Tensor | np.ndarray, first_frame: int, num_frames: int, cfg: AudioConfig
) -> torch.Tensor:
    """Slice the audio frames ``first_frame .. first_frame+num_frames-1`` need from a clip.

    ``wave``: (..., S_clip) with sample 0 at time 0. Returns (..., context + 640*T + lookahead) samples,
    zero-filled outside the clip (silence before the start and after the end).
    """
    wave = torch.as_tensor(wave, dtype=torch.float32)
    start = first_frame * cfg.samples_per_frame - cfg.context_samples
    length = cfg.window_samples + (num_frames - 1) * cfg.samples_per_frame
    lo, hi = max(start, 0), min(start + length, wave.shape[-1])
    out = wave.new_zeros(*wave.shape[:-1], length)
    if hi > lo:
        out[..., lo - start : hi - start] = wave[..., lo:hi]
    return out
