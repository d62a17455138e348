"""Checkpoints: safetensors + config round trip; wrong names and shapes fail loudly, naming the tensor."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_model_helpers import face, one_thread, speechlike, tiny_config  # noqa: F401 (fixture)

from dystream_ros.model import CheckpointError, build_model, load_checkpoint, load_pipeline, save_checkpoint
from dystream_ros.model.checkpoint import read_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def ckpt(tmp_path):
    model = build_model(tiny_config(lookahead_ms=120), seed=3)
    return model, save_checkpoint(model, tmp_path / "tiny.safetensors", extra={"note": "test"})


def _rewrite(path, tensors, meta=None):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    save_file(tensors, str(path), metadata=metadata if meta is None else meta)


def test_round_trip(ckpt):
    model, path = ckpt
    assert read_config(path) == model.cfg
    loaded = load_checkpoint(path)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.cfg.audio.lookahead_ms == 120


def test_pipeline_from_file_matches_in_memory(ckpt):
    model, path = ckpt
    pipe = load_pipeline(path, profile="base", backend="torch")  # the config comes from the file
    assert pipe.profile == "tiny" and pipe.lookahead_ms == 120
    assert re.fullmatch(r"tiny\.safetensors@[0-9a-f]{8}", pipe.checkpoint_id)
    from dystream_ros.runtime.session import Pipeline

    mem = Pipeline(model, "mem", backend="torch")
    spk, lis = speechlike(0.6, 1), speechlike(0.6, 2)
    out = []
    for p in (pipe, mem):
        s = p.start_session(face(1), seed=0)
        s.push_audio(speaker=spk, listener=lis)
        out.append(np.stack([s.step().latent for _ in range(4)]))
    assert np.array_equal(out[0], out[1])
    lat = load_pipeline(path, render=False, backend="torch")
    assert not hasattr(lat.model.autoencoder, "decoder")


def test_missing_tensor_named(ckpt):
    _, path = ckpt
    t = load_file(str(path))
    del t["generator.blocks.1.fc2.weight"]
    _rewrite(path, t)
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) \['generator\.blocks\.1\.fc2\.weight'\]"):
        load_checkpoint(path)


def test_unexpected_tensor_named(ckpt):
    _, path = ckpt
    t = load_file(str(path))
    t["head.extra_proj.weight"] = torch.zeros(2, 2)
    _rewrite(path, t)
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\) \['head\.extra_proj\.weight'\]"):
        load_checkpoint(path)


def test_renamed_tensor_named(ckpt):
    _, path = ckpt
    t = load_file(str(path))
    t["audio.look_inn.weight"] = t.pop("audio.look_in.weight")
    _rewrite(path, t)
    with pytest.raises(
        CheckpointError, match=r"missing.*audio\.look_in\.weight.*unexpected.*audio\.look_inn\.weight"
    ):
        load_checkpoint(path)


def test_wrong_shape_named(ckpt):
    _, path = ckpt
    t = load_file(str(path))
    t["autoencoder.decoder.refine_in.weight"] = torch.zeros(8, 16, 3, 3)
    _rewrite(path, t)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, render=False)  # checked even when the decoder is not built
    assert "'autoencoder.decoder.refine_in.weight' has shape (8, 16, 3, 3)" in str(e.value)
    assert "needs (8, 24, 3, 3)" in str(e.value)


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(1)}, str(p))
    with pytest.raises(CheckpointError, match="not a dystream_ros checkpoint"):
        load_checkpoint(p)
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_bad_config_in_metadata(ckpt):
    model, path = ckpt
    d = model.cfg.to_dict()
    d["generator"]["heads"] = 5
    _rewrite(path, load_file(str(path)), meta={"format": "dystream_ros/1", "config": json.dumps(d)})
    with pytest.raises(CheckpointError, match="GeneratorConfig.heads"):
        load_checkpoint(path)


def test_latents_only_checkpoint(tmp_path):
    model = build_model(tiny_config(), render=False)
    path = save_checkpoint(model, tmp_path / "lat.safetensors")
    loaded = load_checkpoint(path, render=False)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(CheckpointError, match="latents-only.*render=False"):
        load_checkpoint(path)
