"""Node-side pieces without a running graph: parameter table vs YAML, image codec, audio adapters, launch."""

from __future__ import annotations

import py_compile
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]


def test_yaml_matches_parameter_table():
    from dystream_ros.nodes.params import descriptor, ros_default
    from dystream_ros.runtime.settings import PARAMS

    y = yaml.safe_load((REPO / "config" / "default.yaml").read_text())["/**"]["ros__parameters"]
    assert set(y) == {s.name for s in PARAMS}
    for s in PARAMS:
        assert type(y[s.name]) is type(ros_default(s)) and y[s.name] == ros_default(s), s.name
        assert s.validate(s.default) is None and s.validate(y[s.name]) is None, s.name
        d = descriptor(s)
        assert d.description and d.read_only == s.read_only


def test_spec_validation():
    from dystream_ros.runtime.settings import PARAM_BY_NAME as SPEC_BY_NAME
    from dystream_ros.runtime.settings import Settings

    steps = SPEC_BY_NAME["steps"]
    assert steps.validate(3) is None and steps.validate(11) and steps.validate(True) and steps.validate(2.0)
    g = SPEC_BY_NAME["guidance_speaker"]
    assert g.validate(2) is None and g.validate(float("nan")) and g.validate(-0.1)
    assert SPEC_BY_NAME["backend"].validate("tensorflow")
    assert SPEC_BY_NAME["sample_rates"].validate([16000, 48000]) is None
    assert SPEC_BY_NAME["sample_rates"].validate([16000, 4.5])
    assert SPEC_BY_NAME["sample_rates"].validate([]) and SPEC_BY_NAME["sample_rates"].validate([16000, 500])
    # the typed settings: defaults, validated construction, ints for floats, lists for tuples
    s = Settings.from_params({"steps": 3, "guidance_speaker": 2, "sample_rates": [16000], "other_node.x": 1})
    assert s.steps == 3 and s.guidance_speaker == 2.0 and isinstance(s.guidance_speaker, float)
    assert s.sample_rates == (16000,) and s.temperature == Settings().temperature
    with pytest.raises(ValueError, match="steps must be in"):
        s.replace(steps=11)


def test_image_codec_roundtrip_and_encodings():
    from builtin_interfaces.msg import Time

    from dystream_ros.io.images import fit_square, image_msg_to_rgb
    from dystream_ros.nodes.image_codec import rgb_to_image_msg, rgb_to_jpeg_msg

    def zero_time():
        return Time()

    rgb = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    msg = rgb_to_image_msg(rgb, zero_time(), "avatar")
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("rgb8", 32, 48, 144)
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)
    msg.encoding = "bgr8"
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb[..., ::-1])
    mono = rgb_to_image_msg(rgb, zero_time(), "a")
    mono.encoding, mono.step = "mono8", 48
    mono.data = rgb[..., 0].tobytes()
    assert image_msg_to_rgb(mono).shape == (32, 48, 3)
    padded = rgb_to_image_msg(rgb, zero_time(), "a")
    padded.step = 160  # row padding
    padded.data = np.pad(rgb.reshape(32, 144), ((0, 0), (0, 16))).tobytes()
    np.testing.assert_array_equal(image_msg_to_rgb(padded), rgb)
    jpg = rgb_to_jpeg_msg(rgb, zero_time(), "a", 90)
    assert bytes(jpg.data[:2]) == b"\xff\xd8"
    assert fit_square(rgb, 16).shape == (16, 16, 3)
    bad = rgb_to_image_msg(rgb, zero_time(), "a")
    bad.encoding = "yuv422"
    with pytest.raises(ValueError):
        image_msg_to_rgb(bad)


def test_audio_adapters():
    from node_helpers import chunk_msg

    from dystream_ros.audio import AudioFormatError
    from dystream_ros.audio import messages as ad

    m = chunk_msg(np.zeros(10, np.int16), 22050, 1_500_000_000)
    raw = ad.from_audio_chunk(m)
    assert (raw.sample_rate, raw.channels, raw.encoding) == (22050, 1, "pcm_s16le")
    assert raw.stamp_ns == 1_500_000_000

    class Info:  # audio_common_msgs/AudioInfo shape
        channels, sample_rate, sample_format, coding_format = 2, 48000, "S16LE", "mp3"

    class Stamped:
        class header:
            class stamp:
                sec, nanosec = 1, 5

        class audio:
            data = b"\0" * 8

    with pytest.raises(AudioFormatError) as e:
        ad.from_audio_common(Stamped, Info)
    assert e.value.kind == "compressed"
    with pytest.raises(AudioFormatError) as e:
        ad.from_audio_common(Stamped, None)
    assert e.value.kind == "no_info"
    Info.coding_format = "wave"
    raw = ad.from_audio_common(Stamped, Info)
    assert raw.stamp_ns == 1_000_000_005 and raw.encoding == "S16LE"
    try:
        import audio_common_msgs  # noqa: F401
    except ImportError:
        from dystream_ros.nodes.audio_adapters import audio_message_class

        with pytest.raises(ImportError, match="audio_common_msgs"):
            audio_message_class(ad.AUDIO_COMMON_STAMPED)


def test_launch_file_compiles():
    py_compile.compile(str(REPO / "launch" / "dystream.launch.py"), doraise=True)


def test_info_topic_follows_audio_common_names():
    from dystream_ros.nodes.audio_adapters import info_topic_for

    # audio_capture publishes audio, audio_stamped and one audio_info
    assert info_topic_for("/mic/audio_stamped") == "/mic/audio_info"
    assert info_topic_for("/mic/audio") == "/mic/audio_info"
    assert info_topic_for("audio_stamped") == "audio_info"
    assert info_topic_for("/tts/speech/") == "/tts/speech_info"
    with pytest.raises(ValueError):
        info_topic_for("")


def _launch_tree():
    import ast

    return ast.parse((REPO / "launch" / "dystream.launch.py").read_text())


def test_launch_file_arguments_and_lifecycle_wiring():
    """What launch would do with the file, read from its code (launch itself is not on PyPI here):
    every argument declared and documented, autostart handed to the node (no event handler that fires
    again on a re-configure), the logging variable set on the node's process only."""
    import ast

    tree = _launch_tree()
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    declared = [c.args[0].value for c in calls if c.func.id == "DeclareLaunchArgument"]
    expected = {"namespace", "params_file", "use_sim_time", "log_level", "autostart", "speaker_topic",
                "listener_topic", "reference", "checkpoint", "speaker_info_topic", "listener_info_topic"}
    assert set(declared) == expected and len(declared) == len(expected)
    readme = (REPO / "README.md").read_text()
    assert all(f"`{a}`" in readme for a in expected)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not names & {"RegisterEventHandler", "OnStateTransition", "EmitEvent", "SetEnvironmentVariable"}
    (node,) = [c for c in calls if c.func.id == "LifecycleNode"]
    kw = {k.arg: k.value for k in node.keywords}
    assert isinstance(kw["additional_env"], ast.Dict)
    overrides = [n for n in ast.walk(tree) if isinstance(n, ast.Dict)
                 and any(isinstance(k, ast.Constant) and k.value == "autostart" for k in n.keys)]
    assert overrides, "autostart is not passed to the node"



def test_reference_limits_are_checked_before_decoding(tmp_path):
    import cv2

    from dystream_ros.io.images import (
        ReferenceLimits,
        ReferenceRefused,
        load_image_file,
        resolve_reference_path,
    )

    img = tmp_path / "face.png"
    cv2.imwrite(str(img), np.full((300, 200, 3), 90, np.uint8))
    lim = ReferenceLimits(max_pixels=300 * 200, max_bytes=1 << 20, min_side=64, dirs=(tmp_path.resolve(),))
    assert load_image_file(resolve_reference_path(str(img), lim), lim).shape == (300, 200, 3)
    with pytest.raises(ReferenceRefused, match="reference_max_pixels"):
        load_image_file(img, ReferenceLimits(max_pixels=300 * 200 - 1))
    with pytest.raises(ReferenceRefused, match="reference_max_bytes"):
        load_image_file(img, ReferenceLimits(max_bytes=100))
    with pytest.raises(ReferenceRefused, match="reference_min_side"):
        load_image_file(img, ReferenceLimits(min_side=201))
    with pytest.raises(ReferenceRefused, match="invalid path"):
        resolve_reference_path("face\0.png", lim)
    with pytest.raises(ReferenceRefused, match="outside reference_dirs"):
        resolve_reference_path(str(tmp_path / ".." / "face.png"), lim)  # ".." is resolved first
    assert resolve_reference_path("/etc/passwd", ReferenceLimits()) == Path("/etc/passwd")  # no dirs: any


def test_face_articulation_message_has_the_articulation_fields():
    """FaceArticulation.msg names every articulation column, in order, as float32 (filled by name)."""
    from dystream_ros.msg import FaceArticulation

    from dystream_ros.data.face import ARTICULATION_FIELDS

    fields = FaceArticulation.get_fields_and_field_types()
    assert list(fields)[2:] == list(ARTICULATION_FIELDS)
    assert all(fields[f] == "float" for f in ARTICULATION_FIELDS)
    assert list(fields)[:2] == ["header", "frame_index"]
