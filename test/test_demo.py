"""`make demo` / `dystream demo` end to end on a short piece of the sample conversation.

Runs scripts/demo.sh (what `make demo` runs after `make setup`) with random weights: the node, the
bag player and the recorder as separate processes over DDS; checks the files and the report's shape.
Latency values are printed, never asserted (2 shared cores).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.ros

SECONDS = 2.0


def test_demo_writes_video_bag_report_and_plots(repo, tmp_path):
    from dystream_ros.io import bags
    from dystream_ros.io.video import probe

    env = dict(os.environ)
    env["PYTHONPATH"] = f"{repo}{os.pathsep}{env.get('PYTHONPATH', '')}"
    out = tmp_path / "demo"
    res = subprocess.run(["bash", "scripts/demo.sh", "--out", str(out), "--seconds", str(SECONDS),
                          "--checkpoint", "random", "--no-setup", "--timeout", "180"],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "RANDOM WEIGHTS" in res.stderr  # said loudly
    assert "processing_ms" in res.stdout and str(out / "video.mp4") in res.stdout
    for name in ("video.mp4", "output.mcap", "report.json", "latency.png", "lipsync.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name

    rep = json.loads((out / "report.json").read_text())
    for key in ("frames", "fps", "step_ms", "processing_ms", "av_offset_ms", "skipped_frames", "lipsync",
                "backend", "profile", "checkpoint"):
        assert key in rep, key
    assert set(rep["processing_ms"]) == {"p50", "p95", "p99", "max"}
    assert set(rep["lipsync"]) >= {"offset_frames", "confidence", "correlation"}
    assert rep["mode"] == "live" and rep["random_weights"] is True and rep["checkpoint"] == "random"
    assert rep["frames"] >= 1 and rep["frames_expected"] == 50
    assert rep["frames"] + rep["skipped_frames"] + rep["lost_frames"] == rep["frames_expected"]
    print("demo latency:", {k: rep[k] for k in ("processing_ms", "av_offset_ms", "step_ms",
                                                 "skipped_frames")})

    info = probe(out / "video.mp4")
    assert info["video"]["codec"] == "h264" and info["video"]["pix_fmt"] == "yuv420p"
    assert info["video"]["fps"] == 25.0
    assert abs(info["video"]["duration_s"] - SECONDS) <= 0.04 + 1e-6
    assert info["audio"]["codec"] == "aac" and abs(info["audio"]["duration_s"] - SECONDS) <= 0.07

    with bags.BagReader(out / "output.mcap") as bag:
        topics = bag.topics
    assert topics["/dystream/face_image"] == bags.IMAGE
    assert topics["/dystream/motion_latent"] == bags.MOTION_LATENT
    assert topics["/dystream/speaker_audio"] == bags.AUDIO_CHUNK


def test_demo_falls_back_to_random_weights_only_without_the_default(monkeypatch, tmp_path):
    from dystream_ros.commands import demo
    from dystream_ros.runtime import session as pipeline

    monkeypatch.setattr(pipeline, "default_checkpoint_path", lambda profile: tmp_path / "missing.safetensors")
    assert demo.choose_checkpoint(None) == ("random", True)
    (tmp_path / "there.safetensors").write_bytes(b"x")
    monkeypatch.setattr(pipeline, "default_checkpoint_path", lambda profile: tmp_path / "there.safetensors")
    assert demo.choose_checkpoint(None) == (None, False)  # the node loads the embedded default
    assert demo.choose_checkpoint("random") == ("random", True)


def test_demo_runs_the_photo_avatar_second(repo, tmp_path):
    """After the procedural avatar, the demo plays the same conversation to the shipped photo with the photo
    renderer (a tiny random model with an articulation read-out stands in for the embedded one here):
    DIR/photo/ has its own video and report, whose images come from the photo rig (256 px)."""
    import numpy as np
    import pytest
    from test_model_helpers import tiny_config

    pytest.importorskip("mediapipe")
    from dystream_ros.data.face import ARTICULATION_FIELDS
    from dystream_ros.io import bags
    from dystream_ros.model.articulation import Readout, readout_path, save_readout
    from dystream_ros.model.checkpoint import save_checkpoint
    from dystream_ros.model.dystream import build_model

    ckpt = save_checkpoint(build_model(tiny_config(), seed=2), tmp_path / "tiny.safetensors")
    n = len(ARTICULATION_FIELDS)
    w = np.zeros((n, 8), np.float32)
    w[0] = 0.3
    save_readout(Readout(w, np.zeros(n, np.float32), tuple(ARTICULATION_FIELDS)), readout_path(ckpt))
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{repo}{os.pathsep}{env.get('PYTHONPATH', '')}"
    out = tmp_path / "demo"
    res = subprocess.run(["bash", "scripts/demo.sh", "--out", str(out), "--seconds", "1", "--checkpoint",
                          "random", "--photo-checkpoint", str(ckpt), "--no-setup", "--timeout", "180"],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "photo avatar" in res.stdout
    for d in (out, out / "photo"):
        assert (d / "video.mp4").is_file() and (d / "report.json").is_file()
    rep = json.loads((out / "photo" / "report.json").read_text())
    assert rep["frames"] >= 1 and rep["checkpoint"].startswith("tiny.safetensors@")
    with bags.BagReader(out / "photo" / "output.mcap") as bag:
        img = next(bag.deserialize(raw, ty) for t, ty, _, raw in bag.messages(["/dystream/face_image"]))
    assert img.width == 256
