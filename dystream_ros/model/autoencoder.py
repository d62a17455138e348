"""Warping autoencoder: appearance encoder, motion encoder, and a decoder that warps appearance.

Shapes: ``B`` batch, ``S`` image size, ``s`` warp (feature) size, ``A`` appearance channels, ``D`` latent.
Images are (B, 3, S, S) float in [-1, 1].

- :class:`AppearanceEncoder`: reference image -> appearance features (B, A, s, s), once per reference.
- :class:`MotionEncoder`: image -> motion latent (B, D) through a small normalised conv net and a linear
  bottleneck (the latent carries pose and expression; identity stays in the appearance features).
  ``m0`` = motion of the reference.
- :class:`WarpDecoder`: (m, m0) -> flow net -> dense flow (B, 2, s, s) + occlusion (B, 1, s, s) + blend
  mask; warp the appearance features (grid_sample), mask occluded regions, refine/inpaint with convs
  (fed the flow net's motion features too, FiLM-modulated by (m, m0)), upsample (PixelShuffle) to
  (B, 3, S, S); finally blend with the reference image warped at full resolution by the upsampled
  flow (sharp where visible, synthesised where the mask says the reference has no content, e.g. the
  inside of an opening mouth), optionally (``shading``) with a brightness gain on the warped reference
  predicted from the refine features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dystream_ros.config import AutoencoderConfig

__all__ = ["AppearanceEncoder", "Autoencoder", "MotionEncoder", "WarpDecoder", "identity_grid"]


def _conv(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def _act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


def identity_grid(size: int) -> torch.Tensor:
    """(1, size, size, 2) sampling grid of pixel centres in [-1, 1] (x, y), for align_corners=False."""
    c = (torch.arange(size, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x, y], dim=-1)[None]


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels)
        self.conv2 = _conv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(_act(self.conv1(_act(x))))


class AppearanceEncoder(nn.Module):
    """(B, 3, S, S) -> (B, A, s, s): stem, one stride-2 conv per halving, residual blocks."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        chans = (*cfg.enc_channels, cfg.app_channels) if cfg.enc_channels else (cfg.app_channels,)
        self.stem = _conv(3, chans[0])
        self.down = nn.ModuleList(_conv(chans[i], chans[i + 1], stride=2) for i in range(len(chans) - 1))
        self.blocks = nn.ModuleList(ResBlock(cfg.app_channels) for _ in range(cfg.enc_blocks))
        self.out = _conv(cfg.app_channels, cfg.app_channels, k=1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = _act(self.stem(img))
        for conv in self.down:
            x = _act(conv(x))
        for blk in self.blocks:
            x = blk(x)
        return self.out(_act(x))


class MotionEncoder(nn.Module):
    """(B, 3, S, S) -> (B, D): area-downsample to ``motion_size``, conv stages, flatten, linear.

    Each stage is a stride-2 3x3 conv + GroupNorm + activation (a second, stride-1 one in the stages of
    ``motion_extra_convs``), ending at (B, C, r, r) with r = motion_size / 2^stages. The map is flattened,
    not pooled, so the latent knows *where* things are (mouth vs. brows, head position): with a global
    average pool and no normalisation the encoder learned the articulation far too slowly to be usable.
    """

    def __init__(self, cfg: AutoencoderConfig, latent_dim: int) -> None:
        super().__init__()
        self.pool = cfg.image_size // cfg.motion_size
        chans = (3, *cfg.motion_channels)
        layers: list[nn.Module] = []
        for i in range(len(cfg.motion_channels)):
            c = chans[i + 1]
            layers += [_conv(chans[i], c, stride=2), nn.GroupNorm(8, c), nn.LeakyReLU(0.2)]
            if i in cfg.motion_extra_convs:
                layers += [_conv(c, c), nn.GroupNorm(8, c), nn.LeakyReLU(0.2)]
        self.stages = nn.Sequential(*layers)
        side = cfg.motion_size // 2 ** len(cfg.motion_channels)
        self.out = nn.Linear(chans[-1] * side * side, latent_dim)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(img, self.pool) if self.pool > 1 else img
        return self.out(self.stages(x).flatten(1))


class FlowNet(nn.Module):
    """(m, m0) (B, 2D) -> motion features (B, c_last, s, s) and raw maps (B, 4, s, s).

    Raw maps: flow (2, tanh, in grid units), occlusion logit (1), blend logit (1).
    """

    def __init__(self, cfg: AutoencoderConfig, latent_dim: int) -> None:
        super().__init__()
        ch = cfg.flow_channels
        self.seed_channels = ch[0]
        self.fc = nn.Linear(2 * latent_dim, ch[0] * 8 * 8)
        self.ups = nn.ModuleList(_conv(ch[i], ch[i + 1]) for i in range(len(ch) - 1))
        self.out = _conv(ch[-1], 4)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _act(self.fc(z)).view(z.shape[0], self.seed_channels, 8, 8)
        for conv in self.ups:
            x = _act(conv(F.interpolate(x, scale_factor=2.0, mode="nearest")))
        return x, self.out(x)


class WarpDecoder(nn.Module):
    """(m (B, D), m0 (B, D), appearance (B, A, s, s), reference (B, 3, S, S)) -> image (B, 3, S, S)."""

    def __init__(self, cfg: AutoencoderConfig, latent_dim: int) -> None:
        super().__init__()
        self.image_size = cfg.image_size
        self.shading = cfg.shading
        self.flow = FlowNet(cfg, latent_dim)
        r = cfg.refine_channels
        self.refine_in = _conv(cfg.app_channels + cfg.flow_channels[-1], r)
        # FiLM from (m, m0): every refine position knows the whole motion (how far the jaw is open), and
        # the warped appearance beside it says where the lips are. Zero-initialised (identity).
        self.film = nn.Linear(2 * latent_dim, 2 * r)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.refine = nn.ModuleList(ResBlock(r) for _ in range(cfg.refine_blocks))
        if cfg.shading:
            # Brightness gain of the warped reference, read from the refine features (zero-init: gain 1).
            self.gain = _conv(r, 1)
            nn.init.zeros_(self.gain.weight)
            nn.init.zeros_(self.gain.bias)
        # x2 stages: 3x3 conv + PixelShuffle; the last stage is a per-pixel linear map to 2x2 RGB sub-pixels
        # (a 1x1 conv + PixelShuffle, done as one matmul: the cheapest way to reach full resolution).
        chans = (r, *cfg.up_channels)
        self.ups = nn.ModuleList(_conv(chans[i], 4 * chans[i + 1]) for i in range(len(chans) - 1))
        self.to_rgb = nn.Linear(chans[-1], 3 * 4)
        self.register_buffer("grid_small", identity_grid(cfg.warp_size), persistent=False)
        self.register_buffer("grid_full", identity_grid(cfg.image_size).permute(0, 3, 1, 2), persistent=False)

    def forward(
        self, m: torch.Tensor, m0: torch.Tensor, appearance: torch.Tensor, reference: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        z = torch.cat([m, m0], dim=-1)
        feats, raw = self.flow(z)
        flow = torch.tanh(raw[:, :2]).contiguous()  # (B, 2, s, s) offsets in grid units
        occlusion = torch.sigmoid(raw[:, 2:3])
        warped = F.grid_sample(
            appearance, self.grid_small + flow.permute(0, 2, 3, 1), padding_mode="border", align_corners=False
        )
        scale, shift = self.film(z)[:, :, None, None].chunk(2, dim=1)
        x = _act(self.refine_in(torch.cat([warped * occlusion, feats], dim=1)) * (1.0 + scale) + shift)
        for blk in self.refine:
            x = blk(x)
        gain_logit = self.gain(x) if self.shading else None
        for conv in self.ups:
            x = _act(F.pixel_shuffle(conv(x), 2))
        b, _, h, w = x.shape
        rgb = self.to_rgb(x.permute(0, 2, 3, 1)).view(b, h, w, 3, 2, 2)  # (B, h, w, RGB, dy, dx)
        generated = rgb.permute(0, 3, 1, 4, 2, 5).reshape(b, 3, 2 * h, 2 * w).clamp(-1.0, 1.0)
        # Full resolution: the reference warped by the upsampled flow, blended with the synthesis.
        size = (self.image_size, self.image_size)
        flow_full = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
        grid_full = (self.grid_full + flow_full).permute(0, 2, 3, 1)
        warped_ref = F.grid_sample(reference, grid_full, padding_mode="border", align_corners=False)
        if self.shading:
            # Brightness gain in (0, 2) on the [0, 1] image: darkens what warping only stretches (the
            # inside of an opening mouth is stretched lip otherwise).
            gain_logit = F.interpolate(gain_logit, size=size, mode="bilinear", align_corners=False)
            gain = 2.0 * torch.sigmoid(gain_logit)
            warped_ref = ((warped_ref + 1.0) * gain - 1.0).clamp(-1.0, 1.0)
        blend_logit = raw[:, 3:4].contiguous()
        blend = torch.sigmoid(F.interpolate(blend_logit, size=size, mode="bilinear", align_corners=False))
        image = torch.lerp(generated, warped_ref, blend)
        return {"image": image, "generated": generated, "flow": flow, "occlusion": occlusion, "blend": blend}


class Autoencoder(nn.Module):
    """Motion encoder always; appearance encoder and decoder only when ``render`` (latents-only mode)."""

    def __init__(self, cfg: AutoencoderConfig, latent_dim: int, render: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.render = render
        self.motion = MotionEncoder(cfg, latent_dim)
        if render:
            self.appearance = AppearanceEncoder(cfg)
            self.decoder = WarpDecoder(cfg, latent_dim)

    def reconstruct(self, source: torch.Tensor, driving: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training forward: render ``source``'s appearance with ``driving``'s motion.

        source/driving (B, 3, S, S) in [-1, 1] -> dict with ``image`` (B, 3, S, S), ``flow``,
        ``occlusion``, ``blend`` and the latents ``m_source``, ``m_driving`` (B, D).
        """
        if not self.render:
            raise RuntimeError("this autoencoder was built with render=False (no appearance encoder/decoder)")
        m_s, m_d = self.motion(source), self.motion(driving)
        out = self.decoder(m_d, m_s, self.appearance(source), source)
        out.update(m_source=m_s, m_driving=m_d)
        return out
