"""ONNX export of the per-frame steps (opset 17, KV ring as explicit inputs/outputs) and parity with
onnxruntime on CPU within 1e-4."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from test_model_helpers import face, one_thread, speechlike, tiny_config  # noqa: F401 (fixture)

from dystream_ros.config import load_profile
from dystream_ros.model import build_model, load_pipeline, save_checkpoint
from dystream_ros.runtime import onnx_export, steps
from dystream_ros.runtime.onnx_export import SPECS, STEP_NAMES, example_inputs, export_step

pytestmark = pytest.mark.usefixtures("one_thread")


def _session(data: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _check(model, name, branches=3):
    data = export_step(model, name)
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    sess = _session(data)
    cls = SPECS[name][0]
    module = cls(model).eval()
    for q in sorted({1, branches}):
        args = example_inputs(model, name, branches=q)
        with torch.no_grad():
            want = module(*args)
        want = want if isinstance(want, tuple) else (want,)
        got = sess.run(None, {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args, strict=True)})
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g.shape == tuple(w.shape)
            np.testing.assert_allclose(g, w.numpy(), atol=1e-4, rtol=0, err_msg=f"{name} Q={q}")


@pytest.mark.parametrize("name", STEP_NAMES)
def test_parity_tiny(name):
    _check(build_model(tiny_config()), name, branches=4)


@pytest.mark.parametrize("name", ["audio", "generator_step", "head_step", "decoder"])
def test_parity_lite(name):
    _check(build_model(load_profile("lite")), name, branches=3)


def test_generator_step_ring_io():
    """The exported step returns the updated ring and writes exactly one slot."""
    model = build_model(tiny_config())
    sess = _session(export_step(model, "generator_step"))
    args = example_inputs(model, "generator_step", branches=2)
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args, strict=True)}
    names = [o.name for o in sess.get_outputs()]
    assert names == ["cond", "k_cache_out", "v_cache_out"]
    _, k, v = sess.run(None, feeds)
    w = model.cfg.generator.window
    slot = int(args[-1]) % w
    diff = np.abs(k - feeds["k_cache"]).sum(axis=(0, 1, 3))
    assert diff[slot] > 0 and np.count_nonzero(diff) == 1


def test_session_parity_across_backends():
    cfg = tiny_config()
    spk, lis = speechlike(0.6, 1), speechlike(0.6, 2)
    out = {}
    for backend in ("torch", "onnxruntime", "auto"):
        s = load_pipeline("random", profile=cfg, backend=backend).start_session(face(1), seed=0)
        s.push_audio(speaker=spk, listener=lis)
        frames = [s.step() for _ in range(6)]
        out[backend] = (np.stack([f.latent for f in frames]), np.stack([f.image for f in frames]).astype(int))
    for b in ("onnxruntime", "auto"):
        np.testing.assert_allclose(out[b][0], out["torch"][0], atol=1e-4, rtol=0)
        assert np.abs(out[b][1] - out["torch"][1]).max() <= 1  # uint8 rounding


def test_export_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DYSTREAM_CACHE_DIR", str(tmp_path))
    model = build_model(tiny_config(), render=False)
    names = ("head_condition", "head_step")
    paths = onnx_export.cached_export(model, names)
    assert set(paths) == set(names) and all(
        p.is_file() and p.parent.parent == tmp_path / "onnx" for p in paths.values()
    )
    mtimes = {n: p.stat().st_mtime_ns for n, p in paths.items()}
    again = onnx_export.cached_export(model, names)
    assert again == paths and all(p.stat().st_mtime_ns == mtimes[n] for n, p in again.items())
    with torch.no_grad():
        model.head.in_proj.weight.add_(1.0)
    changed = onnx_export.cached_export(model, names)
    assert changed["head_step"].parent != paths["head_step"].parent  # new weights, new key
    monkeypatch.setattr(onnx_export, "MAX_CACHED_MODELS", 2)
    with torch.no_grad():
        model.head.in_proj.weight.add_(1.0)
    third = onnx_export.cached_export(model, names)
    kept = sorted(d.name for d in (tmp_path / "onnx").iterdir())
    assert kept == sorted([changed["head_step"].parent.name, third["head_step"].parent.name])


def test_step_modules_cover_specs():
    assert set(STEP_NAMES) == {
        "audio",
        "generator_step",
        "head_condition",
        "head_time",
        "head_step",
        "motion",
        "reference",
        "decoder",
    }
    assert all(issubclass(SPECS[n][0], torch.nn.Module) for n in STEP_NAMES)
    assert steps.GeneratorStep in {s[0] for s in SPECS.values()}


def test_export_main(tmp_path, capsys):
    ckpt = save_checkpoint(build_model(tiny_config()), tmp_path / "tiny.safetensors")
    assert onnx_export.main(["--out", str(tmp_path / "onnx"), "--checkpoint", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert all(f"{n}: " in out and (tmp_path / "onnx" / f"{n}.onnx").is_file() for n in STEP_NAMES)


def test_export_shows_no_progress_bar_off_a_terminal(tmp_path, monkeypatch, capsys):
    """Under `ros2 launch` (stderr is a pipe) a bar's carriage returns glued it to the next log line."""
    monkeypatch.setenv("DYSTREAM_CACHE_DIR", str(tmp_path))
    model = build_model(tiny_config(), render=False, seed=3).eval()
    paths = onnx_export.cached_export(model, ("audio",))
    assert paths["audio"].is_file()
    err = capsys.readouterr().err
    assert "onnx export" not in err and "\r" not in err, err
