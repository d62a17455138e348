"""Helpers for the dystream_node tests over real DDS: audio messages, an output collector, waiting.

In-process tests spin the node the way ``dystream_node``'s ``main`` does: one SingleThreadedExecutor
(the model work runs on the node's own producer thread). rclpy's MultiThreadedExecutor busy-spins its
wait loop while callbacks run, holding the GIL, which made model steps 10-100x slower on some machines
and turned timing luck into test failures.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from dystream_ros.msg import AudioChunk, AvatarState, MotionLatent
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import String

from dystream_ros.config import NS

REPO = Path(__file__).resolve().parents[1]
NODE_EXE = REPO / "install" / "dystream_ros" / "lib" / "dystream_ros" / "dystream_node"


def to_time(ns: int) -> Time:
    return Time(sec=int(ns // NS), nanosec=int(ns % NS))


def stamp_ns(header) -> int:
    return int(header.stamp.sec) * NS + int(header.stamp.nanosec)


def chunk_msg(samples: np.ndarray, rate: int, stamp: int, *, channels: int = 1,
              encoding: str = "pcm_s16le", frame_id: str = "test") -> AudioChunk:
    """Interleaved samples (int16 or float32 array, already interleaved) -> AudioChunk."""
    m = AudioChunk()
    m.header.stamp = to_time(stamp)
    m.header.frame_id = frame_id
    m.sample_rate = int(rate)
    m.channels = int(channels)
    m.encoding = encoding
    dtype = "<i2" if encoding == "pcm_s16le" else "<f4"
    m.data = np.ascontiguousarray(samples, dtype=dtype).tobytes()
    return m


def tone_stereo_int16(rate: int, seconds: float, freq: float = 220.0, amp: float = 0.3) -> np.ndarray:
    """(n, 2) int16 stereo: a tone on the left, a quieter one on the right."""
    t = np.arange(int(round(rate * seconds))) / rate
    left = amp * np.sin(2 * np.pi * freq * t)
    right = 0.5 * amp * np.sin(2 * np.pi * 2 * freq * t)
    return (np.stack([left, right], axis=1) * 32767).astype(np.int16)


class Spinner:
    """Nodes spun by one SingleThreadedExecutor on a background thread (as in production)."""

    def __init__(self, *nodes):
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor()
        for n in nodes:
            self.executor.add_node(n)
        self.thread = threading.Thread(target=self.executor.spin, name="test_spin", daemon=True)
        self.thread.start()

    def shutdown(self) -> None:
        self.executor.shutdown(timeout_sec=5)
        self.thread.join(timeout=10)


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of process ``pid`` (this one by default) in MB, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


def wait_for(cond, timeout: float, period: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(period)
    return bool(cond())


class Probe(Node):
    """Publishes audio (and /clock) and records everything the avatar node publishes."""

    def __init__(self, ns: str = "", name: str = "dystream_tester", reliable_audio: bool = True):
        super().__init__(name)
        prefix = (ns.rstrip("/") + "/") if ns else ""
        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200,
                             reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        audio_qos = qos_profile_sensor_data
        if reliable_audio:
            audio_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                                   reliability=ReliabilityPolicy.RELIABLE)
        self.lock = threading.Lock()
        self.msgs: dict[str, list] = defaultdict(list)
        self.recv: dict[str, list] = defaultdict(list)
        self.clock_at: dict[str, list] = defaultdict(list)  # last /clock this probe published, per message
        self.last_clock = 0
        self.speaker = self.create_publisher(AudioChunk, prefix + "speaker_audio", audio_qos)
        self.listener = self.create_publisher(AudioChunk, prefix + "listener_audio", audio_qos)
        self.sent: dict[str, int] = defaultdict(int)  # audio messages published per channel
        self.clock = self.create_publisher(Clock, "/clock", 10)

        def sub(cls, topic, key, qos=out_qos):
            self.create_subscription(cls, topic, lambda m, k=key: self._on(k, m), qos)

        sub(Image, prefix + "face_image", "image")
        sub(MotionLatent, prefix + "motion_latent", "latent")
        sub(AvatarState, prefix + "state", "state")
        sub(DiagnosticArray, "/diagnostics", "diag")
        self.info_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                   reliability=ReliabilityPolicy.RELIABLE,
                                   durability=DurabilityPolicy.TRANSIENT_LOCAL)

    def send(self, channel: str, msg: AudioChunk) -> None:
        """Publish on ``speaker`` / ``listener`` and count it (see ``sent``)."""
        (self.speaker if channel == "speaker" else self.listener).publish(msg)
        with self.lock:
            self.sent[channel] += 1

    def watch_rosout(self) -> None:
        from rcl_interfaces.msg import Log

        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        self.create_subscription(Log, "/rosout", lambda m: self._on("rosout", m), qos)

    def logs(self, contains: str) -> list[str]:
        return [m.msg for m in self.get("rosout") if contains in m.msg]

    def watch_info(self, topic: str) -> None:
        self.create_subscription(String, topic, lambda m: self._on("info", m), self.info_qos)

    def _on(self, key, msg) -> None:
        with self.lock:
            self.msgs[key].append(msg)
            self.recv[key].append(time.monotonic())
            self.clock_at[key].append(self.last_clock)

    def count(self, key: str) -> int:
        with self.lock:
            return len(self.msgs[key])

    def get(self, key: str) -> list:
        with self.lock:
            return list(self.msgs[key])

    def clear(self) -> None:
        with self.lock:
            self.msgs.clear()
            self.recv.clear()
            self.clock_at.clear()

    def publish_clock(self, ns: int) -> None:
        with self.lock:
            self.last_clock = ns
        self.clock.publish(Clock(clock=to_time(ns)))

    def last_diag(self, node_fqn: str | None = None) -> dict:
        """Key/values of the latest diagnostics status (of ``node_fqn`` when given)."""
        for arr in reversed(self.get("diag")):
            for st in arr.status:
                if node_fqn is None or st.name.startswith(node_fqn):
                    d = {kv.key: kv.value for kv in st.values}
                    d["_level"] = int.from_bytes(st.level, "little") if isinstance(st.level, bytes) \
                        else int(st.level)
                    d["_message"] = st.message
                    return d
        return {}


@contextlib.contextmanager
def node_process(log: Path, namespace: str, params: dict, env: dict | None = None, *,
                 reliable_audio: bool = True):
    """The installed ``dystream_node`` in its own process (``--ros-args``, the shipped default.yaml, a
    namespace, ``params`` on top) and a spinning :class:`Probe` in this one (rclpy initialised here);
    yields ``(process, probe)``. On exit the node gets SIGINT (killed after 20 s)."""
    import rclpy

    if not NODE_EXE.exists():
        raise RuntimeError(f"{NODE_EXE} missing: run `make setup` (colcon installs bin/ to lib/dystream_ros)")
    cmd = [str(NODE_EXE), "--ros-args", "--params-file", str(REPO / "config" / "default.yaml"),
           "-r", f"__ns:={namespace}"]
    for k, v in params.items():
        cmd += ["-p", f"{k}:={v}"]
    with open(log, "wb") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        rclpy.init()
        probe = Probe(ns=namespace, reliable_audio=reliable_audio)
        probe.watch_info(f"{namespace.rstrip('/')}/dystream_node/info")
        spinner = Spinner(probe)
        try:
            yield p, probe
        finally:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
            spinner.shutdown()
            probe.destroy_node()
            rclpy.try_shutdown()
