"""Streaming session semantics (DESIGN.md §4): buffering, lookahead invariance, determinism, reset,
set_reference, skip, settings, latents-only mode. Tiny random models keep this fast."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_model_helpers import SPF, face, one_thread, speechlike, tiny_config  # noqa: F401 (fixture)

from dystream_ros.model import Guidance, load_pipeline
from dystream_ros.runtime import session as pipeline_mod

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("random", profile=tiny_config(), backend="torch")


def _run(pipe, spk, lis, seed=0, ref_seed=1, n=None):
    sess = pipe.start_session(face(ref_seed), seed=seed)
    sess.push_audio(speaker=spk, listener=lis)
    frames = []
    while (n is None or len(frames) < n) and (f := sess.step()) is not None:
        frames.append(f)
    return frames


def _audio(seconds=1.2):
    return speechlike(seconds, 1), speechlike(seconds, 2, f0=220.0)


def test_properties(pipe):
    assert (pipe.sample_rate, pipe.fps, pipe.samples_per_frame) == (16000, 25, 640)
    assert pipe.lookahead_ms == 60 and pipe.lookahead_samples == 960
    assert pipe.latent_dim == 8 and pipe.image_size == 32 and pipe.profile == "tiny"
    assert pipe.checkpoint_id == "random"


def test_step_waits_for_both_channels_and_lookahead(pipe):
    sess = pipe.start_session(face(1), seed=0)
    need = SPF + pipe.lookahead_samples  # frame 0 needs audio up to 40 ms + L
    spk, lis = _audio()
    assert sess.step() is None
    sess.push_audio(speaker=spk[: need - 1], listener=lis[: need - 1])
    assert sess.frames_available() == 0 and sess.step() is None
    sess.push_audio(speaker=spk[need - 1 : need])  # speaker complete, listener one sample short
    assert sess.frames_available() == 0 and sess.step() is None
    sess.push_audio(listener=lis[need - 1 : need + SPF], speaker=None)
    assert sess.frames_available() == 1
    f0 = sess.step()
    assert f0 is not None and f0.index == 0 and f0.audio_time_s == 0.0
    assert sess.step() is None  # frame 1 needs 640 more speaker samples
    sess.push_audio(speaker=spk[need : need + SPF], listener=np.zeros(0, np.float32))
    f1 = sess.step()
    assert f1.index == 1 and sess.next_index == 2
    assert f1.latent.shape == (8,) and f1.latent.dtype == np.float32
    assert f1.image.shape == (32, 32, 3) and f1.image.dtype == np.uint8
    assert set(f1.timings) == {"audio", "generator", "head", "render", "total"}


def test_indices_and_times_in_order(pipe):
    frames = _run(pipe, *_audio())
    assert len(frames) == (int(1.2 * 16000) - pipe.lookahead_samples) // SPF
    assert [f.index for f in frames] == list(range(len(frames)))
    assert all(f.audio_time_s == 0.04 * f.index for f in frames)


@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("lookahead_ms", [60, 200])
def test_lookahead_invariance(backend, lookahead_ms):
    """Audio after 40(n+1)+L ms never changes frames 0..n (bit-exact); audio inside the window changes n."""
    p = load_pipeline("random", profile=tiny_config(lookahead_ms=lookahead_ms), backend=backend)
    spk, lis = _audio()
    n = 9
    end = (n + 1) * SPF + p.lookahead_samples
    rng = np.random.default_rng(7)
    spk_b, lis_b = spk.copy(), lis.copy()
    spk_b[end:] = rng.uniform(-1, 1, spk.size - end)
    lis_b[end:] = rng.uniform(-1, 1, lis.size - end)
    a, b = _run(p, spk, lis, n=n + 1), _run(p, spk_b, lis_b, n=n + 1)
    for fa, fb in zip(a, b, strict=True):
        assert np.array_equal(fa.latent, fb.latent) and np.array_equal(fa.image, fb.image)
    for ch in ("speaker", "listener"):  # the last 10 ms inside frame n's window, on either channel
        s2, l2 = spk.copy(), lis.copy()
        (s2 if ch == "speaker" else l2)[end - 160 : end] += 0.3
        c = _run(p, s2, l2, n=n + 1)
        assert all(np.array_equal(x.latent, y.latent) for x, y in zip(a[:n], c[:n], strict=True))
        assert not np.array_equal(a[n].latent, c[n].latent), f"{ch} audio before {end} must affect frame {n}"


def test_chunking_does_not_matter(pipe):
    spk, lis = _audio()
    whole = _run(pipe, spk, lis)
    sess = pipe.start_session(face(1), seed=0)
    rng = np.random.default_rng(3)
    i = j = 0
    frames = []
    while i < spk.size or j < lis.size:
        a, b = rng.integers(0, 900, 2)
        sess.push_audio(speaker=spk[i : i + a], listener=lis[j : j + b])
        i, j = i + a, j + b
        while (f := sess.step()) is not None:
            frames.append(f)
    assert len(frames) == len(whole)
    assert all(np.array_equal(x.latent, y.latent) for x, y in zip(frames, whole, strict=True))


def test_determinism_and_seed(pipe):
    spk, lis = _audio(0.8)
    a, b, c = _run(pipe, spk, lis, seed=5), _run(pipe, spk, lis, seed=5), _run(pipe, spk, lis, seed=6)
    assert all(np.array_equal(x.latent, y.latent) for x, y in zip(a, b, strict=True))
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert all(not np.allclose(x.latent, y.latent) for x, y in zip(a, c, strict=True))


def test_reset_restarts(pipe):
    spk, lis = _audio(0.8)
    sess = pipe.start_session(face(1), seed=0)
    sess.push_audio(speaker=spk, listener=lis)
    first = [sess.step() for _ in range(5)]
    sess.reset()
    assert sess.next_index == 0 and sess.frames_available() == 0 and sess.step() is None
    sess.push_audio(speaker=spk, listener=lis)
    again = [sess.step() for _ in range(5)]
    assert [f.index for f in again] == [0, 1, 2, 3, 4]
    assert all(np.array_equal(x.latent, y.latent) for x, y in zip(first, again, strict=True))


def test_set_reference_changes_appearance_and_m0(pipe):
    spk, lis = _audio(0.8)
    s1 = pipe.start_session(face(1), seed=0)
    m0_1 = s1.reference_motion
    s1.set_reference(face(2))
    assert not np.allclose(s1.reference_motion, m0_1)
    s1.push_audio(speaker=spk, listener=lis)
    fresh = _run(pipe, spk, lis, ref_seed=2)
    got = [s1.step() for _ in range(len(fresh))]
    # before the first frame, set_reference is the same as starting with that image
    assert all(np.array_equal(x.latent, y.latent) for x, y in zip(got, fresh, strict=True))
    assert all(np.array_equal(x.image, y.image) for x, y in zip(got, fresh, strict=True))
    # mid-stream: the stream goes on (indices), the pictures and the anchor change
    base = _run(pipe, spk, lis, ref_seed=1)
    s2 = pipe.start_session(face(1), seed=0)
    s2.push_audio(speaker=spk, listener=lis)
    for _ in range(3):
        s2.step()
    s2.set_reference(face(3))
    f = s2.step()
    assert f.index == 3
    assert not np.array_equal(f.image, base[3].image) and not np.allclose(f.latent, base[3].latent)


def test_skip(pipe):
    spk, lis = _audio(1.2)
    sess = pipe.start_session(face(1), seed=0)
    sess.push_audio(speaker=spk, listener=lis)
    for _ in range(3):
        sess.step()
    avail = sess.frames_available()
    assert sess.skip(5) == 5 and sess.next_index == 8 and sess.frames_available() == avail - 5
    f = sess.step()
    assert f.index == 8 and f.audio_time_s == pytest.approx(0.32) and np.all(np.isfinite(f.latent))
    assert sess.skip(0) == 0
    with pytest.raises(ValueError):
        sess.skip(-1)
    # skipping ahead of the audio: audio for the skipped frames is dropped when it arrives
    s2 = pipe.start_session(face(1), seed=0)
    s2.skip(10)
    s2.push_audio(speaker=spk[: 11 * SPF + 960 - 1], listener=lis[: 11 * SPF + 960 - 1])
    assert s2.frames_available() == 0
    s2.push_audio(speaker=spk[11 * SPF + 959 : 11 * SPF + 960], listener=lis[11 * SPF + 959 : 11 * SPF + 960])
    assert s2.frames_available() == 1 and s2.step().index == 10
    assert max(b.hi - b.lo for b in s2._audio) <= pipe.config.audio.window_samples


def test_buffer_stays_bounded(pipe):
    spk, lis = _audio(2.0)
    sess = pipe.start_session(face(1), seed=0)
    for i in range(0, spk.size, 1000):
        sess.push_audio(speaker=spk[i : i + 1000], listener=lis[i : i + 1000])
        while sess.step() is not None:
            pass
    assert max(b.hi - b.lo for b in sess._audio) <= pipe.config.audio.window_samples + 1000


def test_settings_validation(pipe):
    sess = pipe.start_session(face(1), seed=0)
    assert sess.steps == 5
    for bad in (0, 11, 2.5, True, "3"):
        with pytest.raises(ValueError):
            sess.steps = bad
    sess.steps = 1
    assert sess.steps == 1
    assert sess.guidance == Guidance(speaker=1.0, listener=0.5, anchor=0.0)
    for bad in ((-1.0, 0, 0), (float("nan"), 0, 0), (0, float("inf"), 0)):
        with pytest.raises(ValueError):
            Guidance(*bad)
    with pytest.raises(ValueError):
        sess.guidance = (1.0, 1.0, 1.0)
    sess.guidance = Guidance(speaker=2.0, listener=0.0, anchor=1.0)
    assert sess.guidance.anchor == 1.0
    assert sess.temperature == pipe.config.sampler.temperature
    for bad in (-0.1, 2.5, float("nan"), True, "1"):
        with pytest.raises(ValueError):
            sess.temperature = bad
    sess.temperature = 1
    assert sess.temperature == 1.0
    assert sess.head_temperature == pipe.config.sampler.head_temperature
    for bad in (-0.1, 2.5, float("nan"), True, "1"):
        with pytest.raises(ValueError):
            sess.head_temperature = bad


def test_steps_and_guidance_change_output(pipe):
    spk, lis = _audio(0.6)

    def latents(**kw):
        sess = pipe.start_session(face(1), seed=0)
        for k, v in kw.items():
            setattr(sess, k, v)
        sess.push_audio(speaker=spk, listener=lis)
        return np.stack([sess.step().latent for _ in range(4)])

    base = latents()
    assert not np.allclose(base, latents(steps=2))
    assert not np.allclose(base, latents(guidance=Guidance(0.0, 0.0, 0.0)))
    assert not np.allclose(base, latents(temperature=1.0))


def test_temperature_scales_the_starting_noise(pipe):
    """Temperature 0 starts every frame's flow at the same point, so the seed no longer matters; any
    other temperature keeps frames seed-dependent."""
    spk, lis = _audio(0.6)

    def latents(seed, t):
        sess = pipe.start_session(face(1), seed=seed)
        sess.temperature = t
        sess.push_audio(speaker=spk, listener=lis)
        return np.stack([sess.step().latent for _ in range(4)])

    np.testing.assert_array_equal(latents(0, 0.0), latents(7, 0.0))
    assert not np.allclose(latents(0, 0.5), latents(7, 0.5))


def test_head_temperature_scales_the_noise_along_the_head_basis():
    """The starting noise is scaled by head_temperature inside the span of the model's head_basis and by
    temperature outside it; without a fitted basis (zeros) it is the plain temperature-scaled draw."""
    pipe = load_pipeline("random", profile=tiny_config(), backend="torch")
    sess = pipe.start_session(face(1), seed=3)
    sess.temperature, sess.head_temperature = 0.5, 1.5
    g = torch.Generator().manual_seed(pipeline_mod.frame_seed(3, 4))
    e = torch.randn(1, pipe.latent_dim, generator=g)
    torch.testing.assert_close(sess.start_noise(4), 0.5 * e)  # zero basis: head_temperature has no effect
    basis = torch.linalg.qr(torch.randn(pipe.latent_dim, 3, generator=g))[0].T  # (3, D) orthonormal
    pipe.model.head_basis.copy_(basis)
    sess = pipe.start_session(face(1), seed=3)
    sess.temperature, sess.head_temperature = 0.5, 1.5
    noise = sess.start_noise(4)
    along = (e @ basis.T) @ basis
    torch.testing.assert_close(noise @ basis.T, 1.5 * (e @ basis.T))  # head directions: x 1.5
    torch.testing.assert_close(noise - (noise @ basis.T) @ basis, 0.5 * (e - along))  # the rest: x 0.5
    sess.head_temperature = 0.5
    torch.testing.assert_close(sess.start_noise(4), 0.5 * e)


def test_bad_inputs(pipe):
    sess = pipe.start_session(face(1), seed=0)
    with pytest.raises(ValueError, match="1-D"):
        sess.push_audio(speaker=np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="int16"):
        sess.push_audio(listener=np.zeros(100, np.int16))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        pipe.start_session(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        sess.set_reference(np.zeros((32, 32, 3), np.float32))
    s2 = pipe.start_session(np.zeros((40, 90, 4), np.uint8))  # RGBA, non-square: centre crop + resize
    assert s2.reference_motion.shape == (8,)


def test_latents_only_mode_matches():
    cfg = tiny_config()
    spk, lis = _audio(0.6)
    full = _run(load_pipeline("random", profile=cfg, backend="torch"), spk, lis)
    lat = _run(load_pipeline("random", profile=cfg, backend="torch", render=False), spk, lis)
    assert all(f.image is None for f in lat)
    assert all(np.array_equal(a.latent, b.latent) for a, b in zip(full, lat, strict=True))
    assert not hasattr(load_pipeline("random", profile=cfg, render=False).model.autoencoder, "decoder")


def test_default_checkpoint_and_reference(pipe, monkeypatch, tmp_path):
    monkeypatch.setattr(pipeline_mod, "ASSETS", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"models/lite\.safetensors.*checkpoint='random'"):
        load_pipeline(None, profile="lite")
    monkeypatch.setattr(pipeline_mod, "DEFAULT_AVATAR", tmp_path / "avatars" / "default.png")
    with pytest.raises(FileNotFoundError, match=r"avatars/default\.png"):
        pipe.default_reference()


def test_embedded_default_reference(pipe):
    if not pipeline_mod.DEFAULT_AVATAR.is_file():
        pytest.skip("default avatar not added yet")
    img = pipe.default_reference()
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
    assert pipe.start_session(img).reference_motion.shape == (8,)


def test_backend_choices():
    cfg = tiny_config()
    for name in ("tensorrt", "tpu"):  # tensorrt is not offered: no backend implements it
        with pytest.raises(ValueError, match="unknown backend"):
            load_pipeline("random", profile=cfg, backend=name)
    with pytest.raises(ValueError, match="unknown backend"):
        load_pipeline("random", profile=cfg, backend="tpu")
    assert load_pipeline("random", profile=cfg).backend.name == "onnxruntime+torch"


def test_random_weights_are_seeded():
    a = load_pipeline("random", profile=tiny_config(), backend="torch").model.state_dict()
    b = load_pipeline("random", profile=tiny_config(), backend="torch").model.state_dict()
    torch.manual_seed(123)  # global RNG state must not matter
    c = load_pipeline("random", profile=tiny_config(), backend="torch").model.state_dict()
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)


def test_anchor_defaults_to_m0_and_is_settable(pipe):
    spk, lis = _audio(0.6)
    base = _run(pipe, spk, lis, n=4)
    sess = pipe.start_session(face(1), seed=0)
    assert np.array_equal(sess.anchor, sess.reference_motion)
    sess.anchor = sess.reference_motion  # explicitly m0: same frames
    sess.push_audio(speaker=spk, listener=lis)
    assert all(np.array_equal(sess.step().latent, f.latent) for f in base)
    s2 = pipe.start_session(face(1), seed=0)
    s2.anchor = np.full(8, 2.0, np.float32)
    s2.push_audio(speaker=spk, listener=lis)
    assert not np.allclose(s2.step().latent, base[0].latent)
    with pytest.raises(ValueError, match="anchor"):
        s2.anchor = np.zeros(3, np.float32)
    s2.set_reference(face(2))  # a new reference brings its own m0 as the anchor
    assert np.array_equal(s2.anchor, s2.reference_motion)
