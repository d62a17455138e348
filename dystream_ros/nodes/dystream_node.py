"""``dystream_node``: the talking/listening face as a ROS 2 lifecycle node.

Inputs (relative names, remappable): ``speaker_audio`` (the robot's own speech, e.g. TTS) and
``listener_audio`` (the interlocutor, e.g. a microphone), ``dystream_ros/AudioChunk`` by default or
``audio_common_msgs/AudioDataStamped`` (+ ``<topic>_info``), the rates in ``sample_rates``,
int16/float32, mono or interleaved multi-channel; reliable QoS by default (``input_qos``).

Outputs (relative names): ``face_image`` (sensor_msgs/Image rgb8), optional ``face_image/compressed``
(JPEG), ``motion_latent`` (MotionLatent), ``state`` (AvatarState), all stamped with the audio time of the
frame start (stream start stamp + 40 ms * n); ``~/info`` (std_msgs/String JSON, latched: profile,
checkpoint, sizes, timing); ``/diagnostics`` at 1 Hz. Services ``~/reset`` (std_srvs/Trigger) and
``~/set_reference`` (dystream_ros/SetReference).

Timing: a 40 ms timer on the node clock (ROS time; follows /clock under use_sim_time) only wakes the
node; which frames to produce is decided by :class:`dystream_ros.runtime.scheduler.FrameScheduler` in
audio time (due when audio + lookahead has arrived on both channels, or a channel's wait expired, and
the frame's stamp is in the past of the clock; at most ``catch_up_limit`` per tick, the rest skipped
and counted). Lifecycle: configure loads and warms up the model; activate starts subscriptions and the
timer; deactivate/cleanup undo them.

Threads: the model work runs on a producer thread of its own, woken by the 40 ms timer and by audio
that completes a due frame, so executor callbacks stay short (buffers under a lock). ``main`` spins a
SingleThreadedExecutor: rclpy's MultiThreadedExecutor busy-spins its wait loop, holding the GIL, while
any callback is in flight, which made model steps 10-100x slower (measured); the in-process tests spin
it the same way. Callback groups are still set for a process that composes it under an executor that
runs callbacks concurrently: the
timer in a mutually exclusive group, one mutually exclusive group per audio channel (each channel's
chunks are buffered in arrival order), diagnostics and services in a third group.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType, JumpThreshold
from rclpy.duration import Duration
from rclpy.exceptions import InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

try:  # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from dystream_ros.audio import AudioFormatError, decode_pcm
from dystream_ros.audio.decode import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from dystream_ros.msg import AvatarState, MotionLatent
from dystream_ros.runtime.feeder import SessionFeeder, SessionOutOfStep
from dystream_ros.runtime.scheduler import FrameScheduler, RateGate, SchedulerConfig
from dystream_ros.srv import SetReference

from . import audio_adapters as adapters
from .image_codec import (
    ReferenceLimits,
    fit_square,
    image_msg_to_rgb,
    load_image_file,
    resolve_reference_path,
    rgb_to_image_msg,
    rgb_to_jpeg_msg,
)
from .params import SPEC_BY_NAME, SPECS

NODE_NAME = "dystream_node"
SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE
_NS = 1_000_000_000


class ConfigureError(RuntimeError):
    """A configure failure with a message meant for the operator."""


def ns_to_time(ns: int) -> Time:
    return Time(sec=int(ns // _NS), nanosec=int(ns % _NS))


class Window:
    """Recent values of one latency series for percentiles."""

    def __init__(self, n: int = 250):
        self._d: collections.deque[float] = collections.deque(maxlen=n)

    def add(self, v: float) -> None:
        if v is not None and math.isfinite(v):
            self._d.append(float(v))

    def pct(self, q: float) -> float:
        return float(np.percentile(np.fromiter(self._d, float), q)) if self._d else float("nan")

    def __len__(self) -> int:
        return len(self._d)


@dataclasses.dataclass
class NodeStats:
    frames: int = 0
    idle_frames: int = 0
    received: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # per channel
    accepted: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # per channel
    dropped_inactive: int = 0  # audio that arrived while the node was not active
    transport_lost: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # DDS
    incompatible_publishers: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    audio_cb_ms: Window = dataclasses.field(default_factory=Window)  # audio callback durations
    audio_cb_ms_max: float = 0.0
    bad_messages: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    nonfinite_samples: int = 0
    clipped_samples: int = 0
    trailing_bytes: int = 0
    step_errors: int = 0
    step_ms: Window = dataclasses.field(default_factory=Window)  # whole model step incl. rendering
    render_ms: Window = dataclasses.field(default_factory=Window)
    processing_ms: Window = dataclasses.field(default_factory=Window)
    av_offset_ms: Window = dataclasses.field(default_factory=Window)
    publish_times: collections.deque = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=256))
    last_skipped_reported: int = 0


class _Throttle:
    """Rate-limits log messages per key and reports how many were suppressed."""

    def __init__(self, period_s: float = 5.0):
        self.period = period_s
        self._last: dict[str, float] = {}
        self._suppressed: collections.Counter = collections.Counter()
        self._lock = threading.Lock()

    def __call__(self, key: str) -> int | None:
        """None: suppress; else the number suppressed since the last emitted message."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period:
                self._suppressed[key] += 1
                return None
            self._last[key] = now
            return self._suppressed.pop(key, 0)


def _qos(reliable: bool, depth: int, latched: bool = False) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


class DystreamNode(LifecycleNode):
    """The avatar node (see the module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        for spec in SPECS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        self._rt = {s.name: self.get_parameter(s.name).value for s in SPECS}
        self._lock = threading.Lock()  # scheduler, counters
        self._session_lock = threading.RLock()  # model session, publishers, lifecycle resources
        self._timer_group = MutuallyExclusiveCallbackGroup()
        # Audio never waits behind the frame timer. Each channel has its own mutually exclusive group:
        # rclpy takes a message inside the worker thread, so two chunks of one channel in a reentrant
        # group can reach the buffer in swapped order (seen under load); the two channels (and the
        # audio_common info topics) still run concurrently with each other and with the timer.
        self._audio_groups = {c: MutuallyExclusiveCallbackGroup() for c in ("speaker", "listener")}
        self._info_group = ReentrantCallbackGroup()
        self._aux_group = MutuallyExclusiveCallbackGroup()
        self._throttle = _Throttle(5.0)
        self._stats = NodeStats()
        self._state_label = "unconfigured"
        self._configure_error: str | None = None
        self._active = False
        self._pipe = None
        self._session = None
        self._sched: FrameScheduler | None = None
        self._pubs: dict[str, object] = {}
        self._subs: list = []
        self._audio_subs: dict = {}  # channel -> its audio subscription (publisher counts in diagnostics)
        self._timer = None
        # The producer thread does the model work; the 40 ms timer and arriving audio only wake it.
        # Running a ~15 ms step inside an executor callback made rclpy's executor loop spin on the
        # still-ready timer for the whole step (a busy loop holding the GIL), slowing steps 10-100x.
        self._wake = threading.Event()
        self._producer_stop = False
        self._producer = threading.Thread(target=self._produce_loop, name="dystream_producer", daemon=True)
        self._audio_info: dict[str, object] = {}
        self._feeder: SessionFeeder | None = None
        self._pending_session = False
        self._idle_gate = RateGate()  # idle-face publications on a fixed grid of clock times
        self._optional_pubs_dirty = False  # publish_image / publish_compressed changed at runtime
        self._idle_image: np.ndarray | None = None
        self._meta: dict = {}
        self._ref_limits: ReferenceLimits | None = None
        self._sample_rates: frozenset[int] = frozenset()  # set at configure
        self._out_size = 0

        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(
            float(self._rt["diagnostics_period_s"]), self._publish_diagnostics,
            callback_group=self._aux_group, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.create_service(Trigger, "~/reset", self._guarded("reset", self._reset),
                            callback_group=self._aux_group)
        self.create_service(SetReference, "~/set_reference",
                            self._guarded("set_reference", self._set_reference),
                            callback_group=self._aux_group)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        # Forward jumps of the ROS clock (sim time: a bag seek) restart the stream; the scheduler cannot
        # tell them from a slow tick. Backward jumps are caught by the scheduler itself.
        self._clock_jump: str | None = None
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=Duration(seconds=float(self._rt["max_clock_jump_s"])),
                          min_backward=None, on_clock_change=False),
            post_callback=self._on_clock_jump)

    # ==========================================================================================
    # logging helpers
    def _warn_throttled(self, key: str, msg: str, level: str = "warning") -> None:
        n = self._throttle(key)
        if n is None:
            return
        if n:
            msg += f" ({n} similar message(s) suppressed)"
        # rclpy fixes a call site's severity on first use: one call site per level
        if level == "info":
            self.get_logger().info(msg)
        elif level == "error":
            self.get_logger().error(msg)
        else:
            self.get_logger().warning(msg)

    # ==========================================================================================
    # parameters
    def _on_set_parameters(self, params) -> SetParametersResult:
        try:
            return self._set_parameters(params)
        except Exception as e:  # noqa: BLE001 - a parameter call never takes the node down
            self.get_logger().error(f"set_parameters failed: {type(e).__name__}: {e}")
            return SetParametersResult(successful=False, reason=f"internal error ({type(e).__name__}: {e})")

    def _set_parameters(self, params) -> SetParametersResult:
        updates = {}
        for p in params:
            spec = SPEC_BY_NAME.get(p.name)
            if spec is None:
                continue
            if spec.read_only:
                return SetParametersResult(successful=False,
                                           reason=f"{p.name} is read-only (takes effect on configure)")
            reason = spec.validate(p.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            updates[p.name] = float(p.value) if isinstance(spec.default, float) else p.value
        if updates:
            self._rt.update(updates)
            with self._lock:
                if self._sched is not None:
                    self._sched.update(**self._scheduler_runtime())
                if set(updates) & {"publish_image", "publish_compressed"}:
                    self._optional_pubs_dirty = True
                if set(updates) & {"steps", "temperature", "head_temperature", "guidance_speaker",
                                   "guidance_listener", "guidance_anchor"}:
                    self._pending_session = True
            self.get_logger().info("parameters updated: " + ", ".join(f"{k}={v}" for k, v in updates.items()))
        return SetParametersResult(successful=True)

    def _scheduler_runtime(self) -> dict:
        rt = self._rt
        return dict(catch_up_limit=int(rt["catch_up_limit"]),
                    speaker_wait_s=rt["speaker_wait_ms"] / 1000.0,
                    listener_wait_s=rt["listener_wait_ms"] / 1000.0,
                    stamp_tolerance_s=rt["stamp_tolerance_ms"] / 1000.0,
                    stamp_jump_s=rt["stamp_jump_ms"] / 1000.0,
                    max_stamp_skew_s=float(rt["max_stamp_skew_s"]))

    def _apply_session_settings(self) -> None:
        """Steps, temperatures and guidance weights -> the model session (timer thread, session lock held)."""
        with self._lock:
            pending, self._pending_session = self._pending_session, False
        if not pending or self._session is None:
            return
        rt = self._rt
        try:
            self._session.steps = int(rt["steps"])
            self._session.temperature = float(rt["temperature"])
            self._session.head_temperature = float(rt["head_temperature"])
            self._session.guidance = dataclasses.replace(
                self._session.guidance, speaker=float(rt["guidance_speaker"]),
                listener=float(rt["guidance_listener"]), anchor=float(rt["guidance_anchor"]))
        except (ValueError, TypeError) as e:  # validated already; the model may be stricter
            self.get_logger().error(f"model refused the sampler settings: {e}")

    # ==========================================================================================
    # lifecycle
    def autostart(self) -> bool:
        """Configure and activate (the ``autostart`` parameter); False when a transition failed."""
        if self.trigger_configure() != SUCCESS:
            self.get_logger().error("autostart: configure failed; the node stays unconfigured (fix the "
                                    "parameters and call the change_state service to configure again)")
            return False
        if self.trigger_activate() != SUCCESS:
            self.get_logger().error("autostart: activate failed")
            return False
        return True

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        t0 = time.monotonic()
        try:
            with self._session_lock:
                self._configure()
        except ConfigureError as e:
            self._configure_error = str(e)
            self.get_logger().error(f"configure failed: {e}")
            self._release()
            return FAILURE
        except Exception as e:  # noqa: BLE001 - report anything as a failed transition, keep running
            self._configure_error = f"{type(e).__name__}: {e}"
            self.get_logger().error(f"configure failed: {self._configure_error}\n{traceback.format_exc()}")
            self._release()
            return FAILURE
        self._configure_error = None
        self._state_label = "inactive"
        m = self._meta
        self.get_logger().info(
            f"configured in {time.monotonic() - t0:.1f} s: profile={m['profile']} "
            f"checkpoint={m['checkpoint']} "
            f"backend={m['backend']} device={m['device']} lookahead={m['lookahead_ms']} ms "
            f"image={m['image_size']}px latent={m['latent_dim']}")
        return SUCCESS

    def _configure(self) -> None:
        rt = {s.name: self.get_parameter(s.name).value for s in SPECS}
        self._rt.update(rt)
        for name in ("profile", "backend", "audio_msg_type", "input_qos", "output_reliability"):
            reason = SPEC_BY_NAME[name].validate(rt[name])
            if reason:
                raise ConfigureError(reason)
        rates = list(rt["sample_rates"])
        if not rates or any(not MIN_SAMPLE_RATE <= int(r) <= MAX_SAMPLE_RATE for r in rates):
            raise ConfigureError(f"sample_rates must be a non-empty list of rates in "
                                 f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz, got {rates}")
        self._sample_rates = frozenset(int(r) for r in rates)
        try:
            self._msg_class = adapters.message_class(rt["audio_msg_type"])
        except (ImportError, ValueError) as e:
            raise ConfigureError(str(e)) from e

        import torch

        from dystream_ros.model import load_pipeline

        if rt["num_threads"] > 0:
            torch.set_num_threads(int(rt["num_threads"]))
        device = rt["device"] or "cpu"
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        checkpoint = rt["checkpoint"] or None
        try:
            pipe = load_pipeline(checkpoint=checkpoint, profile=rt["profile"], device=device,
                                 render=bool(rt["render"]), backend=rt["backend"])
        except FileNotFoundError as e:
            what = ("the embedded default checkpoint" if checkpoint is None else f"checkpoint {checkpoint!r}")
            raise ConfigureError(
                f"{what} could not be loaded: {str(e).rstrip('.')}. To run without a trained checkpoint "
                f"start with checkpoint:=random (random weights), e.g. "
                f"`ros2 run dystream_ros dystream_node --ros-args -p checkpoint:=random`") from e
        except NotImplementedError as e:
            raise ConfigureError(str(e)) from e
        except Exception as e:  # noqa: BLE001 - a corrupt/incompatible checkpoint, a bad device, ...
            raise ConfigureError(f"loading the model (profile={rt['profile']}, checkpoint="
                                 f"{rt['checkpoint'] or '<embedded default>'}, device={device}, "
                                 f"backend={rt['backend']}) failed: {type(e).__name__}: {e}") from e
        self._pipe = pipe

        # reference face (the launch-time file is the operator's choice: size limits only)
        self._ref_limits = self._reference_limits(rt)
        if rt["reference"]:
            try:
                ref = load_image_file(os.path.expanduser(rt["reference"]),
                                      dataclasses.replace(self._ref_limits, dirs=()))
            except (FileNotFoundError, ValueError) as e:
                raise ConfigureError(f"reference image: {e}") from e
        else:
            try:
                ref = pipe.default_reference()
            except FileNotFoundError as e:
                self.get_logger().warning(
                    f"{e}; using a plain grey placeholder face (set reference:=<image>)")
                ref = np.full((pipe.image_size, pipe.image_size, 3), 128, np.uint8)
        self._session = pipe.start_session(ref, seed=int(rt["seed"]))
        self._feeder = SessionFeeder(self._session)
        self._pending_session = True
        self._apply_session_settings()
        self._out_size = int(rt["image_size"]) or int(pipe.image_size)
        # the idle face (before any audio) is the reference itself; none when not rendering
        self._idle_image = fit_square(ref, self._out_size) if rt["render"] else None

        # lookahead / scheduler
        model_l = int(pipe.lookahead_samples)
        if rt["lookahead_ms"] < 0:
            lookahead = model_l
        else:
            lookahead = int(round(rt["lookahead_ms"] * pipe.sample_rate / 1000))
            if lookahead < model_l:
                raise ConfigureError(f"lookahead_ms={rt['lookahead_ms']} is shorter than the model's "
                                     f"{pipe.lookahead_ms} ms lookahead; use -1 or >= {pipe.lookahead_ms}")
        context = int(getattr(getattr(getattr(pipe, "config", None), "audio", None), "context_samples", 0))
        self._sched_cfg = SchedulerConfig(sample_rate=int(pipe.sample_rate),
                                          samples_per_frame=int(pipe.samples_per_frame),
                                          lookahead_samples=lookahead, context_samples=context,
                                          buffer_s=float(rt["buffer_s"]), **self._scheduler_runtime())
        with self._lock:
            self._sched = FrameScheduler(self._sched_cfg)

        # warm-up on silence so the first real frame is not slow, then start clean
        n_warm = int(rt["warmup_frames"])
        if n_warm:
            need = (n_warm + 1) * pipe.samples_per_frame + model_l
            z = np.zeros(need, np.float32)
            self._session.push_audio(speaker=z, listener=z)
            for _ in range(n_warm):
                self._session.step()
        self._feeder.reset()

        # publishers (lifecycle: they publish only while active)
        reliable = rt["output_reliability"] == "reliable"
        depth = int(rt["output_qos_depth"])
        out = _qos(reliable, depth)
        self._out_qos = out
        self._pubs = {
            "latent": self.create_lifecycle_publisher(MotionLatent, "motion_latent", out),
            "state": self.create_lifecycle_publisher(AvatarState, "state", out),
            "info": self.create_lifecycle_publisher(String, "~/info", _qos(True, 1, latched=True)),
        }
        self._sync_optional_publishers()
        backend = pipe.backend_name if hasattr(pipe, "backend_name") else rt["backend"]
        precision = str(getattr(getattr(pipe, "backend", None), "precision", "fp32"))
        self._meta = {
            "node": self.get_fully_qualified_name(), "profile": pipe.profile,
            "checkpoint": pipe.checkpoint_id, "backend": backend, "precision": precision,
            "device": str(device), "sample_rate": int(pipe.sample_rate), "fps": int(pipe.fps),
            "samples_per_frame": int(pipe.samples_per_frame),
            "lookahead_ms": lookahead * 1000 // pipe.sample_rate,
            "model_lookahead_ms": int(pipe.lookahead_ms), "latent_dim": int(pipe.latent_dim),
            "image_size": self._out_size, "model_image_size": int(pipe.image_size),
            "render": bool(rt["render"]), "frame_id": rt["frame_id"], "audio_msg_type": rt["audio_msg_type"],
        }

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        with self._session_lock:
            rt = self._rt
            with self._lock:
                self._sched.reset()
            self._feeder.reset()
            self._idle_gate.reset()
            self._audio_info.clear()
            with self._lock:
                self._clock_jump = None  # e.g. the switch to sim time at start-up: nothing to reset
            if rt["input_qos"] == "sensor_data":
                in_qos = _qos(False, int(rt["input_qos_depth"]))
            else:
                in_qos = _qos(True, int(rt["input_qos_depth"]))
            for channel in ("speaker", "listener"):
                sub = self.create_subscription(
                    self._msg_class, f"{channel}_audio",
                    lambda msg, c=channel: self._on_audio(msg, c), in_qos,
                    callback_group=self._audio_groups[channel],
                    event_callbacks=self._transport_events(channel))
                self._subs.append(sub)
                self._audio_subs = {**self._audio_subs, channel: sub}
                if rt["audio_msg_type"] == adapters.AUDIO_COMMON_STAMPED:
                    info_cls = adapters.import_audio_common().AudioInfo
                    self._subs.append(self.create_subscription(
                        info_cls, f"{channel}_audio_info",
                        lambda msg, c=channel: self._audio_info.__setitem__(c, msg), _qos(True, 1),
                        callback_group=self._info_group))
            with self._lock:
                self._optional_pubs_dirty = False
            self._sync_optional_publishers()  # publish_* may have changed while inactive
            result = super().on_activate(state)
            self._active = True
            self._timer = self.create_timer(1.0 / float(self._meta["fps"]), self._wake.set,
                                            callback_group=self._timer_group)
            if not self._producer.is_alive():
                self._producer.start()
            self._pubs["info"].publish(String(data=json.dumps(self._meta, sort_keys=True)))
            self._state_label = "active"
        self.get_logger().info("active: listening on speaker_audio and listener_audio")
        return result

    def _transport_events(self, channel: str) -> SubscriptionEventCallbacks:
        """DDS events of an audio subscription, counted and logged: a publisher whose QoS cannot match
        (a best-effort publisher and ``input_qos: reliable``), and messages DDS lost (best effort)."""
        def incompatible(info) -> None:
            with self._lock:
                self._stats.incompatible_publishers[channel] += info.total_count_change
            self.get_logger().warning(
                f"{channel}_audio: a publisher's QoS is incompatible with this subscription "
                f"(input_qos={self._rt['input_qos']}; last policy: {info.last_policy_kind}); its audio "
                f"never arrives. Publish reliable, or set input_qos:=sensor_data")

        def lost(info) -> None:
            with self._lock:
                self._stats.transport_lost[channel] += info.total_count_change
            self._warn_throttled(f"lost:{channel}", f"{channel}_audio: DDS lost {info.total_count_change} "
                                 f"message(s) in transport (best effort); input_qos:=reliable keeps them")

        return SubscriptionEventCallbacks(incompatible_qos=incompatible, message_lost=lost)

    def _stop(self) -> None:
        """Stop producing (timer, subscriptions); session lock held."""
        self._active = False
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        self._audio_subs = {}
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []

    _OPTIONAL_PUBS = {"image": ("publish_image", Image, "face_image"),
                      "compressed": ("publish_compressed", CompressedImage, "face_image/compressed")}

    def _sync_optional_publishers(self) -> None:
        """Advertise face_image / face_image/compressed only while rendering and their publish_* is on
        (session lock held; also after a runtime change of publish_image / publish_compressed)."""
        for key, (param, cls, topic) in self._OPTIONAL_PUBS.items():
            want = bool(self._rt[param]) and bool(self._rt["render"])
            if want and key not in self._pubs:
                pub = self.create_lifecycle_publisher(cls, topic, self._out_qos)
                if self._active:
                    pub.on_activate(None)  # created after the activate transition enabled the others
                self._pubs[key] = pub
            elif not want and key in self._pubs:
                self._destroy_publisher(self._pubs.pop(key))

    def _destroy_publisher(self, pub) -> None:
        destroy = getattr(self, "destroy_lifecycle_publisher", None) or self.destroy_publisher
        try:
            destroy(pub)
        except Exception:  # noqa: BLE001 - already gone during shutdown
            pass

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        with self._session_lock:
            self._stop()
            result = super().on_deactivate(state)
            self._state_label = "inactive"
        self.get_logger().info("deactivated")
        return result

    def _release(self) -> None:
        with self._session_lock:
            self._stop()
            for pub in self._pubs.values():
                self._destroy_publisher(pub)
            self._pubs = {}
            self._session = None
            self._feeder = None
            self._pipe = None
            with self._lock:
                self._sched = None

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        self._state_label = "unconfigured"
        self.get_logger().info("cleaned up (model released)")
        return SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._release()
        self._state_label = "finalized"
        return SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self.get_logger().error(f"lifecycle error in state {state.label}; releasing resources")
        self._release()
        self._state_label = "unconfigured"
        return SUCCESS

    def release_for_exit(self) -> None:
        """Stop timers and drop the model before the process exits (context may already be down)."""
        try:
            self._release()
        except Exception:  # noqa: BLE001
            pass

    def _on_clock_jump(self, jump) -> None:
        # Clock-type changes (sim time switching on, which rclpy reports lazily) are not jumps of the
        # stream's timeline; a real change shows up as a backward jump or as lateness.
        if jump.clock_change or jump.delta.nanoseconds <= 0:
            return
        with self._lock:
            self._clock_jump = f"clock jumped forward by {jump.delta.nanoseconds / 1e9:.3f} s"

    # ==========================================================================================
    # audio input
    def _on_audio(self, msg, channel: str) -> None:
        """Every message ends in exactly one counter: accepted, rejected by reason (``bad_messages_*``,
        ``internal`` included), or ``dropped_inactive``; the callback's duration is recorded."""
        arrival = time.monotonic()
        with self._lock:
            self._stats.received[channel] += 1
        try:
            self._take_audio(msg, channel, arrival)
        except Exception as e:  # noqa: BLE001 - one message never takes the node down
            with self._lock:
                self._stats.bad_messages["internal"] += 1
            self._warn_throttled(f"internal:{channel}", f"{channel}_audio: message dropped after an internal "
                                 f"error: {type(e).__name__}: {e}\n{traceback.format_exc()}", level="error")
        finally:
            ms = (time.monotonic() - arrival) * 1000.0
            with self._lock:
                self._stats.audio_cb_ms.add(ms)
                self._stats.audio_cb_ms_max = max(self._stats.audio_cb_ms_max, ms)

    def _take_audio(self, msg, channel: str, arrival: float) -> None:
        now_ns = self.get_clock().now().nanoseconds
        rt = self._rt
        try:
            if rt["audio_msg_type"] == adapters.AUDIO_CHUNK:
                raw = adapters.from_audio_chunk(msg)
            else:
                raw = adapters.from_audio_common(msg, self._audio_info.get(channel))
            max_samples = None  # rate <= 0 is refused by decode_pcm with its own message
            if raw.sample_rate > 0:
                if raw.sample_rate not in self._sample_rates:
                    raise AudioFormatError("sample_rate", f"sample_rate {raw.sample_rate} Hz is not one of "
                                                          f"sample_rates {sorted(self._sample_rates)}")
                max_samples = int(rt["max_message_s"] * raw.sample_rate)
            dec = decode_pcm(raw.data, raw.encoding, raw.channels, raw.sample_rate, max_samples=max_samples,
                             max_bytes=int(rt["max_message_bytes"]))
        except AudioFormatError as e:
            with self._lock:
                self._stats.bad_messages[e.kind] += 1
            self._warn_throttled(f"bad:{e.kind}:{channel}", f"{channel}_audio: {e}; message dropped")
            return
        if now_ns == 0:
            with self._lock:
                self._stats.bad_messages["no_clock"] += 1
            self._warn_throttled("no_clock", "node clock is 0 (use_sim_time without /clock?): audio dropped")
            return
        if dec.nonfinite or dec.trailing_bytes or dec.clipped:
            with self._lock:
                self._stats.nonfinite_samples += dec.nonfinite
                self._stats.trailing_bytes += dec.trailing_bytes
                self._stats.clipped_samples += dec.clipped
            if dec.nonfinite:
                self._warn_throttled(f"nonfinite:{channel}", f"{channel}_audio: {dec.nonfinite} NaN/Inf "
                                     f"sample(s) replaced by 0")
            if dec.trailing_bytes:
                self._warn_throttled(f"trailing:{channel}",
                                     f"{channel}_audio: {len(raw.data)} bytes is not a whole number of "
                                     f"{raw.channels}-channel {raw.encoding} frames; "
                                     f"{dec.trailing_bytes} trailing byte(s) dropped")
            if dec.clipped:
                self._warn_throttled(f"clipped:{channel}", f"{channel}_audio: {dec.clipped} float sample(s) "
                                     f"outside [-1, 1] clipped", level="info")
        with self._lock:
            if not self._active or self._sched is None:
                self._stats.dropped_inactive += 1
                return
            res = self._sched.push(channel, dec.samples, dec.sample_rate, raw.stamp_ns,
                                   arrival=arrival, now_ns=now_ns)
            self._stats.accepted[channel] += 1
            if rt["wake_on_audio"] and self._sched.has_due(now_ns):
                self._wake.set()  # audio completed a due frame: produce it now, not at the next tick
        if getattr(res, "restamped", False):
            self._warn_throttled(f"restamp:{channel}",
                                 f"{channel}_audio: header.stamp {raw.stamp_ns / 1e9:.3f} s is zero or "
                                 f"more than max_stamp_skew_s from the node clock {now_ns / 1e9:.3f} s "
                                 f"(wall-clock stamps under use_sim_time?); using the "
                                 f"receive time instead")
        if res.write.overflow:
            self._warn_throttled(f"overflow:{channel}", f"{channel}_audio: buffer full (buffer_s="
                                 f"{rt['buffer_s']}): {res.write.overflow} sample(s) dropped")
        if res.write.late:
            self._warn_throttled(f"late:{channel}",
                                 f"{channel}_audio: {res.write.late} sample(s) arrived after their frames "
                                 f"were produced (raise {channel}_wait_ms?); dropped")
        if res.gap_samples:
            self._warn_throttled(f"gap:{channel}", f"{channel}_audio: stamp gap of "
                                 f"{res.gap_samples / 16.0:.0f} ms filled with silence", level="info")
        if res.dropped_held:
            self._warn_throttled(f"outlier:{channel}", f"{channel}_audio: a chunk whose stamp disagreed with "
                                 f"the stream (duplicated, overlapping or far ahead) was dropped: "
                                 f"{res.dropped_held} sample(s)")
        if res.reanchored:
            self._warn_throttled(f"reanchor:{channel}", f"{channel}_audio: the publisher's stamps moved for "
                                 f"good; following them", level="info")

    # ==========================================================================================
    # the frame timer
    def _produce_loop(self) -> None:
        """The producer thread: one :meth:`_tick` per wake-up (timer tick or a frame made due by audio)."""
        while not self._producer_stop:
            self._wake.wait()
            self._wake.clear()
            if self._producer_stop:
                return
            try:
                self._on_tick()
            except Exception as e:  # noqa: BLE001 - keep producing; the error is logged and counted
                with self._lock:
                    self._stats.step_errors += 1
                self.get_logger().error(f"frame production failed: {e!r}")

    def stop_producer(self) -> None:
        """End the producer thread (node shutdown)."""
        self._producer_stop = True
        self._wake.set()
        if self._producer.is_alive() and threading.current_thread() is not self._producer:
            self._producer.join(timeout=5.0)

    def destroy_node(self):
        self.stop_producer()
        return super().destroy_node()

    def _on_tick(self) -> None:
        try:
            self._tick()
        except Exception:
            if not self.context.ok():  # shutting down (SIGINT/SIGTERM) while a tick was publishing
                return
            raise

    def _tick(self) -> None:
        with self._session_lock:
            if not self._active or self._session is None:
                return
            now_ns = self.get_clock().now().nanoseconds
            if now_ns == 0:
                return
            wall = time.monotonic()
            with self._lock:
                jump, self._clock_jump = self._clock_jump, None
                if jump and self._sched.active:
                    self._sched.reset(clock_jump=True)
                else:
                    jump = None
                plan = self._sched.tick(now_ns, wall=wall)
            if jump:
                self.get_logger().warning(f"{jump}: stream reset (the next audio starts a new one)")
                self._feeder.reset()
            if plan.reset_reason:
                self.get_logger().warning(
                    f"{plan.reset_reason}: stream reset (the next audio starts a new one)")
            if plan.stream_started:
                self.get_logger().info(f"stream started at stamp {self._sched.origin_ns / 1e9:.3f} s")
            if plan.skipped:
                self._warn_throttled("skip", f"behind the clock: skipped {plan.skipped} frame(s) "
                                     f"(catch_up_limit={self._rt['catch_up_limit']}; "
                                     f"{self._sched.stats.skipped_frames} in total)")
            self._apply_session_settings()
            with self._lock:
                dirty, self._optional_pubs_dirty = self._optional_pubs_dirty, False
            if dirty:
                self._sync_optional_publishers()
            if not self._feeder.prepare(plan):
                # idle, or nothing due this tick (the session's audio position stays where it is)
                if plan.idle:
                    self._publish_idle(now_ns)
                return
            try:
                for job, frame, step_ms in self._feeder.step(plan):
                    self._publish_frame(job, frame, step_ms)
            except SessionOutOfStep as e:
                with self._lock:
                    self._stats.step_errors += 1
                    self._sched.reset()
                self.get_logger().error(f"{e}; stream reset")

    def _state_of(self, job) -> int:
        thr = self._rt["speaking_threshold_db"]
        spk, lis = job.speaker_level_db > thr, job.listener_level_db > thr
        if spk and lis:
            return AvatarState.STATE_BOTH
        if spk:
            return AvatarState.STATE_SPEAKING
        if lis:
            return AvatarState.STATE_LISTENING
        return AvatarState.STATE_IDLE

    def _publish_frame(self, job, frame, step_ms: float) -> None:
        rt, meta = self._rt, self._meta
        stamp = ns_to_time(job.stamp_ns)
        now_w = time.monotonic()
        processing_ms = (now_w - job.ready_wall) * 1000.0
        av_ms = (now_w - job.start_wall) * 1000.0 if math.isfinite(job.start_wall) else float("nan")
        with self._lock:
            skipped = self._sched.stats.session_skipped_frames
        if rt["publish_state"]:
            st = AvatarState()
            st.header.stamp, st.header.frame_id = stamp, meta["frame_id"]
            st.state = self._state_of(job)
            st.frame_index = int(job.index)
            st.processing_ms = float(processing_ms)
            st.av_offset_ms = float(av_ms)
            st.skipped_frames = int(skipped)
            st.speaker_level_db = float(job.speaker_level_db)
            st.listener_level_db = float(job.listener_level_db)
            self._pubs["state"].publish(st)
        if rt["publish_latent"]:
            lm = MotionLatent()
            lm.header.stamp, lm.header.frame_id = stamp, meta["frame_id"]
            lm.frame_index = int(job.index)
            lm.latent = np.asarray(frame.latent, dtype=np.float32)
            lm.profile, lm.checkpoint = meta["profile"], meta["checkpoint"]
            t = getattr(frame, "timings", None) or {}
            # the message's contract: audio encode + generator + flow head (rendering excluded)
            lm.step_ms = float(sum(t.get(k, 0.0) for k in ("audio", "generator", "head")) if t else step_ms)
            lm.processing_ms = float(processing_ms)
            self._pubs["latent"].publish(lm)
        if frame.image is not None and ("image" in self._pubs or "compressed" in self._pubs):
            img = fit_square(frame.image, self._out_size)
            if "image" in self._pubs:
                self._pubs["image"].publish(rgb_to_image_msg(img, stamp, meta["frame_id"]))
            if "compressed" in self._pubs:
                self._pubs["compressed"].publish(rgb_to_jpeg_msg(img, stamp, meta["frame_id"],
                                                                 int(rt["jpeg_quality"])))
        with self._lock:
            s = self._stats
            s.frames += 1
            s.step_ms.add(step_ms)
            s.render_ms.add((getattr(frame, "timings", None) or {}).get("render", float("nan")))
            s.processing_ms.add(processing_ms)
            s.av_offset_ms.add(av_ms)
            s.publish_times.append(now_w)

    def _publish_idle(self, now_ns: int) -> None:
        hz = float(self._rt["idle_publish_hz"])
        if hz <= 0 or self._idle_image is None:
            return
        if not self._idle_gate(now_ns, hz):
            return
        stamp = ns_to_time(now_ns)
        fid = self._meta["frame_id"]
        if "image" in self._pubs:
            self._pubs["image"].publish(rgb_to_image_msg(self._idle_image, stamp, fid))
        if "compressed" in self._pubs:
            self._pubs["compressed"].publish(rgb_to_jpeg_msg(self._idle_image, stamp, fid,
                                                             int(self._rt["jpeg_quality"])))
        with self._lock:
            self._stats.idle_frames += 1

    # ==========================================================================================
    # services
    def _guarded(self, name: str, handler):
        """A service callback that answers ``success: false`` instead of raising: an exception escaping
        a service callback ends the executor's spin, and with it the node."""
        def callback(request, response):
            try:
                return handler(request, response)
            except Exception as e:  # noqa: BLE001 - a service call never takes the node down
                self.get_logger().error(f"{name} failed: {type(e).__name__}: {e}\n{traceback.format_exc()}")
                response.success = False
                response.message = f"{name} failed ({type(e).__name__}); the node's log has the details"
                return response
        return callback

    def _reset(self, request, response):
        with self._session_lock:
            if self._session is None:
                response.success, response.message = False, f"node is {self._state_label}: nothing to reset"
                return response
            with self._lock:
                self._sched.reset()
            self._feeder.reset()
            self._idle_gate.reset()
        self.get_logger().info("reset: stream cleared; the next audio starts a new stream")
        response.success, response.message = True, "stream reset"
        return response

    @staticmethod
    def _reference_limits(rt: dict) -> ReferenceLimits:
        """The ``reference_*`` parameters; ``reference_dirs`` '' = the package avatars + the directory of
        the launch-time ``reference``."""
        from dystream_ros.model.pipeline import DEFAULT_AVATAR

        dirs = [d for d in rt["reference_dirs"].split(os.pathsep) if d.strip()]
        if not dirs:
            dirs = [str(DEFAULT_AVATAR.parent)]
            if rt["reference"]:
                dirs.append(os.path.dirname(os.path.abspath(os.path.expanduser(rt["reference"]))))
        return ReferenceLimits(max_pixels=int(rt["reference_max_pixels"]),
                               max_bytes=int(rt["reference_max_bytes"]),
                               min_side=int(rt["reference_min_side"]),
                               dirs=tuple(Path(os.path.realpath(os.path.expanduser(d))) for d in dirs))

    def _set_reference(self, request, response):
        limits = self._ref_limits
        if limits is None or self._session is None:
            response.success, response.message = False, f"node is {self._state_label}: configure it first"
            return response
        try:
            if request.path:
                path = resolve_reference_path(request.path, limits)
                img = load_image_file(path, limits)
                source = path.name
            elif request.image.width or request.image.height or len(request.image.data):
                img = image_msg_to_rgb(request.image, limits)
                source = f"{request.image.width}x{request.image.height} {request.image.encoding} image"
            else:
                raise ValueError("give either path or image")
        except (FileNotFoundError, ValueError) as e:
            response.success, response.message = False, str(e)
            self._warn_throttled("set_reference", f"set_reference refused: {e}")
            return response
        with self._session_lock:
            if self._session is None:
                response.success, response.message = False, f"node is {self._state_label}: configure it first"
                return response
            try:
                self._session.set_reference(img)
            except ValueError as e:
                response.success, response.message = False, f"model refused the image: {e}"
                return response
            if self._rt["render"]:
                self._idle_image = fit_square(img, self._out_size)
        self.get_logger().info(f"reference face set from {source}")
        response.success, response.message = True, f"reference set from {source}"
        return response

    # ==========================================================================================
    # diagnostics
    def _publisher_count(self, channel: str) -> int:
        """Publishers matched by the channel's audio subscription (0 while inactive)."""
        sub = self._audio_subs.get(channel)
        try:
            return sub.get_publisher_count() if sub is not None else 0
        except Exception:  # noqa: BLE001 - destroyed by a concurrent deactivate
            return 0

    def stats_snapshot(self) -> dict:
        """Counters and latency percentiles (also what /diagnostics reports)."""
        with self._lock:
            s = self._stats
            sched = self._sched
            d = {
                "lifecycle_state": self._state_label,
                "frames_published": s.frames,
                "idle_frames_published": s.idle_frames,
                "step_ms_p50": s.step_ms.pct(50), "step_ms_p95": s.step_ms.pct(95),
                "render_ms_p50": s.render_ms.pct(50),
                "processing_ms_p50": s.processing_ms.pct(50), "processing_ms_p95": s.processing_ms.pct(95),
                "processing_ms_p99": s.processing_ms.pct(99),
                "av_offset_ms_p50": s.av_offset_ms.pct(50), "av_offset_ms_p95": s.av_offset_ms.pct(95),
                "nonfinite_samples": s.nonfinite_samples, "clipped_samples": s.clipped_samples,
                "trailing_bytes_dropped": s.trailing_bytes, "step_errors": s.step_errors,
                "bad_messages": sum(s.bad_messages.values()),
            }
            for kind, n in sorted(s.bad_messages.items()):
                d[f"bad_messages_{kind}"] = n
            for ch in ("speaker", "listener"):
                d[f"{ch}_messages_received"] = s.received[ch]
                d[f"{ch}_messages_accepted"] = s.accepted[ch]
                d[f"{ch}_messages_lost"] = s.transport_lost[ch]  # by DDS, before the callback
                d[f"{ch}_incompatible_publishers"] = s.incompatible_publishers[ch]
                d[f"{ch}_publishers"] = self._publisher_count(ch)
            d["messages_dropped_inactive"] = s.dropped_inactive
            # 0 unless a message escaped every counter (a bug); the tests assert it
            d["messages_unaccounted"] = (sum(s.received.values()) - sum(s.accepted.values())
                                         - sum(s.bad_messages.values()) - s.dropped_inactive)
            d["audio_callback_ms_p99"] = s.audio_cb_ms.pct(99)
            d["audio_callback_ms_max"] = s.audio_cb_ms_max
            now = time.monotonic()
            recent = [t for t in s.publish_times if now - t <= 5.0]
            d["output_rate_hz"] = ((len(recent) - 1) / (recent[-1] - recent[0])
                                   if len(recent) >= 2 and recent[-1] > recent[0] else 0.0)
            if sched is not None:
                st = sched.stats
                d.update(skipped_frames=st.skipped_frames, skipped_frames_session=st.session_skipped_frames,
                         streams=st.streams, clock_resets=st.clock_resets,
                         restamped_messages=st.restamped_messages, silence_samples=st.silence_samples,
                         discarded_samples=st.discarded_samples,
                         next_frame=sched.next_frame,
                         frames_pending=sched.pending_frames(self.get_clock().now().nanoseconds))
                dropped = 0
                for name, ch in sched.channels.items():
                    cs = ch.stats
                    dropped += cs.dropped_samples
                    d[f"{name}_late_samples"] = cs.late_samples
                    d[f"{name}_overflow_samples"] = cs.overflow_samples
                    d[f"{name}_gap_samples"] = cs.gap_samples
                    d[f"{name}_stamp_overlaps"] = cs.overlaps
                    d[f"{name}_overlap_samples"] = cs.overlap_samples
                    d[f"{name}_stamp_outliers"] = cs.outliers
                    d[f"{name}_outlier_samples"] = cs.outlier_samples
                    d[f"{name}_reanchors"] = cs.reanchors
                    d[f"{name}_messages"] = cs.messages
                    d[f"{name}_buffer_ms"] = sched.depth_samples(name) * 1000.0 / sched.config.sample_rate
                d["dropped_samples"] = dropped
            for k in ("backend", "precision", "device", "profile", "checkpoint"):
                if k in self._meta:
                    d[k] = self._meta[k]
        return d

    def _publish_diagnostics(self) -> None:
        d = self.stats_snapshot()
        st = DiagnosticStatus()
        st.name = f"{self.get_fully_qualified_name()}: talking head"
        st.hardware_id = str(d.get("device") or "none")
        level, msgs = DiagnosticStatus.OK, []
        if self._configure_error and d["lifecycle_state"] == "unconfigured":
            level = DiagnosticStatus.ERROR
            msgs.append(f"configure failed: {self._configure_error}")
        elif d["lifecycle_state"] != "active":
            level = DiagnosticStatus.WARN
            msgs.append(f"{d['lifecycle_state']}: not producing frames")
        else:
            p95 = d["step_ms_p95"]
            if math.isfinite(p95) and p95 > self._rt["step_warn_ms"]:
                level = DiagnosticStatus.WARN
                msgs.append(f"step p95 {p95:.1f} ms > {self._rt['step_warn_ms']:.0f} ms")
            skipped = d.get("skipped_frames", 0)
            new_skips = skipped - self._stats.last_skipped_reported
            self._stats.last_skipped_reported = skipped
            if new_skips > 0:
                level = DiagnosticStatus.WARN
                msgs.append(f"skipped {new_skips} frame(s)")
            if not msgs:
                msgs.append(f"{d['output_rate_hz']:.1f} fps" if d["frames_published"]
                            else "idle (no audio yet)")
        st.level = level
        st.message = "; ".join(msgs)

        def fmt(v):
            if isinstance(v, float):
                return "nan" if not math.isfinite(v) else f"{v:.2f}"
            return str(v)

        st.values = [KeyValue(key=k, value=fmt(v)) for k, v in d.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [st]
        try:
            self._diag_pub.publish(arr)
        except Exception:  # noqa: BLE001 - context shutting down
            pass


def _install_quiet_signal_handlers() -> None:
    """SIGINT/SIGTERM never raise in Python; rclpy's own handlers (chained to these) end the spin.

    ``ros2 launch`` forwards Ctrl-C to a node that the terminal already sent it to, and stops stragglers
    with SIGTERM, so a second signal often lands while ``main`` cleans up. With Python's default SIGINT
    handler that second one raised KeyboardInterrupt out of the cleanup (exit -2, and -6 when it
    surfaced inside a native call). Installed before ``rclpy.init``, these handlers are what rclpy calls
    after shutting the context down, so every signal is just noted and the cleanup always runs to the end.
    :func:`_ignore_signals_for_exit` covers the interpreter's own finalisation after that.
    """
    def note(signum, frame):  # noqa: ARG001 - the signal handler signature
        _SIGNALS_SEEN.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, note)


_SIGNALS_SEEN: list[int] = []


def _ignore_signals_for_exit() -> None:
    """Ignore SIGINT/SIGTERM from here to the process exit.

    Python's finalisation resets the signals it handles to SIG_DFL (but leaves ignored ones ignored),
    and tearing down torch and DDS takes a while: a SIGTERM in that window killed the process (exit 143)
    after a clean shutdown. SIGKILL still ends a finalisation that hangs.
    """
    from rclpy.signals import uninstall_signal_handlers

    uninstall_signal_handlers()  # restores the handlers rclpy chained to, now and not later
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, int(signal.SIG_IGN))  # a plain int: see the note above


def main(args=None) -> int:
    """Spin the node (SingleThreadedExecutor + the producer thread); SIGINT/SIGTERM shut it down cleanly."""
    _install_quiet_signal_handlers()
    rclpy.init(args=args)
    node = executor = None
    rc = 0
    try:
        node = DystreamNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if node.get_parameter("autostart").value:
            node.autostart()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except InvalidParameterValueException as e:  # e.g. a value out of range in the params file
        print(f"[dystream_node] invalid parameter: {e}", file=sys.stderr, flush=True)
        rc = 2
    except Exception:
        # SIGINT/SIGTERM shut the context down; depending on where the executor was, that surfaces as
        # ExternalShutdownException or as an RCLError from the next wait. Only a live context is an error.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.release_for_exit()
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        if node is not None:
            try:
                node.destroy_node()
            except Exception:  # noqa: BLE001
                pass
        rclpy.try_shutdown()
        _ignore_signals_for_exit()
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
