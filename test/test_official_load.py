"""A converted official checkpoint is one more pipeline behind the same loader and engine: ``load_pipeline``
(what ``checkpoint:=`` of the node, replay and render call) recognises it by its metadata, and the engine
streams it. A tiny official config with random weights, saved the way ``dystream convert-official`` saves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dystream_ros.official.config import tiny
from dystream_ros.official.model import OfficialModel, save_official
from dystream_ros.official.pipeline import OfficialPipeline
from dystream_ros.runtime.engine import AvatarEngine, EngineError
from dystream_ros.runtime.session import load_pipeline
from dystream_ros.runtime.settings import Settings


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    torch.manual_seed(0)
    cfg = tiny()
    model = OfficialModel(cfg).eval()
    return save_official(model.state_dict(), cfg, tmp_path_factory.mktemp("off") / "official.safetensors",
                         render=True)


def test_load_pipeline_and_the_engine_take_a_converted_file(converted):
    pipe = load_pipeline(checkpoint=str(converted), render=False)
    assert isinstance(pipe, OfficialPipeline) and pipe.profile == "official" and pipe.readout is None
    engine = AvatarEngine(Settings(checkpoint=str(converted), render=False, warmup_frames=1, num_threads=1),
                          reference=np.full((64, 64, 3), 128, np.uint8))
    assert engine.meta["profile"] == "official" and engine.renderer == "none"
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(640 * 6)).astype(np.float32)
    outs = list(engine.offline(x, x))
    assert len(outs) == 6 and all(np.isfinite(o.frame.latent).all() for o in outs)


def test_the_official_profile_without_a_file_says_how_to_get_one():
    with pytest.raises(EngineError, match="convert-official"):
        AvatarEngine(Settings(profile="official", warmup_frames=0))
