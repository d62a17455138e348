"""Is a reference image a photograph? A texture rule the ``auto`` renderer choice can use.

Photographs carry fine, irregular texture everywhere (skin pores, hair, sensor noise, JPEG); drawn and
procedural faces (the learned decoder's training faces among them) are flat fills with smooth shading and
sharp
outlines. :func:`photo_score` is the fraction of pixels, in the image reduced to 128x128, whose detail (the
image minus a 1-pixel Gaussian blur of it) is between 0.75 and 12 grey levels: small texture, not edges and
not flat.
Photos score well above :data:`PHOTO_THRESHOLD` and the procedural avatars far below it
(test/test_photo_rig.py checks both on the shipped images).
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["PHOTO_THRESHOLD", "looks_like_photo", "photo_score"]

PHOTO_THRESHOLD = 0.35


def photo_score(image: np.ndarray) -> float:
    """Fraction in [0, 1] of small-texture pixels (see the module docstring)."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    if a.ndim == 3 and a.shape[2] == 3:
        g = cv2.cvtColor(np.ascontiguousarray(a.astype(np.uint8)), cv2.COLOR_RGB2GRAY)
    else:
        g = a.reshape(a.shape[0], a.shape[1]).astype(np.uint8)
    g = cv2.resize(g, (128, 128), interpolation=cv2.INTER_AREA).astype(np.float32)
    detail = np.abs(g - cv2.GaussianBlur(g, (0, 0), 1.0))
    return float(np.mean((detail > 0.75) & (detail < 12)))


def looks_like_photo(image: np.ndarray) -> bool:
    """True for photographs, False for flat-shaded drawn / procedural faces (see the module docstring)."""
    return photo_score(image) >= PHOTO_THRESHOLD
