"""The avatar node's output messages and QoS profiles (ROS types around the engine's FrameOut)."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from dystream_ros.config import NS as _NS
from dystream_ros.msg import AvatarState, MotionLatent

from .image_codec import rgb_to_image_msg, rgb_to_jpeg_msg

__all__ = ["latent_msg", "ns_to_time", "publish_images", "qos_profile", "state_msg"]



def ns_to_time(ns: int) -> Time:
    return Time(sec=int(ns // _NS), nanosec=int(ns % _NS))


def qos_profile(reliable: bool, depth: int, latched: bool = False) -> QoSProfile:
    """Keep-last ``depth``; reliable or best effort; latched = transient local."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def state_msg(out, stamp: Time, frame_id: str, processing_ms: float, av_ms: float) -> AvatarState:
    """AvatarState of one :class:`~dystream_ros.runtime.engine.FrameOut`."""
    job = out.job
    st = AvatarState()
    st.header.stamp, st.header.frame_id = stamp, frame_id
    st.state = out.state
    st.frame_index = int(job.index)
    st.processing_ms = float(processing_ms)
    st.av_offset_ms = float(av_ms)
    st.skipped_frames = int(out.session_skipped)
    st.speaker_level_db = float(job.speaker_level_db)
    st.listener_level_db = float(job.listener_level_db)
    return st


def latent_msg(out, stamp: Time, frame_id: str, profile: str, checkpoint: str,
               processing_ms: float) -> MotionLatent:
    """MotionLatent of one FrameOut; ``step_ms`` is the model's part (rendering excluded, the contract)."""
    lm = MotionLatent()
    lm.header.stamp, lm.header.frame_id = stamp, frame_id
    lm.frame_index = int(out.job.index)
    lm.latent = np.asarray(out.frame.latent, dtype=np.float32)
    lm.profile, lm.checkpoint = profile, checkpoint
    lm.step_ms = out.model_ms
    lm.processing_ms = float(processing_ms)
    return lm


def publish_images(pubs: dict, rgb: np.ndarray, stamp: Time, frame_id: str, jpeg_quality: int) -> None:
    """``rgb`` on the ``image`` (rgb8) and ``compressed`` (JPEG) publishers that exist in ``pubs``."""
    if "image" in pubs:
        pubs["image"].publish(rgb_to_image_msg(rgb, stamp, frame_id))
    if "compressed" in pubs:
        pubs["compressed"].publish(rgb_to_jpeg_msg(rgb, stamp, frame_id, jpeg_quality))
