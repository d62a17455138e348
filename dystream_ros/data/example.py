"""One training / evaluation example: both parties' audio, per-frame targets and the avatar's frames.

Its own module so that the readers that produce it (``dataset`` for synthetic conversations,
``video_folder`` for real video) depend on it and not on each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from dystream_ros.data.face import Articulation, FaceIdentity, render, render_params

__all__ = ["ConversationData"]


@dataclass
class ConversationData:
    """A training example: audio of both parties, per-frame targets and the avatar's frames."""

    name: str
    speaker: np.ndarray
    listener: np.ndarray
    num_frames: int
    params: np.ndarray | None  # (T, 13) ground truth for synthetic data
    identity: FaceIdentity | None  # synthetic identity (None for real video)
    meta: dict = field(default_factory=dict)
    frames: np.ndarray | None = None  # (T, S, S, 3) uint8 for real video; None = render on demand
    fps: int = 25
    sample_rate: int = 16000

    def iter_frames(self, size: int = 256) -> Iterator[np.ndarray]:
        """The avatar's frames (rendered for synthetic data, decoded crops for real video)."""
        if self.frames is not None:
            for f in self.frames:
                yield f if f.shape[0] == size else cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA)
        elif self.params is not None and self.identity is not None:
            yield from render_params(self.identity, self.params, size)
        else:
            raise ValueError(f"{self.name}: no frames and no parameters to render")

    def reference_image(self, size: int = 256) -> np.ndarray:
        """A reference image of the person: the neutral render (synthetic) or the first frame."""
        if self.identity is not None:
            return render(self.identity, Articulation(smile=0.2), size)
        return next(self.iter_frames(size))
