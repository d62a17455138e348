"""The avatar node's outputs: QoS profiles, messages of a FrameOut, and the lifecycle publishers."""

from __future__ import annotations

import json
import time

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from dystream_ros.config import NS as _NS
from dystream_ros.data.face import ARTICULATION_FIELDS
from dystream_ros.io.images import fit_square
from dystream_ros.msg import AvatarState, FaceArticulation, MotionLatent
from dystream_ros.runtime.scheduler import RateGate
from dystream_ros.runtime.settings import Settings

from .image_codec import rgb_to_image_msg, rgb_to_jpeg_msg
from .support import destroy_publisher

__all__ = ["FacePublishers", "articulation_msg", "latent_msg", "ns_to_time", "publish_images", "qos_profile",
           "state_msg"]


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


def articulation_msg(out, stamp: Time, frame_id: str) -> FaceArticulation:
    """FaceArticulation of one FrameOut with an articulation (13,) in PARAM_RANGES units."""
    m = FaceArticulation()
    m.header.stamp, m.header.frame_id = stamp, frame_id
    m.frame_index = int(out.job.index)
    for name, v in zip(ARTICULATION_FIELDS, out.articulation, strict=True):
        setattr(m, name, float(v))
    return m


def publish_images(pubs: dict, rgb: np.ndarray, stamp: Time, frame_id: str, jpeg_quality: int) -> None:
    """``rgb`` on the ``image`` (rgb8) and ``compressed`` (JPEG) publishers that exist in ``pubs``."""
    if "image" in pubs:
        pubs["image"].publish(rgb_to_image_msg(rgb, stamp, frame_id))
    if "compressed" in pubs:
        pubs["compressed"].publish(rgb_to_jpeg_msg(rgb, stamp, frame_id, jpeg_quality))


class FacePublishers:
    """The avatar node's lifecycle publishers (``motion_latent``, ``state``, ``~/info``, and
    ``face_image`` / ``face_image/compressed`` while rendering and their ``publish_*`` is on), the idle
    face, and one method per thing published. Created on configure; the caller serialises calls."""

    _OPTIONAL = {"image": ("publish_image", Image, "face_image"),
                 "compressed": ("publish_compressed", CompressedImage, "face_image/compressed")}

    def __init__(self, node, settings: Settings, meta: dict, out_size: int, reference: np.ndarray) -> None:
        self._node, self._meta, self.out_size = node, meta, int(out_size)
        self._qos = qos_profile(settings.output_reliability == "reliable", settings.output_qos_depth)
        self.pubs = {
            "latent": node.create_lifecycle_publisher(MotionLatent, "motion_latent", self._qos),
            "state": node.create_lifecycle_publisher(AvatarState, "state", self._qos),
            "info": node.create_lifecycle_publisher(String, "~/info", qos_profile(True, 1, latched=True)),
        }
        if meta.get("articulation"):  # the model reads out an articulation per frame
            self.pubs["articulation"] = node.create_lifecycle_publisher(FaceArticulation, "face_articulation",
                                                                        self._qos)
        self._idle_gate = RateGate()  # idle-face publications on a fixed grid of clock times
        # the idle face (before any audio) is the reference itself; none when not rendering
        self.idle_image = fit_square(reference, self.out_size) if settings.render else None
        self.sync(settings, active=False)

    def sync(self, settings: Settings, *, active: bool) -> None:
        """Advertise the optional image publishers that ``settings`` asks for, drop the others."""
        for key, (param, cls, topic) in self._OPTIONAL.items():
            want = getattr(settings, param) and settings.render
            if want and key not in self.pubs:
                pub = self._node.create_lifecycle_publisher(cls, topic, self._qos)
                if active:
                    pub.on_activate(None)  # created after the activate transition enabled the others
                self.pubs[key] = pub
            elif not want and key in self.pubs:
                destroy_publisher(self._node, self.pubs.pop(key))

    def publish_info(self) -> None:
        self.pubs["info"].publish(String(data=json.dumps(self._meta, sort_keys=True)))

    def set_reference(self, image: np.ndarray) -> None:
        if self.idle_image is not None:
            self.idle_image = fit_square(image, self.out_size)

    def reset(self) -> None:
        self._idle_gate.reset()

    def frame(self, out, settings: Settings) -> tuple[float, float, float]:
        """Publish one FrameOut (state, latent, images as enabled); returns (processing_ms, av_offset_ms,
        publish wall time)."""
        meta, stamp = self._meta, ns_to_time(out.job.stamp_ns)
        now_w = time.monotonic()
        processing_ms, av_ms = out.latency_ms(now_w)
        if settings.publish_state:
            self.pubs["state"].publish(state_msg(out, stamp, meta["frame_id"], processing_ms, av_ms))
        if settings.publish_latent:
            self.pubs["latent"].publish(latent_msg(out, stamp, meta["frame_id"], meta["profile"],
                                                    meta["checkpoint"], processing_ms))
        if settings.publish_articulation and out.articulation is not None and "articulation" in self.pubs:
            self.pubs["articulation"].publish(articulation_msg(out, stamp, meta["frame_id"]))
        if out.frame.image is not None and ("image" in self.pubs or "compressed" in self.pubs):
            img = out.frame.image  # image_size 0: as the renderer draws it (the decoder's or the rig's size)
            size = settings.image_size or img.shape[0]
            publish_images(self.pubs, fit_square(img, size), stamp, meta["frame_id"], settings.jpeg_quality)
        return processing_ms, av_ms, now_w

    def idle(self, now_ns: int, settings: Settings) -> bool:
        """The reference face at ``idle_publish_hz`` while no stream runs; True when published."""
        hz = settings.idle_publish_hz
        if hz <= 0 or self.idle_image is None or not self._idle_gate(now_ns, hz):
            return False
        publish_images(self.pubs, self.idle_image, ns_to_time(now_ns), self._meta["frame_id"],
                       settings.jpeg_quality)
        return True

    def destroy(self) -> None:
        for pub in self.pubs.values():
            destroy_publisher(self._node, pub)
        self.pubs = {}
