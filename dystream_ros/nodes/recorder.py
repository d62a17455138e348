"""Live replay: record what the avatar node publishes, with its latency numbers (``dystream_recorder``).

Subscribes to the node's ``face_image``, ``motion_latent`` and ``state`` (under ``source``, default
``/dystream``), to the input audio topics (a copy of what the node heard) and to ``/diagnostics``,
and writes them to one MCAP file (``out``, default ``output.mcap``; message definitions stored)
with bag time = ``header.stamp``, i.e. the audio time of each frame, as the offline replay does.
Messages are written as received (serialized CDR, no conversion).

Next to the bag it writes ``stats_file`` (default ``<out stem>_frames.json``): per frame the index,
stamp, receive wall time, and the node's own numbers (``step_ms``, ``processing_ms`` from
MotionLatent; ``av_offset_ms``, ``skipped_frames``, state from AvatarState), plus the profile,
checkpoint, the node's latched ``~/info`` (``info_topic``) and the last diagnostics key/values. It stops
on SIGINT/SIGTERM; by itself after ``idle_exit_s`` seconds without an output message once frames have
arrived (0 = never); or once frame ``stop_after_frame`` (>= 0) and its image are in (the node goes on
producing frames of silence after a bag ends, so a replay of known length stops this way).
"""

from __future__ import annotations

import argparse
import json
import signal
import struct
import sys
import threading
import time
from pathlib import Path

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

from dystream_ros.config import NS
from dystream_ros.io import bags


def cdr_stamp_ns(raw: bytes) -> int:
    """header.stamp of a serialized message whose first field is a std_msgs/Header."""
    little = raw[1] & 1  # CDR encapsulation id: 0x0001 = CDR_LE, 0x0000 = CDR_BE
    sec, nsec = struct.unpack_from("<iI" if little else ">iI", raw, 4)
    return sec * NS + nsec


class Recorder(Node):
    def __init__(self, out: str | None = None):
        super().__init__("dystream_recorder")
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image

        from dystream_ros.msg import AudioChunk, AvatarState, MotionLatent

        p = self.declare_parameter
        out = p("out", out or "output.mcap").value
        source = p("source", "/dystream").value.rstrip("/")
        image_topic = p("image_topic", f"{source}/face_image").value
        latent_topic = p("latent_topic", f"{source}/motion_latent").value
        state_topic = p("state_topic", f"{source}/state").value
        audio_topics = [t for t in p("audio_topics", [bags.DEFAULT_SPEAKER_TOPIC,
                                                       bags.DEFAULT_LISTENER_TOPIC]).value if t]
        audio_reliable = bool(p("audio_reliable", False).value)
        record_diag = bool(p("diagnostics", True).value)
        info_topic = p("info_topic", f"{source}/dystream_node/info").value
        self.idle_exit_s = float(p("idle_exit_s", 0.0).value)
        self.stop_after_frame = int(p("stop_after_frame", -1).value)
        self.stop_grace_s = float(p("stop_grace_s", 2.0).value)
        self._stop_stamp: int | None = None
        self._stop_since: float | None = None
        self._stop_done = False
        overwrite = bool(p("overwrite", True).value)
        stats = p("stats_file", "").value
        self.out = Path(out)
        self.stats_path = Path(stats) if stats else self.out.with_name(self.out.stem + "_frames.json")

        self.writer = bags.BagWriter(self.out, storage="mcap", overwrite=overwrite)
        self.lock = threading.Lock()
        self.frames: dict[int, dict] = {}
        self.images = 0
        self.meta: dict = {}
        self.diag: dict = {}
        self.node_info: dict = {}
        self.last_output = None
        self.first_recv = None
        self.closed = False

        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50,
                             reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        audio_qos = out_qos if audio_reliable else qos_profile_sensor_data
        if audio_reliable:
            audio_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200,
                                   reliability=ReliabilityPolicy.RELIABLE)

        def sub(cls, msgtype, topic, qos, kind, handler=None):
            self.writer.add_topic(topic, msgtype, kind=kind)
            self.create_subscription(cls, topic, lambda raw: self._on(topic, raw, handler, cls), qos,
                                     raw=True)

        sub(Image, bags.IMAGE, image_topic, out_qos, "reliable", self._on_image)
        sub(MotionLatent, bags.MOTION_LATENT, latent_topic, out_qos, "reliable", self._on_latent)
        sub(AvatarState, bags.AVATAR_STATE, state_topic, out_qos, "reliable", self._on_state)
        for t in audio_topics:  # recorded as reliable: what `ros2 bag play` offers the node (input_qos)
            sub(AudioChunk, bags.AUDIO_CHUNK, t, audio_qos, "reliable")
        if info_topic:
            from std_msgs.msg import String

            latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                 reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self.writer.add_topic(info_topic, "std_msgs/msg/String", kind="latched", depth=1)
            self.create_subscription(String, info_topic, self._on_info, latched)
            self._info_topic = info_topic
        if record_diag:
            sub(DiagnosticArray, "diagnostic_msgs/msg/DiagnosticArray", "/diagnostics", out_qos, "reliable",
                self._on_diag)
        self.topics = {"image": image_topic, "latent": latent_topic, "state": state_topic,
                       "audio": audio_topics}
        self.get_logger().info(f"recording {self.topics} -> {out}")

    # ------------------------------------------------------------------------------------------
    def _frame(self, index: int) -> dict:
        return self.frames.setdefault(int(index), {"index": int(index)})

    def _on(self, topic: str, raw: bytes, handler, cls) -> None:
        recv = time.time_ns()
        with self.lock:
            if self.closed:
                return
            stamp = cdr_stamp_ns(raw)
            self.writer.write_raw(topic, stamp, raw)
            if handler is not None:
                handler(raw, stamp, recv, cls)

    def _on_image(self, raw, stamp, recv, cls) -> None:
        self.images += 1
        self._mark_output(recv)
        if self._stop_stamp is not None and stamp >= self._stop_stamp:
            self._stop_done = True

    def _on_info(self, msg) -> None:
        with self.lock:
            if self.closed:
                return
            try:
                self.node_info = json.loads(msg.data)
            except ValueError:
                self.node_info = {"raw": msg.data}
            from rclpy.serialization import serialize_message

            self.writer.write_raw(self._info_topic, time.time_ns(), serialize_message(msg))

    def _on_latent(self, raw, stamp, recv, cls) -> None:
        from rclpy.serialization import deserialize_message

        m = deserialize_message(raw, cls)
        f = self._frame(m.frame_index)
        f.update(stamp_ns=stamp, recv_ns=recv, step_ms=float(m.step_ms), processing_ms=float(m.processing_ms))
        self.meta.setdefault("profile", m.profile)
        self.meta.setdefault("checkpoint", m.checkpoint)
        self.meta.setdefault("latent_dim", len(m.latent))
        self._mark_output(recv)
        if 0 <= self.stop_after_frame <= m.frame_index and self._stop_stamp is None:
            self._stop_stamp, self._stop_since = stamp, time.monotonic()
            # the node publishes a frame's image right after its latent; none so far: it renders none
            self._stop_done = self.images == 0

    def _on_state(self, raw, stamp, recv, cls) -> None:
        from rclpy.serialization import deserialize_message

        m = deserialize_message(raw, cls)
        f = self._frame(m.frame_index)
        f.update(state=int(m.state), state_processing_ms=float(m.processing_ms),
                 av_offset_ms=float(m.av_offset_ms), skipped_frames=int(m.skipped_frames),
                 speaker_level_db=float(m.speaker_level_db), listener_level_db=float(m.listener_level_db))
        f.setdefault("stamp_ns", stamp)
        self._mark_output(recv)

    def _on_diag(self, raw, stamp, recv, cls) -> None:
        from rclpy.serialization import deserialize_message

        m = deserialize_message(raw, cls)
        for status in m.status:
            self.diag[status.name] = {kv.key: kv.value for kv in status.values}
            self.diag[status.name]["_message"] = status.message

    def _mark_output(self, recv: int) -> None:
        self.last_output = time.monotonic()
        if self.first_recv is None:
            self.first_recv = recv

    def finished(self) -> bool:
        """Idle for ``idle_exit_s``, or frame ``stop_after_frame`` and its image received."""
        if self._stop_since is not None and (
                self._stop_done or time.monotonic() - self._stop_since > self.stop_grace_s):
            return True
        return (self.idle_exit_s > 0 and self.last_output is not None
                and time.monotonic() - self.last_output > self.idle_exit_s)

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.writer.close()
            frames = [self.frames[k] for k in sorted(self.frames)]
            doc = {"bag": str(self.out), "topics": self.topics, "images": self.images, **self.meta,
                   "node_info": self.node_info, "frames": frames, "diagnostics": self.diag,
                   "counts": self.writer.counts}
            self.stats_path.write_text(json.dumps(doc) + "\n")
        print(f"recorder: wrote {self.out} ({len(frames)} frames, {self.images} images) and "
              f"{self.stats_path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    rclpy.init(args=argv)
    parser = argparse.ArgumentParser(prog="dystream_recorder", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", help="output MCAP file (or -p out:=...)")
    args = parser.parse_args(rclpy.utilities.remove_ros_args(argv)[1:])
    node = None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        node = Recorder(args.out)
        print("recorder: ready", flush=True)
        while rclpy.ok() and not stop.is_set() and not node.finished():
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
