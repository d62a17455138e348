"""Shared pytest set-up.

ROS 2 tests talk over real DDS. Each pytest session picks its own ROS_DOMAIN_ID and keeps
discovery on this host, so parallel runs (CI, developers) never hear each other. Child processes
started by tests inherit these variables through os.environ.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

if "DYSTREAM_TEST_DOMAIN_FIXED" not in os.environ:
    # 1..101 are valid on every platform (ports stay below 32768 with the default participant limit).
    os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 101))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")


def _have_ros_build() -> bool:
    try:
        import dystream_ros.msg  # noqa: F401
        import rclpy  # noqa: F401
    except ImportError:
        return False
    return True


HAVE_ROS = _have_ros_build()


def pytest_collection_modifyitems(config, items):
    """Tests marked `ros` need the colcon build and rclpy.

    Under `make test` (DYSTREAM_REQUIRE_ROS=1) a missing build is an error; in a bare Python
    environment (pip install . without ROS) those tests are skipped with the reason shown.
    """
    if HAVE_ROS:
        return
    msg = "ROS 2 build not found: run `make test` (or `source scripts/env.sh` after `make setup`)"
    if os.environ.get("DYSTREAM_REQUIRE_ROS") == "1":
        raise pytest.UsageError(msg)
    for item in items:
        if "ros" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=msg))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def python_exe() -> str:
    return sys.executable
