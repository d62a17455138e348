"""``dystream_node``: the talking/listening face as a ROS 2 lifecycle node.

Inputs (relative names, remappable): ``speaker_audio`` (the robot's own speech, e.g. TTS) and
``listener_audio`` (the interlocutor, e.g. a microphone), ``dystream_ros/AudioChunk`` by default or
``audio_common_msgs/AudioDataStamped`` (+ ``<topic>_info``), the rates in ``sample_rates``,
int16/float32, mono or interleaved multi-channel; reliable QoS by default (``input_qos``).

Outputs (relative names), stamped with the audio time of the frame start: ``face_image`` (rgb8; drawn by
the ``renderer``), optional ``face_image/compressed``, ``motion_latent``, ``state`` (AvatarState),
``face_articulation`` (when the model reads out articulation); latched ``~/info`` (JSON: profile,
checkpoint, renderer, sizes, timing); ``/diagnostics`` at 1 Hz. Services ``~/reset``, ``~/interrupt``
(Trigger; also the ``interrupt`` topic, std_msgs/Empty: barge-in drops queued speaker audio, counted),
``~/set_reference``.

Timing: a 40 ms timer on the node clock (ROS time; follows /clock under use_sim_time) only wakes the
node; which frames to produce is decided by :class:`dystream_ros.runtime.scheduler.FrameScheduler` in
audio time (due when audio + lookahead has arrived on both channels, or a channel's wait expired, and
the frame's stamp is in the past of the clock; at most ``catch_up_limit`` per tick, the rest skipped
and counted). Lifecycle: configure loads and warms up the model; activate starts subscriptions and the
timer; deactivate/cleanup undo them.

Threads: the model work runs on a producer thread of its own, woken by the 40 ms timer and by audio
that completes a due frame, so executor callbacks stay short (buffers under a lock); images are rendered
and frames published on a render thread (``render_thread``), overlapping the next model step. ``main``
spins a SingleThreadedExecutor: rclpy's MultiThreadedExecutor busy-spins its wait loop, holding the GIL,
while any callback is in flight (model steps 10-100x slower, measured). Callback groups are still set
for an executor that runs callbacks concurrently: the timer, one group per audio channel (chunks in
arrival order), and diagnostics/services, each mutually exclusive.
"""

from __future__ import annotations

import threading
import time
import traceback

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType, JumpThreshold
from rclpy.duration import Duration
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from std_msgs.msg import Empty
from std_srvs.srv import Trigger

from dystream_ros.audio import AudioFormatError
from dystream_ros.runtime.engine import AvatarEngine, FrameOut
from dystream_ros.runtime.feeder import SessionOutOfStep
from dystream_ros.runtime.intake import AudioIntake
from dystream_ros.runtime.producer import Producer
from dystream_ros.runtime.settings import PARAM_BY_NAME, PARAMS, Settings
from dystream_ros.runtime.stats import StreamStats
from dystream_ros.srv import SetReference

from .inputs import CHANNELS, AudioInputs
from .outputs import FacePublishers, qos_profile
from .params import descriptor, ros_default
from .support import ThrottledLog, diagnostic_array, guarded, spin

NODE_NAME = "dystream_node"
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
        self._settings = self._read_settings(strict=False)
        self._lock = threading.Lock()  # node flags (clock jump, optional publishers); counters: _stats.lock
        self._session_lock = threading.RLock()  # model session, publishers, lifecycle resources
        self._timer_group = MutuallyExclusiveCallbackGroup()
        # Audio never waits behind the frame timer. Each channel has its own mutually exclusive group:
        # rclpy takes a message inside the worker thread, so two chunks of one channel in a reentrant
        # group can reach the buffer in swapped order (seen under load); the two channels (and the
        # audio_common info topics) still run concurrently with each other and with the timer.
        self._audio_groups = {c: MutuallyExclusiveCallbackGroup() for c in CHANNELS}
        self._info_group = ReentrantCallbackGroup()
        self._aux_group = MutuallyExclusiveCallbackGroup()
        self._warn_throttled = ThrottledLog(self.get_logger(), 5.0)
        self._stats = StreamStats()
        self._intake: AudioIntake | None = None
        self._state_label = "unconfigured"
        self._configure_error: str | None = None
        self._active = False
        self._engine: AvatarEngine | None = None
        self._inputs: AudioInputs | None = None  # from configure to cleanup
        self._outputs: FacePublishers | None = None
        self._timer = None
        # the model work runs on a thread of its own; the 40 ms timer and arriving audio only wake it
        self._producer = Producer(self._on_tick, self._on_tick_error, name="dystream_producer")
        self._optional_pubs_dirty = False  # publish_image / publish_compressed changed at runtime
        self._meta: dict = {}

        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(
            self._settings.diagnostics_period_s, self._publish_diagnostics,
            callback_group=self._aux_group, clock=Clock(clock_type=ClockType.STEADY_TIME))
        log = self.get_logger()
        for srv_type, name, handler in ((Trigger, "~/reset", self._reset),
                                        (Trigger, "~/interrupt", self._interrupt_service),
                                        (SetReference, "~/set_reference", self._set_reference)):
            self.create_service(srv_type, name, guarded(log, name[2:], handler),
                                callback_group=self._aux_group)
        self.create_subscription(Empty, "interrupt", lambda _msg: self._interrupt("interrupt topic"),
                                 qos_profile(True, 10), callback_group=self._aux_group)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        # Forward jumps of the ROS clock (sim time: a bag seek) restart the stream; the scheduler cannot
        # tell them from a slow tick. Backward jumps are caught by the scheduler itself.
        self._clock_jump: str | None = None
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=Duration(seconds=self._settings.max_clock_jump_s),
                          min_backward=None, on_clock_change=False),
            post_callback=self._on_clock_jump)

    def _engine_log(self, level: str, msg: str) -> None:
        (self.get_logger().warning if level == "warning" else self.get_logger().info)(msg)

    def _read_settings(self, strict: bool = True) -> Settings:
        """Settings of the parameters (``ValueError`` if invalid; ``strict=False``: then the defaults)."""
        try:
            return Settings.from_params({p.name: self.get_parameter(p.name).value for p in PARAMS})
        except ValueError:
            if strict:
                raise
            return Settings()

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
            updates[p.name] = spec.coerce(p.value)
        if updates:
            engine = self._engine
            if engine is not None:  # the scheduler now, the session before its next frame
                try:
                    engine.update(**updates)
                except ValueError as e:  # e.g. renderer photo with a reference the rig refuses
                    return SetParametersResult(successful=False, reason=str(e))
                self._renderer_news()
            self._settings = self._settings.replace(**updates)
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
        except Exception as e:  # noqa: BLE001 - report anything as a failed transition, keep running
            known = isinstance(e, ConfigureError)  # a message meant for the operator: no traceback
            self._configure_error = str(e) if known else f"{type(e).__name__}: {e}"
            self.get_logger().error(f"configure failed: {self._configure_error}"
                                    + ("" if known else f"\n{traceback.format_exc()}"))
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
        try:
            s = self._settings = self._read_settings()  # every value validated (choices, ranges, types)
            self._inputs = AudioInputs(self, s, self._stats, self._warn_throttled, groups=self._audio_groups,
                                       info_group=self._info_group)
            engine = AvatarEngine(s, log=self._engine_log)
        except (ImportError, ValueError) as e:  # EngineError is a ValueError
            raise ConfigureError(str(e)) from e
        self._engine = engine
        self._intake = AudioIntake(s, self._stats)
        out_size = s.image_size or engine.image_size
        self._meta = {"node": self.get_fully_qualified_name(), **engine.meta, "image_size": out_size,
                      "frame_id": s.frame_id, "audio_msg_type": s.audio_msg_type}
        # publishers (lifecycle: they publish only while active)
        self._outputs = FacePublishers(self, s, self._meta, out_size, engine.reference)

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        with self._session_lock:
            self._engine.reset()
            self._outputs.reset()
            with self._lock:
                self._clock_jump = None  # e.g. the switch to sim time at start-up: nothing to reset
                self._optional_pubs_dirty = False
            self._inputs.open(self._on_audio)
            self._outputs.sync(self._settings, active=False)  # publish_* may have changed while inactive
            result = super().on_activate(state)
            self._active = True
            self._timer = self.create_timer(1.0 / float(self._meta["fps"]), self._producer.wake,
                                            callback_group=self._timer_group)
            self._producer.start()
            self._outputs.publish_info()
            self._state_label = "active"
        self.get_logger().info("active: listening on speaker_audio and listener_audio")
        return result

    def _stop(self) -> None:
        """Stop producing (timer, subscriptions; frames still rendering are published); session lock held."""
        self._active = False
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        if self._engine is not None:
            self._engine.drain()
        if self._inputs is not None:
            self._inputs.close()

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
            if self._engine is not None:
                self._engine.close()
            if self._outputs is not None:
                self._outputs.destroy()
            self._engine = self._intake = self._inputs = self._outputs = None

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
        self._release()

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
        intake, inputs = self._intake, self._inputs
        if intake is None or inputs is None:  # not configured: nothing to decode for
            with self._stats.lock:
                self._stats.dropped_inactive += 1
            return
        try:
            raw = inputs.decode(msg, channel)
        except AudioFormatError as e:
            with self._stats.lock:
                self._stats.bad_messages[e.kind] += 1
            self._warn_throttled(f"bad:{e.kind}:{channel}", f"{channel}_audio: {e}; message dropped")
            return
        engine = self._engine if self._active else None
        notices, due = intake.take(engine, channel, raw.data, raw.encoding, raw.channels, raw.sample_rate,
                                   raw.stamp_ns, arrival=arrival, now_ns=now_ns,
                                   want_due=self._settings.wake_on_audio)
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

    def destroy_node(self):
        self._producer.stop()  # ends the producer thread
        ok = super().destroy_node()
        # rclpy's lifecycle node leaves its state machine holding the rcl node, so the node itself would
        # only be finalised when this object is garbage-collected, and finalising it unregisters the
        # /rosout publisher *by node name*: a later node of the same name in this process (a restart, a
        # test) would then lose its /rosout output at a random moment. Release it now.
        self._state_machine.destroy_when_not_in_use()
        return ok

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
                                     f"(catch_up_limit={self._settings.catch_up_limit}; "
                                     f"{engine.scheduler.stats.skipped_frames} in total)")
            with self._lock:
                dirty, self._optional_pubs_dirty = self._optional_pubs_dirty, False
            if dirty:
                self._outputs.sync(self._settings, active=True)
            if plan.idle and self._outputs.idle(now_ns, self._settings):
                with self._stats.lock:
                    self._stats.idle_frames += 1
            try:  # frames are published as their images are done (on the render thread by default)
                engine.produce(plan, self._publish_frame, self._on_tick_error)
            except SessionOutOfStep as e:
                with self._stats.lock:
                    self._stats.step_errors += 1
                self.get_logger().error(f"{e}; stream reset")

    def _publish_frame(self, out: FrameOut) -> None:
        processing_ms, av_ms, now_w = self._outputs.frame(out, self._settings)
        self._stats.frame_published(out.step_ms, out.frame.timings.get("render", float("nan")), processing_ms,
                                    av_ms, now_w)

    # ==========================================================================================
    # services
    def _reset(self, request, response):
        with self._session_lock:
            if self._engine is None:
                response.success, response.message = False, f"node is {self._state_label}: nothing to reset"
                return response
            self._engine.reset()
            self._outputs.reset()
        self.get_logger().info("reset: stream cleared; the next audio starts a new stream")
        response.success, response.message = True, "stream reset"
        return response

    def _renderer_news(self) -> None:  # after a renderer change (parameter, or auto on a new reference)
        e, meta = self._engine, self._meta
        if e is not None and self._outputs is not None and meta.get("renderer") != e.renderer:
            meta.update(renderer=e.renderer, renderer_reason=e.renderer_reason)
            self.get_logger().info(f"renderer: {e.renderer} ({e.renderer_reason})")
            self._outputs.publish_info()

    def _interrupt(self, source: str) -> tuple[bool, str]:
        """Barge-in: the queued speaker audio is dropped (counted) and the face goes on listening."""
        with self._session_lock:
            engine = self._engine
            if engine is None or not self._active:
                return False, f"node is {self._state_label}: nothing to interrupt"
            frame, dropped = engine.interrupt("speaker", wall=time.monotonic())
        ms = dropped * 1000.0 / engine.pipe.sample_rate
        self.get_logger().info(f"interrupt ({source}): dropped {ms:.0f} ms of queued speaker audio")
        return True, f"dropped {dropped} queued speaker samples ({ms:.0f} ms); silent from frame {frame}"

    def _interrupt_service(self, request, response):
        response.success, response.message = self._interrupt("~/interrupt")
        return response

    def _set_reference(self, request, response):
        engine = self._engine
        if engine is None:
            response.success, response.message = False, f"node is {self._state_label}: configure it first"
            return response
        try:  # decoded here, off the frame path; bounded and directory-limited by the engine
            img, source = engine.load_reference_request(request.path, request.image)
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
            except ValueError as e:  # the model, or the photo rig (no usable face)
                response.success, response.message = False, f"refused: {e}"
                return response
            self._outputs.set_reference(img)
            self._renderer_news()
        self.get_logger().info(f"reference face set from {source}")
        response.success, response.message = True, f"reference set from {source}"
        return response

    # ==========================================================================================
    # diagnostics
    def stats_snapshot(self) -> dict:
        """Counters and latency percentiles (also what /diagnostics reports)."""
        d = {"lifecycle_state": self._state_label,
             **self._stats.snapshot(self._engine, self.get_clock().now().nanoseconds)}
        inputs = self._inputs
        for ch in CHANNELS:
            d[f"{ch}_publishers"] = inputs.publisher_count(ch) if inputs is not None else 0
        d.update({k: self._meta[k] for k in ("backend", "precision", "device", "profile", "checkpoint")
                  if self._meta})
        return d

    def _publish_diagnostics(self) -> None:
        d = self.stats_snapshot()
        level, message = self._stats.health(d, configure_error=self._configure_error,
                                            step_warn_ms=self._settings.step_warn_ms)
        arr = diagnostic_array(f"{self.get_fully_qualified_name()}: talking head", d, level, message,
                               self.get_clock().now().to_msg(), hardware_id=str(d.get("device") or "none"))
        try:
            self._diag_pub.publish(arr)
        except Exception:  # noqa: BLE001 - context shutting down
            pass


def main(args=None) -> int:
    """Spin the node (SingleThreadedExecutor + the producer thread); SIGINT/SIGTERM shut it down cleanly."""
    def start(node: DystreamNode) -> None:
        if node.get_parameter("autostart").value:
            node.autostart()

    return spin(DystreamNode, NODE_NAME, start=start, release=DystreamNode.release_for_exit, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
