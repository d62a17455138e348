"""Audio messages to raw PCM fields: the one codec of the node (rclpy messages) and the bag tools
(``rosbags`` messages), which have the same field names.

Two families (the node's ``audio_msg_type``):

* ``dystream_ros/msg/AudioChunk`` (default): self-describing, every field in the message.
* ``audio_common_msgs/msg/AudioDataStamped`` + ``audio_common_msgs/msg/AudioInfo`` (ros-drivers
  audio_common, ROS 2 branch): the data carries no format; it comes from the latest ``AudioInfo`` of the
  stream. Without one the data is undecodable and refused (``no_info``), live and in a bag alike.

The samples themselves are decoded by :func:`dystream_ros.audio.decode_pcm`.
"""

from __future__ import annotations

from dataclasses import dataclass

from dystream_ros.config import stamp_to_ns

from .decode import AudioFormatError

__all__ = ["AUDIO_CHUNK", "AUDIO_COMMON_STAMPED", "AUDIO_MSG_TYPES", "RawAudio", "from_audio_chunk",
           "from_audio_common", "raw_audio"]

AUDIO_CHUNK = "dystream_ros/msg/AudioChunk"
AUDIO_COMMON_STAMPED = "audio_common_msgs/msg/AudioDataStamped"
#: Message types the audio inputs accept; the first is the default.
AUDIO_MSG_TYPES = (AUDIO_CHUNK, AUDIO_COMMON_STAMPED)
_RAW_CODINGS = ("", "wave", "wav", "raw", "pcm")
_COMPRESSED_CODINGS = ("mp3", "mpeg", "opus", "ogg", "flac", "aac")


@dataclass
class RawAudio:
    data: object  # bytes-like, interleaved PCM
    encoding: str
    channels: int
    sample_rate: int
    stamp_ns: int  # header.stamp: time of the first sample


def from_audio_chunk(msg) -> RawAudio:
    return RawAudio(data=msg.data, encoding=msg.encoding, channels=int(msg.channels),
                    sample_rate=int(msg.sample_rate), stamp_ns=stamp_to_ns(msg.header.stamp))


def from_audio_common(msg, info) -> RawAudio:
    """``AudioDataStamped`` with the latest ``AudioInfo`` of its stream (None if none arrived yet)."""
    if info is None:
        raise AudioFormatError("no_info", "no AudioInfo received yet on the *_info topic; audio_common "
                                          "data is undecodable without it (dropped)")
    coding = (info.coding_format or "").strip().lower()
    if coding not in _RAW_CODINGS:
        kind = "compressed" if coding in _COMPRESSED_CODINGS else "encoding"
        raise AudioFormatError(kind, f"audio_common coding_format {info.coding_format!r} is not raw PCM "
                                     f"(set audio_capture format:=wave)")
    return RawAudio(data=msg.audio.data, encoding=info.sample_format, channels=int(info.channels),
                    sample_rate=int(info.sample_rate), stamp_ns=stamp_to_ns(msg.header.stamp))


def raw_audio(msg, msg_type: str, info=None) -> RawAudio:
    """The raw fields of a message of ``msg_type`` (one of :data:`AUDIO_MSG_TYPES`)."""
    if msg_type == AUDIO_CHUNK:
        return from_audio_chunk(msg)
    if msg_type == AUDIO_COMMON_STAMPED:
        return from_audio_common(msg, info)
    raise ValueError(f"{msg_type} is not an audio message type ({', '.join(AUDIO_MSG_TYPES)})")
