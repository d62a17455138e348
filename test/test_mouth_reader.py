"""Mouth readers (dystream_ros.eval.mouth_reader): the shipped synthetic-face CNN on held-out identities,
loud loading failures, a smoke run of the training command, and MediaPipe FaceMesh."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from dystream_ros.data.face import (
    HELDOUT_IDENTITIES,
    TRAIN_IDENTITIES,
    Articulation,
    identity_from_seed,
    render,
)
from dystream_ros.eval import mouth_reader as mr
from dystream_ros.eval.mouth_reader import network as mrn
from dystream_ros.eval.mouth_reader import training as mr_training


def smooth(n, seed, sigma, lo, hi):
    x = gaussian_filter1d(np.random.default_rng(seed).normal(size=n), sigma)
    x = (x - x.min()) / (x.max() - x.min())
    return lo + (hi - lo) * x


@pytest.fixture(scope="module")
def reader():
    return mr.MouthReader.load("synthetic")


@pytest.fixture(scope="module")
def heldout_clip():
    """Speech-like articulation sequences rendered for every held-out identity (never seen in training)."""
    frames, params = [], []
    rng = np.random.default_rng(7)
    for k, seed in enumerate(HELDOUT_IDENTITIES):
        n = 40
        jaw = smooth(n, 10 + k, 2.0, 0.0, 1.0)
        pitch = smooth(n, 20 + k, 5.0, -0.3, 0.3)
        yaw = smooth(n, 30 + k, 8.0, -0.3, 0.3)
        ident = identity_from_seed(seed)
        for t in range(n):
            a = Articulation(jaw_open=jaw[t], head_pitch=pitch[t], head_yaw=yaw[t],
                             lip_spread=rng.uniform(0, 0.5), smile=rng.uniform(-0.2, 0.5),
                             blink_l=float(t % 17 == 0), blink_r=float(t % 17 == 0),
                             gaze_x=rng.uniform(-0.5, 0.5), brow=rng.uniform(-0.3, 0.3))
            frames.append(render(ident, a, 256))
            params.append(a.to_array())
    return np.stack(frames), np.stack(params)


def test_shipped_reader_reads_heldout_identities(reader, heldout_clip):
    frames, params = heldout_clip
    out = reader.read(frames)
    jaw_i, pitch_i = 0, 9  # ARTICULATION_FIELDS order
    assert set(out) >= {"mouth", "pitch", "jaw_open", "lip_close", "valid"}
    assert out["valid"].all() and out["mouth"].dtype == np.float32 and out["mouth"].shape == (len(frames),)
    jaw_r = np.corrcoef(out["jaw_open"], params[:, jaw_i])[0, 1]
    mouth_r = np.corrcoef(out["mouth"], params[:, jaw_i])[0, 1]  # lip_close = 0 here: mouth = jaw
    pitch_r = np.corrcoef(out["pitch"], params[:, pitch_i])[0, 1]
    assert jaw_r > 0.9 and mouth_r > 0.9, (jaw_r, mouth_r)
    assert pitch_r > 0.9, pitch_r
    assert np.abs(out["mouth"] - params[:, jaw_i]).mean() < 0.12
    assert np.abs(out["pitch"] - params[:, pitch_i]).mean() < 0.06
    # Per identity too (no identity is unreadable).
    for k in range(len(HELDOUT_IDENTITIES)):
        s = slice(40 * k, 40 * (k + 1))
        assert np.corrcoef(out["mouth"][s], params[s, jaw_i])[0, 1] > 0.8, HELDOUT_IDENTITIES[k]


def test_shipped_reader_sees_lip_closure(reader):
    ident = identity_from_seed(HELDOUT_IDENTITIES[2])
    frames = np.stack([render(ident, Articulation(jaw_open=0.7, lip_close=c), 256) for c in (0.0, 1.0)])
    out = reader.read(frames)
    assert out["mouth"][0] > 0.4 and out["mouth"][1] < 0.2
    assert out["lip_close"][1] > 0.5 > out["lip_close"][0]


def test_shipped_weights_metadata_and_size():
    from safetensors import safe_open

    path = mr.DEFAULT_WEIGHTS
    assert path.stat().st_size < 2 * 1024 * 1024
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    cfg = json.loads(meta["config"])
    training = json.loads(meta["training"])
    heldout = json.loads(meta["heldout"])
    assert meta["format"] == mrn.FORMAT and cfg["outputs"][:3] == ["jaw_open", "lip_close", "head_pitch"]
    assert training["identities"] == f"TRAIN_IDENTITIES {TRAIN_IDENTITIES.start}..{TRAIN_IDENTITIES.stop - 1}"
    assert "mouth_reader train" in training["command"]
    # Pressed lips hide the jaw, so jaw_open is judged where the lips are apart; mouth = jaw * (1 - close).
    assert heldout["jaw_open_lips_apart_corr"] > 0.9 and heldout["mouth_corr"] > 0.9
    assert heldout["head_pitch_corr"] > 0.9 and heldout["head_pitch_mae"] < 0.05
    assert not set(TRAIN_IDENTITIES) & set(HELDOUT_IDENTITIES)


def test_preprocess_any_frame_size(reader):
    img = render(identity_from_seed(HELDOUT_IDENTITIES[0]), Articulation(jaw_open=0.8), 256)
    import cv2

    big = cv2.resize(img, (512, 512), interpolation=cv2.INTER_CUBIC)
    a, b = reader.read(img[None])["mouth"][0], reader.read(big[None])["mouth"][0]
    assert abs(a - b) < 0.1
    with pytest.raises(ValueError):
        reader.read(img.astype(np.float32)[None])


# --------------------------------------------------------------------------------------------
# Loading fails loudly


def _save(path, tensors, meta):
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=meta)


def _shipped():
    from safetensors import safe_open

    with safe_open(str(mr.DEFAULT_WEIGHTS), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def test_load_rejects_wrong_shapes_names_and_format(tmp_path):
    import torch

    tensors, meta = _shipped()
    name = sorted(k for k in tensors if k.endswith("weight") and tensors[k].ndim == 4)[0]
    bad = dict(tensors)
    bad[name] = torch.zeros(tuple(tensors[name].shape[:-1]) + (5,))
    _save(tmp_path / "shape.safetensors", bad, meta)
    with pytest.raises(mr.MouthReaderError, match=f"wrong shapes.*{name}"):
        mr.MouthReader.load("synthetic", tmp_path / "shape.safetensors")

    missing = dict(tensors)
    del missing[name]
    missing["extra.weight"] = torch.zeros(3)
    _save(tmp_path / "names.safetensors", missing, meta)
    with pytest.raises(mr.MouthReaderError, match=r"missing \['" + name.replace(".", r"\.")):
        mr.MouthReader.load("synthetic", tmp_path / "names.safetensors")

    _save(tmp_path / "fmt.safetensors", tensors, {**meta, "format": "something-else"})
    with pytest.raises(mr.MouthReaderError, match="not a mouth reader"):
        mr.MouthReader.load("synthetic", tmp_path / "fmt.safetensors")

    cfg = json.loads(meta["config"])
    cfg["channels"] = [8] + cfg["channels"][1:]
    _save(tmp_path / "cfg.safetensors", tensors, {**meta, "config": json.dumps(cfg)})
    with pytest.raises(mr.MouthReaderError, match="wrong shapes"):
        mr.MouthReader.load("synthetic", tmp_path / "cfg.safetensors")

    with pytest.raises(mr.MouthReaderError, match="mouth_reader train"):
        mr.MouthReader.load("synthetic", tmp_path / "nope.safetensors")
    with pytest.raises(mr.MouthReaderError, match="unknown mouth reader kind"):
        mr.MouthReader.load("syncnet")


def test_train_command_smoke(tmp_path):
    """The training entry point runs end to end (tiny) and writes a loadable, self-describing file."""
    out = tmp_path / "tiny.safetensors"
    assert mr_training.main(["train", "--out", str(out), "--samples", "96", "--epochs", "1", "--workers", "1",
                    "--quiet", "--heldout-samples", "16"]) == 0
    r = mr.MouthReader.load("synthetic", out)
    assert r.meta["training"]["samples"] == 96 and "jaw_open_corr" in r.meta["heldout"]
    assert r.read(np.zeros((2, 64, 64, 3), np.uint8))["mouth"].shape == (2,)


# --------------------------------------------------------------------------------------------
# MediaPipe FaceMesh


def test_mediapipe_missing_fails_loudly(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # import mediapipe -> ImportError
    with pytest.raises(mr.MouthReaderError, match="pip install --no-deps mediapipe==0.10.14"):
        mr.MouthReader.load("mediapipe")


@pytest.fixture(scope="module")
def mp_reader():
    try:
        r = mr.MouthReader.load("mediapipe")
    except mr.MouthReaderError as e:
        pytest.skip(f"MediaPipe not installed: {e}")
    yield r
    r.close()


def _photo():
    """A real photograph shipped with matplotlib (Grace Hopper, public domain)."""
    import matplotlib.image as mpimg
    from matplotlib import cbook

    return np.ascontiguousarray(mpimg.imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))


def _open_mouth(img, lm, k):
    """Photo edit: push everything below the lip line down by k px around the mouth and paint the gap dark."""
    import cv2

    h, w = img.shape[:2]
    p = lm[:, :2] * [w, h]
    ym = int(round((p[13, 1] + p[14, 1]) / 2))
    xl, xr = p[61, 0], p[291, 0]
    x0, x1 = int(xl - 40), int(xr + 40)
    xs = np.arange(x0, x1)
    wgt = np.clip(np.minimum(xs - x0, x1 - xs) / 30.0, 0, 1)
    out = img.copy()
    for y in range(ym, h):
        out[y, x0:x1] = img[np.clip(np.round(y - k * wgt).astype(int), 0, h - 1), xs]
    cv2.ellipse(out, (int((xl + xr) / 2), ym + k // 2), (int((xr - xl) * 0.38), max(1, k // 2)), 0, 0, 360,
                (60, 20, 25), -1, cv2.LINE_AA)
    return out


def test_mediapipe_reads_photo_mouth_opening(mp_reader):
    img = _photo()
    lm = mp_reader.landmarks(img)
    assert lm is not None and lm.shape == (468, 3)
    frames = np.stack([img] + [_open_mouth(img, lm, k) for k in (8, 16, 28)])
    out = mp_reader.read(frames)
    assert out["valid"].all() and out["jaw_open"] is None
    m = out["mouth"]
    assert m[0] < 0.02 and np.all(np.diff(m) > 0.005), m
    assert abs(float(out["pitch"][0])) < 0.4


def test_mediapipe_on_synthetic_renders_and_no_face(mp_reader):
    ident = identity_from_seed(HELDOUT_IDENTITIES[0])
    jaw = [0.0, 0.5, 1.0]
    out = mp_reader.read(np.stack([render(ident, Articulation(jaw_open=j), 256) for j in jaw]))
    assert out["valid"].all() and np.all(np.diff(out["mouth"]) > 0.02)
    pitches = np.linspace(-0.4, 0.4, 5)
    pr = mp_reader.read(np.stack([render(ident, Articulation(head_pitch=p), 256) for p in pitches]))["pitch"]
    assert np.corrcoef(pr, pitches)[0, 1] > 0.95  # same sign convention as head_pitch (chin up > 0)
    blank = mp_reader.read(np.full((2, 128, 128, 3), 128, np.uint8))
    assert not blank["valid"].any() and np.isnan(blank["mouth"]).all()
