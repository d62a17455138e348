"""Frames rendered on a thread of their own, in order (ROS-free).

On CPU the learned decoder is the larger half of a frame (lite, one thread: ~19-24 ms of ~30-38 ms), and
the model step of frame n+1 does not need frame n's image. So the node steps the model on its producer
thread and hands each frame here: the decoder of frame n runs on the second core while frame n+1's audio
encoder, generator and head run on the first. A frame is published when its image is done, in frame order,
by the ``publish`` callback on this thread; the latency of one frame is the same as rendering inline, the
throughput is bounded by the slower half instead of their sum.

At most ``depth`` frames wait: :meth:`RenderThread.submit` blocks beyond that, so a renderer slower than
real time slows the producer and the scheduler's catch-up limit skips (and counts) frames, as it would
inline; nothing queues without bound.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

__all__ = ["RenderThread"]


class RenderThread:
    """One worker thread: ``render(item)`` then ``publish(item)`` for every submitted item, in order."""

    def __init__(self, render: Callable[[object], None], publish: Callable[[object], None],
                 on_error: Callable[[Exception], None], *, depth: int = 2, name: str = "render"):
        self._render, self._publish, self._on_error = render, publish, on_error
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, item) -> None:
        """Queue ``item`` (blocks while ``depth`` items wait)."""
        self._queue.put(item)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every submitted item is published; False on timeout."""
        end = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > end:
                return False
            time.sleep(0.002)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Publish what is queued, then end the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            if threading.current_thread() is not self._thread:
                self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._render(item)
                self._publish(item)
            except Exception as e:  # noqa: BLE001 - one frame never ends the thread; the caller counts
                self._on_error(e)
            finally:
                self._queue.task_done()
