"""DyStream model core: audio encoder, AR generator with KV ring, flow head, warping autoencoder, checkpoints.

Networks, losses and checkpoints only. The streaming ``Pipeline`` / ``Session`` (buffers, backends,
image preprocessing) live in :mod:`dystream_ros.runtime.session`; this package re-exports them lazily
as the public API of DESIGN.md §4 for scripts outside the project (inside it, import them from
``runtime.session``)::

    from dystream_ros.model import load_pipeline
    pipe = load_pipeline(checkpoint=None, profile="lite", device="cpu", render=True)
    sess = pipe.start_session(pipe.default_reference(), seed=0)
    sess.push_audio(speaker=..., listener=...)
    frame = sess.step()
"""

from dystream_ros.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dystream_ros.model.dystream import DyStreamModel, build_model
from dystream_ros.model.flow_head import Guidance

_STREAMING = ("Frame", "Pipeline", "Session", "load_pipeline")


def __getattr__(name: str):
    if name in _STREAMING:  # lazy: runtime.session imports this package's networks
        from dystream_ros.runtime import session

        return getattr(session, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "DyStreamModel",
    "Frame",
    "Guidance",
    "Pipeline",
    "Session",
    "build_model",
    "load_checkpoint",
    "load_pipeline",
    "save_checkpoint",
]
