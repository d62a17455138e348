"""ROS parameter descriptors for the avatar's settings (the table itself: ``runtime/settings.py``)."""

from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from dystream_ros.runtime.settings import Param


def descriptor(p: Param) -> ParameterDescriptor:
    """The descriptor ``declare_parameter`` gets for ``p``: description, read-only, range, choices."""
    d = ParameterDescriptor(name=p.name, description=p.description, read_only=p.read_only)
    if p.choices:
        d.additional_constraints = "one of: " + ", ".join(str(c) for c in p.choices)
    if p.lo is not None and p.hi is not None and not isinstance(p.default, bool):
        if isinstance(p.default, int):
            d.integer_range = [IntegerRange(from_value=int(p.lo), to_value=int(p.hi), step=1)]
        elif isinstance(p.default, float):
            d.floating_point_range = [
                FloatingPointRange(from_value=float(p.lo), to_value=float(p.hi), step=0.0)]
    return d


def ros_default(p: Param):
    """The default as a ROS parameter value (an integer array for a tuple)."""
    return list(p.default) if isinstance(p.default, tuple) else p.default
