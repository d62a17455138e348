"""The whole DyStream model: audio encoder, generator, flow head and warping autoencoder."""

from __future__ import annotations

import torch
from torch import nn

from dystream_ros.config import ModelConfig
from dystream_ros.model.articulation import ArticulationAutoencoder
from dystream_ros.model.audio import AudioEncoder
from dystream_ros.model.autoencoder import Autoencoder
from dystream_ros.model.flow_head import FlowHead
from dystream_ros.model.generator import Generator

__all__ = ["DyStreamModel", "build_model"]


class DyStreamModel(nn.Module):
    """Sizes come only from ``cfg``. ``render=False`` leaves out the appearance encoder and decoder.

    ``head_basis`` (3, D) buffer: orthonormal rows spanning the latent directions that head yaw, pitch
    and roll move along, fitted on training latents when the generator is exported (zeros: not known).
    The sampler scales the starting noise along them by ``SamplerConfig.head_temperature``.

    ``cfg.motion == "articulation"``: the motion is the standardised articulation vector and
    ``autoencoder`` is an :class:`~dystream_ros.model.articulation.ArticulationAutoencoder` (its
    ``motion`` gives the reference motion m0 and holds the standardisation); such a model never renders
    (``render`` must be False: ``render`` stays False, so a session never calls a decoder).
    """

    def __init__(self, cfg: ModelConfig, render: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.audio = AudioEncoder(cfg.audio)
        self.generator = Generator(cfg.generator, cfg.latent_dim, cfg.audio.feature_dim, cfg.head.width)
        self.head = FlowHead(cfg.head, cfg.latent_dim)
        if cfg.motion == "articulation":
            if render:
                raise ValueError("an articulation model has no decoder: build / load it with render=False")
            self.autoencoder = ArticulationAutoencoder(cfg.latent_dim)
        else:
            self.autoencoder = Autoencoder(cfg.autoencoder, cfg.latent_dim, render=render)
        self.render = render
        self.register_buffer("head_basis", torch.zeros(3, cfg.latent_dim))

    @property
    def articulation(self):
        """An articulation model's :class:`~dystream_ros.model.articulation.ArticulationSpace`, else None."""
        return self.autoencoder.motion if self.cfg.motion == "articulation" else None


def build_model(cfg: ModelConfig, render: bool = True, seed: int | None = 0) -> DyStreamModel:
    """Build with deterministic random init (``seed``) without touching the global RNG state."""
    if seed is None:
        return DyStreamModel(cfg, render=render)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DyStreamModel(cfg, render=render)
