"""Shared helpers for the model tests (no tests here): tiny configs and synthetic audio."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dystream_ros.config import AudioConfig, AutoencoderConfig, GeneratorConfig, HeadConfig, ModelConfig

SR = 16000
SPF = 640  # samples per 40 ms frame


def tiny_config(lookahead_ms: int = 60, window: int = 8) -> ModelConfig:
    """A few-thousand-parameter model with the full architecture (fast enough for per-test sessions)."""
    return ModelConfig(
        profile="tiny",
        latent_dim=8,
        audio=AudioConfig(
            n_mels=20, channels=16, dilations=(1, 2), feature_dim=16, lookahead_ms=lookahead_ms
        ),
        generator=GeneratorConfig(width=32, layers=2, heads=2, mlp_ratio=2, window=window),
        head=HeadConfig(width=32, blocks=2, mlp_ratio=2, time_freq_dim=16),
        autoencoder=AutoencoderConfig(
            image_size=32,
            warp_size=8,
            app_channels=8,
            enc_channels=(8, 8),
            enc_blocks=1,
            motion_size=16,
            motion_channels=(8, 16),
            motion_extra_convs=(1,),
            flow_channels=(16,),
            refine_channels=8,
            refine_blocks=1,
            up_channels=(8,),
            shading=True,
        ),
    )


def speechlike(seconds: float, seed: int, f0: float = 150.0) -> np.ndarray:
    """Voiced 4 Hz syllables plus a little noise, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    env = (np.sin(2 * np.pi * 4.0 * t + seed) > 0).astype(np.float32)
    x = 0.3 * env * np.sin(2 * np.pi * f0 * t) + 0.02 * rng.standard_normal(t.size)
    return np.clip(x, -1, 1).astype(np.float32)


def face(seed: int, size: int = 48) -> np.ndarray:
    """A random-ish RGB uint8 image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 255 // size, yy * 255 // size, ((xx + yy) * 127 // size)], -1)
    return np.clip(base + rng.integers(0, 60, (size, size, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module", autouse=False)
def one_thread():
    """Run a module's torch work on one thread: on a busy 2-core box OpenMP barriers with 2 threads can be
    10x slower. Restores the previous setting afterwards."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
