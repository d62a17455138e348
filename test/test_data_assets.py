"""Shipped avatars and sample conversation: present, small, held-out, and exactly reproducible."""

from __future__ import annotations

import json

import numpy as np

from dystream_ros.data.assets import (
    ASSETS_DIR,
    NUM_HELDOUT_AVATARS,
    default_avatar_path,
    load_image_rgb,
    regenerate_assets,
)
from dystream_ros.data.dataset import load_conversation
from dystream_ros.data.face import DEFAULT_IDENTITY_SEED, HELDOUT_IDENTITIES, TRAIN_IDENTITIES
from dystream_ros.data.speech import HELDOUT_VOICES


def test_avatars_present_and_split():
    img = load_image_rgb(default_avatar_path())
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    index = json.loads((ASSETS_DIR / "avatars" / "avatars.json").read_text())
    assert index["default.png"]["identity_seed"] == DEFAULT_IDENTITY_SEED in TRAIN_IDENTITIES
    assert NUM_HELDOUT_AVATARS >= 3
    for k in range(NUM_HELDOUT_AVATARS):
        entry = index[f"heldout_{k}.png"]
        assert entry["split"] == "heldout" and entry["identity_seed"] in HELDOUT_IDENTITIES
        assert load_image_rgb(ASSETS_DIR / "avatars" / f"heldout_{k}.png").shape == (256, 256, 3)


def test_sample_conversation_is_heldout_and_short():
    conv = load_conversation(ASSETS_DIR / "sample")
    assert 15.0 <= conv.num_frames / 25 <= 20.0
    assert conv.identity.seed in HELDOUT_IDENTITIES
    held = {v.key for v in HELDOUT_VOICES}
    assert {conv.meta["voices"]["A"]["key"], conv.meta["voices"]["B"]["key"]} <= held
    assert np.sqrt(np.mean(conv.speaker**2)) > 0.01 and np.sqrt(np.mean(conv.listener**2)) > 0.01


def test_assets_are_small():
    total = sum(
        p.stat().st_size
        for p in ASSETS_DIR.rglob("*")
        if p.is_file() and p.parent.name in ("avatars", "sample")
    )
    assert total < 2_000_000


def test_assets_regenerate_exactly(tmp_path):
    regenerate_assets(tmp_path)
    for rel in [
        "avatars/avatars.json",
        "sample/meta.json",
        "sample/params.npy",
        "sample/speaker.wav",
        "sample/listener.wav",
    ]:
        assert (tmp_path / rel).read_bytes() == (ASSETS_DIR / rel).read_bytes(), rel
    for png in sorted((ASSETS_DIR / "avatars").glob("*.png")):
        assert np.array_equal(load_image_rgb(tmp_path / "avatars" / png.name), load_image_rgb(png)), png.name
