"""DyStream model core: audio encoder, AR generator with KV ring, flow head, warping autoencoder, sessions.

Public API (DESIGN.md §4)::

    from dystream_ros.model import load_pipeline
    pipe = load_pipeline(checkpoint=None, profile="lite", device="cpu", render=True)
    sess = pipe.start_session(pipe.default_reference(), seed=0)
    sess.push_audio(speaker=..., listener=...)
    frame = sess.step()
"""

from dystream_ros.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dystream_ros.model.dystream import DyStreamModel, build_model
from dystream_ros.model.flow_head import Guidance
from dystream_ros.model.pipeline import Frame, Pipeline, Session, load_pipeline

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
