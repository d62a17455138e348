"""dystream_node over real DDS with a model that reads out articulation: ``face_articulation`` every frame
(stamped like the frame, the read-out of the frame's latent), the photo renderer picked for a photograph
(``~/info`` says so), a renderer switch at runtime, and a refused photo that leaves the node running.

The test owns /clock (use_sim_time), so which frames exist does not depend on the machine's speed."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("mediapipe")

from node_helpers import NS, Probe, Spinner, chunk_msg, stamp_ns, wait_for  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from test_model_helpers import tiny_config  # noqa: E402

T0 = 200 * NS


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from dystream_ros.msg import FaceArticulation

    from dystream_ros.data.face import ARTICULATION_FIELDS
    from dystream_ros.model.articulation import Readout, readout_path, save_readout
    from dystream_ros.model.checkpoint import save_checkpoint
    from dystream_ros.model.dystream import build_model
    from dystream_ros.nodes.dystream_node import DystreamNode
    from dystream_ros.photo import ASTRONAUT

    d = tmp_path_factory.mktemp("artic")
    ckpt = save_checkpoint(build_model(tiny_config(), seed=3), d / "tiny.safetensors")
    rng = np.random.default_rng(1)
    w = (0.3 * rng.standard_normal((len(ARTICULATION_FIELDS), 8))).astype(np.float32)
    save_readout(Readout(w, np.zeros(len(ARTICULATION_FIELDS), np.float32), tuple(ARTICULATION_FIELDS)),
                 readout_path(ckpt))
    rclpy.init()
    overrides = {"use_sim_time": True, "checkpoint": str(ckpt), "reference": str(ASTRONAUT),
                 "autostart": False, "catch_up_limit": 10000, "speaker_wait_ms": 5000.0,
                 "listener_wait_ms": 5000.0, "warmup_frames": 1, "output_qos_depth": 200,
                 "backend": "torch"}
    node = DystreamNode(parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    probe = Probe()
    probe.watch_info("/dystream_node/info")
    probe.create_subscription(FaceArticulation, "/face_articulation", lambda m: probe._on("art", m),
                              probe.info_qos.__class__(depth=500, reliability=probe.info_qos.reliability))
    spinner = Spinner(node, probe)
    probe.publish_clock(T0)
    assert wait_for(lambda: node.get_clock().now().nanoseconds >= T0, 30)
    from rclpy.lifecycle import TransitionCallbackReturn

    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    yield node, probe, w
    spinner.shutdown()
    node.release_for_exit()
    node.destroy_node()
    probe.destroy_node()
    rclpy.try_shutdown()


def _info(probe) -> dict:
    return json.loads(probe.get("info")[-1].data)


def test_articulation_every_frame_and_the_photo_renderer(sim):
    node, probe, w = sim
    assert wait_for(lambda: probe.count("info") >= 1, 10)
    assert _info(probe)["renderer"] == "photo" and _info(probe)["articulation"] is True

    a0 = T0 + NS // 10
    rate = 16000
    x = (0.3 * np.sin(2 * np.pi * 200 * np.arange(rate) / rate) * 32767).astype(np.int16)
    for i in range(0, rate, 1600):
        probe.send("speaker", chunk_msg(x[i:i + 1600], rate, a0 + i * NS // rate))
        probe.send("listener", chunk_msg(x[i:i + 1600] // 4, rate, a0 + i * NS // rate))
    t = T0
    while t < a0 + NS:
        t += 10_000_000
        probe.publish_clock(t)
        time.sleep(0.002)
    expected = 22  # 1 s: frame n needs 40 (n + 1) + 60 ms -> n <= 22; stop before the tail
    assert wait_for(lambda: probe.count("latent") >= expected and probe.count("art") >= expected, 60)
    lat = {m.frame_index: m for m in probe.get("latent")}
    art = {m.frame_index: m for m in probe.get("art")}
    from dystream_ros.data.face import ARTICULATION_FIELDS

    for n in range(expected):
        assert stamp_ns(art[n].header) == stamp_ns(lat[n].header) == a0 + 40_000_000 * n
        want = w @ np.asarray(lat[n].latent, np.float32)
        got = np.array([getattr(art[n], f) for f in ARTICULATION_FIELDS], np.float32)
        np.testing.assert_allclose(got, want, atol=1e-5)
    images = [m for m in probe.get("image") if stamp_ns(m.header) >= a0]
    assert images and all(m.width == 256 for m in images)  # the photo rig's size (the tiny decoder: 32 px)


def test_renderer_switch_and_a_refused_photo(sim):
    from dystream_ros.srv import SetReference
    from rcl_interfaces.srv import SetParameters
    from sensor_msgs.msg import Image
    from test_node_sim import _call

    node, probe, _ = sim

    def set_param(**kv):
        req = SetParameters.Request()
        req.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in kv.items()]
        return _call(probe, SetParameters, "/dystream_node/set_parameters", req).results[0]

    assert set_param(renderer="learned").successful
    assert wait_for(lambda: _info(probe)["renderer"] == "learned", 10)
    assert set_param(renderer="photo").successful
    assert wait_for(lambda: _info(probe)["renderer"] == "photo", 10)
    flat = np.full((64, 64, 3), 90, np.uint8)  # no face in it
    img = Image(height=64, width=64, encoding="rgb8", step=192, data=flat.tobytes())
    req = SetReference.Request(image=img)
    res = _call(probe, SetReference, "/dystream_node/set_reference", req)
    assert not res.success and "face" in res.message
    assert node._engine.renderer == "photo" and node.stats_snapshot()["lifecycle_state"] == "active"
