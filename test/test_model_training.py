"""Training helpers: CFG dropout, anchor sampling, noisy history, generator loss, autoencoder forward."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_model_helpers import one_thread, speechlike, tiny_config  # noqa: F401 (fixture)

from dystream_ros.config import TrainConfig
from dystream_ros.model import build_model
from dystream_ros.model.audio import frame_windows
from dystream_ros.model.training import (
    cfg_dropout,
    corrupt_history,
    flow_interpolant,
    generator_loss,
    sample_anchor,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cfg_dropout_rates():
    g = torch.Generator().manual_seed(0)
    cfg = TrainConfig(drop_speaker=0.1, drop_listener=0.3, drop_anchor=0.0)
    d = cfg_dropout(64, 100, cfg, g)
    assert d.shape == (64, 100, 3) and d.dtype == torch.bool
    rates = d.float().mean(dim=(0, 1))
    assert abs(rates[0] - 0.1) < 0.02 and abs(rates[1] - 0.3) < 0.02 and rates[2] == 0
    assert cfg_dropout(4, 5, dataclasses.replace(cfg, drop_anchor=1.0), g)[..., 2].all()
    # per frame, not per sample: within one sample some frames drop and some do not
    assert (d[..., 1].any(dim=1) & ~d[..., 1].all(dim=1)).all()


def test_sample_anchor_from_last_frames():
    g = torch.Generator().manual_seed(0)
    t = 30
    motion = torch.arange(t, dtype=torch.float32)[None, :, None].expand(500, t, 4).clone()
    a = sample_anchor(motion, 10, g)
    idx = a[:, 0].long()
    assert a.shape == (500, 4) and set(idx.tolist()) == set(range(t - 10, t))
    short = motion[:, :3]
    assert set(sample_anchor(short, 10, g)[:, 0].long().tolist()) <= {0, 1, 2}


def test_corrupt_history():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(16, 40, 8)
    assert torch.equal(corrupt_history(h, 0.0, 0.5, g), h)
    c = corrupt_history(h, 1.0, 0.5, g)
    changed = (c != h).any(dim=-1)
    assert changed.float().mean() > 0.99
    half = (corrupt_history(h, 0.5, 0.5, g) != h).any(dim=-1).float().mean()
    assert 0.4 < half < 0.6
    # bounded: at most half-way to noise, so the clean signal still dominates on average
    assert torch.nn.functional.cosine_similarity(c.flatten(), h.flatten(), dim=0) > 0.6


def test_flow_interpolant():
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(1000, 8)
    xt, t, v = flow_interpolant(x1, g)
    x0 = x1 - v
    torch.testing.assert_close(xt, (1 - t[:, None]) * x0 + t[:, None] * x1)
    assert 0 <= t.min() and t.max() <= 1 and abs(x0.std() - 1) < 0.05


def _batch(cfg, b=3, t=12):
    clips = torch.stack([torch.from_numpy(np_) for np_ in (speechlike(1.0, i) for i in range(2 * b))])
    audio = torch.stack([frame_windows(clips[2 * i : 2 * i + 2], 2, t, cfg.audio) for i in range(b)])
    motion = torch.cumsum(
        0.1 * torch.randn(b, t + 1, cfg.latent_dim, generator=torch.Generator().manual_seed(1)), 1
    )
    return {"audio": audio, "motion": motion}


def test_generator_loss_backward_and_learns():
    cfg = tiny_config(window=6)
    model = build_model(cfg, render=False)
    batch = _batch(cfg, t=14)  # longer than the window: the banded mask is exercised
    loss, stats = generator_loss(model, batch, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss) and stats["loss"] == pytest.approx(loss.item())
    loss.backward()
    for name in (
        "audio.look_in.weight",
        "generator.blocks.0.attn.qkv.weight",
        "generator.embed.audio.weight",
        "head.blocks.0.fc1.weight",
        "head.cond_mod.weight",
        "head.time_mod.weight",
    ):
        p = dict(model.named_parameters())[name]
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.autoencoder.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):  # same batch and noise each step: the loss must go down
        opt.zero_grad()
        loss, _ = generator_loss(model, batch, torch.Generator().manual_seed(0))
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    assert loss.item() < 0.6 * first


def test_generator_loss_shape_errors():
    cfg = tiny_config()
    model = build_model(cfg, render=False)
    batch = _batch(cfg)
    with pytest.raises(ValueError, match="motion must be"):
        generator_loss(model, {"audio": batch["audio"], "motion": batch["motion"][..., :3]})
    with pytest.raises(ValueError, match="samples"):
        generator_loss(model, {"audio": batch["audio"][..., :-1], "motion": batch["motion"]})


def test_autoencoder_reconstruct():
    model = build_model(tiny_config())
    src, drv = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    out = model.autoencoder.reconstruct(src, drv)
    assert out["image"].shape == (2, 3, 32, 32) and out["flow"].shape == (2, 2, 8, 8)
    assert out["occlusion"].shape == (2, 1, 8, 8) and out["m_driving"].shape == (2, 8)
    assert out["image"].abs().max() <= 1.0 + 1e-6
    (out["image"] - drv).abs().mean().backward()
    for part in ("appearance", "motion", "decoder"):
        mod = getattr(model.autoencoder, part)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.parameters()), part
    with pytest.raises(RuntimeError, match="render=False"):
        build_model(tiny_config(), render=False).autoencoder.reconstruct(src, drv)


def test_shading_gain_starts_at_one_and_darkens_the_warped_reference():
    model = build_model(tiny_config())
    dec = model.autoencoder.decoder
    assert dec.shading and dec.flow.out.out_channels == 4 and dec.gain.out_channels == 1
    src, drv = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        shaded = model.autoencoder.reconstruct(src, drv)["image"]
        dec.shading = False  # the same weights without the gain: gain 1 at initialisation
        plain = model.autoencoder.reconstruct(src, drv)["image"]
        dec.shading = True
        torch.testing.assert_close(shaded, plain)
        dec.flow.out.bias[3] = 30.0  # blend all on the warped reference ...
        dec.gain.bias.fill_(-30.0)  # ... with gain 0: black
        dark = model.autoencoder.reconstruct(src, drv)["image"]
    torch.testing.assert_close(dark, torch.full_like(dark, -1.0))


def test_no_dead_parameters():
    """Every parameter receives gradient from the generator loss or the autoencoder reconstruction."""
    cfg = tiny_config().replace(train={"drop_speaker": 0.5, "drop_listener": 0.5, "drop_anchor": 0.5})
    model = build_model(cfg)
    loss, _ = generator_loss(model, _batch(cfg), torch.Generator().manual_seed(0))
    out = model.autoencoder.reconstruct(torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1)
    (loss + out["image"].mean()).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []
