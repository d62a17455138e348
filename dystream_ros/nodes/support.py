"""ROS plumbing every node of the package shares: throttled logs, guarded services, diagnostics, ``main``.

The nodes keep their own logic; what is here is the boilerplate a ROS 2 node needs around it, written once:

- :class:`ThrottledLog` — one line per key and period, with the count of what it held back;
- :func:`guarded` — a service callback that answers ``success: false`` instead of raising;
- :func:`diagnostic_array` — a ``/diagnostics`` message from a flat dict of counters;
- :func:`message_class` — ``pkg/msg/Type`` to its rclpy class (None when not installed);
- :func:`destroy_publisher` — lifecycle or plain, tolerant of a context going down;
- :func:`spin` — the process ``main``: quiet signals, a SingleThreadedExecutor, a clean exit 0 on
  Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import importlib
import math
import sys
import traceback
from collections.abc import Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.exceptions import InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

from dystream_ros.runtime.stats import Throttle

from .signals import ignore_signals_for_exit, install_quiet_signal_handlers

__all__ = ["ThrottledLog", "destroy_publisher", "diagnostic_array", "guarded", "message_class", "spin"]

LEVELS = {"ok": DiagnosticStatus.OK, "warn": DiagnosticStatus.WARN, "error": DiagnosticStatus.ERROR}


class ThrottledLog:
    """``log(key, msg, level)`` writes at most one line per ``key`` and ``period_s``; the next line of
    that key says how many were held back."""

    def __init__(self, logger, period_s: float = 5.0) -> None:
        self._logger = logger
        self._throttle = Throttle(period_s)

    def __call__(self, key: str, msg: str, level: str = "warning") -> None:
        n = self._throttle(key)
        if n is None:
            return
        if n:
            msg += f" ({n} similar message(s) suppressed)"
        # rclpy fixes a call site's severity on first use: one call site per level
        if level == "info":
            self._logger.info(msg)
        elif level == "error":
            self._logger.error(msg)
        else:
            self._logger.warning(msg)


def guarded(logger, name: str, handler: Callable):
    """A service callback that answers ``success: false`` (Trigger-like responses) instead of raising:
    an exception escaping a service callback ends the executor's spin, and with it the node."""
    def callback(request, response):
        try:
            return handler(request, response)
        except Exception as e:  # noqa: BLE001 - a service call never takes the node down
            logger.error(f"{name} failed: {type(e).__name__}: {e}\n{traceback.format_exc()}")
            response.success = False
            response.message = f"{name} failed ({type(e).__name__}); the node's log has the details"
            return response
    return callback


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if not math.isfinite(v) else f"{v:.2f}"
    return str(v)


def diagnostic_array(name: str, values: dict, level: str, message: str, stamp, hardware_id: str = "none"):
    """One ``DiagnosticArray`` holding one status: ``level`` ok/warn/error, ``values`` as key/value pairs
    (floats with two decimals, ``nan`` for non-finite)."""
    st = DiagnosticStatus(name=name, hardware_id=hardware_id, level=LEVELS[level], message=message)
    st.values = [KeyValue(key=k, value=_fmt(v)) for k, v in values.items()]
    arr = DiagnosticArray()
    arr.header.stamp = stamp
    arr.status = [st]
    return arr


def message_class(msgtype: str):
    """``pkg/msg/Type`` -> its rclpy message class, or None when that package is not installed."""
    pkg, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError):
        return None


def destroy_publisher(node, pub) -> None:
    """Destroy a (lifecycle) publisher of ``node``; nothing if the context is already going down."""
    destroy = getattr(node, "destroy_lifecycle_publisher", None) or node.destroy_publisher
    try:
        destroy(pub)
    except Exception:  # noqa: BLE001 - already gone during shutdown
        pass


def spin(make_node: Callable[[], object], prog: str, *, start: Callable | None = None,
         release: Callable | None = None, args=None) -> int:
    """Run a node process: ``make_node()``, ``start(node)`` (e.g. lifecycle autostart), spin until
    Ctrl-C / SIGTERM, ``release(node)``, destroy. Returns the exit code (2 for an invalid parameter)."""
    install_quiet_signal_handlers()
    rclpy.init(args=args)
    node = executor = None
    rc = 0
    try:
        node = make_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if start is not None:
            start(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except InvalidParameterValueException as e:  # e.g. a value out of range in the params file
        print(f"[{prog}] invalid parameter: {e}", file=sys.stderr, flush=True)
        rc = 2
    except Exception:
        # SIGINT/SIGTERM shut the context down; depending on where the executor was, that surfaces as
        # ExternalShutdownException or as an RCLError from the next wait. Only a live context is an error.
        if rclpy.ok():
            raise
    finally:
        if node is not None and release is not None:
            try:
                release(node)
            except Exception:  # noqa: BLE001 - the context may already be down
                pass
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
