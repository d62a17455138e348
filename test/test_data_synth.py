"""`dystream synth` end to end, dataset index and the training data API."""

from __future__ import annotations

import json
import subprocess
import sys

import av
import numpy as np

from dystream_ros.data.dataset import (
    iter_dataset,
    list_conversations,
    load_conversation,
    render_conversation_frames,
)
from dystream_ros.data.face import ARTICULATION_FIELDS, HELDOUT_IDENTITIES, TRAIN_IDENTITIES, render_params
from dystream_ros.data.speech import HELDOUT_VOICES, TRAIN_VOICES
from dystream_ros.data.synth import conversation_seed, synthesize_dataset


def test_cli_end_to_end_with_render(tmp_path, repo):
    out = tmp_path / "synth"
    cmd = [
        sys.executable,
        "-m",
        "dystream_ros.cli",
        "synth",
        "--out",
        str(out),
        "--conversations",
        "1",
        "--seed",
        "5",
        "--duration-s",
        "4",
        "--render",
        "--size",
        "128",
    ]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "1 conversations" in proc.stdout
    index = json.loads((out / "index.json").read_text())
    assert (
        index["split"] == "train"
        and index["seed"] == 5
        and index["params_columns"] == list(ARTICULATION_FIELDS)
    )
    (entry,) = index["conversations"]
    assert entry["dir"] == "conv_0000" and entry["num_frames"] == 100 and entry["video"]
    assert entry["seed"] == conversation_seed(5, "train", 0)
    d = out / "conv_0000"
    conv = load_conversation(d)
    assert conv.num_frames == 100 and conv.params.shape == (100, len(ARTICULATION_FIELDS))
    assert conv.identity.seed in TRAIN_IDENTITIES
    assert {conv.meta["voices"]["A"]["key"], conv.meta["voices"]["B"]["key"]} <= {v.key for v in TRAIN_VOICES}
    # the video holds the rendered avatar and both audio tracks
    with av.open(str(d / "video.mp4")) as c:
        assert len(c.streams.audio) == 2
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 100 and frames[0].shape == (128, 128, 3)
    truth = list(render_params(conv.identity, conv.params, 128))
    err = np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(frames, truth, strict=True)])
    assert err < 6.0  # H.264 at crf 18
    # the data API renders the same frames
    api = list(render_conversation_frames(d, 128))
    assert all(np.array_equal(a, b) for a, b in zip(api[:5], truth[:5], strict=True))


def test_dataset_is_deterministic_extensible_and_split(tmp_path):
    a = synthesize_dataset(tmp_path / "a", 2, seed=1, duration_s=3.0, progress=False)
    b = synthesize_dataset(tmp_path / "b", 1, seed=1, duration_s=3.0, progress=False)
    synthesize_dataset(tmp_path / "b", 1, seed=1, duration_s=3.0, start=1, progress=False)
    b = json.loads((tmp_path / "b" / "index.json").read_text())
    assert [e["dir"] for e in b["conversations"]] == ["conv_0000", "conv_0001"]
    assert a["conversations"] == b["conversations"]
    for name in ("conv_0000", "conv_0001"):
        pa, pb = (np.load(tmp_path / x / name / "params.npy") for x in ("a", "b"))
        assert np.array_equal(pa, pb)
        assert (tmp_path / "a" / name / "speaker.wav").read_bytes() == (
            tmp_path / "b" / name / "speaker.wav"
        ).read_bytes()
    assert len({e["seed"] for e in a["conversations"]}) == 2

    h = synthesize_dataset(tmp_path / "h", 2, seed=1, split="heldout", duration_s=3.0, progress=False)
    for e in h["conversations"]:
        assert e["identity_seed"] in HELDOUT_IDENTITIES
        assert set(e["voices"].values()) <= {v.key for v in HELDOUT_VOICES}
    assert conversation_seed(1, "heldout", 0) != conversation_seed(1, "train", 0)

    convs = list(iter_dataset(tmp_path / "a"))
    assert [c.name for c in convs] == ["conv_0000", "conv_0001"]
    assert list_conversations(tmp_path / "a") == [tmp_path / "a" / "conv_0000", tmp_path / "a" / "conv_0001"]
    ref = convs[0].reference_image(64)
    assert ref.shape == (64, 64, 3) and ref.dtype == np.uint8
