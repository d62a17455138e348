"""Hands :class:`~dystream_ros.runtime.scheduler.TickPlan` s to a model session.

This is the one code path between the scheduler and the model, shared by ``dystream_node``'s timer and
the offline ``dystream replay`` (which therefore steps by audio time exactly as the node does):
reset on a new stream or a clock reset, ``skip`` for skipped frames, silence for the audio of skipped
frames, then the plan's audio, then one ``step()`` per due frame.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from dystream_ros.runtime.scheduler import FrameJob, TickPlan


class SessionOutOfStep(RuntimeError):
    """The session produced another frame than the scheduler planned (a bug or a lost reset)."""


class SessionFeeder:
    """Applies tick plans to a model session and keeps track of the audio handed to it."""

    def __init__(self, session):
        self.session = session
        self.pushed = 0  # stream-timeline samples handed to the session so far

    def reset(self) -> None:
        self.session.reset()
        self.pushed = 0

    def prepare(self, plan: TickPlan) -> bool:
        """Apply ``plan``'s resets, skip and audio; True when it has frames to :meth:`step`.

        A plan without frames carries no audio and must not move the session's audio position.
        """
        if plan.reset_reason:
            self.reset()
        if plan.idle or not plan.frames:
            return False
        if plan.stream_started:
            self.reset()
        if plan.skipped:
            self.session.skip(plan.skipped)
        gap = plan.audio_start - self.pushed
        if gap > 0:  # audio of skipped frames: the session discards it
            z = np.zeros(gap, np.float32)
            self.session.push_audio(speaker=z, listener=z)
        if plan.speaker.size:
            self.session.push_audio(speaker=plan.speaker, listener=plan.listener)
        self.pushed = plan.audio_start + plan.speaker.size
        return True

    def step(self, plan: TickPlan, render: bool = True) -> Iterator[tuple[FrameJob, object, float]]:
        """Yields ``(job, frame, step_ms)`` for every due frame of a prepared ``plan`` (``render=False``:
        frames without images, for a caller that renders them itself).

        Raises :class:`SessionOutOfStep` (after resetting the session) if a frame's index differs
        from the plan's.
        """
        for job in plan.frames:
            t0 = time.perf_counter()
            frame = self.session.step(render=render)
            step_ms = (time.perf_counter() - t0) * 1000.0
            if frame is None or int(frame.index) != int(job.index):
                self.reset()
                raise SessionOutOfStep(f"model session out of step: expected frame {job.index}, got "
                                       f"{None if frame is None else frame.index}")
            yield job, frame, step_ms

    def run(self, plan: TickPlan) -> Iterator[tuple[FrameJob, object, float]]:
        """:meth:`prepare` then :meth:`step`."""
        if self.prepare(plan):
            yield from self.step(plan)
