"""Measure a running dystream_node over DDS with real-time speech (``dystream_measure``).

Synthesises a two-party conversation with espeak-ng (speaker = the robot, listener = the human, taking
turns with pauses), publishes both channels in real time as ``AudioChunk`` (22.05 kHz int16, 20 ms
chunks, each stamped with the node clock at its first sample and published once complete, like a
microphone), records the node's ``state``, ``motion_latent``, ``face_image`` and ``/diagnostics`` and
prints (and writes as JSON) the numbers of DESIGN.md §3 over the frames of the run:

* ``processing_ms`` and ``av_offset_ms`` (the node's own, from AvatarState) p50/p95/p99/max;
* ``skipped_frames`` (AvatarState, and the node's diagnostics), frames received vs expected;
* ``model_ms`` (MotionLatent.step_ms: audio encode + generator + flow head; the node's whole step with
  rendering is in its diagnostics, ``step_ms_p50/p95``);
* the end-to-end ``display_av_ms``: when this process *received* the face image minus when it
  *published* the audio chunk holding the frame's first sample (adds DDS transport of the image).

    dystream_measure --spawn --seconds 60 --out measure.json            # starts the node itself
    dystream_measure --namespace /dystream --seconds 60                 # against a running node

``--spawn`` runs the installed ``dystream_node`` with ``config/default.yaml``, ``checkpoint:=random``
unless ``--checkpoint`` says otherwise, in namespace ``--namespace``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from dystream_ros.config import NS, stamp_to_ns
from dystream_ros.io.wav import read_wav_frames
from dystream_ros.msg import AudioChunk, AvatarState, MotionLatent

ROBOT_LINES = [
    "Hello! I am the robot at the front desk. How can I help you today?",
    "Of course. The meeting room is on the second floor, next to the elevators.",
    "It usually takes about two minutes to get there from here.",
    "Would you like me to call someone to meet you at the room?",
    "Great, I will let them know that you are on your way. Have a nice day!",
    "By the way, there is fresh coffee in the kitchen on the second floor as well.",
]
HUMAN_LINES = [
    "Hi, I am looking for the meeting room.",
    "Thanks. How long does it take to walk there?",
    "Yes, please, that would be very helpful.",
    "Thank you very much.",
    "Oh nice, I will grab a cup.",
    "Bye!",
]


def _espeak(text: str, voice: str, path: Path, speed: int = 165) -> np.ndarray:
    exe = shutil.which("espeak-ng") or shutil.which("espeak")
    if exe is None:
        raise RuntimeError("espeak-ng not found (apt-get install espeak-ng)")
    subprocess.run([exe, "-v", voice, "-s", str(speed), "-w", str(path), text], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    data, rate = read_wav_frames(path)
    if rate != 22050 or data.dtype != np.int16 or data.shape[1] != 1:
        raise RuntimeError(f"unexpected espeak-ng output format in {path}")
    return data[:, 0].copy()


def conversation(seconds: float, rate: int = 22050) -> tuple[np.ndarray, np.ndarray]:
    """Two int16 tracks of ``seconds``: robot (speaker) and human (listener) taking turns."""
    n = int(seconds * rate)
    spk, lis = np.zeros(n, np.int16), np.zeros(n, np.int16)
    with tempfile.TemporaryDirectory() as d:
        robot = [_espeak(t, "en-us", Path(d) / f"r{i}.wav") for i, t in enumerate(ROBOT_LINES)]
        human = [_espeak(t, "en-gb", Path(d) / f"h{i}.wav", speed=175) for i, t in enumerate(HUMAN_LINES)]
    pos, turn = int(0.5 * rate), 0
    while pos < n:
        h = human[turn % len(human)]
        lis[pos:pos + len(h)] = h[: max(0, n - pos)]
        pos += len(h) + int(0.4 * rate)
        if pos >= n:
            break
        r = robot[turn % len(robot)]
        spk[pos:pos + len(r)] = r[: max(0, n - pos)]
        pos += len(r) + int(0.5 * rate)
        turn += 1
    return spk, lis


def _pct(values, qs=(50, 95, 99)) -> dict:
    a = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if a.size == 0:
        return {f"p{q}": None for q in qs} | {"max": None, "n": 0}
    out = {f"p{q}": round(float(np.percentile(a, q)), 2) for q in qs}
    out["max"] = round(float(a.max()), 2)
    out["n"] = int(a.size)
    return out


class Measurer(Node):
    def __init__(self, ns: str):
        super().__init__("dystream_measure")
        prefix = ns.rstrip("/")
        out = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.lock = threading.Lock()
        self.states: list = []
        self.latents: list = []
        self.images: list = []  # (stamp_ns, receive monotonic)
        self.diag: dict = {}
        self.info: dict | None = None
        audio = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200, reliability=ReliabilityPolicy.RELIABLE)
        self.speaker = self.create_publisher(AudioChunk, f"{prefix}/speaker_audio", audio)
        self.listener = self.create_publisher(AudioChunk, f"{prefix}/listener_audio", audio)
        self.create_subscription(AvatarState, f"{prefix}/state", self._on_state, out)
        self.create_subscription(MotionLatent, f"{prefix}/motion_latent", self._on_latent, out)
        self.create_subscription(Image, f"{prefix}/face_image", self._on_image, out)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.create_subscription(String, f"{prefix}/dystream_node/info", self._on_info, latched)
        self.node_fqn = f"{prefix}/dystream_node"

    def _on_state(self, m):
        with self.lock:
            self.states.append(m)

    def _on_latent(self, m):
        with self.lock:
            self.latents.append(m)

    def _on_image(self, m):
        t = time.monotonic()
        with self.lock:
            self.images.append((stamp_to_ns(m.header.stamp), t))

    def _on_info(self, m):
        self.info = json.loads(m.data)

    def _on_diag(self, arr):
        for st in arr.status:
            if st.name.startswith(self.node_fqn):
                with self.lock:
                    self.diag = {kv.key: kv.value for kv in st.values}


def _chunk(x: np.ndarray, rate: int, stamp: int) -> AudioChunk:
    m = AudioChunk()
    m.header.stamp.sec, m.header.stamp.nanosec = int(stamp // NS), int(stamp % NS)
    m.header.frame_id = "measure"
    m.sample_rate, m.channels, m.encoding = rate, 1, AudioChunk.ENCODING_PCM_S16LE
    m.data = x.astype("<i2").tobytes()
    return m


def run(args) -> dict:
    rate = 22050
    spk, lis = conversation(args.seconds, rate)
    proc = None
    if args.spawn:
        from ament_index_python.packages import get_package_prefix, get_package_share_directory

        exe = Path(get_package_prefix("dystream_ros")) / "lib" / "dystream_ros" / "dystream_node"
        params = args.params_file or str(Path(get_package_share_directory("dystream_ros")) / "config" /
                                         "default.yaml")
        cmd = [str(exe), "--ros-args", "--params-file", params, "-r", f"__ns:={args.namespace}",
               "-p", f"checkpoint:={args.checkpoint}", "--log-level", "warn"] + [
            a for p in args.param for a in ("-p", p)]
        proc = subprocess.Popen(cmd, env=dict(os.environ))
    rclpy.init()
    node = Measurer(args.namespace)
    ex = SingleThreadedExecutor()  # rclpy's MultiThreadedExecutor busy-spins a core while callbacks run
    ex.add_node(node)
    threading.Thread(target=ex.spin, daemon=True).start()
    try:
        t_end = time.monotonic() + args.startup_timeout
        while node.info is None and time.monotonic() < t_end:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"dystream_node exited with {proc.returncode}")
            time.sleep(0.1)
        if node.info is None:
            raise RuntimeError(f"no {node.node_fqn}/info within {args.startup_timeout} s: "
                               f"is the node active?")
        time.sleep(1.0)  # subscriptions match
        per = int(rate * args.chunk_ms / 1000)
        n_chunks = len(spk) // per
        chunk_pub = np.zeros(n_chunks)  # monotonic publish time of each chunk
        clock = node.get_clock()
        t0 = time.monotonic() + 0.05
        start = clock.now().nanoseconds + 50_000_000
        for k in range(n_chunks):
            target = t0 + (k + 1) * per / rate
            d = target - time.monotonic()
            if d > 0:
                time.sleep(d)
            stamp = start + k * per * NS // rate
            node.speaker.publish(_chunk(spk[k * per:(k + 1) * per], rate, stamp))
            node.listener.publish(_chunk(lis[k * per:(k + 1) * per], rate, stamp))
            chunk_pub[k] = time.monotonic()
        time.sleep(args.tail)
        end = start + n_chunks * per * NS // rate
        with node.lock:
            states = [s for s in node.states if start <= stamp_to_ns(s.header.stamp) < end]
            latents = [m for m in node.latents if start <= stamp_to_ns(m.header.stamp) < end]
            images = [(s, t) for s, t in node.images if start <= s < end]
            diag = dict(node.diag)
        display = []
        for s, t in images:
            k = int((s - start) * rate // NS) // per  # chunk holding the frame's first sample
            if 0 <= k < n_chunks:
                display.append((t - chunk_pub[k]) * 1000.0)
        expected = (end - start) // 40_000_000
        skipped = max((s.skipped_frames for s in states), default=0)
        report = {
            "seconds": args.seconds, "frames_expected": int(expected),
            "frames_received": len({s.frame_index for s in states}),
            "images_received": len(images),
            "skipped_frames": int(skipped),
            "processing_ms": _pct([s.processing_ms for s in states]),
            "av_offset_ms": _pct([s.av_offset_ms for s in states]),
            "model_ms": _pct([m.step_ms for m in latents]),
            "step_ms_diag": {k: diag.get(f"step_ms_{k}") for k in ("p50", "p95")},
            "display_av_ms": _pct(display),
            "node": node.info, "diagnostics": diag,
            "load_avg": list(os.getloadavg()), "cpus": os.cpu_count(),
        }
        return report
    finally:
        ex.shutdown(timeout_sec=2)
        node.destroy_node()
        rclpy.try_shutdown()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def main(argv=None) -> int:
    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv if argv is None else argv)
    if "--ros-args" in argv:  # only then: a bare name:=value is ours (--param), not a ROS remapping
        argv = remove_ros_args(argv)
    argv = argv[1:]
    ap = argparse.ArgumentParser(prog="dystream_measure", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--namespace", default="/dystream")
    ap.add_argument("--spawn", action="store_true", help="start the installed dystream_node")
    ap.add_argument("--checkpoint", default="random", help="with --spawn: checkpoint parameter")
    ap.add_argument("--params-file", default="", help="with --spawn: parameters YAML (default: shipped)")
    ap.add_argument("--param", action="append", default=[], help="with --spawn: extra name:=value")
    ap.add_argument("--chunk-ms", type=float, default=20.0)
    ap.add_argument("--tail", type=float, default=2.0, help="seconds to wait for the last frames")
    ap.add_argument("--startup-timeout", type=float, default=180.0)
    ap.add_argument("--out", default="", help="write the report as JSON here")
    args = ap.parse_args(argv)
    report = run(args)
    text = json.dumps(report, indent=2, sort_keys=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
    keys = ("frames_expected", "frames_received", "skipped_frames", "processing_ms", "av_offset_ms",
            "model_ms", "step_ms_diag", "display_av_ms", "load_avg")
    print(json.dumps({k: report[k] for k in keys}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
