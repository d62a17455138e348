"""Renderer choice (learned / photo / auto) in the engine: which one runs, why, images from the photo rig
driven by the frame's articulation read-out, a refused photo that leaves the previous reference, and a
switch at runtime. ROS-free; a tiny random model with a random linear read-out keeps it fast (the read-out
only has to be a latent -> articulation map here; the shipped one is fitted, docs/TRAINING.md)."""

from __future__ import annotations

import numpy as np
import pytest
from test_model_helpers import tiny_config

pytest.importorskip("mediapipe")

from dystream_ros.data.face import ARTICULATION_FIELDS  # noqa: E402
from dystream_ros.io.images import load_image_file  # noqa: E402
from dystream_ros.model.articulation import Readout  # noqa: E402
from dystream_ros.photo import ASTRONAUT  # noqa: E402
from dystream_ros.runtime.engine import AvatarEngine, EngineError  # noqa: E402
from dystream_ros.runtime.session import load_pipeline  # noqa: E402
from dystream_ros.runtime.settings import Settings  # noqa: E402

CARTOON = np.full((64, 64, 3), 120, np.uint8)  # flat colour: not a photograph


@pytest.fixture(scope="module")
def photo():
    return load_image_file(str(ASTRONAUT))


@pytest.fixture(scope="module")
def pipe():
    p = load_pipeline(checkpoint="random", profile=tiny_config(), render=True, backend="torch")
    d = p.latent_dim
    rng = np.random.default_rng(0)
    w = np.zeros((len(ARTICULATION_FIELDS), d), np.float32)
    w[0] = 0.3 * rng.standard_normal(d)  # jaw_open follows the latent
    p.readout = Readout(w, np.full(len(ARTICULATION_FIELDS), 0.0, np.float32), tuple(ARTICULATION_FIELDS))
    return p


def _frames(engine, n=12):
    spf = engine.pipe.samples_per_frame
    rng = np.random.default_rng(3)
    x = (0.2 * rng.standard_normal(n * spf)).astype(np.float32)
    return list(engine.offline(x, x))


def test_auto_picks_photo_for_a_photograph_and_learned_for_a_drawn_face(pipe, photo):
    eng = AvatarEngine(Settings(warmup_frames=1, num_threads=0), pipe=pipe, reference=photo)
    assert eng.renderer == "photo" and "photograph" in eng.renderer_reason
    assert eng.meta["renderer"] == "photo" and eng.meta["articulation"] is True
    outs = _frames(eng)
    assert all(o.frame.image.shape == (256, 256, 3) and o.articulation.shape == (13,) for o in outs)
    assert all(o.frame.timings["render"] > 0 for o in outs)
    jaw = np.array([o.articulation[0] for o in outs])
    assert np.ptp(jaw) > 0  # the read-out moves the jaw, and with it the rendered mouth
    img = np.stack([o.frame.image for o in outs]).astype(np.float32)
    assert img.std(axis=0).max() > 10

    eng = AvatarEngine(Settings(warmup_frames=0, num_threads=0), pipe=pipe, reference=CARTOON)
    assert eng.renderer == "learned" and "drawn" in eng.renderer_reason
    assert _frames(eng, 3)[0].frame.image.shape == (pipe.image_size, pipe.image_size, 3)


def test_a_refused_photo_keeps_the_previous_reference_and_renderer(pipe, photo):
    eng = AvatarEngine(Settings(warmup_frames=0, num_threads=0, renderer="photo"), pipe=pipe, reference=photo)
    before = eng._face
    with pytest.raises(ValueError, match="face"):
        eng.set_reference(CARTOON)
    assert eng._face is before and eng.reference is photo and eng.renderer == "photo"


def test_renderer_switch_at_runtime(pipe, photo):
    eng = AvatarEngine(Settings(warmup_frames=0, num_threads=0, renderer="learned"), pipe=pipe,
                       reference=photo)
    assert eng.renderer == "learned"
    eng.update(renderer="photo")
    assert eng.renderer == "photo" and eng.meta["renderer"] == "photo"
    eng.update(renderer="auto")
    assert eng.renderer == "photo"
    eng.update(renderer="learned")
    assert eng.renderer == "learned"


def test_photo_without_a_readout_is_refused_clearly(photo):
    p = load_pipeline(checkpoint="random", profile=tiny_config(), render=True, backend="torch")
    assert p.readout is None
    with pytest.raises(EngineError, match="read-out"):
        AvatarEngine(Settings(warmup_frames=0, num_threads=0, renderer="photo"), pipe=p, reference=photo)
    eng = AvatarEngine(Settings(warmup_frames=0, num_threads=0), pipe=p, reference=photo)
    assert eng.renderer == "learned" and "read-out" in eng.renderer_reason
