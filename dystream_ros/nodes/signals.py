"""Process-level signal handling for the nodes' ``main``: Ctrl-C / SIGTERM always end in a clean exit 0."""

from __future__ import annotations

import signal

__all__ = ["ignore_signals_for_exit", "install_quiet_signal_handlers"]


def install_quiet_signal_handlers() -> None:
    """SIGINT/SIGTERM never raise in Python; rclpy's own handlers (chained to these) end the spin.

    ``ros2 launch`` forwards Ctrl-C to a node that the terminal already sent it to, and stops stragglers
    with SIGTERM, so a second signal often lands while a node's ``main`` cleans up. With Python's default
    SIGINT handler that second one raised KeyboardInterrupt out of the cleanup (exit -2, and -6 when it
    surfaced inside a native call). Installed before ``rclpy.init``, these handlers are what rclpy calls
    after shutting the context down, so every signal is just noted and the cleanup always runs to the end.
    :func:`ignore_signals_for_exit` covers the interpreter's own finalisation after that.
    """
    def note(signum, frame):  # noqa: ARG001 - the signal handler signature
        _SIGNALS_SEEN.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, note)


_SIGNALS_SEEN: list[int] = []


def ignore_signals_for_exit() -> None:
    """Ignore SIGINT/SIGTERM from here to the process exit.

    Python's finalisation resets the signals it handles to SIG_DFL (but leaves ignored ones ignored),
    and tearing down torch and DDS takes a while: a SIGTERM in that window killed the process (exit 143)
    after a clean shutdown. SIGKILL still ends a finalisation that hangs.
    """
    from rclpy.signals import uninstall_signal_handlers

    uninstall_signal_handlers()  # restores the handlers rclpy chained to, now and not later
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, int(signal.SIG_IGN))  # a plain int: see the note above
