"""Shipped assets under ``dystream_ros/assets/`` and the code that regenerates them exactly.

Regenerate (deterministic for a given espeak-ng and OpenCV version) with::

    python -m dystream_ros.data.assets            # writes into dystream_ros/assets/
    python -m dystream_ros.data.assets --out DIR  # somewhere else (e.g. to compare)

Contents:

- ``avatars/default.png``: the default reference avatar (training identity
  :data:`~dystream_ros.data.face.DEFAULT_IDENTITY_SEED`), 256x256 RGB, neutral pose, slight smile.
- ``avatars/heldout_<k>.png``: neutral faces of the first :data:`NUM_HELDOUT_AVATARS` held-out
  identities (``HELDOUT_IDENTITIES[k]``), never used in training.
- ``avatars/avatars.json``: file -> identity seed and split.
- ``sample/speaker.wav``, ``sample/listener.wav`` (16 kHz, 16-bit), ``sample/params.npy`` and
  ``sample/meta.json``: a :data:`SAMPLE_DURATION_S` s conversation with held-out voices and the
  held-out identity of ``heldout_0.png`` (``meta.json`` lists turns, phonemes and the identity).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from dystream_ros.data.face import (
    DEFAULT_IDENTITY_SEED,
    HELDOUT_IDENTITIES,
    Articulation,
    identity_from_seed,
    render,
)

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
AVATAR_SIZE = 256
NUM_HELDOUT_AVATARS = 5
SAMPLE_SEED = 9
SAMPLE_DURATION_S = 16.0
NEUTRAL = Articulation(smile=0.2)


def default_avatar_path(assets_dir: Path = ASSETS_DIR) -> Path:
    return Path(assets_dir) / "avatars" / "default.png"


def load_image_rgb(path) -> np.ndarray:
    """Read a PNG/JPEG as HxWx3 uint8 RGB."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(path)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def save_image_rgb(path, image: np.ndarray) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"could not write {path}")


def write_avatars(assets_dir: Path = ASSETS_DIR) -> dict:
    """Render the default and held-out avatars; returns the avatars.json content."""
    out = Path(assets_dir) / "avatars"
    index = {"default.png": {"identity_seed": DEFAULT_IDENTITY_SEED, "split": "train"}}
    save_image_rgb(
        out / "default.png", render(identity_from_seed(DEFAULT_IDENTITY_SEED), NEUTRAL, AVATAR_SIZE)
    )
    for k in range(NUM_HELDOUT_AVATARS):
        seed = HELDOUT_IDENTITIES[k]
        save_image_rgb(out / f"heldout_{k}.png", render(identity_from_seed(seed), NEUTRAL, AVATAR_SIZE))
        index[f"heldout_{k}.png"] = {"identity_seed": int(seed), "split": "heldout"}
    (out / "avatars.json").write_text(json.dumps(index, indent=1) + "\n")
    return index


def write_sample(assets_dir: Path = ASSETS_DIR) -> Path:
    """Generate the sample held-out conversation into ``assets/sample``."""
    from dystream_ros.data.conversation import generate_conversation

    conv = generate_conversation(
        SAMPLE_SEED, split="heldout", duration_s=SAMPLE_DURATION_S, identity_seed=HELDOUT_IDENTITIES[0]
    )
    return conv.write(Path(assets_dir) / "sample")


def regenerate_assets(assets_dir: Path = ASSETS_DIR, sample: bool = True) -> None:
    write_avatars(assets_dir)
    if sample:
        write_sample(assets_dir)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Regenerate dystream_ros/assets (avatars and sample conversation)."
    )
    ap.add_argument("--out", type=Path, default=ASSETS_DIR, help="assets directory (default: the package's)")
    ap.add_argument("--no-sample", action="store_true", help="only the avatar images")
    args = ap.parse_args(argv)
    regenerate_assets(args.out, sample=not args.no_sample)
    print(f"assets written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
