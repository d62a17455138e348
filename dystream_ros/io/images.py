"""Images on disk and in memory: reference faces (bounded, directory-limited), square fitting, and
``sensor_msgs/Image``-shaped messages (rclpy or rosbags) decoded to RGB.

ROS-free; the node (``~/set_reference``, its outputs' fitting), the engine and the bag tools use these.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = ["ReferenceLimits", "ReferenceRefused", "fit_square", "image_msg_to_rgb", "load_image_file",
           "resolve_reference_path"]


class ReferenceRefused(ValueError):
    """A reference image the node will not use; the message is safe to send back to the caller."""


@dataclass(frozen=True)
class ReferenceLimits:
    """What a reference image may be (``reference_*`` parameters of the node).

    ``dirs``: resolved directories a ``~/set_reference`` path must lie in (after following symlinks);
    empty = any path (the launch-time ``reference`` is the operator's own choice and is not limited).
    """

    max_pixels: int = 2048 * 2048
    max_bytes: int = 16 * 1024 * 1024
    min_side: int = 64
    dirs: tuple[Path, ...] = ()

    def check_size(self, width: int, height: int) -> None:
        if min(width, height) < self.min_side:
            raise ReferenceRefused(f"image {width}x{height} is smaller than reference_min_side "
                                   f"({self.min_side} px)")
        if width * height > self.max_pixels:
            raise ReferenceRefused(f"image {width}x{height} has more than reference_max_pixels "
                                   f"({self.max_pixels}) pixels")


def resolve_reference_path(path: str, limits: ReferenceLimits) -> Path:
    """``path`` made absolute with symlinks followed, refused unless inside ``limits.dirs``.

    Paths outside the directories are refused with the same message whether they exist or not.
    """
    if not path or "\0" in path:
        raise ReferenceRefused("empty or invalid path")
    try:
        real = Path(os.path.realpath(os.path.expanduser(path)))
    except (OSError, RuntimeError, ValueError) as e:
        raise ReferenceRefused(f"invalid path ({type(e).__name__})") from None
    if limits.dirs and not any(real.is_relative_to(d) for d in limits.dirs):
        allowed = os.pathsep.join(str(d) for d in limits.dirs)
        raise ReferenceRefused(f"path is outside reference_dirs ({allowed})")
    return real


def load_image_file(path: str | Path, limits: ReferenceLimits | None = None) -> np.ndarray:
    """Image file (PNG, JPEG, ...) -> HxWx3 uint8 RGB. With ``limits``, bytes and pixels are checked
    from the file size and the header before anything is decoded."""
    p = Path(path)
    try:
        size = p.stat().st_size if p.is_file() else None
    except OSError as e:  # a name too long, a loop of links, no permission on a parent
        why = e.strerror or type(e).__name__
        raise ReferenceRefused(f"cannot read image file {p.name!r} ({why})") from None
    if size is None:
        raise FileNotFoundError(f"image file not found: {p}")
    if limits is not None:
        from PIL import Image as PILImage

        if size > limits.max_bytes:
            raise ReferenceRefused(f"image file {p.name!r} is {size} bytes, over reference_max_bytes "
                                   f"({limits.max_bytes})")
        try:
            with PILImage.open(p) as im:  # reads the header only
                w, h = im.size
        except (OSError, ValueError, PILImage.DecompressionBombError):
            raise ReferenceRefused(f"cannot decode image file {p.name!r}") from None
        limits.check_size(w, h)
    bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ReferenceRefused(f"cannot decode image file {p.name!r}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def fit_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to ``size`` x ``size`` (no-op when already that size)."""
    h, w = rgb.shape[:2]
    if h == w == size:
        return rgb
    s = min(h, w)
    sq = rgb[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    interp = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(sq), (size, size), interpolation=interp)


_IMAGE_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8UC3": 3, "8UC1": 1}


def image_msg_to_rgb(msg, limits: ReferenceLimits | None = None) -> np.ndarray:
    """A ``sensor_msgs/Image`` (rclpy or rosbags; rgb8, bgr8, rgba8, bgra8, mono8) -> HxWx3 uint8 RGB (a
    copy), its size checked against ``limits`` first; ``ValueError`` for what cannot be decoded."""
    enc = msg.encoding
    if enc not in _IMAGE_CHANNELS:
        raise ValueError(f"unsupported image encoding {enc!r}; use one of {sorted(_IMAGE_CHANNELS)}")
    ch = _IMAGE_CHANNELS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ValueError(f"empty image ({w}x{h})")
    if limits is not None:
        limits.check_size(w, h)
    if step < w * ch:
        step = w * ch
    data = np.frombuffer(memoryview(msg.data).cast("B"), dtype=np.uint8)
    if data.size < step * (h - 1) + w * ch:
        raise ValueError(f"image data too short: {data.size} bytes for {w}x{h} {enc} with step {step}")
    rows = np.lib.stride_tricks.as_strided(data, shape=(h, w * ch), strides=(step, 1))
    img = rows.reshape(h, w, ch)
    if ch == 1:
        return np.repeat(img, 3, axis=2).copy()
    if enc.startswith("bgr"):
        img = img[..., 2::-1]
    return np.ascontiguousarray(img[..., :3])
