"""numpy -> ``sensor_msgs/Image`` / ``CompressedImage`` (the node's outputs); the other way, for any
Image-shaped message (rclpy or rosbags), is :func:`dystream_ros.io.images.image_msg_to_rgb`.

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
