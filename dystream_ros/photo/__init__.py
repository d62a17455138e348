"""Photo avatars: any frontal face photograph animated by an articulation vector, training-free, on CPU.

ROS-free (layer 1: imports only config / audio / io / data and third-party libraries). Public API::

    from dystream_ros.photo import build_rig, PhotoRefused, looks_like_photo
    rig = build_rig(image_rgb, size=256)      # raises PhotoRefused(reason) for photos it cannot animate
    frame = rig.render(articulation)          # [size, size, 3] uint8 RGB; zeros -> rig.reference

The articulation vector has the columns of :data:`dystream_ros.data.face.ARTICULATION_FIELDS`, with the
ranges of ``PARAM_RANGES``. See docs/PHOTO_AVATARS.md.
"""

from dystream_ros.photo.detect import looks_like_photo, photo_score
from dystream_ros.photo.rig import POSE_LIMITS, SIZES, PhotoRefused, PhotoRig, build_rig

__all__ = ["POSE_LIMITS", "SIZES", "PhotoRefused", "PhotoRig", "build_rig", "looks_like_photo", "photo_score",
           "ASTRONAUT"]

from dystream_ros.photo.table import ASSET_DIR as _ASSETS

#: The shipped photo avatar (scikit-image's public-domain astronaut, cropped to the face).
ASTRONAUT = _ASSETS / "astronaut.png"
