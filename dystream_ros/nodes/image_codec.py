"""numpy <-> ``sensor_msgs/Image`` / ``CompressedImage`` for the node's fixed set of encodings.

Why not cv_bridge here: on a robot ROS's own cv_bridge would do, but the PyPI ``cv-bridge`` package
(1.13.0.post0, the only one usable in the venv) is the ROS 1 Python port. It works with numpy 1.26 but
calls ``ndarray.tostring()`` on every image (a DeprecationWarning per frame, removed in numpy 2) and
``ndarray.newbyteorder()`` (removed in numpy 2), and it pulls in nothing we need: our output is always
contiguous ``rgb8`` and our inputs (``~/set_reference``) are a handful of 8-bit encodings. These few
lines have no dependency beyond numpy and OpenCV (already required) and behave the same everywhere.
"""

from __future__ import annotations

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from dystream_ros.io.images import ReferenceLimits

_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8UC3": 3, "8UC1": 1}


def rgb_to_image_msg(rgb: np.ndarray, stamp, frame_id: str) -> Image:
    """HxWx3 uint8 RGB -> ``sensor_msgs/Image`` ``rgb8`` (``stamp``: a builtin_interfaces/Time)."""
    a = np.ascontiguousarray(rgb, dtype=np.uint8)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected HxWx3 RGB, got shape {a.shape}")
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = 3 * msg.width
    msg.data = a.tobytes()
    return msg


def rgb_to_jpeg_msg(rgb: np.ndarray, stamp, frame_id: str, quality: int = 85) -> CompressedImage:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR),
                           [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    msg = CompressedImage()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.format = "rgb8; jpeg compressed bgr8"  # image_transport's compressed format string
    msg.data = buf.tobytes()
    return msg


def image_msg_to_rgb(msg: Image, limits: ReferenceLimits | None = None) -> np.ndarray:
    """``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8) -> HxWx3 uint8 RGB (a copy), its size
    checked against ``limits`` first."""
    enc = msg.encoding
    if enc not in _CHANNELS:
        raise ValueError(f"unsupported image encoding {enc!r}; use one of {sorted(_CHANNELS)}")
    ch = _CHANNELS[enc]
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
