"""Input message adapters: audio messages -> (bytes, encoding, channels, rate, stamp).

Two families (selected by the node's ``audio_msg_type`` parameter):

* ``dystream_ros/msg/AudioChunk`` (default): self-describing, every field in the message.
* ``audio_common_msgs/msg/AudioDataStamped`` + ``audio_common_msgs/msg/AudioInfo`` (ros-drivers
  audio_common, ROS 2 branch): the data carries no format; it comes from the latest ``AudioInfo`` on the
  sibling ``<topic>_info`` topic. Only available when the ``audio_common_msgs`` Python package is
  installed; selecting it otherwise fails the configure transition with a clear message.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from dystream_ros.audio import AudioFormatError
from dystream_ros.config import stamp_to_ns
from dystream_ros.runtime.settings import AUDIO_MSG_TYPES

AUDIO_CHUNK, AUDIO_COMMON_STAMPED = AUDIO_MSG_TYPES
_AUDIO_COMMON_RAW_CODINGS = ("", "wave", "wav", "raw", "pcm")


@dataclass
class RawAudio:
    data: object  # bytes-like
    encoding: str
    channels: int
    sample_rate: int
    stamp_ns: int


def import_audio_common():
    """The audio_common_msgs.msg module, or ImportError with an actionable message."""
    try:
        return importlib.import_module("audio_common_msgs.msg")
    except ImportError as e:
        raise ImportError(
            f"audio_msg_type '{AUDIO_COMMON_STAMPED}' needs the audio_common_msgs package "
            f"(apt install ros-$ROS_DISTRO-audio-common-msgs, or build ros-drivers/audio_common), "
            f"which is not importable here ({e}); use audio_msg_type '{AUDIO_CHUNK}'") from e


def info_topic_for(audio_topic: str) -> str:
    """The ``AudioInfo`` topic that goes with an audio topic (the launch file's default remapping).

    audio_common's ``audio_capture`` publishes ``<ns>/audio`` and ``<ns>/audio_stamped`` with one
    ``<ns>/audio_info``, so a name ending in ``_stamped`` maps to its sibling ``..._info``
    (``/mic/audio_stamped`` -> ``/mic/audio_info``) and any other ``<topic>`` to ``<topic>_info``.
    """
    topic = audio_topic.rstrip("/")
    if not topic:
        raise ValueError("empty audio topic")
    if topic.endswith("_stamped"):
        topic = topic[: -len("_stamped")]
    return topic + "_info"


def message_class(audio_msg_type: str):
    """Python class of the selected audio message type."""
    if audio_msg_type == AUDIO_CHUNK:
        from dystream_ros.msg import AudioChunk

        return AudioChunk
    if audio_msg_type == AUDIO_COMMON_STAMPED:
        return import_audio_common().AudioDataStamped
    raise ValueError(f"unknown audio_msg_type {audio_msg_type!r}; expected one of {AUDIO_MSG_TYPES}")


def from_audio_chunk(msg) -> RawAudio:
    return RawAudio(data=msg.data, encoding=msg.encoding, channels=int(msg.channels),
                    sample_rate=int(msg.sample_rate), stamp_ns=stamp_to_ns(msg.header.stamp))


def from_audio_common(msg, info) -> RawAudio:
    """``AudioDataStamped`` with the latest ``AudioInfo`` of its topic (None if none arrived yet)."""
    if info is None:
        raise AudioFormatError("no_info", "no AudioInfo received yet on the *_info topic; audio_common "
                                          "data is undecodable without it (dropped)")
    coding = (info.coding_format or "").strip().lower()
    if coding not in _AUDIO_COMMON_RAW_CODINGS:
        kind = "compressed" if coding in ("mp3", "mpeg", "opus", "ogg", "flac", "aac") else "encoding"
        raise AudioFormatError(kind, f"audio_common coding_format {info.coding_format!r} is not raw PCM "
                                     f"(set audio_capture format:=wave)")
    return RawAudio(data=msg.audio.data, encoding=info.sample_format, channels=int(info.channels),
                    sample_rate=int(info.sample_rate), stamp_ns=stamp_to_ns(msg.header.stamp))
