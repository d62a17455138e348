"""The streaming avatar engine: audio in, due frames out, with no ROS and no clock of its own.

:class:`AvatarEngine` owns what every driver of the model needs and used to rebuild for itself: the
pipeline and its streaming session, the reference face, the :class:`FrameScheduler` (which frames are
due, in audio time) and the :class:`SessionFeeder` (the one path from a tick plan to ``session.step``).
It is built from one frozen :class:`~dystream_ros.runtime.settings.Settings`; ``dystream_node`` (ROS
parameters), ``dystream replay`` (a parameter file, on a simulated clock) and ``dystream bench`` drive
it the same way::

    engine = AvatarEngine(settings)
    engine.push("speaker", samples, rate, stamp_ns, arrival=wall, now_ns=clock)   # any thread
    plan = engine.tick(clock, wall=wall)                                           # one thread
    for out in engine.frames(plan):                                                # FrameOut per due frame
        ...

Threads: :meth:`push` and :meth:`tick` may run on different threads (the scheduler is guarded by
:attr:`lock`); :meth:`tick`, :meth:`frames`, :meth:`update`, :meth:`reset` and :meth:`set_reference`
touch the model session and belong to one thread at a time (the caller's: the node's producer holds
its session lock).
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dystream_ros.config import NS as _NS
from dystream_ros.runtime.feeder import SessionFeeder
from dystream_ros.runtime.render_thread import RenderThread
from dystream_ros.runtime.renderers import Face, build_face, choose, photo_size
from dystream_ros.runtime.scheduler import FrameJob, FrameScheduler, SchedulerConfig, TickPlan
from dystream_ros.runtime.settings import PARAM_BY_NAME, Settings

__all__ = ["STATES", "AvatarEngine", "EngineError", "FrameOut", "avatar_state", "model_sampler",
           "scheduler_config"]

#: AvatarState.msg's constants (IDLE, SPEAKING, LISTENING, BOTH); a test checks they agree.
STATES = {"idle": 0, "speaking": 1, "listening": 2, "both": 3}

_OFFLINE_ORIGIN_NS = _NS  # offline streams start at t = 1 s (a zero stamp reads as "no stamp")

#: Settings the model session reads (applied before the next frame when they change).
SESSION_FIELDS = ("steps", "temperature", "head_temperature", "guidance_speaker", "guidance_listener",
                  "guidance_anchor", "guidance_head")
#: Settings the scheduler reads at runtime.
SCHEDULER_FIELDS = ("catch_up_limit", "speaker_wait_ms", "listener_wait_ms", "channel_idle_ms",
                    "stamp_tolerance_ms", "stamp_jump_ms", "max_stamp_skew_s")


class EngineError(ValueError):
    """Settings the engine cannot be built with (a missing checkpoint, a too short lookahead, ...)."""


def avatar_state(speaker_db: float, listener_db: float, threshold_db: float) -> int:
    """The AvatarState constant for a frame's channel levels: a channel above ``threshold_db`` is audible."""
    s, li = speaker_db > threshold_db, listener_db > threshold_db
    return STATES["both"] if s and li else STATES["speaking"] if s else STATES["listening"] if li \
        else STATES["idle"]


def _runtime_scheduler(s: Settings) -> dict:
    return dict(catch_up_limit=s.catch_up_limit, speaker_wait_s=s.speaker_wait_ms / 1000.0,
                listener_wait_s=s.listener_wait_ms / 1000.0, channel_idle_s=s.channel_idle_ms / 1000.0,
                stamp_tolerance_s=s.stamp_tolerance_ms / 1000.0,
                stamp_jump_s=s.stamp_jump_ms / 1000.0, max_stamp_skew_s=s.max_stamp_skew_s)


def scheduler_config(s: Settings, pipe) -> SchedulerConfig:
    """The scheduler's timing for ``pipe`` under ``s``, derived here and only here from the model's audio
    config (``pipe.config.audio``: rate, frame, lookahead, context): ``lookahead_ms`` (-1 = the model's;
    shorter than the model's is refused: frames would be computed without the audio they read), buffers,
    waits and tolerances."""
    a = pipe.config.audio
    lookahead = int(a.lookahead_samples)
    if s.lookahead_ms >= 0:
        lookahead = int(round(s.lookahead_ms * a.sample_rate / 1000))
        if lookahead < a.lookahead_samples:
            raise EngineError(f"lookahead_ms={s.lookahead_ms} is shorter than the model's "
                              f"{a.lookahead_ms} ms lookahead; use -1 or >= {a.lookahead_ms}")
    return SchedulerConfig(sample_rate=int(a.sample_rate), samples_per_frame=int(a.samples_per_frame),
                           lookahead_samples=lookahead, context_samples=int(a.context_samples),
                           buffer_s=float(s.buffer_s), max_clock_jump_s=float(s.max_clock_jump_s),
                           **_runtime_scheduler(s))


def model_sampler(pipe) -> dict:
    """The checkpoint's own sampler defaults (``SamplerConfig``) as settings: what offline tools run
    with, where the node takes its parameters."""
    return {k: getattr(pipe.config.sampler, k) for k in SESSION_FIELDS}


def _apply_session_settings(session, s: Settings) -> None:
    session.steps = int(s.steps)
    session.temperature = float(s.temperature)
    session.head_temperature = float(s.head_temperature)
    session.guidance = dataclasses.replace(session.guidance, speaker=s.guidance_speaker,
                                           listener=s.guidance_listener, anchor=s.guidance_anchor,
                                           head=s.guidance_head)


@dataclass
class FrameOut:
    """One produced frame: the scheduler's job, the model's frame and what a publisher reports."""

    job: FrameJob  # index, stamp_ns, channel levels, when its audio arrived (caller's wall clock)
    frame: object  # dystream_ros.model.Frame: latent (D,), image (S, S, 3) uint8 or None, timings
    state: int  # STATES value
    step_ms: float  # wall time of session.step() (model + rendering, also when rendered on the render thread)
    session_skipped: int  # frames skipped so far in this stream
    face: Face | None = None  # what the frame is rendered on (the renderer and reference when it was stepped)
    articulation: np.ndarray | None = None  # (13,) PARAM_RANGES units, when the model has a read-out

    @property
    def model_ms(self) -> float:
        """Audio encoder + generator + flow head (rendering excluded): MotionLatent.step_ms."""
        t = self.frame.timings or {}
        return float(sum(t.get(k, 0.0) for k in ("audio", "generator", "head"))) if t else self.step_ms

    def latency_ms(self, publish_wall: float) -> tuple[float, float]:
        """(processing_ms, av_offset_ms) of a frame published at ``publish_wall`` (the clock of
        ``arrival`` in :meth:`AvatarEngine.push`): since its last needed sample arrived (or its wait
        expired), and since its first sample arrived (nan when that sample never did)."""
        proc = (publish_wall - self.job.ready_wall) * 1000.0
        av = (publish_wall - self.job.start_wall) * 1000.0 if math.isfinite(self.job.start_wall) else math.nan
        return proc, av


class AvatarEngine:
    """Pipeline session + frame scheduler + feeder, built from :class:`Settings` (see the module doc).

    ``pipe`` reuses a loaded pipeline (tests, benchmarks); otherwise it is loaded from the settings.
    ``reference`` (RGB uint8) replaces the settings' reference file. ``log(level, message)`` receives
    what the engine has to say (``level``: info / warning).
    """

    def __init__(self, settings: Settings, *, pipe=None, reference: np.ndarray | None = None,
                 log: Callable[[str, str], None] | None = None):
        import torch

        self._log = log or (lambda level, msg: None)
        if settings.num_threads > 0:
            torch.set_num_threads(settings.num_threads)  # the same math, the same thread count everywhere
        if pipe is None:
            pipe = self._load_pipeline(settings)
        else:
            # images need a decoder or the articulation (photo rig) of every frame
            settings = settings.replace(render=settings.render and (pipe.render or pipe.readout is not None))
        self.settings = settings
        self.pipe = pipe
        self.reference = self._load_reference(settings) if reference is None else reference
        self.session = pipe.start_session(self.reference, seed=settings.seed)
        _apply_session_settings(self.session, settings)
        self._session_dirty = False
        self.feeder = SessionFeeder(self.session)
        self.lock = threading.Lock()  # the scheduler (push and tick may run on different threads)
        self.scheduler = FrameScheduler(scheduler_config(settings, pipe))
        self._offline_origin = _OFFLINE_ORIGIN_NS
        self._render_thread: RenderThread | None = None  # produce(): started on first use
        try:
            self.renderer, self.renderer_reason, self._face = self._renderer_for(settings.renderer,
                                                                                 self.reference)
        except ValueError as e:  # RendererUnavailable, PhotoRefused
            raise EngineError(f"renderer {settings.renderer}: {e}") from e
        self._log("info", f"renderer: {self.renderer} ({self.renderer_reason})")
        self._warm_up(settings.warmup_frames)

    # ------------------------------------------------------------------------------------------
    # construction
    @staticmethod
    def _load_pipeline(s: Settings):
        import torch

        from dystream_ros.runtime.session import load_pipeline

        device = s.device or "cpu"
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        checkpoint = s.checkpoint or None
        try:
            return load_pipeline(checkpoint=checkpoint, profile=s.profile, device=device, render=s.render,
                                 backend=s.backend)
        except FileNotFoundError as e:
            what = "the embedded default checkpoint" if checkpoint is None else f"checkpoint {checkpoint!r}"
            raise EngineError(
                f"{what} could not be loaded: {str(e).rstrip('.')}. To run without a trained checkpoint "
                f"start with checkpoint:=random (random weights), e.g. "
                f"`ros2 run dystream_ros dystream_node --ros-args -p checkpoint:=random`") from e
        except NotImplementedError as e:
            raise EngineError(str(e)) from e
        except Exception as e:  # noqa: BLE001 - a corrupt/incompatible checkpoint, a bad device, ...
            raise EngineError(f"loading the model (profile={s.profile}, checkpoint="
                              f"{s.checkpoint or '<embedded default>'}, device={device}, "
                              f"backend={s.backend}) failed: {type(e).__name__}: {e}") from e

    def _load_reference(self, s: Settings) -> np.ndarray:
        """The launch-time ``reference`` file (the operator's choice: size limits only), else the
        embedded avatar, else a grey placeholder (logged)."""
        if s.reference:
            from dystream_ros.io.images import ReferenceLimits, load_image_file

            limits = ReferenceLimits(max_pixels=s.reference_max_pixels, max_bytes=s.reference_max_bytes,
                                     min_side=s.reference_min_side, dirs=())
            try:
                return load_image_file(str(Path(s.reference).expanduser()), limits)
            except (FileNotFoundError, ValueError) as e:
                raise EngineError(f"reference image: {e}") from e
        try:
            return self.pipe.default_reference()
        except FileNotFoundError as e:
            self._log("warning", f"{e}; using a plain grey placeholder face (set reference:=<image>)")
            size = int(self.pipe.image_size)
            return np.full((size, size, 3), 128, np.uint8)

    def _warm_up(self, n: int) -> None:
        """``n`` frames on silence (the first real frame is then not slow), then a clean session."""
        if n > 0:
            pipe = self.pipe
            z = np.zeros((n + 1) * pipe.samples_per_frame + int(pipe.lookahead_samples), np.float32)
            self.session.push_audio(speaker=z, listener=z)
            for _ in range(n):
                frame = self.session.step(render=False)
                if self._face is not None:
                    art = pipe.readout(frame.latent) if pipe.readout is not None else None
                    self._face.render(self.session, frame.latent, art)
        self.feeder.reset()

    @property
    def reference_limits(self):
        """What a runtime reference may be (``reference_*`` settings); ``reference_dirs`` '' = the package
        avatars and the directory of the launch-time ``reference``."""
        from dystream_ros.io.images import ReferenceLimits
        from dystream_ros.runtime.session import DEFAULT_AVATAR

        s = self.settings
        dirs = [d for d in s.reference_dirs.split(os.pathsep) if d.strip()]
        if not dirs:
            dirs = [str(DEFAULT_AVATAR.parent)]
            if s.reference:
                dirs.append(os.path.dirname(os.path.abspath(os.path.expanduser(s.reference))))
        return ReferenceLimits(max_pixels=s.reference_max_pixels, max_bytes=s.reference_max_bytes,
                               min_side=s.reference_min_side,
                               dirs=tuple(Path(os.path.realpath(os.path.expanduser(d))) for d in dirs))

    @property
    def meta(self) -> dict:
        """What the engine runs: profile, checkpoint, backend, device, timing and sizes."""
        pipe, cfg = self.pipe, self.scheduler.config
        return {
            "profile": pipe.profile, "checkpoint": pipe.checkpoint_id, "backend": pipe.backend_name,
            "precision": "fp32",  # every backend computes in float32
            "device": str(pipe.backend.device),
            "sample_rate": int(pipe.sample_rate), "fps": int(pipe.fps),
            "samples_per_frame": int(pipe.samples_per_frame),
            "lookahead_ms": cfg.lookahead_samples * 1000 // cfg.sample_rate,
            "model_lookahead_ms": int(pipe.lookahead_ms), "latent_dim": int(pipe.latent_dim),
            "model_image_size": int(pipe.image_size), "render": bool(self.settings.render),
            "renderer": self.renderer, "renderer_reason": self.renderer_reason,
            "articulation": pipe.readout is not None,
        }

    # ------------------------------------------------------------------------------------------
    # streaming
    def push(self, channel: str, samples: np.ndarray, sample_rate: int, stamp_ns: int, *, arrival: float,
             now_ns: int):
        """Buffer mono float ``samples`` of ``channel`` stamped ``stamp_ns`` (the scheduler's timing
        policy, docs/STREAM_TIMING.md); returns the scheduler's push result (counters of what was
        dropped, gaps, re-anchors). ``arrival`` is the caller's wall clock (latency bookkeeping)."""
        with self.lock:
            return self.scheduler.push(channel, samples, sample_rate, stamp_ns, arrival=arrival,
                                       now_ns=now_ns)

    def has_due(self, now_ns: int) -> bool:
        with self.lock:
            return self.scheduler.has_due(now_ns)

    def tick(self, now_ns: int, *, wall: float) -> TickPlan:
        """Advance to clock ``now_ns``: the plan of due (and skipped) frames; pass it to :meth:`frames`.
        A clock reset or a new stream resets the session here."""
        with self.lock:
            plan = self.scheduler.tick(now_ns, wall=wall)
        if self._session_dirty:
            self._session_dirty = False
            try:
                _apply_session_settings(self.session, self.settings)
            except (ValueError, TypeError) as e:  # validated already; a backend may be stricter
                self._log("warning", f"model refused the sampler settings: {e}")
        return plan

    def frames(self, plan: TickPlan) -> Iterator[FrameOut]:
        """Hand ``plan`` to the session (its resets, skip and audio, at once) and return an iterator that
        steps the model: one :class:`FrameOut` per due frame, as each is computed. A plan must pass
        through here even without frames (a clock reset resets the session).

        The iterator raises :class:`~dystream_ros.runtime.feeder.SessionOutOfStep` (after resetting
        the stream) if the session and the scheduler disagree on a frame index."""
        if not self.feeder.prepare(plan):
            return iter(())
        return self._step(plan)

    def _step(self, plan: TickPlan, render: bool = True) -> Iterator[FrameOut]:
        """FrameOuts of a prepared plan; ``render``: their images rendered here, else left to the caller
        (each carries the face it is to be rendered on)."""
        threshold = self.settings.speaking_threshold_db
        readout = self.pipe.readout
        try:
            for job, frame, step_ms in self.feeder.step(plan, render=False):
                with self.lock:
                    skipped = self.scheduler.stats.session_skipped_frames
                state = avatar_state(job.speaker_level_db, job.listener_level_db, threshold)
                art = readout(frame.latent) if readout is not None else None
                out = FrameOut(job, frame, state, step_ms, skipped, self._face, art)
                if render and out.face is not None:
                    self._render_out(out)
                yield out
        except Exception:
            self.reset()
            raise

    def produce(self, plan: TickPlan, publish: Callable[[FrameOut], None],
                on_error: Callable[[Exception], None]) -> int:
        """Step every due frame of ``plan`` and hand each :class:`FrameOut`, rendered, to ``publish``, in
        frame order. With ``render_thread`` (and a rendering model) the images are rendered on a thread
        of their own and ``publish`` runs there (docs in ``runtime/render_thread.py``); otherwise here.
        ``on_error`` gets what rendering or ``publish`` raised on that thread. Returns the frames stepped;
        raises like :meth:`frames`."""
        if not (self.settings.render_thread and self._face is not None):
            outs = list(self.frames(plan))
            for out in outs:
                publish(out)
            return len(outs)
        if not self.feeder.prepare(plan):
            return 0
        if self._render_thread is None:
            self._render_thread = RenderThread(self._render_out, publish, on_error, name="dystream_render")
        n = 0
        for out in self._step(plan, render=False):
            self._render_thread.submit(out)
            n += 1
        return n

    def _render_out(self, out: FrameOut) -> None:
        t0 = time.perf_counter()
        out.frame.image = out.face.render(self.session, out.frame.latent, out.articulation)
        ms = (time.perf_counter() - t0) * 1000.0
        out.frame.timings["render"] = ms
        out.frame.timings["total"] = out.frame.timings.get("total", 0.0) + ms
        out.step_ms += ms

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every frame handed to the render thread is published (True), or ``timeout``."""
        return self._render_thread is None or self._render_thread.drain(timeout)

    def close(self) -> None:
        """Publish what the render thread holds and end it (the engine can :meth:`produce` again)."""
        rt, self._render_thread = self._render_thread, None
        if rt is not None:
            rt.stop()

    def run(self, now_ns: int, *, wall: float) -> list[FrameOut]:
        """:meth:`tick` and :meth:`frames` in one call (offline drivers that need no plan)."""
        return list(self.frames(self.tick(now_ns, wall=wall)))

    def offline(self, speaker: np.ndarray, listener: np.ndarray, *,
                chunk_frames: int = 4) -> Iterator[FrameOut]:
        """Stream whole mono float signals at the model's rate through the engine, as a live stream would
        arrive (chunks of ``chunk_frames`` frames, stamped contiguously) on a clock that is the audio's
        own time: one :class:`FrameOut` per 40 ms of the longer signal, the last ones finished with
        silent lookahead. For offline drivers (``dystream render``, training evaluation, ``bench``);
        the frames equal what the node makes of the same audio arriving in real time."""
        cfg = self.scheduler.config
        spf, lookahead = cfg.samples_per_frame, cfg.lookahead_samples
        n = max(len(speaker), len(listener))
        frames = max(1, -(-n // spf))
        total = frames * spf + lookahead
        audio = {}
        for name, x in (("speaker", speaker), ("listener", listener)):
            a = np.zeros(total, np.float32)
            a[: len(x)] = np.asarray(x, np.float32)
            audio[name] = a
        self.reset()
        # each offline stream starts a second after the previous one's clock (the clock never runs back)
        origin = self._offline_origin
        self._offline_origin = origin + (frames + 1) * cfg.frame_ns + _NS
        chunk = chunk_frames * spf
        fed = produced = 0
        while produced < frames:
            need = min(total, self.scheduler.need_end(produced))  # what the next frame reads, lookahead too
            while fed < need:
                stamp = origin + fed * _NS // cfg.sample_rate
                for name in ("speaker", "listener"):
                    self.push(name, audio[name][fed:fed + chunk], cfg.sample_rate, stamp,
                              arrival=stamp / _NS, now_ns=stamp)
                fed += chunk
            now = origin + produced * cfg.frame_ns
            before = produced
            for out in self.run(now, wall=now / _NS):
                if out.job.index < frames:
                    produced += 1
                    yield out
            if produced == before:
                raise RuntimeError(f"offline stream stalled at frame {produced} (clock {now} ns)")

    # ------------------------------------------------------------------------------------------
    # control
    def update(self, **changes) -> Settings:
        """Runtime changes (validated; read-only fields refused): the scheduler takes them now, the
        session before its next frame. Returns the new settings."""
        ro = [k for k in changes if PARAM_BY_NAME[k].read_only]
        if ro:
            raise ValueError(f"{', '.join(ro)}: read-only (takes effect when the engine is built)")
        new = self.settings.replace(**changes)
        if "renderer" in changes and new.renderer != self.settings.renderer:
            self.renderer, self.renderer_reason, self._face = self._renderer_for(new.renderer, self.reference)
        self.settings = new
        if set(changes) & set(SCHEDULER_FIELDS):
            with self.lock:
                self.scheduler.update(**_runtime_scheduler(new))
        if set(changes) & set(SESSION_FIELDS):
            self._session_dirty = True
        return new

    def reset(self, clock_jump: bool = False) -> None:
        """End the stream: the next audio starts a new one (frame 0, fresh session state)."""
        with self.lock:
            self.scheduler.reset(clock_jump=clock_jump)
        self.feeder.reset()

    def interrupt(self, channel: str = "speaker", *, wall: float) -> tuple[int, int]:
        """Barge-in: drop ``channel``'s queued audio from the next frame on, in the scheduler's buffer and
        in the audio the model session already holds; frames go on with silence there. Returns (the first
        frame that hears the silence, the samples dropped: also counted in the channel's
        ``interrupted_samples``); (0, 0) without a stream."""
        with self.lock:
            start, dropped = self.scheduler.interrupt(channel, arrival=wall)
        if self.scheduler.active:
            self.session.silence(channel, start)
        return start // self.scheduler.config.samples_per_frame, dropped

    def load_reference_file(self, path: str) -> tuple[np.ndarray, str]:
        """A reference file asked for at runtime (``~/set_reference``): inside ``reference_dirs`` and
        within the size limits (:attr:`reference_limits`), else ``ReferenceRefused`` / ``FileNotFoundError``
        with a message that reveals nothing outside the directories. Returns (RGB image, file name)."""
        from dystream_ros.io.images import load_image_file, resolve_reference_path

        real = resolve_reference_path(path, self.reference_limits)
        return load_image_file(real, self.reference_limits), real.name

    @property
    def image_size(self) -> int:
        """The side of the images the current renderer draws (the decoder's, or the photo rig's)."""
        if self._face is not None and self._face.kind == "photo":
            return int(self._face.state.size)
        return int(self.pipe.image_size)

    def load_reference_request(self, path: str, image) -> tuple[np.ndarray, str]:
        """The image of a ``~/set_reference`` request: the file ``path`` (:meth:`load_reference_file`) or,
        without one, the ``sensor_msgs/Image``-shaped ``image`` (size-checked before decoding). Returns
        (RGB image, where it came from); ``ValueError`` / ``FileNotFoundError`` otherwise."""
        from dystream_ros.io.images import image_msg_to_rgb

        if path:
            return self.load_reference_file(path)
        if image is not None and (image.width or image.height or len(image.data)):
            return (image_msg_to_rgb(image, self.reference_limits),
                    f"{image.width}x{image.height} {image.encoding} image")
        raise ValueError("give either path or image")

    def set_reference(self, image: np.ndarray) -> None:
        """A new reference face (RGB uint8); ``ValueError`` (nothing changed) when the model or the
        renderer refuses it: a photo rig that finds no usable face, say. ``auto`` chooses again."""
        choice = self._renderer_for(self.settings.renderer, image, build=False)
        face = None
        if choice[0] == "photo":
            face = build_face("photo", self.session, image, photo_size(self.settings.image_size))
        self.session.set_reference(image)
        self.reference = image
        if choice[0] == "learned":
            face = build_face("learned", self.session, image, 0)
        self.renderer, self.renderer_reason = choice[:2]
        self._face = face if self.settings.render else None

    def _renderer_for(self, requested: str, reference: np.ndarray, build: bool = True) -> tuple:
        """(renderer, why, Face or None) for ``requested`` and ``reference``: ``none`` when not rendering;
        ``ValueError`` (``RendererUnavailable``, ``PhotoRefused``) when it cannot run."""
        if not self.settings.render:
            return "none", "render is off", None
        kind, why = choose(requested, self.pipe, reference)
        if not build:
            return kind, why, None
        size = photo_size(self.settings.image_size) if kind == "photo" else 0
        return kind, why, build_face(kind, self.session, reference, size)
