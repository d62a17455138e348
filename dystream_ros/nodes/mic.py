"""``dystream_mic``: a microphone (PortAudio input stream) published as stamped audio.

Publishes ``audio`` (``dystream_ros/AudioChunk``, pcm_s16le, relative name: remap it to the avatar's
``listener_audio``, e.g. ``/listener/audio``) and, when ``audio_common_msgs`` is installed and
``publish_audio_common`` is on, ``audio_stamped`` (``AudioDataStamped``) with ``audio_info``
(``AudioInfo``, transient local). ``header.stamp`` is the capture time of the block's first sample:
PortAudio's ``inputBufferAdcTime`` mapped onto the system clock (:mod:`dystream_ros.sound.clock`), made
contiguous from block to block, so stamps advance by exactly the block's duration unless samples were
lost (an overrun: the stamp then jumps by the lost time and the samples are counted as
``lost_samples``). The system clock is the ROS clock of a node without ``use_sim_time``.

Parameters: ``device`` ('' = default input; an index or part of a name), ``sample_rate`` (0 = the
device's), ``channels``, ``block_size`` (frames per message; 0 = 20 ms), ``rate_fallback`` (open at the
device's rate when it refuses ``sample_rate``; the messages say the rate), ``retry_s``, ``qos``
(reliable | sensor_data), ``qos_depth``, ``frame_id``, ``publish_audio_common``.

The stream runs in a supervised worker process (:mod:`dystream_ros.sound.worker`): a device missing at
start is reported with the reason and retried every ``retry_s``; a device that disappears is reopened
when it is back. ``/diagnostics`` (1 Hz) counts blocks, samples, lost and dropped samples, xruns,
openings, failures and losses, and reports the stamps' drift against the sample count.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from std_srvs.srv import Trigger

from dystream_ros.config import NS
from dystream_ros.msg import AudioChunk
from dystream_ros.runtime.settings import Param
from dystream_ros.sound.worker import Capture

from .outputs import ns_to_time, qos_profile
from .params import descriptor, ros_default
from .support import ThrottledLog, diagnostic_array, guarded, spin

__all__ = ["MicNode", "declare_params", "main"]

NODE_NAME = "dystream_mic"

PARAMS: tuple[Param, ...] = (
    Param("device", "", "input device: '' = the default, an index, or part of its name", read_only=True),
    Param("sample_rate", 0, "capture rate in Hz; 0 = the device's default rate", read_only=True,
          lo=0, hi=384000),
    Param("channels", 1, "channels to capture (interleaved in the message)", read_only=True, lo=1, hi=64),
    Param("block_size", 0, "frames per message; 0 = 20 ms", read_only=True, lo=0, hi=1 << 20),
    Param("rate_fallback", True, "open the device at its own rate when it refuses sample_rate (the "
          "messages carry the rate; the avatar resamples)", read_only=True),
    Param("retry_s", 1.0, "seconds between attempts to open a missing device", read_only=True,
          lo=0.05, hi=60.0),
    Param("qos", "reliable", "publisher reliability: reliable (the avatar's default input) or sensor_data",
          read_only=True, choices=("reliable", "sensor_data")),
    Param("qos_depth", 100, "publisher queue depth", read_only=True, lo=1, hi=10000),
    Param("frame_id", "mic", "header.frame_id (the microphone's frame)", read_only=True),
    Param("publish_audio_common", True, "also publish audio_common_msgs AudioDataStamped on "
          "audio_stamped + AudioInfo on audio_info (when that package is installed)", read_only=True),
    Param("diagnostics_period_s", 1.0, "period of /diagnostics", read_only=True, lo=0.05, hi=60.0),
)


def declare_params(node: Node, params: tuple[Param, ...], text: tuple[str, ...] = ()) -> dict:
    """Declare ``params`` on ``node`` (descriptors as the avatar node's) and return their values.

    ``text``: string parameters that also take a number from the command line (``-p name:=0.1``
    arrives as a double); their value is returned as text."""
    for p in params:
        d = descriptor(p)
        d.dynamic_typing = p.name in text
        node.declare_parameter(p.name, ros_default(p), d)
    values = {p.name: p.coerce(node.get_parameter(p.name).value) for p in params}
    for name in text:
        values[name] = str(values[name])
    for p in params:
        reason = p.validate(values[p.name])
        if reason:
            raise ValueError(reason)
    return values


class MicNode(Node):
    """See the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self.p = p = declare_params(self, PARAMS)
        self._log = ThrottledLog(self.get_logger())
        qos = qos_profile(p["qos"] == "reliable", int(p["qos_depth"]))
        self._pub = self.create_publisher(AudioChunk, "audio", qos)
        self._ac = None
        if p["publish_audio_common"]:
            try:
                import audio_common_msgs.msg as ac

                self._ac = ac
                self._ac_pub = self.create_publisher(ac.AudioDataStamped, "audio_stamped", qos)
                self._info_pub = self.create_publisher(ac.AudioInfo, "audio_info", qos_profile(True, 1, True))
            except ImportError:
                self.get_logger().info("audio_common_msgs not installed: publishing AudioChunk only")
        self._lock = threading.Lock()
        self.counts = {"blocks_published": 0, "samples_published": 0, "lost_samples": 0}
        self._first: tuple[int, int, int] | None = None  # (opening, stamp_ns, index) of the drift origin
        self._drift_ms = float("nan")
        self._lag_ms = float("nan")
        self._rate_published = 0
        self._info_rate = None
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(float(p["diagnostics_period_s"]), self._publish_diagnostics)
        self.create_service(Trigger, "~/status", guarded(self.get_logger(), "status", self._status_srv))
        self._capture = Capture({"device": p["device"], "rate": int(p["sample_rate"]),
                                 "channels": int(p["channels"]), "blocksize": int(p["block_size"]),
                                 "block_ms": 20.0,
                                 "rate_fallback": bool(p["rate_fallback"])},
                                retry_s=float(p["retry_s"]), log=self._worker_log)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._publish_loop, name="mic_publish", daemon=True)
        self._capture.start()
        self._thread.start()

    def _worker_log(self, level: str, msg: str) -> None:
        self._log(f"worker:{level}:{msg[:40]}", msg, level="error" if level == "error" else
                  ("warning" if level == "warning" else "info"))

    # ------------------------------------------------------------------------------------------
    def _publish_loop(self) -> None:
        while not self._stop.is_set():
            blk = self._capture.read(0.1)
            if blk is None:
                continue
            try:
                self._publish(blk, self._capture.opens)
            except Exception as e:  # noqa: BLE001 - the context is going down, or one bad block
                if self._stop.is_set():
                    return
                self._log("publish", f"publishing a block failed: {type(e).__name__}: {e}", "error")

    def _publish(self, blk, opening: int) -> None:
        data = blk.data
        if data.dtype != np.int16:
            data = (np.clip(data, -1.0, 1.0) * 32767.0).astype(np.int16)
        frames, ch = data.shape
        m = AudioChunk()
        m.header.stamp = ns_to_time(blk.stamp_ns)
        m.header.frame_id = self.p["frame_id"]
        m.sample_rate = int(blk.rate)
        m.channels = int(ch)
        m.encoding = AudioChunk.ENCODING_PCM_S16LE
        raw = data.astype("<i2", copy=False).tobytes()
        m.data = raw
        self._pub.publish(m)
        if self._ac is not None:
            if self._info_rate != (blk.rate, ch):
                self._info_rate = (blk.rate, ch)
                self._info_pub.publish(self._ac.AudioInfo(channels=int(ch), sample_rate=int(blk.rate),
                                                          sample_format="S16LE", bitrate=0,
                                                          coding_format="wave"))
            am = self._ac.AudioDataStamped()
            am.header = m.header
            am.audio.data = raw
            self._ac_pub.publish(am)
        now = time.time_ns()
        with self._lock:
            c = self.counts
            c["blocks_published"] += 1
            c["samples_published"] += frames
            c["lost_samples"] += blk.lost_before
            first = self._first
            if first is None or first[0] != opening or blk.rate != self._rate_published:
                self._first = (opening, blk.stamp_ns, blk.index)
                self._rate_published = blk.rate
            else:  # stamps against the sample count since the stream opened (lost samples included)
                expect = first[1] + (blk.index - first[2]) * NS / blk.rate
                self._drift_ms = (blk.stamp_ns - expect) / 1e6
            self._lag_ms = (now - blk.stamp_ns) / 1e6

    # ------------------------------------------------------------------------------------------
    def stats(self) -> dict:
        cap = self._capture
        st = cap.status
        with self._lock:
            d = dict(self.counts)
            d.update({"stamp_drift_ms": self._drift_ms, "publish_lag_ms": self._lag_ms})
        d.update(cap.counters())
        d.update({"xruns": int(cap.totals("xruns")), "bad_adc_times": int(cap.totals("bad_adc_times")),
                  "worker_dropped_samples": int(cap.totals("dropped_samples")),
                  "node_dropped_samples": cap.dropped_samples,
                  "captured_samples": int(cap.totals("captured_samples")),
                  "stream_latency_ms": float(st.get("stream_latency_ms", float("nan")))})
        d["lost_samples_total"] = d["lost_samples"] + d["worker_dropped_samples"] + d["node_dropped_samples"]
        return d

    def _status_srv(self, request, response):
        import json

        response.success = self._capture.is_open
        response.message = json.dumps(self.stats(), default=str)
        return response

    def _publish_diagnostics(self) -> None:
        d = self.stats()
        if not d["device_open"]:
            level, msg = "error", f"no input device: {d['last_error'] or 'opening'}"
        elif d["lost_samples_total"]:
            level, msg = "warn", f"capturing; {d['lost_samples_total']} samples lost (overruns/drops)"
        else:
            level, msg = "ok", f"capturing {d['device']} at {d['rate']} Hz"
        try:
            name = f"{self.get_fully_qualified_name()}: microphone"
            self._diag_pub.publish(diagnostic_array(name, d, level, msg, self.get_clock().now().to_msg(),
                                                    str(d["device"])))
        except Exception:  # noqa: BLE001 - context shutting down
            pass

    def release(self) -> None:
        self._stop.set()
        self._capture.stop()
        self._thread.join(timeout=2)


def main(args=None) -> int:
    return spin(MicNode, NODE_NAME, release=lambda n: n.release(), args=args)


if __name__ == "__main__":
    raise SystemExit(main())
