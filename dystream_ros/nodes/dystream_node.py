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

import json
import math
import sys
import threading
import time
import traceback

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType, JumpThreshold
from rclpy.duration import Duration
from rclpy.exceptions import InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn

try:  # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from dystream_ros.audio import AudioFormatError
from dystream_ros.io.images import fit_square
from dystream_ros.msg import AvatarState, MotionLatent
from dystream_ros.runtime.engine import AvatarEngine, EngineError, FrameOut
from dystream_ros.runtime.feeder import SessionOutOfStep
from dystream_ros.runtime.intake import AudioIntake
from dystream_ros.runtime.producer import Producer
from dystream_ros.runtime.scheduler import RateGate
from dystream_ros.runtime.settings import PARAM_BY_NAME, PARAMS, Settings
from dystream_ros.runtime.stats import StreamStats, Throttle
from dystream_ros.srv import SetReference

from . import audio_adapters as adapters
from .image_codec import image_msg_to_rgb
from .outputs import latent_msg, ns_to_time, publish_images, qos_profile, state_msg
from .params import descriptor, ros_default
from .signals import ignore_signals_for_exit, install_quiet_signal_handlers

NODE_NAME = "dystream_node"
_LEVELS = {"ok": DiagnosticStatus.OK, "warn": DiagnosticStatus.WARN, "error": DiagnosticStatus.ERROR}
SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE


class ConfigureError(RuntimeError):
    """A configure failure with a message meant for the operator."""


class DystreamNode(LifecycleNode):
    """The avatar node (see the module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        for spec in PARAMS:
            self.declare_parameter(spec.name, ros_default(spec), descriptor(spec))
        self._rt = {s.name: self.get_parameter(s.name).value for s in PARAMS}
        self._lock = threading.Lock()  # node flags (clock jump, optional publishers); counters: _stats.lock
        self._session_lock = threading.RLock()  # model session, publishers, lifecycle resources
        self._timer_group = MutuallyExclusiveCallbackGroup()
        # Audio never waits behind the frame timer. Each channel has its own mutually exclusive group:
        # rclpy takes a message inside the worker thread, so two chunks of one channel in a reentrant
        # group can reach the buffer in swapped order (seen under load); the two channels (and the
        # audio_common info topics) still run concurrently with each other and with the timer.
        self._audio_groups = {c: MutuallyExclusiveCallbackGroup() for c in ("speaker", "listener")}
        self._info_group = ReentrantCallbackGroup()
        self._aux_group = MutuallyExclusiveCallbackGroup()
        self._throttle = Throttle(5.0)
        self._stats = StreamStats()
        self._intake: AudioIntake | None = None
        self._state_label = "unconfigured"
        self._configure_error: str | None = None
        self._active = False
        self._engine: AvatarEngine | None = None
        self._pubs: dict[str, object] = {}
        self._subs: list = []
        self._audio_subs: dict = {}  # channel -> its audio subscription (publisher counts in diagnostics)
        self._timer = None
        # the model work runs on a thread of its own; the 40 ms timer and arriving audio only wake it
        self._producer = Producer(self._on_tick, self._on_tick_error, name="dystream_producer")
        self._audio_info: dict[str, object] = {}
        self._idle_gate = RateGate()  # idle-face publications on a fixed grid of clock times
        self._optional_pubs_dirty = False  # publish_image / publish_compressed changed at runtime
        self._idle_image: np.ndarray | None = None
        self._meta: dict = {}
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
    def _engine_log(self, level: str, msg: str) -> None:
        (self.get_logger().warning if level == "warning" else self.get_logger().info)(msg)

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
            spec = PARAM_BY_NAME.get(p.name)
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
            engine = self._engine
            if engine is not None:
                engine.update(**updates)  # the scheduler now, the session before its next frame
            with self._lock:
                if set(updates) & {"publish_image", "publish_compressed"}:
                    self._optional_pubs_dirty = True
            self.get_logger().info("parameters updated: " + ", ".join(f"{k}={v}" for k, v in updates.items()))
        return SetParametersResult(successful=True)

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
        rt = {s.name: self.get_parameter(s.name).value for s in PARAMS}
        self._rt.update(rt)
        try:
            settings = Settings.from_params(rt)  # every value validated (choices, ranges, types)
        except ValueError as e:
            raise ConfigureError(str(e)) from e
        try:
            self._msg_class = adapters.message_class(rt["audio_msg_type"])
        except (ImportError, ValueError) as e:
            raise ConfigureError(str(e)) from e

        try:
            engine = AvatarEngine(settings, log=self._engine_log)
        except EngineError as e:
            raise ConfigureError(str(e)) from e
        self._engine = engine
        self._intake = AudioIntake(settings, self._stats)
        self._out_size = int(rt["image_size"]) or int(engine.pipe.image_size)
        # the idle face (before any audio) is the reference itself; none when not rendering
        self._idle_image = fit_square(engine.reference, self._out_size) if rt["render"] else None

        # publishers (lifecycle: they publish only while active)
        reliable = rt["output_reliability"] == "reliable"
        depth = int(rt["output_qos_depth"])
        out = qos_profile(reliable, depth)
        self._out_qos = out
        self._pubs = {
            "latent": self.create_lifecycle_publisher(MotionLatent, "motion_latent", out),
            "state": self.create_lifecycle_publisher(AvatarState, "state", out),
            "info": self.create_lifecycle_publisher(String, "~/info", qos_profile(True, 1, latched=True)),
        }
        self._sync_optional_publishers()
        self._meta = {"node": self.get_fully_qualified_name(), **engine.meta, "image_size": self._out_size,
                      "frame_id": rt["frame_id"], "audio_msg_type": rt["audio_msg_type"]}

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        with self._session_lock:
            rt = self._rt
            self._engine.reset()
            self._idle_gate.reset()
            self._audio_info.clear()
            with self._lock:
                self._clock_jump = None  # e.g. the switch to sim time at start-up: nothing to reset
            if rt["input_qos"] == "sensor_data":
                in_qos = qos_profile(False, int(rt["input_qos_depth"]))
            else:
                in_qos = qos_profile(True, int(rt["input_qos_depth"]))
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
                        lambda msg, c=channel: self._audio_info.__setitem__(c, msg), qos_profile(True, 1),
                        callback_group=self._info_group))
            with self._lock:
                self._optional_pubs_dirty = False
            self._sync_optional_publishers()  # publish_* may have changed while inactive
            result = super().on_activate(state)
            self._active = True
            self._timer = self.create_timer(1.0 / float(self._meta["fps"]), self._producer.wake,
                                            callback_group=self._timer_group)
            self._producer.start()
            self._pubs["info"].publish(String(data=json.dumps(self._meta, sort_keys=True)))
            self._state_label = "active"
        self.get_logger().info("active: listening on speaker_audio and listener_audio")
        return result

    def _transport_events(self, channel: str) -> SubscriptionEventCallbacks:
        """DDS events of an audio subscription, counted and logged: a publisher whose QoS cannot match
        (a best-effort publisher and ``input_qos: reliable``), and messages DDS lost (best effort)."""
        def incompatible(info) -> None:
            with self._stats.lock:
                self._stats.incompatible_publishers[channel] += info.total_count_change
            self.get_logger().warning(
                f"{channel}_audio: a publisher's QoS is incompatible with this subscription "
                f"(input_qos={self._rt['input_qos']}; last policy: {info.last_policy_kind}); its audio "
                f"never arrives. Publish reliable, or set input_qos:=sensor_data")

        def lost(info) -> None:
            with self._stats.lock:
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
            self._engine = None
            self._intake = None

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
        """Every message ends in exactly one counter (:class:`AudioIntake`; ``internal`` for an error here);
        the callback's duration is recorded."""
        arrival = time.monotonic()
        with self._stats.lock:
            self._stats.received[channel] += 1
        try:
            self._take_audio(msg, channel, arrival)
        except Exception as e:  # noqa: BLE001 - one message never takes the node down
            with self._stats.lock:
                self._stats.bad_messages["internal"] += 1
            self._warn_throttled(f"internal:{channel}", f"{channel}_audio: message dropped after an internal "
                                 f"error: {type(e).__name__}: {e}\n{traceback.format_exc()}", level="error")
        finally:
            self._stats.callback_done((time.monotonic() - arrival) * 1000.0)

    def _take_audio(self, msg, channel: str, arrival: float) -> None:
        now_ns = self.get_clock().now().nanoseconds
        intake = self._intake
        if intake is None:  # not configured: nothing to decode for
            with self._stats.lock:
                self._stats.dropped_inactive += 1
            return
        try:
            if self._rt["audio_msg_type"] == adapters.AUDIO_CHUNK:
                raw = adapters.from_audio_chunk(msg)
            else:
                raw = adapters.from_audio_common(msg, self._audio_info.get(channel))
        except AudioFormatError as e:
            with self._stats.lock:
                self._stats.bad_messages[e.kind] += 1
            self._warn_throttled(f"bad:{e.kind}:{channel}", f"{channel}_audio: {e}; message dropped")
            return
        engine = self._engine if self._active else None
        notices, due = intake.take(engine, channel, raw.data, raw.encoding, raw.channels, raw.sample_rate,
                                   raw.stamp_ns, arrival=arrival, now_ns=now_ns,
                                   want_due=self._rt["wake_on_audio"])
        if due:
            self._producer.wake()  # audio completed a due frame: produce it now, not at the next tick
        for n in notices:
            self._warn_throttled(n.key, n.text, level=n.level)

    # ==========================================================================================
    # the frame timer
    def _on_tick_error(self, e: Exception) -> None:
        with self._stats.lock:
            self._stats.step_errors += 1
        self.get_logger().error(f"frame production failed: {e!r}")

    def stop_producer(self) -> None:
        """End the producer thread (node shutdown)."""
        self._producer.stop()

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
            engine = self._engine
            if not self._active or engine is None:
                return
            now_ns = self.get_clock().now().nanoseconds
            if now_ns == 0:
                return
            wall = time.monotonic()
            with self._lock:
                jump, self._clock_jump = self._clock_jump, None
            if jump and engine.scheduler.active:
                engine.reset(clock_jump=True)
                self.get_logger().warning(f"{jump}: stream reset (the next audio starts a new one)")
            plan = engine.tick(now_ns, wall=wall)
            if plan.reset_reason:
                self.get_logger().warning(
                    f"{plan.reset_reason}: stream reset (the next audio starts a new one)")
            if plan.stream_started:
                self.get_logger().info(f"stream started at stamp {engine.scheduler.origin_ns / 1e9:.3f} s")
            if plan.skipped:
                self._warn_throttled("skip", f"behind the clock: skipped {plan.skipped} frame(s) "
                                     f"(catch_up_limit={self._rt['catch_up_limit']}; "
                                     f"{engine.scheduler.stats.skipped_frames} in total)")
            with self._lock:
                dirty, self._optional_pubs_dirty = self._optional_pubs_dirty, False
            if dirty:
                self._sync_optional_publishers()
            frames = engine.frames(plan)
            if plan.idle:
                self._publish_idle(now_ns)
            try:
                for out in frames:
                    self._publish_frame(out)
            except SessionOutOfStep as e:
                with self._stats.lock:
                    self._stats.step_errors += 1
                self.get_logger().error(f"{e}; stream reset")

    def _publish_frame(self, out: FrameOut) -> None:
        rt, meta = self._rt, self._meta
        job, frame = out.job, out.frame
        stamp = ns_to_time(job.stamp_ns)
        now_w = time.monotonic()
        processing_ms, av_ms = out.latency_ms(now_w)
        if rt["publish_state"]:
            self._pubs["state"].publish(state_msg(out, stamp, meta["frame_id"], processing_ms, av_ms))
        if rt["publish_latent"]:
            self._pubs["latent"].publish(latent_msg(out, stamp, meta["frame_id"], meta["profile"],
                                                    meta["checkpoint"], processing_ms))
        if frame.image is not None and ("image" in self._pubs or "compressed" in self._pubs):
            publish_images(self._pubs, fit_square(frame.image, self._out_size), stamp, meta["frame_id"],
                           int(rt["jpeg_quality"]))
        self._stats.frame_published(out.step_ms, frame.timings.get("render", float("nan")), processing_ms,
                                    av_ms, now_w)

    def _publish_idle(self, now_ns: int) -> None:
        hz = float(self._rt["idle_publish_hz"])
        if hz <= 0 or self._idle_image is None:
            return
        if not self._idle_gate(now_ns, hz):
            return
        publish_images(self._pubs, self._idle_image, ns_to_time(now_ns), self._meta["frame_id"],
                       int(self._rt["jpeg_quality"]))
        with self._stats.lock:
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
            if self._engine is None:
                response.success, response.message = False, f"node is {self._state_label}: nothing to reset"
                return response
            self._engine.reset()
            self._idle_gate.reset()
        self.get_logger().info("reset: stream cleared; the next audio starts a new stream")
        response.success, response.message = True, "stream reset"
        return response

    def _set_reference(self, request, response):
        engine = self._engine
        if engine is None:
            response.success, response.message = False, f"node is {self._state_label}: configure it first"
            return response
        try:
            if request.path:
                img, source = engine.load_reference_file(request.path)
            elif request.image.width or request.image.height or len(request.image.data):
                img = image_msg_to_rgb(request.image, engine.reference_limits)
                source = f"{request.image.width}x{request.image.height} {request.image.encoding} image"
            else:
                raise ValueError("give either path or image")
        except (FileNotFoundError, ValueError) as e:
            response.success, response.message = False, str(e)
            self._warn_throttled("set_reference", f"set_reference refused: {e}")
            return response
        with self._session_lock:
            if self._engine is None:
                response.success, response.message = False, f"node is {self._state_label}: configure it first"
                return response
            try:
                self._engine.set_reference(img)
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
        d = {"lifecycle_state": self._state_label,
             **self._stats.snapshot(self._engine, self.get_clock().now().nanoseconds)}
        for ch in ("speaker", "listener"):
            d[f"{ch}_publishers"] = self._publisher_count(ch)
        for k in ("backend", "precision", "device", "profile", "checkpoint"):
            if k in self._meta:
                d[k] = self._meta[k]
        return d

    def _publish_diagnostics(self) -> None:
        d = self.stats_snapshot()
        st = DiagnosticStatus()
        st.name = f"{self.get_fully_qualified_name()}: talking head"
        st.hardware_id = str(d.get("device") or "none")
        level, st.message = self._stats.health(d, configure_error=self._configure_error,
                                                step_warn_ms=self._rt["step_warn_ms"])
        st.level = _LEVELS[level]

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


def main(args=None) -> int:
    """Spin the node (SingleThreadedExecutor + the producer thread); SIGINT/SIGTERM shut it down cleanly."""
    install_quiet_signal_handlers()
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
        ignore_signals_for_exit()
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
