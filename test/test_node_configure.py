"""dystream_node's configure transition fails cleanly (and the node stays alive) on a missing model."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")

from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402


@pytest.fixture()
def ros():
    rclpy.init()
    yield
    rclpy.try_shutdown()


def _node(**params):
    from dystream_ros.nodes.dystream_node import DystreamNode

    params.setdefault("autostart", False)
    return DystreamNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def test_missing_embedded_default_fails_configure_with_advice(ros, tmp_path, monkeypatch):
    import dystream_ros.runtime.session as pipeline

    missing = tmp_path / "models" / "lite.safetensors"
    monkeypatch.setattr(pipeline, "default_checkpoint_path", lambda profile: missing)
    node = _node(checkpoint="")
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        err = node._configure_error
        assert str(missing) in err and "checkpoint:=random" in err, err
        snap = node.stats_snapshot()
        assert snap["lifecycle_state"] == "unconfigured"
        # the node is still usable: services answer, and a later configure may succeed
        assert node.autostart() is False
    finally:
        node.destroy_node()


@pytest.mark.parametrize("params,needle", [
    ({"checkpoint": "/nonexistent/model.safetensors"}, "/nonexistent/model.safetensors"),
    ({"checkpoint": "random", "reference": "/nonexistent/face.png"}, "/nonexistent/face.png"),
    ({"checkpoint": "random", "lookahead_ms": 20}, "lookahead"),
    ({"checkpoint": "random", "backend": "tensorrt"}, "backend must be one of"),
    ({"checkpoint": "random", "audio_msg_type": "audio_common_msgs/msg/AudioDataStamped"},
     "audio_common_msgs"),
])
def test_bad_configuration_fails_configure_clearly(ros, params, needle):
    if "audio_msg_type" in params:  # only meaningful where audio_common_msgs is missing
        try:
            import audio_common_msgs  # noqa: F401

            pytest.skip("audio_common_msgs is installed here")
        except ImportError:
            pass
    node = _node(**params)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert needle in node._configure_error, node._configure_error
    finally:
        node.destroy_node()


def test_a_destroyed_node_leaves_rosout_to_its_successor(ros):
    """A destroyed node is finalised at once, not when Python collects it: finalising an rcl node
    unregisters the /rosout publisher of its *name*, so a late one would silence a newer node of the
    same name (a restart in the same process; the test modules, which share one name)."""
    import gc

    from rcl_interfaces.msg import Log
    from rclpy.node import Node

    old = _node(checkpoint="random")
    old.destroy_node()
    gc.disable()  # keep `old` alive (it is in reference cycles) until the collection below
    new = _node(checkpoint="random")
    probe = Node("rosout_probe")
    try:
        got: list[str] = []
        probe.create_subscription(Log, "/rosout", lambda m: got.append(m.msg), 100)

        def heard(tag: str) -> bool:
            for _ in range(100):
                new.get_logger().info(tag)
                rclpy.spin_once(probe, timeout_sec=0.05)
                if tag in got:
                    return True
            return False

        assert heard("before the old node is collected")
        del old
        gc.collect()
        assert heard("after the old node is collected")
    finally:
        gc.enable()
        probe.destroy_node()
        new.destroy_node()
