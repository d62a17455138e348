"""Live replay: publish a bag's audio topics over DDS in real time (``dystream_bag_player``).

A small ``ros2 bag play`` for audio that needs no rosbag2 (the bag is read with ``rosbags``), so live
replay also works from the PyPI ROS wheels. Messages are sent at their bag (log) times scaled by
``rate``; each message's ``header.stamp`` is shifted so that the first message of the bag carries
the node clock's time at start (``restamp``, default on unless ``/clock`` is published): the avatar
node then sees a live stream, with the relative timing of speaker and listener preserved. With
``clock:=true`` the player publishes ``/clock`` (bag time, ``clock_hz``) and keeps the bag stamps,
for a node running with ``use_sim_time``.

Parameters: ``bag`` (path; also accepted as the first command-line argument), ``topics`` (default:
every audio topic of the bag plus audio_common ``audio_info`` topics), ``rate`` (1.0), ``clock``
(false), ``clock_hz`` (200), ``restamp`` (true unless clock), ``start_delay_s`` (0.5),
``wait_for_subscribers`` (0: start at once; N: wait until every topic has N matched subscribers),
``wait_timeout_s`` (60), ``loop`` (false), ``reliable`` (true: reliable publishers; false: best
effort), ``linger_s`` (1.0: after the last message, wait for reliable subscribers to acknowledge
everything, then keep the publishers alive this long for best-effort ones, which send no
acknowledgement: destroying a publisher right after its last ``publish`` can lose that message).
Topic names can be remapped with ``--ros-args -r /dystream/speaker_audio:=/robot/tts_audio``.
Types whose Python messages are not installed (audio_common_msgs in the PyPI environment) are
converted to ``dystream_ros/AudioChunk`` (pcm_f32le, original rate) with a warning.
"""

from __future__ import annotations

import argparse
import sys
import time

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message

from dystream_ros.config import NS, stamp_to_ns
from dystream_ros.io import bags

from .support import message_class


class BagPlayer(Node):
    def __init__(self, bag: str | None = None):
        super().__init__("dystream_bag_player")
        p = self.declare_parameter
        bag = p("bag", bag or "").value
        topics = list(p("topics", [""]).value)
        self.rate = float(p("rate", 1.0).value)
        self.clock = bool(p("clock", False).value)
        self.clock_hz = float(p("clock_hz", 200.0).value)
        self.restamp = bool(p("restamp", not self.clock).value)
        self.start_delay = float(p("start_delay_s", 0.5).value)
        self.wait_subs = int(p("wait_for_subscribers", 0).value)
        self.wait_timeout = float(p("wait_timeout_s", 60.0).value)
        self.loop = bool(p("loop", False).value)
        self.linger = float(p("linger_s", 1.0).value)
        reliable = bool(p("reliable", True).value)
        if not bag:
            raise ValueError("no bag given: dystream_bag_player BAG or --ros-args -p bag:=BAG")
        if self.rate <= 0:
            raise ValueError("rate must be > 0")
        if not 0.0 <= self.linger <= 60.0:
            raise ValueError("linger_s must be in [0, 60]")
        reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=reliability)
        self.items: list[tuple[int, str, object]] = []  # (log ns, topic, rclpy message)
        self.pubs = {}
        with bags.BagReader(bag) as reader:
            all_topics = reader.topics
            if not [t for t in topics if t]:
                kinds = (*bags.AUDIO_MSG_TYPES, bags.AUDIO_INFO)
                topics = [t for t, ty in all_topics.items() if ty in kinds]
            missing = [t for t in topics if t not in all_topics]
            if missing:
                raise ValueError(f"topics not in bag: {missing}; bag has {sorted(all_topics)}")
            classes = {}
            for t in topics:
                ty = all_topics[t]
                cls = message_class(ty)
                if cls is None and ty in bags.AUDIO_MSG_TYPES:
                    self.get_logger().warning(f"{ty} is not installed: {t} is published as AudioChunk")
                    cls = message_class(bags.AUDIO_CHUNK)
                elif cls is None:
                    self.get_logger().warning(f"{ty} is not installed: {t} is not published")
                    continue
                classes[t] = (ty, cls)
                self.pubs[t] = self.create_publisher(cls, t, qos)
            info_topics = bags.info_topics_of(all_topics, list(classes))
            infos: dict[str, object] = {}
            undecodable = 0
            for topic, ty, t_ns, raw in reader.messages(set(topics) | set(info_topics.values())):
                if ty == bags.AUDIO_INFO:
                    infos[topic] = reader.deserialize(raw, ty)
                if topic not in classes:
                    continue
                cls = classes[topic][1]
                if cls.__module__.split(".")[0] == ty.split("/")[0]:
                    msg = deserialize_message(raw, cls)
                else:  # convert an uninstalled audio type to AudioChunk
                    m = reader.deserialize(raw, ty)
                    try:
                        samples, sr, stamp = bags.decode_audio(m, ty, infos.get(info_topics.get(topic, "")))
                    except bags.BagError as e:  # e.g. audio_common data before any AudioInfo: the node
                        undecodable += 1  # would drop it too
                        self.get_logger().warning(f"{topic}: message at {t_ns} ns not played: {e}")
                        continue
                    msg = cls()
                    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, NS)
                    msg.header.frame_id = m.header.frame_id
                    msg.sample_rate, msg.channels, msg.encoding = sr, 1, "pcm_f32le"
                    msg.data = samples.astype("<f4").tobytes()
                self.items.append((t_ns, topic, msg))
        self.items.sort(key=lambda x: x[0])
        self.clock_pub = None
        if self.clock:
            from rosgraph_msgs.msg import Clock

            self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.get_logger().info(
            f"{bag}: {len(self.items)} messages ({undecodable} undecodable: not played) on "
            f"{sorted(self.pubs)} "
            f"({(self.items[-1][0] - self.items[0][0]) / 1e9 if self.items else 0:.1f} s), rate {self.rate}")

    # ------------------------------------------------------------------------------------------
    def _wait_for_subscribers(self) -> bool:
        if self.wait_subs <= 0:
            return True
        deadline = time.monotonic() + self.wait_timeout
        while time.monotonic() < deadline and rclpy.ok():
            counts = {t: p.get_subscription_count() for t, p in self.pubs.items()}
            if all(c >= self.wait_subs for c in counts.values()):
                return True
            time.sleep(0.05)
        self.get_logger().warning(f"gave up waiting for {self.wait_subs} subscriber(s) per topic: {counts}")
        return False

    def play(self) -> int:
        """Publish everything once (or forever with ``loop``); returns the number of messages sent."""
        self._wait_for_subscribers()
        time.sleep(self.start_delay)
        print("bag_player: playing", flush=True)
        sent = 0
        while rclpy.ok():
            sent += self._play_once()
            if not self.loop:
                break
        return sent

    def drain(self) -> bool:
        """Let the last messages reach the subscribers before the publishers go away.

        Reliable subscribers acknowledge (``wait_for_all_acked``, up to ``linger_s``); best-effort ones
        cannot, so the publishers then stay alive for ``linger_s`` more. Returns False (and warns) if a
        reliable subscriber had not acknowledged everything in time."""
        from rclpy.duration import Duration

        acked = True
        for topic, pub in self.pubs.items():
            if not pub.wait_for_all_acked(Duration(nanoseconds=int(self.linger * 1e9))):
                acked = False
                self.get_logger().warning(f"{topic}: not every message was acknowledged in {self.linger} s")
        time.sleep(self.linger)
        return acked

    def _play_once(self) -> int:
        if not self.items:
            return 0
        from builtin_interfaces.msg import Time

        bag_t0 = self.items[0][0]
        stamps = [getattr(getattr(m, "header", None), "stamp", None) for _, _, m in self.items]
        stamp_ns = [stamp_to_ns(s) for s in stamps if s is not None]
        stamp_t0 = min(stamp_ns) if stamp_ns else bag_t0
        now_ns = self.get_clock().now().nanoseconds
        wall0 = time.monotonic()
        next_clock = wall0
        sent = 0
        for t_ns, topic, msg in self.items:
            due = wall0 + (t_ns - bag_t0) / 1e9 / self.rate
            while rclpy.ok():
                now = time.monotonic()
                if self.clock_pub is not None and now >= next_clock:
                    self._publish_clock(bag_t0 + int((now - wall0) * self.rate * 1e9))
                    next_clock += 1.0 / self.clock_hz
                    continue
                wake = min(due, next_clock) if self.clock_pub is not None else due
                if now >= due:
                    break
                time.sleep(max(0.0, min(wake - now, 0.05)))
            if not rclpy.ok():
                break
            if self.restamp and getattr(msg, "header", None) is not None:
                orig = stamp_to_ns(msg.header.stamp)
                # copy then restamp (keep the bag's message untouched for loops)
                out = deserialize_message(serialize_message(msg), type(msg))
                sec, nsec = divmod(now_ns + (orig - stamp_t0), NS)
                out.header.stamp = Time(sec=int(sec), nanosec=int(nsec))
                msg = out
            self.pubs[topic].publish(msg)
            sent += 1
        return sent

    def _publish_clock(self, t_ns: int) -> None:
        from builtin_interfaces.msg import Time
        from rosgraph_msgs.msg import Clock

        sec, nsec = divmod(int(t_ns), NS)
        self.clock_pub.publish(Clock(clock=Time(sec=int(sec), nanosec=int(nsec))))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    rclpy.init(args=argv)
    parser = argparse.ArgumentParser(prog="dystream_bag_player", description=__doc__.split("\n\n")[0])
    parser.add_argument("bag", nargs="?", help="bag to play (or -p bag:=...)")
    args = parser.parse_args(rclpy.utilities.remove_ros_args(argv)[1:])
    node = None
    rc = 0
    try:
        node = BagPlayer(args.bag)
        t0 = time.monotonic()
        sent = node.play()
        node.drain()
        node.get_logger().info(f"done: {sent} messages in {time.monotonic() - t0:.1f} s")
        print(f"bag_player: done {sent} messages", flush=True)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, bags.BagError) as err:
        print(f"dystream_bag_player: {err}", file=sys.stderr)
        rc = 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return rc


if __name__ == "__main__":
    sys.exit(main())
