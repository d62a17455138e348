"""Causal audio encoder + lookahead: exact receptive window, streaming == whole-clip encoding."""

from __future__ import annotations

import pytest
import torch
from test_model_helpers import SPF, one_thread, speechlike  # noqa: F401 (fixture)

from dystream_ros.config import load_profile
from dystream_ros.model.audio import AudioEncoder, frame_windows

pytestmark = pytest.mark.usefixtures("one_thread")


def _encoder(lookahead_ms: int) -> AudioEncoder:
    torch.manual_seed(0)
    return AudioEncoder(load_profile("lite", audio={"lookahead_ms": lookahead_ms}).audio).eval()


def _clip(seconds: float = 1.6) -> torch.Tensor:
    return torch.from_numpy(speechlike(seconds, 1)[None].repeat(2, 0) * [[1.0], [0.5]]).float()


@pytest.mark.parametrize("lookahead_ms", [0, 60, 200])
def test_window_is_exactly_context_frame_lookahead(lookahead_ms):
    enc = _encoder(lookahead_ms)
    cfg = enc.cfg
    wave = _clip()
    n = 12
    end = (n + 1) * SPF + cfg.lookahead_samples  # first sample frame n must not see
    start = n * SPF - cfg.context_samples  # first sample frame n sees
    with torch.no_grad():
        base = enc(frame_windows(wave, n, 1, cfg)[None])
        for idx, changes in (
            (end, False),
            (end + 500, False),
            (start - 1, False),
            (end - 1, True),
            (start, True),
        ):
            w = wave.clone()
            w[0, idx] += 0.5
            out = enc(frame_windows(w, n, 1, cfg)[None])
            if changes:
                assert not torch.equal(out[0, 0], base[0, 0]), f"sample {idx} is inside frame {n}'s window"
            else:
                assert torch.equal(out, base), f"sample {idx} is outside frame {n}'s window"
            # the listener channel is untouched, so its feature is bit-identical either way
            assert torch.equal(out[0, 1], base[0, 1])


def test_sequence_encoding_equals_streaming_windows():
    enc = _encoder(60)
    cfg = enc.cfg
    wave = _clip()
    t = 30
    with torch.no_grad():
        seq = enc.encode_sequence(frame_windows(wave, 3, t, cfg)[None], t)[0]  # (T, 2, F)
        per = torch.cat([enc(frame_windows(wave, 3 + i, 1, cfg)[None]) for i in range(t)])
    assert seq.shape == (t, 2, cfg.feature_dim)
    torch.testing.assert_close(seq, per, atol=1e-5, rtol=1e-5)
    assert seq.abs().mean() > 1e-3


def test_frame_windows_zero_fill_and_lengths():
    cfg = load_profile("lite").audio
    wave = torch.ones(2, 10 * SPF)
    w0 = frame_windows(wave, 0, 1, cfg)
    assert w0.shape == (2, cfg.window_samples)
    assert torch.all(w0[:, : cfg.context_samples] == 0) and torch.all(w0[:, cfg.context_samples :] == 1)
    w = frame_windows(wave, 8, 3, cfg)  # runs past the end of the clip
    assert w.shape == (2, cfg.window_samples + 2 * SPF)
    assert torch.all(w[:, -(SPF + cfg.lookahead_samples) :] == 0)
    with pytest.raises(ValueError, match="samples"):
        AudioEncoder(cfg).encode_sequence(w[None], 4)


def test_channels_are_distinguished():
    """Shared weights, but speaker and listener get different channel embeddings."""
    enc = _encoder(60)
    wave = _clip()
    same = torch.stack([wave[0], wave[0]])
    with torch.no_grad():
        out = enc(frame_windows(same, 5, 1, enc.cfg)[None])[0]
    assert not torch.allclose(out[0], out[1])
