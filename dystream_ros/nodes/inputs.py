"""The avatar node's audio inputs: two subscriptions (+ audio_common's info topics), QoS, DDS events.

:class:`AudioInputs` subscribes ``speaker_audio`` and ``listener_audio`` with the configured message type
and QoS, counts the DDS events of each subscription (publishers whose QoS cannot match, messages lost in
transport under best effort) and turns a message into :class:`~dystream_ros.audio.messages.RawAudio`.
What happens to the samples is the ROS-free :class:`~dystream_ros.runtime.intake.AudioIntake`'s job.
"""

from __future__ import annotations

from collections.abc import Callable

try:  # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

from dystream_ros.audio.messages import AUDIO_COMMON_STAMPED, RawAudio, raw_audio
from dystream_ros.runtime.settings import Settings
from dystream_ros.runtime.stats import StreamStats

from . import audio_adapters as adapters
from .outputs import qos_profile

__all__ = ["CHANNELS", "AudioInputs"]

CHANNELS = ("speaker", "listener")


class AudioInputs:
    """Subscriptions of one activation (``open`` / ``close``) and the decoding of their messages."""

    def __init__(self, node, settings: Settings, stats: StreamStats, warn: Callable, *, groups: dict,
                 info_group) -> None:
        self._node = node
        self._settings = settings
        self._stats = stats
        self._warn = warn  # ThrottledLog
        self._groups = groups  # channel -> callback group
        self._info_group = info_group
        self._msg_class = adapters.audio_message_class(settings.audio_msg_type)  # ImportError / ValueError
        self._subs: list = []
        self._audio_subs: dict = {}  # channel -> its audio subscription
        self._info: dict[str, object] = {}  # channel -> latest audio_common AudioInfo

    def open(self, on_message: Callable[[object, str], None]) -> None:
        """Subscribe both channels; ``on_message(msg, channel)`` gets every audio message."""
        s, node = self._settings, self._node
        self._info.clear()
        qos = qos_profile(s.input_qos != "sensor_data", s.input_qos_depth)
        for channel in CHANNELS:
            sub = node.create_subscription(
                self._msg_class, f"{channel}_audio", lambda msg, c=channel: on_message(msg, c), qos,
                callback_group=self._groups[channel], event_callbacks=self._events(channel))
            self._subs.append(sub)
            self._audio_subs = {**self._audio_subs, channel: sub}
            if s.audio_msg_type == AUDIO_COMMON_STAMPED:
                info_cls = adapters.import_audio_common().AudioInfo
                self._subs.append(node.create_subscription(
                    info_cls, f"{channel}_audio_info", lambda msg, c=channel: self._info.__setitem__(c, msg),
                    qos_profile(True, 1), callback_group=self._info_group))

    def close(self) -> None:
        self._audio_subs = {}
        for sub in self._subs:
            self._node.destroy_subscription(sub)
        self._subs = []

    def decode(self, msg, channel: str) -> RawAudio:
        """The message's samples and format (``AudioFormatError`` for a malformed one)."""
        return raw_audio(msg, self._settings.audio_msg_type, self._info.get(channel))

    def publisher_count(self, channel: str) -> int:
        """Publishers matched by the channel's audio subscription (0 while closed)."""
        sub = self._audio_subs.get(channel)
        try:
            return sub.get_publisher_count() if sub is not None else 0
        except Exception:  # noqa: BLE001 - destroyed by a concurrent deactivate
            return 0

    def _events(self, channel: str) -> SubscriptionEventCallbacks:
        """DDS events of an audio subscription, counted and logged: a publisher whose QoS cannot match
        (a best-effort publisher and ``input_qos: reliable``), and messages DDS lost (best effort)."""
        stats, log = self._stats, self._node.get_logger()

        def incompatible(info) -> None:
            with stats.lock:
                stats.incompatible_publishers[channel] += info.total_count_change
            log.warning(f"{channel}_audio: a publisher's QoS is incompatible with this subscription "
                        f"(input_qos={self._settings.input_qos}; last policy: {info.last_policy_kind}); its "
                        f"audio never arrives. Publish reliable, or set input_qos:=sensor_data")

        def lost(info) -> None:
            with stats.lock:
                stats.transport_lost[channel] += info.total_count_change
            self._warn(f"lost:{channel}", f"{channel}_audio: DDS lost {info.total_count_change} message(s) "
                       f"in transport (best effort); input_qos:=reliable keeps them")

        return SubscriptionEventCallbacks(incompatible_qos=incompatible, message_lost=lost)
