"""The frame producer thread: the model work runs here, woken by a timer or by audio (ROS-free).

Running a ~15 ms model step inside a ROS executor callback made rclpy's executor loop spin on the
still-ready timer for the whole step (a busy loop holding the GIL), slowing steps 10-100x (measured);
so the node's 40 ms timer and its audio callbacks only :meth:`Producer.wake` this thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Producer"]


class Producer:
    """Calls ``work()`` once per :meth:`wake` (wake-ups while it runs coalesce into one more call);
    an exception from ``work`` goes to ``on_error`` and the thread carries on."""

    def __init__(self, work: Callable[[], None], on_error: Callable[[Exception], None],
                 name: str = "producer"):
        self._work, self._on_error = work, on_error
        self._event = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        if not self._thread.is_alive() and not self._stop:
            self._thread.start()

    def wake(self) -> None:
        self._event.set()

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread (after the call in progress, if any)."""
        self._stop = True
        self._event.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        while not self._stop:
            self._event.wait()
            self._event.clear()
            if self._stop:
                return
            try:
                self._work()
            except Exception as e:  # noqa: BLE001 - keep producing; the caller logs and counts
                self._on_error(e)
