"""The package itself: build products, ROS-free import, package.xml, lint, CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "install" / "dystream_ros"


def _ros_free_env() -> dict[str, str]:
    """This environment without anything ROS: no ROS/ament/colcon variables, no install/ on paths."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ROS_", "AMENT_", "COLCON_", "RMW_", "CMAKE_PREFIX"))
        and k not in ("PYTHONPATH", "LD_LIBRARY_PATH")
    }
    env["PYTHONPATH"] = str(REPO)
    return env


BLOCK_ROS = """
import importlib.abc, sys
class _NoRos(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('rclpy', 'rosidl_runtime_py', 'rosidl_parser', 'launch', 'launch_ros') \\
                or name.startswith(('dystream_ros.msg', 'dystream_ros.srv')):
            raise ModuleNotFoundError(f'blocked ROS module {name}')
sys.meta_path.insert(0, _NoRos())
"""


def test_core_imports_without_ros(tmp_path):
    """Every core module imports in a process with no ROS paths and with rclpy made unimportable."""
    code = BLOCK_ROS + (
        "import pkgutil, dystream_ros\n"
        "mods = [m.name for m in pkgutil.walk_packages(dystream_ros.__path__, 'dystream_ros.')\n"
        "        if not m.name.startswith(('dystream_ros.nodes', 'dystream_ros.msg', 'dystream_ros.srv'))]\n"
        "for m in mods: __import__(m)\n"
        "assert not [k for k in sys.modules if k.startswith('rclpy')]\n"
        "print('imported', len(mods), 'core modules')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=_ros_free_env(), cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "imported" in r.stdout


def test_core_modules_never_import_rclpy():
    """Only dystream_ros/nodes/ may import rclpy (DESIGN.md §2)."""
    offenders = []
    for path in (REPO / "dystream_ros").rglob("*.py"):
        rel = path.relative_to(REPO / "dystream_ros")
        if rel.parts[0] == "nodes":
            continue
        for line in path.read_text().splitlines():
            s = line.strip()
            if s.startswith(("import rclpy", "from rclpy")):
                offenders.append(f"{rel}: {s}")
    assert not offenders, offenders


def test_dystream_help_runs_without_ros(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dystream_ros.cli", "--help"], env=_ros_free_env(),
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "usage: dystream" in r.stdout


def test_package_xml_is_well_formed():
    from catkin_pkg.package import parse_package

    tree = ET.parse(REPO / "package.xml")
    assert tree.getroot().attrib["format"] == "3"
    pkg = parse_package(str(REPO / "package.xml"))
    pkg.validate()
    assert pkg.name == "dystream_ros"
    assert pkg.get_build_type() == "ament_cmake"
    deps = {d.name for d in pkg.exec_depends + pkg.build_depends + pkg.buildtool_depends}
    for needed in ("rclpy", "std_msgs", "sensor_msgs", "diagnostic_msgs", "std_srvs", "builtin_interfaces",
                   "rosidl_default_generators", "rosidl_default_runtime", "python3-numpy", "python3-yaml"):
        assert needed in deps, f"package.xml lacks {needed}"


@pytest.mark.ros
def test_colcon_build_installed_everything():
    site = INSTALL / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    for rel in ("dystream_ros/__init__.py", "dystream_ros/cli.py", "dystream_ros/msg/_audio_chunk.py",
                "dystream_ros/msg/_motion_latent.py", "dystream_ros/msg/_avatar_state.py",
                "dystream_ros/srv/_set_reference.py"):
        assert (site / rel).is_file(), f"missing {rel} in {site}"
    share = INSTALL / "share" / "dystream_ros"
    for rel in ("package.xml", "msg/AudioChunk.msg", "msg/MotionLatent.msg", "msg/AvatarState.msg"):
        assert (share / rel).is_file(), f"missing share/dystream_ros/{rel}"
    import dystream_ros.msg

    assert any("install" in p for p in dystream_ros.__path__)
    assert dystream_ros.msg.AudioChunk.ENCODING_PCM_F32LE == "pcm_f32le"


@pytest.mark.ros
def test_audio_chunk_has_the_contract_fields_in_order():
    from dystream_ros.msg import AudioChunk

    fields = list(AudioChunk.get_fields_and_field_types().items())
    assert fields[:5] == [("header", "std_msgs/Header"), ("sample_rate", "uint32"), ("channels", "uint16"),
                          ("encoding", "string"), ("data", "sequence<uint8>")]


def test_ruff_passes():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    r = subprocess.run([ruff, "check", "dystream_ros", "test", "scripts", "setup.py"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# Where each third-party module the package imports comes from on a robot: a rosdep key in package.xml,
# or a pip requirement in requirements-robot.txt (README "Robot checklist"). Torch is installed for the
# robot's hardware; mediapipe is the evaluation-only mouth reader (requirements.txt, not a robot need).
_MODULE_SOURCES = {
    "numpy": "python3-numpy", "yaml": "python3-yaml", "scipy": "python3-scipy", "cv2": "python3-opencv",
    "PIL": "python3-pil", "tqdm": "python3-tqdm", "matplotlib": "python3-matplotlib",
    "rclpy": "rclpy", "rcl_interfaces": "rcl_interfaces", "builtin_interfaces": "builtin_interfaces",
    "std_msgs": "std_msgs", "sensor_msgs": "sensor_msgs", "diagnostic_msgs": "diagnostic_msgs",
    "std_srvs": "std_srvs", "rosgraph_msgs": "rosgraph_msgs", "ament_index_python": "ament_index_python",
    "launch": "launch", "launch_ros": "launch_ros", "lifecycle_msgs": "lifecycle_msgs",
    "safetensors": "pip:safetensors", "onnxruntime": "pip:onnxruntime", "rosbags": "pip:rosbags",
    "av": "pip:av", "sounddevice": "pip:sounddevice", "transformers": "pip:transformers",
    "numba": "pip:numba",
    # installed by their own commands (README checklist): torch (the robot's build), mediapipe (--no-deps);
    # audio_common_msgs is optional (audio_msg_type, the mic's second output), used only when installed
    "torch": "torch", "mediapipe": "separate", "audio_common_msgs": "separate",
}


def _third_party_imports(paths) -> set[str]:
    import ast

    found = set()
    for f in paths:
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.Import):
                found |= {a.name.split(".")[0] for a in n.names}
            elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
                found.add(n.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"dystream_ros"}


def test_runtime_dependencies_are_declared():
    """Every module the package (and its launch file) imports is installed by rosdep or by
    requirements-robot.txt; the README checklist names each pip package."""
    from catkin_pkg.package import parse_package

    paths = list((REPO / "dystream_ros").rglob("*.py")) + [REPO / "launch" / "dystream.launch.py"]
    imported = _third_party_imports(paths)
    unknown = imported - set(_MODULE_SOURCES)
    assert not unknown, f"imported but not declared anywhere (add to package.xml or requirements): {unknown}"
    pkg = parse_package(str(REPO / "package.xml"))
    keys = {d.name for d in pkg.exec_depends + pkg.build_depends}
    robot = {line.split("==")[0] for line in (REPO / "requirements-robot.txt").read_text().splitlines()
             if line and not line.startswith("#")}
    readme = (REPO / "README.md").read_text()
    for module in imported:
        src = _MODULE_SOURCES[module]
        if src.startswith("pip:"):
            assert src[4:] in robot and f"`{src[4:]}`" in readme, module
        elif src not in ("torch", "separate"):
            assert src in keys, f"package.xml lacks {src} (imported as {module})"
    # onnx is never imported, but torch.onnx.export needs it for the default CPU backend
    assert "onnx" in robot and "`onnx`" in readme
    dev = (REPO / "requirements.txt").read_text()
    assert "-r requirements-robot.txt" in dev  # one set of pins
