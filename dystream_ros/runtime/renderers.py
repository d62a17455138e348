"""Which renderer turns a frame's motion into its image, and the face state each one renders on.

Two renderers (the ``renderer`` setting; ``auto`` picks one per reference):

- ``learned`` — the checkpoint's warping decoder (``Session.render_image``): the DyStream path, for the
  faces it was trained on (the procedural avatars). Needs a latent model loaded with rendering.
- ``photo`` — the training-free photo rig (:mod:`dystream_ros.photo`) on the reference photograph, driven
  by the frame's articulation: an articulation model's motion itself, or a latent model's linear read-out
  (``Pipeline.readout``).

``auto`` takes ``photo`` when the reference looks like a photograph
(:func:`dystream_ros.photo.looks_like_photo`) or the model has no decoder, else ``learned``;
:func:`choose` says why, and the engine reports it (``meta["renderer"]``, ``meta["renderer_reason"]``;
the node's ``~/info`` and log).

A :class:`Face` is immutable: the engine captures the current one when a frame is stepped, so a frame
rendered later (on the render thread) is drawn on the reference it was stepped with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RENDERERS", "Face", "RendererUnavailable", "build_face", "choose", "photo_size"]

RENDERERS = ("learned", "photo", "auto")


class RendererUnavailable(ValueError):
    """The renderer asked for cannot run with this model or reference (the message says why)."""


@dataclass(frozen=True)
class Face:
    """What one renderer draws on: ``kind`` ``learned`` (``state`` = ``Session.face``) or ``photo``
    (``state`` = a built :class:`~dystream_ros.photo.PhotoRig`)."""

    kind: str
    state: object

    def render(self, session, latent: np.ndarray, articulation: np.ndarray | None) -> np.ndarray:
        """The (S, S, 3) uint8 image of one frame: its (D,) ``latent`` (learned) or its (13,)
        ``articulation`` (photo; the engine reads it out once per frame)."""
        if self.kind == "learned":
            return session.render_image(latent, self.state)
        return self.state.render(articulation)


def photo_size(image_size: int) -> int:
    """The photo rig's output side for the ``image_size`` setting (one of the rig's sizes; 256 otherwise)."""
    from dystream_ros.photo import SIZES

    return image_size if image_size in SIZES else 256


def choose(requested: str, pipe, reference: np.ndarray) -> tuple[str, str]:
    """(renderer, why) for ``requested`` (one of :data:`RENDERERS`) with ``pipe`` and ``reference``;
    :class:`RendererUnavailable` when ``requested`` cannot run."""
    if requested not in RENDERERS:
        raise RendererUnavailable(f"renderer must be one of {list(RENDERERS)}, got {requested!r}")
    can_learned, can_photo = bool(pipe.render), pipe.readout is not None
    if requested == "learned":
        if not can_learned:
            raise RendererUnavailable("the learned renderer needs a latent model loaded with rendering "
                                      f"(this checkpoint's motion is {pipe.config.motion!r}); use renderer "
                                      "photo")
        return "learned", "requested"
    if requested == "photo":
        if not can_photo:
            raise RendererUnavailable("the photo renderer needs the articulation of every frame: an "
                                      "articulation model, or a latent checkpoint with a read-out "
                                      "(<checkpoint>.readout.safetensors); this one has none")
        return "photo", "requested"
    from dystream_ros.photo import looks_like_photo

    if not can_learned:
        if not can_photo:
            raise RendererUnavailable("this model can render neither way (no decoder, no read-out)")
        return "photo", "auto: the model has no decoder"
    if can_photo and looks_like_photo(reference):
        return "photo", "auto: the reference looks like a photograph"
    if not can_photo:
        return "learned", "auto: the model has no articulation read-out"
    return "learned", "auto: the reference looks like a drawn face (what the learned decoder knows)"


def build_face(kind: str, session, reference: np.ndarray, size: int) -> Face:
    """The :class:`Face` of ``kind`` for ``reference``: the session's current decoder state, or a photo
    rig built now (``dystream_ros.photo.PhotoRefused``, a ``ValueError``, for a photo it cannot animate)."""
    if kind == "learned":
        return Face("learned", session.face)
    from dystream_ros.photo import build_rig

    return Face("photo", build_rig(reference, size))
