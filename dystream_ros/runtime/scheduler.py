"""The frame scheduler: which video frames are due, counted in audio time (pure Python + numpy).

This is the timing core of the streaming node and of the offline replay: both feed it stamped audio and
a clock, and it says which frames to produce with which audio. It never looks at a wall clock itself;
the caller passes the clock (``now_ns``: the node's ROS clock, or bag time in a replay) and, for latency
bookkeeping only, an arrival "wall" time per chunk and per tick (any monotonic seconds; a replay can
pass bag time and get deterministic numbers).

Timeline. The stream starts at the stamp of the first audio chunk on either channel (``origin_ns``).
Frame ``n`` covers audio ``[n*spf, (n+1)*spf)`` samples of both channels (spf = 640 at 16 kHz, 25 fps)
and its output stamp is ``origin_ns + 40 ms * n``.

A frame is *due* when

1. by the stamps it lies in the past of the clock: ``origin_ns + 40 ms * n <= now_ns`` (so audio that
   arrives ahead of time, such as a TTS burst, is buffered and frames stay paced at 25 Hz), and
2. on *each* channel, audio up to ``(n+1)*spf + L`` samples has arrived (the ring's high-water mark;
   holes below it are silence), or that point's stamp plus the channel's wait lies in the past of the
   clock (a channel that never arrives, stalls or ends counts as silence after ``*_wait_s``).
   A channel *idle* for ``channel_idle_s`` (the clock that far past the wait for the end of its audio,
   or of the stream's start when it never delivered) holds no frame back until it delivers again: a
   robot's speaker channel is silent between utterances, and the face must not lag the microphone by the wait
   meanwhile. The first chunk after the pause arriving later than its frames is then dropped (counted).

Each :meth:`FrameScheduler.tick` returns a :class:`TickPlan` with every due frame, at most
``catch_up_limit`` of them: when more are due the oldest are skipped (counted in ``skipped_frames``), so
the output catches up with the clock instead of queueing without bound. Callers must not count frames
by ticks: a tick may yield 0, 1 or several frames (timers skip missed periods).

A backwards clock jump (bag loop, sim-time restart) resets the stream cleanly (counted in
``clock_resets``); the next audio starts a new stream. Forward jumps cannot be told from a caller that
was merely slow by looking at tick times, so by default they are treated as lateness (frames skipped and
counted). A caller that knows the clock jumped (a ROS clock jump callback, a replay seeking) calls
``reset(clock_jump=True)``; ``max_clock_jump_s`` optionally treats any larger gap between two ticks
as a jump.

Driving it from a replay (no ROS)::

    sched = FrameScheduler(SchedulerConfig(lookahead_samples=pipe.lookahead_samples, ...))
    for t_ns, channel, decoded in bag_messages:           # in bag order
        while next_tick_ns <= t_ns:                       # advance the simulated clock in 40 ms steps
            run(sched.tick(next_tick_ns, wall=next_tick_ns / 1e9)); next_tick_ns += 40_000_000
        sched.push(channel, decoded.samples, decoded.sample_rate, stamp_ns, arrival=t_ns / 1e9, now_ns=t_ns)

where ``run(plan)`` does, for a model session ``sess``: ``if plan.stream_started: sess.reset()``;
``sess.push_audio(speaker=plan.speaker, listener=plan.listener)``; ``if plan.skipped: sess.skip(...)``;
then one ``sess.step()`` per ``plan.frames`` entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import numpy as np

from dystream_ros.config import NS as _NS

from ..audio.channel import ChannelBuffer, PushResult

CHANNELS = ("speaker", "listener")


@dataclass(frozen=True)
class SchedulerConfig:
    sample_rate: int = 16000
    samples_per_frame: int = 640  # 40 ms at 16 kHz (25 fps)
    lookahead_samples: int = 960  # L: audio after a frame's end the model reads (60 ms)
    context_samples: int = 0  # audio before a frame's start the model reads (handed over after a skip)
    catch_up_limit: int = 8  # most frames produced per tick; older due frames are skipped (> wait/40ms)
    speaker_wait_s: float = 0.2  # a missing/late speaker channel counts as silence after this wait
    listener_wait_s: float = 0.2  # same for the listener channel
    channel_idle_s: float = 1.0  # this long after its wait, a channel without audio holds nothing (0: never)
    buffer_s: float = 30.0  # ring capacity per channel (audio ahead of the read position)
    stamp_tolerance_s: float = 0.01  # stamp jitter treated as contiguous audio (below a chunk's length)
    stamp_jump_s: float = 1.0  # a stamp further ahead is held until the next chunk confirms it
    max_stamp_skew_s: float = 10.0  # stamps further than this from the clock are replaced by arrival time
    max_clock_jump_s: float = math.inf  # a larger clock advance between two ticks resets (inf = never)

    def __post_init__(self):
        if self.sample_rate <= 0 or self.samples_per_frame <= 0:
            raise ValueError("sample_rate and samples_per_frame must be positive")
        if self.lookahead_samples < 0 or self.context_samples < 0:
            raise ValueError("lookahead_samples and context_samples must be >= 0")
        if self.catch_up_limit < 1:
            raise ValueError(f"catch_up_limit must be >= 1, got {self.catch_up_limit}")
        for name in ("speaker_wait_s", "listener_wait_s", "channel_idle_s", "stamp_tolerance_s",
                     "stamp_jump_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("buffer_s", "max_stamp_skew_s", "max_clock_jump_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @property
    def frame_ns(self) -> int:
        return self.samples_per_frame * _NS // self.sample_rate

    def samples_to_ns(self, n: int) -> int:
        return n * _NS // self.sample_rate


@dataclass
class FrameJob:
    """One frame to produce."""

    index: int
    stamp_ns: int  # origin + 40 ms * index (the output header stamp)
    ready_wall: float  # arrival of the last sample the frame needs (or when its wait expired)
    start_wall: float  # arrival of the frame's first sample (min over channels); NaN if both silent
    speaker_level_db: float
    listener_level_db: float
    waited: tuple[str, ...] = ()  # channels that were substituted by silence at the frame's end


@dataclass
class TickPlan:
    """What to do after a tick. ``speaker``/``listener`` is the audio to hand to the model (16 kHz,
    timeline ``[audio_start, audio_start + len)``), covering every frame in ``frames`` incl. lookahead.
    A plan without frames carries no audio (``audio_start`` is then where the next audio will start)."""

    now_ns: int
    idle: bool = True  # no stream (no audio yet, or after a reset)
    stream_started: bool = False  # a new stream begins with these frames: reset the model session
    reset_reason: str | None = None  # set when this tick reset the stream (clock jump)
    skipped: int = 0  # frames skipped just before frames[0] (catch-up limit or audio lost)
    audio_start: int = 0
    speaker: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    listener: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    frames: list[FrameJob] = field(default_factory=list)


@dataclass
class SchedulerStats:
    """Cumulative counters (``session_*`` restart with each stream)."""

    frames: int = 0
    skipped_frames: int = 0
    session_skipped_frames: int = 0
    streams: int = 0
    clock_resets: int = 0
    restamped_messages: int = 0
    silence_samples: int = 0  # samples handed to the model as silence because nothing had arrived
    discarded_samples: int = 0  # buffered samples thrown away by a reset


def _level_db(x: np.ndarray) -> float:
    if x.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return max(-120.0, 20.0 * math.log10(rms + 1e-12))


class FrameScheduler:
    """Due-frame scheduling over two sample-indexed channel buffers (see the module docstring)."""

    def __init__(self, config: SchedulerConfig | None = None):
        self.config = config or SchedulerConfig()
        cap = int(round(self.config.buffer_s * self.config.sample_rate))
        tol = int(self.config.stamp_tolerance_s * _NS)
        jump = int(self.config.stamp_jump_s * _NS)
        self.channels = {
            c: ChannelBuffer(c, cap, rate=self.config.sample_rate, tolerance_ns=tol, jump_ns=jump)
            for c in CHANNELS
        }
        self.stats = SchedulerStats()
        self._last_now: int | None = None
        self._reset_stream()

    # ------------------------------------------------------------------------------------------
    def update(self, **changes) -> None:
        """Change runtime settings (catch_up_limit, waits, tolerances); buffers are kept.

        ``buffer_s``, ``sample_rate``, ``samples_per_frame``, ``lookahead_samples`` and
        ``context_samples`` need a new scheduler."""
        fixed = {"buffer_s", "sample_rate", "samples_per_frame", "lookahead_samples", "context_samples"}
        bad = fixed & set(changes)
        if bad:
            raise ValueError(f"cannot change {sorted(bad)} at runtime")
        unknown = set(changes) - {f.name for f in fields(SchedulerConfig)}
        if unknown:
            raise ValueError(f"unknown scheduler settings {sorted(unknown)}")
        self.config = replace(self.config, **changes)
        tol = int(self.config.stamp_tolerance_s * _NS)
        for ch in self.channels.values():
            ch.tolerance_ns = tol
            ch.jump_ns = int(self.config.stamp_jump_s * _NS)

    def _reset_stream(self) -> None:
        for ch in self.channels.values():
            self.stats.discarded_samples += ch.ring.depth + ch.held_samples
            ch.reset(0)
        self.origin_ns: int | None = None
        self.next_frame = 0  # next frame index to produce
        self.pushed_upto = 0  # timeline samples handed to the model
        self._new_stream = False
        self.stats.session_skipped_frames = 0

    def reset(self, clock_jump: bool = False) -> None:
        """Forget the stream (buffers, origin, frame counter); the next audio starts a new stream.

        ``clock_jump``: the caller saw the clock jump (counted in ``stats.clock_resets``)."""
        if clock_jump:
            self.stats.clock_resets += 1
        self._reset_stream()

    @property
    def active(self) -> bool:
        return self.origin_ns is not None

    def frame_stamp_ns(self, n: int) -> int:
        if self.origin_ns is None:
            raise RuntimeError("no stream")
        return self.origin_ns + n * self.config.frame_ns

    def need_end(self, n: int) -> int:
        """Samples (per channel) frame n needs: its own audio plus the lookahead."""
        return (n + 1) * self.config.samples_per_frame + self.config.lookahead_samples

    def depth_samples(self, channel: str) -> int:
        """Audio buffered ahead of what has been handed to the model."""
        ring = self.channels[channel].ring
        return max(0, ring.high_water - max(ring.read_pos, self.pushed_upto))

    # ------------------------------------------------------------------------------------------
    def push(
        self,
        channel: str,
        samples: np.ndarray,
        sample_rate: int,
        stamp_ns: int,
        *,
        arrival: float,
        now_ns: int | None = None,
    ) -> PushResult:
        """Add one decoded mono chunk (any rate) whose first sample has ``stamp_ns``.

        A zero stamp, or (when ``now_ns`` is given) one further than ``max_stamp_skew_s`` from the clock,
        is replaced by ``now_ns`` minus the chunk's duration (counted in ``stats.restamped_messages``);
        the returned result's ``restamped`` attribute tells the caller so it can log.
        """
        if channel not in self.channels:
            raise KeyError(f"unknown channel {channel!r}; expected one of {CHANNELS}")
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        stamp = int(stamp_ns)
        restamped = False
        if now_ns is not None and x.size:
            skew = abs(stamp - now_ns)
            if stamp <= 0 or skew > self.config.max_stamp_skew_s * _NS:
                stamp = int(now_ns) - x.size * _NS // int(sample_rate)
                restamped = True
                self.stats.restamped_messages += 1
        if x.size and self.origin_ns is None:
            self.origin_ns = stamp
            self._new_stream = True
            self.stats.streams += 1
        if self.origin_ns is None:  # empty chunk before any stream
            res = PushResult()
        else:
            res = self.channels[channel].push(x, sample_rate, stamp, arrival, self.origin_ns)
        res.restamped = restamped
        return res

    def interrupt(self, channel: str, *, arrival: float) -> tuple[int, int]:
        """Barge-in on ``channel``: its audio from the next frame on is dropped and replaced by silence
        (:meth:`ChannelBuffer.interrupt`). Returns (first timeline sample silenced, samples dropped);
        (0, 0) without a stream. The caller silences the model session from that sample too."""
        if self.origin_ns is None:
            return 0, 0
        start = self.next_frame * self.config.samples_per_frame
        return start, self.channels[channel].interrupt(start, arrival)

    # ------------------------------------------------------------------------------------------
    def _wait_ns(self, name: str) -> int:
        cfg = self.config
        return int((cfg.speaker_wait_s if name == "speaker" else cfg.listener_wait_s) * _NS)

    def _idle_ns(self, name: str, now_ns: int) -> int:
        """How long channel ``name`` has been idle at ``now_ns`` (< 0: not idle): ``channel_idle_s``
        past the wait that released the end of the latest audio it received (late or held audio counts:
        the channel is live again), or of the stream's start when it never delivered."""
        if not self.config.channel_idle_s:
            return -1
        ch = self.channels[name]
        last_ns = ch.received_end_ns if ch.received_end_ns is not None else self.origin_ns
        return now_ns - self._wait_ns(name) - last_ns - int(self.config.channel_idle_s * _NS)

    def _last_due(self, now_ns: int) -> int:
        """Highest frame index due at ``now_ns`` (may be < next_frame)."""
        cfg = self.config
        spf, L = cfg.samples_per_frame, cfg.lookahead_samples
        elapsed = now_ns - self.origin_ns
        if elapsed < 0:
            return -1
        last = elapsed // cfg.frame_ns  # condition 1: frame stamp <= now
        idle = {name: self._idle_ns(name, now_ns) for name in self.channels}
        # every channel idle: the stream is paused, not one-sided; frames keep to the waits, so the audio
        # that resumes it (stamped at capture, arriving after) is still ahead of what was produced
        one_sided = any(v < 0 for v in idle.values())
        for name, ch in self.channels.items():
            wait_ns = self._wait_ns(name)
            # by data: need_end(n) <= high_water  <=>  n <= (hw - L) // spf - 1
            by_data = (ch.high_water - L) // spf - 1
            # by wait: origin + t(need_end(n)) + wait <= now
            waited_samples = (elapsed - wait_ns) * cfg.sample_rate // _NS
            by_wait = (waited_samples - L) // spf - 1 if elapsed >= wait_ns else -1
            # idle (every frame with any of its audio was produced by then): what the channel holds a
            # frame back by (its wait, lookahead and frame) shrinks by the time it has been idle, so the
            # frames catch up with the clock at one extra frame per frame, never in a burst the catch-up
            # limit would cut
            by_idle = -1
            if one_sided and idle[name] >= 0:
                hold = max(0, wait_ns + cfg.samples_to_ns(L + spf) - idle[name])
                by_idle = (elapsed - hold) // cfg.frame_ns
            last = min(last, max(by_data, by_wait, by_idle))
        return int(last)

    def has_due(self, now_ns: int) -> bool:
        """True when a tick at ``now_ns`` would produce (or skip) at least one frame.

        Lets a caller wake up as soon as audio completes a frame instead of at its next periodic tick."""
        return self.pending_frames(now_ns) > 0

    def pending_frames(self, now_ns: int) -> int:
        """Frames due at ``now_ns`` that no tick has produced or skipped yet (the producer's backlog)."""
        if self.origin_ns is None or (self._last_now is not None and now_ns < self._last_now):
            return 0
        return max(0, self._last_due(int(now_ns)) - self.next_frame + 1)

    def tick(self, now_ns: int, *, wall: float) -> TickPlan:
        """Advance to clock ``now_ns``; ``wall`` is the caller's monotonic time (latency bookkeeping)."""
        now_ns = int(now_ns)
        plan = TickPlan(now_ns=now_ns)
        cfg = self.config
        last_now = self._last_now
        self._last_now = now_ns
        if last_now is not None and self.origin_ns is not None:
            if now_ns < last_now:
                plan.reset_reason = f"clock jumped back by {(last_now - now_ns) / 1e9:.3f} s"
            elif now_ns - last_now > cfg.max_clock_jump_s * _NS:
                plan.reset_reason = f"clock jumped forward by {(now_ns - last_now) / 1e9:.3f} s"
            if plan.reset_reason:
                self.stats.clock_resets += 1
                self._reset_stream()
                return plan
        if self.origin_ns is None:
            return plan
        plan.idle = False
        plan.audio_start = self.pushed_upto  # an empty plan hands over nothing from here
        last = self._last_due(now_ns)
        n0 = self.next_frame
        pending = last - n0 + 1
        if pending <= 0:
            return plan
        first = n0
        if pending > cfg.catch_up_limit:
            plan.skipped = pending - cfg.catch_up_limit
            first = n0 + plan.skipped
            self.stats.skipped_frames += plan.skipped
            self.stats.session_skipped_frames += plan.skipped
        spf = cfg.samples_per_frame
        audio_start = self.pushed_upto
        if plan.skipped:
            audio_start = max(audio_start, first * spf - cfg.context_samples)
        audio_end = self.need_end(last)
        plan.audio_start = audio_start
        plan.stream_started = self._new_stream
        self._new_stream = False

        # Read from the first frame's start (its lookahead part may have been handed over already) to
        # the end of the last frame's lookahead; hand over only what the model has not seen yet.
        win_start = min(audio_start, first * spf)
        off = audio_start - win_start
        audio, arrival = {}, {}
        for name, ch in self.channels.items():
            x, arr = ch.ring.read(win_start, audio_end)
            audio[name], arrival[name] = x, arr
            self.stats.silence_samples += int(np.count_nonzero(np.isnan(arr[off:])))
            ch.ring.seal(audio_end)  # audio arriving for handed-over samples from now on is late
            ch.ring.consume((last + 1) * spf)  # keep the lookahead readable for the next frame
        plan.speaker, plan.listener = audio["speaker"][off:], audio["listener"][off:]
        self.pushed_upto = audio_end

        for n in range(first, last + 1):
            s0 = n * spf - win_start
            e = self.need_end(n) - 1 - win_start
            ready, waited, starts = [], [], []
            for name in CHANNELS:
                a_end = arrival[name][e]
                if np.isnan(a_end):
                    waited.append(name)
                    ready.append(wall)
                else:
                    ready.append(float(a_end))
                a0 = arrival[name][s0]
                if not np.isnan(a0):
                    starts.append(float(a0))
            plan.frames.append(
                FrameJob(
                    index=n,
                    stamp_ns=self.frame_stamp_ns(n),
                    ready_wall=max(ready),
                    start_wall=min(starts) if starts else float("nan"),
                    speaker_level_db=_level_db(audio["speaker"][s0 : s0 + spf]),
                    listener_level_db=_level_db(audio["listener"][s0 : s0 + spf]),
                    waited=tuple(waited),
                )
            )
        self.next_frame = last + 1
        self.stats.frames += len(plan.frames)
        return plan


class RateGate:
    """Lets through at most ``hz`` events per second of clock, on a fixed grid of clock times.

    For the idle face: the 40 ms timer's ticks jitter (the producer wakes a little late, and a little
    less late the next time), so "at least one period since the last publish" drops a frame whenever a
    tick comes early. Here the slots are ``anchor + k * period`` and a tick takes the next slot when it
    is at most half a period early, so ``hz`` ticks per second give exactly ``hz`` events under any
    jitter below half a period, and a slower ``hz`` is met on average. A clock that jumps back or
    stalls for more than a period re-anchors the grid.
    """

    def __init__(self) -> None:
        self._next: int | None = None

    def reset(self) -> None:
        self._next = None

    def __call__(self, now_ns: int, hz: float) -> bool:
        """True when an event should happen at ``now_ns`` (and takes its slot)."""
        if hz <= 0:
            return False
        period = int(round(_NS / hz))
        now_ns = int(now_ns)
        nxt = self._next
        if nxt is None or now_ns < nxt - 2 * period or now_ns - nxt > period:
            self._next = now_ns + period
            return True
        if now_ns >= nxt - period // 2:
            self._next = nxt + period
            return True
        return False
