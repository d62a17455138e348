"""`dystream bench`: runs a few frames and reports every stage (timings themselves are never asserted)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from test_model_helpers import one_thread, tiny_config  # noqa: F401 (fixture)

from dystream_ros import cli
from dystream_ros.runtime import bench
from dystream_ros.runtime.bench import STAGES, cpu_model, run_bench, synthetic_audio

pytestmark = pytest.mark.usefixtures("one_thread")


def _main(argv: list[str]) -> int:
    """`dystream <argv>` with only the bench subcommand (independent of the other subcommands' modules)."""
    parser = argparse.ArgumentParser(prog="dystream")
    bench.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_registered_in_cli():
    assert "dystream_ros.runtime.bench" in cli.SUBCOMMAND_MODULES


def test_bench_json(capsys):
    rc = _main(
        [
            "bench",
            "--profile",
            "lite",
            "--frames",
            "4",
            "--warmup",
            "1",
            "--json",
            "--no-progress",
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["profile"] == "lite" and r["frames"] == 4 and r["render"] is True and r["image_size"] == 256
    assert r["torch_threads"] == 1 and r["backend"] == "onnxruntime+torch" and r["cpu"] == cpu_model()
    assert set(r["stages"]) == set(STAGES)
    for s in STAGES:
        st = r["stages"][s]
        assert 0 < st["median_ms"] <= st["p95_ms"]
    assert r["stages"]["total"]["median_ms"] >= r["stages"]["render"]["median_ms"]
    assert "flat" not in r  # too few frames for the frame-100 comparison
    assert 0 < r["cpu_ms"]["median_ms"] <= r["cpu_ms"]["p95_ms"]


def test_bench_text_no_render(capsys):
    rc = _main(
        ["bench", "--frames", "3", "--warmup", "0", "--no-render", "--backend", "torch", "--no-progress"]
    )
    assert rc == 0
    out = capsys.readouterr().out
    for word in (
        "audio",
        "generator",
        "flow head",
        "render",
        "total",
        "median ms",
        "p95 ms",
        "backend=torch",
        "render=off",
        "torch threads",
    ):
        assert word in out


def test_bench_flat_section():
    r = run_bench(profile=tiny_config(), frames=250, warmup=5, render=False, backend="torch", progress=False)
    assert r["flat"]["around_frame"] == 100 and r["flat"]["last_frame"] == 254
    assert all(
        r["flat"][k] > 0 for k in ("median_ms_around", "median_ms_last", "cpu_ms_around", "cpu_ms_last")
    )
    assert r["profile"] == "tiny"


def test_bench_errors(capsys):
    with pytest.raises(SystemExit) as e:  # not offered: argparse refuses it
        _main(["bench", "--backend", "tensorrt", "--frames", "1", "--no-progress"])
    assert e.value.code == 2 and "invalid choice: 'tensorrt'" in capsys.readouterr().err
    assert _main(["bench", "--frames", "0"]) == 2


def test_synthetic_audio_is_speechlike():
    spk, lis = synthetic_audio(2.0, 16000, seed=0)
    assert spk.shape == lis.shape == (32000,) and spk.dtype.name == "float32"
    assert 0.01 < float(abs(spk).mean()) < 0.5 and abs(spk).max() <= 1.0


def test_bench_photo_renderer(tmp_path):
    """--renderer photo draws the shipped photo with the rig (driven by the checkpoint's read-out) and
    reports the rig's per-reference build time; without a read-out it is refused with the reason."""
    pytest.importorskip("mediapipe")
    from test_model_helpers import tiny_config

    from dystream_ros.data.face import ARTICULATION_FIELDS
    from dystream_ros.model.articulation import Readout, readout_path, save_readout
    from dystream_ros.model.checkpoint import save_checkpoint
    from dystream_ros.model.dystream import build_model
    from dystream_ros.photo import ASTRONAUT
    from dystream_ros.runtime.bench import run_bench

    ckpt = save_checkpoint(build_model(tiny_config(), seed=1), tmp_path / "t.safetensors")
    n = len(ARTICULATION_FIELDS)
    w = np.full((n, 8), 0.1, np.float32)
    save_readout(Readout(w, np.zeros(n, np.float32), tuple(ARTICULATION_FIELDS)), readout_path(ckpt))
    r = run_bench(checkpoint=str(ckpt), frames=4, warmup=1, renderer="photo", reference=ASTRONAUT,
                  image_size=512, backend="torch", progress=False)
    assert r["renderer"] == "photo" and r["image_size"] == 512
    assert r["stages"]["render"]["median_ms"] > 0 and r["reference_build_ms"] > 0
    with pytest.raises(ValueError, match="read-out"):
        run_bench(frames=2, warmup=0, renderer="photo", reference=ASTRONAUT, backend="torch", progress=False)
