"""The ROS classes of the audio input types (``audio_msg_type``) and audio_common's topic naming.

The messages are turned into raw PCM fields by :mod:`dystream_ros.audio.messages`, the codec the bag
tools share. ``audio_common_msgs/msg/AudioDataStamped`` is only available when the ``audio_common_msgs``
Python package is installed; selecting it otherwise fails the configure transition with a clear message.
"""

from __future__ import annotations

import importlib

from dystream_ros.audio.messages import AUDIO_CHUNK, AUDIO_COMMON_STAMPED, AUDIO_MSG_TYPES

from .support import message_class


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


def audio_message_class(audio_msg_type: str):
    """The rclpy class of the selected audio input type (``ValueError`` for an unknown one, ``ImportError``
    with what to install when its package is missing)."""
    if audio_msg_type not in AUDIO_MSG_TYPES:
        raise ValueError(f"unknown audio_msg_type {audio_msg_type!r}; expected one of {AUDIO_MSG_TYPES}")
    if audio_msg_type == AUDIO_COMMON_STAMPED:
        import_audio_common()  # the actionable ImportError
    return message_class(audio_msg_type)
