"""The released autoencoder at 512²: LIA motion encoder, latent navigation, appearance volume, warp + SPADE.

Shapes: ``B`` batch, ``D`` motion latent (512), ``M`` motion space (64), ``Cv x Dv x 64 x 64`` the
appearance volume (32 x 16 x 64 x 64), ``S`` the image side (512). Images are in [-1, 1], NCHW.

Tensor names follow the released checkpoint (``motion_encoder.*``, ``flow_estimator.*``,
``face_encoder.*``, ``face_generator.*``) so that conversion is a checked copy; the converter folds each
spectral norm into its weight (``weight_orig / (u . W v)`` with the stored u, v, as the released eval
forward computes it) and drops the fixed blur kernels (rebuilt here and compared) and the unused
``warp_layer``.

* motion encoder (StyleGAN2 style): 1x1 EqualConv + FusedLeakyReLU, then ResBlocks
  ``(conv3x3(x) -> blur + 3x3 stride 2) + (blur + 1x1 stride 2 skip)) / sqrt 2``, a final 4x4 EqualConv;
  EqualConv weights are scaled by 1/sqrt(fan_in) at run time; a non-S input is resized bilinearly.
* flow estimator: ``ref + Q fc(tgt)`` with Q the reduced QR of ``direction.weight + 1e-8`` (computed once),
  ``fc`` five EqualLinear layers without activation.
* appearance encoder: conv-BN-ReLU, 3 x (conv-BN-ReLU-avgpool), 1x1 conv, view as a volume, 6 pre-activation
  3-D residual blocks. BatchNorm uses its running statistics.
* face generator: warp field from the latent (adaptive group norm, weight-standardised 3-D convs), trilinear
  ``grid_sample`` of the volume, occlusion-weighted ``seg``, 6 + 2 SPADE residual blocks, pixel shuffle, tanh.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dystream_ros.official.config import OfficialAutoencoder

__all__ = [
    "BLUR_KERNEL",
    "FaceEncoder",
    "FaceGenerator",
    "FlowEstimator",
    "MotionEncoder",
    "OfficialAutoencoderNet",
]


def blur_kernel() -> torch.Tensor:
    """(4, 4): [1, 3, 3, 1] outer itself, normalised to sum 1."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = k[None, :] * k[:, None]
    return k / k.sum()


BLUR_KERNEL = blur_kernel()


# ------------------------------------------------------------------------------------- motion encoder
class Blur(nn.Module):
    """Depthwise [1,3,3,1]² blur with symmetric zero padding ``pad``."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad
        self.register_buffer("kernel", blur_kernel(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        y = F.pad(x.reshape(B * C, 1, H, W), [self.pad] * 4)
        y = F.conv2d(y, torch.flip(self.kernel, [0, 1])[None, None].to(x.dtype))
        return y.reshape(B, C, y.shape[-2], y.shape[-1])


class EqualConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.scale = 1 / math.sqrt(cin * k**2)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, stride=self.stride, padding=self.padding)


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias, 0.2) * 2**0.5


class ResBlock(nn.Module):
    """(B, Cin, H, W) -> (B, Cout, H/2, W/2). Names: conv1.{0,1}, conv2.{0 blur,1,2}, skip.{0 blur,1}."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(EqualConv2d(cin, cin, 3, padding=1), FusedLeakyReLU(cin))
        self.conv2 = nn.Sequential(Blur(2), EqualConv2d(cin, cout, 3, stride=2), FusedLeakyReLU(cout))
        self.skip = nn.Sequential(Blur(1), EqualConv2d(cin, cout, 1, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class MotionEncoder(nn.Module):
    """(B, 3, h, w) image -> (B, D) motion latent."""

    def __init__(self, cfg: OfficialAutoencoder) -> None:
        super().__init__()
        ch = cfg.motion_channels
        layers: list[nn.Module] = [nn.Sequential(EqualConv2d(3, ch[0], 1), FusedLeakyReLU(ch[0]))]
        layers += [ResBlock(a, b) for a, b in zip(ch[:-1], ch[1:], strict=True)]
        layers.append(EqualConv2d(ch[-1], cfg.latent_dim, 4))
        self.convs = nn.Sequential(*layers)
        self.size = cfg.image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.convs(x).reshape(x.shape[0], -1)


# ------------------------------------------------------------------------------------- flow estimator
class EqualLinear(nn.Module):
    def __init__(self, din: int, dout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dout, din))
        self.bias = nn.Parameter(torch.zeros(dout))
        self.scale = 1 / math.sqrt(din)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class Direction(nn.Module):
    def __init__(self, latent: int, space: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(latent, space))
        self._q: torch.Tensor | None = None

    def basis(self) -> torch.Tensor:
        """Q (D, M): reduced QR of weight + 1e-8, sign convention as LAPACK returns it; cached (eval)."""
        if self._q is None or self._q.device != self.weight.device or self.training:
            q, _ = torch.linalg.qr((self.weight + 1e-8).float().cpu())
            self._q = q.to(self.weight.device, self.weight.dtype)
        return self._q


class FlowEstimator(nn.Module):
    """ref (B, D), tgt (B, D) -> ref + Q fc(tgt) (B, D)."""

    def __init__(self, cfg: OfficialAutoencoder) -> None:
        super().__init__()
        D = cfg.latent_dim
        self.fc = nn.Sequential(*(EqualLinear(D, D) for _ in range(4)), EqualLinear(D, cfg.motion_space))
        self.direction = Direction(D, cfg.motion_space)

    def forward(self, ref: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        alpha = self.fc(tgt.reshape(tgt.shape[0], -1))  # (B, M)
        q = self.direction.basis()
        return ref + (torch.diag_embed(alpha) @ q.T).sum(1)


# ------------------------------------------------------------------------------------- appearance
class SameBlock2d(nn.Module):
    def __init__(self, cin: int, cout: int, leaky: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm = nn.BatchNorm2d(cout)
        self.leaky = leaky

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.conv(x))
        return F.leaky_relu(y, 0.01) if self.leaky else F.relu(y)


class DownBlock2d(SameBlock2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(super().forward(x), 2)


class ResBlock3d(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(c, c, 3, padding=1)
        self.conv2 = nn.Conv3d(c, c, 3, padding=1)
        self.norm1 = nn.BatchNorm3d(c)
        self.norm2 = nn.BatchNorm3d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))


class FaceEncoder(nn.Module):
    """(B, 3, S, S) -> appearance volume (B, Cv, Dv, S/2^k, S/2^k)."""

    def __init__(self, cfg: OfficialAutoencoder) -> None:
        super().__init__()
        e, m = cfg.app_expansion, cfg.app_max
        self.first = SameBlock2d(3, e)
        chans = [min(m, e * 2**i) for i in range(cfg.app_down + 1)]
        pairs = zip(chans[:-1], chans[1:], strict=True)
        self.down_blocks = nn.ModuleList(DownBlock2d(a, b) for a, b in pairs)
        self.second = nn.Conv2d(chans[-1], m, 1)
        self.resblocks_3d = nn.Sequential()
        for i in range(cfg.app_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(cfg.volume_channels))
        self.cfg = cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        S = self.cfg.image_size
        if x.shape[-1] != S:
            x = F.interpolate(x, size=(S, S), mode="bilinear", align_corners=False)
        y = self.first(x)
        for blk in self.down_blocks:
            y = blk(y)
        y = self.second(y)
        B, _, H, W = y.shape
        return self.resblocks_3d(y.view(B, self.cfg.volume_channels, self.cfg.volume_depth, H, W))


# ------------------------------------------------------------------------------------- face generator
class AdaptiveGroupNorm(nn.Module):
    """GroupNorm without affine, then ``y * w + b`` with (w, b) = split(u cond v): u (C, Cc), v (16, 2)."""

    def __init__(self, groups: int, channels: int, cond_channels: int) -> None:
        super().__init__()
        self.groups = groups
        self.u = nn.Parameter(torch.empty(channels, cond_channels).uniform_(-0.1, 0.1))
        self.v = nn.Parameter(torch.empty(16, 2).uniform_(-0.4, 0.4))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        y = F.group_norm(x, self.groups, eps=1e-5)
        p = self.u[None].matmul(cond).matmul(self.v[None])  # (B, C, 2)
        w, b = p.split(1, dim=2)
        return y * w[..., None, None] + b[..., None, None]


def ws_conv3d(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """3x3x3 conv with the weight centred over (in, kd, kh, kw) and divided by its unbiased std + 1e-5."""
    w = weight - weight.mean(dim=1, keepdim=True).mean(dim=2, keepdim=True).mean(dim=3, keepdim=True).mean(
        dim=4, keepdim=True
    )
    std = w.view(w.shape[0], -1).std(dim=1).view(-1, 1, 1, 1, 1) + 1e-5
    return F.conv3d(x, w / std, padding=1)


class WSConv3d(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3, 3) * 0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ws_conv3d(x, self.weight)


class Conv3dNoBias(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3, 3) * 0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv3d(x, self.weight, padding=1)


class ResBlock3dStar(nn.Module):
    def __init__(self, cin: int, cout: int, group_channels: int, cond_channels: int) -> None:
        super().__init__()
        self.skip_layer = Conv3dNoBias(cin, cout) if cin != cout else None
        self.agn1 = AdaptiveGroupNorm(cin // group_channels, cin, cond_channels)
        self.conv1 = WSConv3d(cin, cout)
        self.agn2 = AdaptiveGroupNorm(cout // group_channels, cout, cond_channels)
        self.conv2 = Conv3dNoBias(cout, cout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.agn2(self.conv1(F.relu(self.agn1(x, cond))), cond)))
        return (x if self.skip_layer is None else self.skip_layer(x)) + y


class SPADE(nn.Module):
    def __init__(self, channels: int, label_channels: int, hidden: int) -> None:
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_channels, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        n = F.instance_norm(x, eps=1e-5)
        a = self.mlp_shared(F.interpolate(seg, size=x.shape[2:], mode="nearest"))
        return n * (1 + self.mlp_gamma(a)) + self.mlp_beta(a)


class SPADEResBlock(nn.Module):
    """shortcut + conv_1(lrelu(norm_1(conv_0(lrelu(norm_0(x)))))); convs carry the folded spectral norm."""

    def __init__(self, cin: int, cout: int, label_channels: int, hidden: int) -> None:
        super().__init__()
        mid = min(cin, cout)
        self.conv_0 = nn.Conv2d(cin, mid, 3, padding=1)
        self.conv_1 = nn.Conv2d(mid, cout, 3, padding=1)
        self.norm_0 = SPADE(cin, label_channels, hidden)
        self.norm_1 = SPADE(mid, label_channels, hidden)
        self.learned = cin != cout
        if self.learned:
            self.conv_s = nn.Conv2d(cin, cout, 1, bias=False)
            self.norm_s = SPADE(cin, label_channels, hidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        xs = self.conv_s(self.norm_s(x, seg)) if self.learned else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        return xs + self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))


class Projection(nn.Module):
    """Volume (B, Cv, Dv, H, W) -> seg (B, Cs, H, W): .1 conv-BN-LeakyReLU(0.01), .2 a 1x1 conv."""

    def __init__(self, cin: int, cs: int) -> None:
        super().__init__()
        self.add_module("1", SameBlock2d(cin, cs, leaky=True))
        self.add_module("2", nn.Conv2d(cs, cs, 1))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        B, C, D, H, W = v.shape
        return getattr(self, "2")(getattr(self, "1")(v.reshape(B, C * D, H, W)))


class FaceGenerator(nn.Module):
    """(target latent (B, D), appearance volume) -> image (B, 3, 8 * 64, 8 * 64) in [-1, 1]."""

    def __init__(self, cfg: OfficialAutoencoder) -> None:
        super().__init__()
        wc, gc, D = cfg.warp_channels, cfg.group_channels, cfg.latent_dim
        self.extend_layer = nn.Linear(D, wc[0] * 16, bias=False)
        self.conv1 = nn.Conv2d(D, wc[0] * 4, 1, bias=False)
        for i in range(4):
            setattr(self, f"resblock{i + 1}", ResBlock3dStar(wc[i], wc[i + 1], gc, wc[0]))
        self.gn = nn.GroupNorm(wc[-1] // gc, wc[-1])
        self.conv2 = Conv3dNoBias(wc[-1], 3)
        Cv, Dv, V = cfg.volume_channels, cfg.volume_depth, cfg.volume_size
        self.occlusion = nn.Conv2d(Cv * Dv, 1, 7, padding=3)
        cs = cfg.seg_channels
        self.projection = Projection(Cv * Dv, cs)
        self.fc = nn.Conv2d(cs, 2 * cs, 3, padding=1)
        for i in range(6):
            setattr(self, f"G_middle_{i}", SPADEResBlock(2 * cs, 2 * cs, cs, cfg.spade_hidden))
        self.up_0 = SPADEResBlock(2 * cs, cs, cs, cfg.spade_hidden)
        self.up_1 = SPADEResBlock(cs, cfg.decoder_out, cs, cfg.spade_hidden)
        self.conv_img = nn.Sequential(nn.Conv2d(cfg.decoder_out, 12, 3, padding=1), nn.PixelShuffle(2))
        grids = torch.meshgrid(
            torch.linspace(-1, 1, Dv), torch.linspace(-1, 1, V), torch.linspace(-1, 1, V), indexing="ij"
        )
        self.register_buffer("identity_grid", torch.stack(grids, dim=-1).flip(-1), persistent=False)

    def warp_deltas(self, latent: torch.Tensor, record: dict | None = None) -> torch.Tensor:
        """(B, D) -> (B, Dv, V, V, 3) tanh deltas of the sampling grid."""
        B = latent.shape[0]
        z = self.extend_layer(latent).view(B, -1, 4, 4)
        cond = z.reshape(B, z.shape[1], 16)
        z = self.conv1(z)
        z = z.view(B, z.shape[1] // 4, 4, 4, 4)
        for i, scale in enumerate(((2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2))):
            z = F.interpolate(z, scale_factor=scale, mode="nearest")
            z = getattr(self, f"resblock{i + 1}")(z, cond)
        z = self.conv2(F.relu(self.gn(z)))
        if record is not None:
            record["warp_z"] = z
        return torch.tanh(z).permute(0, 2, 3, 4, 1)

    def forward(self, latent: torch.Tensor, volume: torch.Tensor, record: dict | None = None) -> torch.Tensor:
        grid = self.identity_grid[None].to(latent.dtype) + self.warp_deltas(latent, record)
        warped = F.grid_sample(volume, grid, mode="bilinear", align_corners=False)
        seg = self.projection(warped)
        if record is not None:
            record["seg"] = seg
        B, C, D, H, W = warped.shape
        seg = seg * torch.sigmoid(self.occlusion(warped.reshape(B, C * D, H, W)))
        x = self.fc(seg)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = self.up_0(F.interpolate(x, scale_factor=2, mode="nearest"), seg)
        x = self.up_1(F.interpolate(x, scale_factor=2, mode="nearest"), seg)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))


class OfficialAutoencoderNet(nn.Module):
    def __init__(self, cfg: OfficialAutoencoder) -> None:
        super().__init__()
        self.motion_encoder = MotionEncoder(cfg)
        self.flow_estimator = FlowEstimator(cfg)
        self.face_encoder = FaceEncoder(cfg)
        self.face_generator = FaceGenerator(cfg)

    def decode(self, ref: torch.Tensor, tgt: torch.Tensor, volume: torch.Tensor) -> torch.Tensor:
        """LIA source latent ref (B, D), target latent tgt (B, D), volume -> image (B, 3, S', S')."""
        return self.face_generator(self.flow_estimator(ref, tgt), volume)
