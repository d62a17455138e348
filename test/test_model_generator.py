"""Generator: KV ring incremental decoding == full sliding-window forward, relative positions, branches."""

from __future__ import annotations

import pytest
import torch
from test_model_helpers import one_thread  # noqa: F401 (fixture)

from dystream_ros.config import GeneratorConfig
from dystream_ros.model.generator import Generator, PeriodicRotary, band_mask, empty_cache

pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(window: int = 8) -> Generator:
    torch.manual_seed(0)
    return Generator(GeneratorConfig(width=64, layers=3, heads=4, window=window), 12, 16, 24).eval()


def _incremental(g: Generator, tokens: torch.Tensor) -> torch.Tensor:
    k, v = empty_cache(g)
    out = []
    for n in range(tokens.shape[1]):
        c, k2, v2 = g.step(tokens[:, n], k, v, torch.tensor(n))
        assert k2.shape == k.shape == g.cache_shape and v2.shape == v.shape  # static shapes
        k, v = k2, v2
        out.append(c[0])
    return torch.stack(out)


@pytest.mark.parametrize("window", [8, 5])
def test_ring_equals_full_sliding_window_forward(window):
    g = _gen(window)
    tokens = torch.randn(1, 3 * window, 64)  # the ring wraps twice
    with torch.no_grad():
        full = g(tokens)[0]
        inc = _incremental(g, tokens)
    torch.testing.assert_close(inc, full, atol=1e-5, rtol=0)


def test_window_really_limits_context():
    """Each layer sees W frames, so L stacked layers see L*(W-1)+1 frames: nothing older matters."""
    g = _gen(4)  # 3 layers -> receptive field 10 frames
    tokens = torch.randn(1, 30, 64)
    i, reach = 25, g.cfg.layers * (g.cfg.window - 1)
    with torch.no_grad():
        base = g(tokens)[0, i]
        old = tokens.clone()
        old[0, i - reach - 1] += torch.randn(64)  # just outside the receptive field
        inside = tokens.clone()
        inside[0, i - reach] += torch.randn(64)  # oldest frame inside it
        assert torch.equal(g(old)[0, i], base)
        assert not torch.allclose(g(inside)[0, i], base)
    m = band_mask(5, 3)
    assert m.tolist()[4] == [False, False, True, True, True]


def test_relative_positions_any_offset():
    """Scores depend only on offsets: a far start (even beyond the rotary period) gives the same outputs."""
    g = _gen(8)
    tokens = torch.randn(2, 20, 64)
    with torch.no_grad():
        ref = g(tokens)
        for start in (1, 12345, g.cfg.rope_period - 7, 3 * g.cfg.rope_period + 11, 10**9):
            torch.testing.assert_close(g(tokens, start=start), ref, atol=1e-5, rtol=0)


def test_periodic_rotary_is_exact_modulo_period():
    rot = PeriodicRotary(16, 10000.0, 4096)
    p = torch.tensor([5, 5 + 4096, 5 + 4096 * 1000])
    cos, sin = rot.cos_sin(p)
    assert torch.equal(cos[0], cos[1]) and torch.equal(cos[0], cos[2]) and torch.equal(sin[0], sin[2])


def test_guidance_branches_share_history_and_match_training_semantics():
    """Extra branches never touch branch 0 or the ring; a branch's output equals a full forward whose
    last token is that branch's token (what per-frame dropout trains)."""
    g = _gen(6)
    hist = torch.randn(1, 10, 64)
    cur = torch.randn(3, 64)  # branch 0 = conditioned token, 1..2 = variants
    with torch.no_grad():
        k, v = empty_cache(g)
        for n in range(10):
            _, k, v = g.step(hist[:, n], k, v, torch.tensor(n))
        c1, k1, v1 = g.step(cur[:1], k, v, torch.tensor(10))
        c3, k3, v3 = g.step(cur, k, v, torch.tensor(10))
        torch.testing.assert_close(c3[:1], c1, atol=1e-6, rtol=0)
        torch.testing.assert_close(k3, k1, atol=1e-6, rtol=0)
        torch.testing.assert_close(v3, v1, atol=1e-6, rtol=0)
        for b in range(3):
            full = g(torch.cat([hist, cur[b][None, None]], dim=1))[0, -1]
            torch.testing.assert_close(c3[b], full, atol=1e-5, rtol=0)
