"""Flow head: guidance branch layout, zero-weight branches skipped (== unguided), Euler sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_model_helpers import face, one_thread, speechlike, tiny_config  # noqa: F401 (fixture)

from dystream_ros.config import HeadConfig
from dystream_ros.model import Guidance, load_pipeline
from dystream_ros.model.audio import frame_windows
from dystream_ros.model.flow_head import FlowHead, guidance_branches
from dystream_ros.model.generator import empty_cache
from dystream_ros.runtime.session import frame_seed

pytestmark = pytest.mark.usefixtures("one_thread")


def test_branch_layout():
    drop, coef = guidance_branches(Guidance(0.0, 0.0, 0.0))
    assert drop.tolist() == [[False, False, False]] and coef.tolist() == [1.0]
    drop, coef = guidance_branches(Guidance(2.0, 0.0, 0.5))
    assert drop.tolist() == [[False, False, False], [True, False, False], [False, False, True]]
    assert coef.tolist() == [3.5, -2.0, -0.5]
    drop, coef = guidance_branches(Guidance(1.0, 1.0, 1.0))
    assert drop.shape == (4, 3) and coef.sum().item() == pytest.approx(1.0)


def _head() -> FlowHead:
    torch.manual_seed(0)
    return FlowHead(HeadConfig(width=32, blocks=2, mlp_ratio=2, time_freq_dim=16), 6).eval()


def test_sample_is_euler_over_forward():
    """sample() (split modulation, batched branches) == a plain Euler loop over forward()."""
    head = _head()
    noise, cond = torch.randn(1, 6), torch.randn(3, 32)
    coef = torch.tensor([2.0, -0.6, -0.4])
    with torch.no_grad():
        got = head.sample(noise, cond, coef, steps=4)
        x = noise.clone()
        for i in range(4):
            t = torch.full((3,), i / 4)
            v = head(x.expand(3, -1), t, cond)
            x = x + 0.25 * (coef[:, None] * v).sum(0, keepdim=True)
    torch.testing.assert_close(got, x, atol=1e-5, rtol=0)


def test_one_branch_is_exactly_unguided():
    head = _head()
    noise, cond = torch.randn(1, 6), torch.randn(1, 32)
    with torch.no_grad():
        got = head.sample(noise, cond, torch.ones(1), steps=3)
        x = noise.clone()
        for i in range(3):
            x = x + (1 / 3) * head(x, torch.full((1,), i / 3), cond)
    torch.testing.assert_close(got, x, atol=1e-6, rtol=0)


def _manual_latents(pipe, spk, lis, weights, frames):
    """Independent reference: all four branches always computed, combined with the given weights; the
    starting noise scaled by the sampling temperature."""
    m = pipe.model
    cfg = pipe.config
    sess = pipe.start_session(face(1), seed=0)
    m0 = torch.from_numpy(sess.reference_motion)[None]
    wave = torch.from_numpy(np.stack([spk, lis]))
    k, v = empty_cache(m.generator)
    prev, out = m0, []
    drop = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.bool)
    ws, wl, wa = weights
    coef = torch.tensor([1 + ws + wl + wa, -ws, -wl, -wa])
    with torch.no_grad():
        for n in range(frames):
            feats = m.audio(frame_windows(wave, n, 1, cfg.audio)[None])
            tokens = m.generator.embed(prev.expand(4, -1), feats.expand(4, -1, -1), m0.expand(4, -1), drop)
            cond, k, v = m.generator.step(tokens, k, v, torch.tensor(n))
            g = torch.Generator().manual_seed(frame_seed(0, n))
            noise = torch.randn(1, cfg.latent_dim, generator=g) * cfg.sampler.temperature
            prev = m.head.sample(noise, cond, coef, cfg.sampler.steps)
            out.append(prev[0].numpy())
    return np.stack(out)


@pytest.mark.parametrize("weights", [(0.0, 0.0, 0.0), (1.5, 0.0, 0.0), (0.0, 0.7, 0.3), (1.0, 0.5, 0.25)])
def test_session_guidance_skips_zero_branches(weights):
    pipe = load_pipeline("random", profile=tiny_config(), backend="torch", render=False)
    spk, lis = speechlike(0.8, 1), speechlike(0.8, 2, f0=220.0)
    sess = pipe.start_session(face(1), seed=0)
    sess.guidance = Guidance(*weights)
    assert sess._branches[0].shape[0] == 1 + sum(w != 0 for w in weights)  # zero-weight branches skipped
    sess.push_audio(speaker=spk, listener=lis)
    got = np.stack([sess.step().latent for _ in range(8)])
    ref = _manual_latents(pipe, spk, lis, weights, 8)
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=0)
    if weights == (0.0, 0.0, 0.0):
        unguided = got
        assert not np.allclose(unguided, _manual_latents(pipe, spk, lis, (1.0, 0.0, 0.0), 8), atol=1e-3)


def test_head_guidance_layout():
    """guidance_head keeps the listener-free branch (even at listener weight 0); its own weights differ
    from the plain ones only in the listener weight."""
    from dystream_ros.model.flow_head import head_guidance_coef

    assert head_guidance_coef(Guidance(1.0, 0.5, 0.0)) is None
    drop, coef = guidance_branches(Guidance(1.0, 0.0, 0.0, head=2.0))
    assert drop.tolist() == [[False, False, False], [True, False, False], [False, True, False]]
    assert coef.tolist() == [2.0, -1.0, 0.0]
    assert head_guidance_coef(Guidance(1.0, 0.0, 0.0, head=2.0)).tolist() == [4.0, -1.0, -2.0]
    with pytest.raises(ValueError, match="guidance_head"):
        Guidance(1.0, 0.5, 0.0, head=-1.0)


def test_head_guidance_is_per_direction_guidance():
    """Backend.sample with head = (coef_head, basis): listener weight g + h along the basis (here two
    coordinate axes), g elsewhere; == an Euler loop with per-column branch weights (Q, D)."""
    from dystream_ros.model.flow_head import head_guidance_coef
    from dystream_ros.runtime.backends import TorchBackend

    pipe = load_pipeline("random", profile=tiny_config(), backend="torch", render=False)
    be = TorchBackend(pipe.model)
    d = pipe.config.latent_dim
    g = Guidance(1.0, 0.5, 0.0, head=3.0)
    drop, coef = guidance_branches(g)
    coef_h = head_guidance_coef(g)
    axes = [1, 4]
    basis = torch.zeros(len(axes), d)
    basis[range(len(axes)), axes] = 1.0
    torch.manual_seed(1)
    noise, cond = torch.randn(1, d), torch.randn(len(coef), pipe.model.head.cond_mod.in_features)
    got = be.sample(noise, cond, coef, 4, head=(coef_h, basis))
    per_col = coef[:, None].repeat(1, d)
    per_col[:, axes] = coef_h[:, None]
    head = pipe.model.head
    with torch.no_grad():
        cond_mod = head.cond_modulation(cond)
        x = noise
        for i in range(4):
            tm = head.time_modulation(torch.tensor([i / 4]))
            v = head.velocity(x.expand(len(coef), -1), cond_mod + tm)
            x = x + 0.25 * (per_col * v).sum(0, keepdim=True)
    torch.testing.assert_close(got, x, atol=1e-5, rtol=0)
    plain = be.sample(noise, cond, coef, 4)
    assert (got - plain).abs().max() > 1e-3  # the extra guidance does something


def test_session_head_guidance_moves_only_the_head_directions_in_one_step():
    """With one Euler step the first frame differs from unguided-head sampling only along head_basis."""
    pipe = load_pipeline("random", profile=tiny_config(), backend="torch", render=False)
    d = pipe.config.latent_dim
    with torch.no_grad():
        pipe.model.head_basis.zero_()
        pipe.model.head_basis[0, 2] = 1.0
    spk, lis = speechlike(0.8, 1), speechlike(0.8, 2, f0=220.0)
    first = []
    for h in (0.0, 4.0):
        sess = pipe.start_session(face(1), seed=0)
        sess.steps = 1
        sess.guidance = Guidance(1.0, 0.5, 0.0, head=h)
        sess.push_audio(speaker=spk, listener=lis)
        first.append(sess.step().latent)
    diff = first[1] - first[0]
    others = [j for j in range(d) if j != 2]
    assert abs(diff[2]) > 1e-4 and np.abs(diff[others]).max() < 1e-5
