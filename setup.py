"""pip install of the dystream_ros Python package for ROS-free use (training, offline evaluation).

On a robot the package is built with colcon (CMakeLists.txt); this file serves `pip install .`,
which gives the `dystream` command and the core (model, audio, data, eval) without ROS. The ROS
messages (dystream_ros.msg) only exist in a colcon build.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def requirements(name: str = "requirements.txt") -> list[str]:
    reqs = []
    for line in (HERE / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            reqs += requirements(line[3:].strip())
        # Test and lint tools are development dependencies, not runtime ones.
        elif line and not line.startswith(("pytest", "ruff")):
            reqs.append(line)
    return reqs


def install_requires() -> list[str]:
    return requirements() + ["torch==2.13.0"]


setup(
    name="dystream_ros",
    version="0.1.0",
    description="DyStream streaming dyadic talking heads for ROS 2",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["dystream_ros", "dystream_ros.*"]),
    package_data={"dystream_ros": ["assets/*", "assets/**/*"]},
    include_package_data=True,
    # The interface definitions and node parameters, for ROS-free tools (rosbags typestore, replay).
    data_files=[
        ("share/dystream_ros/msg", [str(p) for p in sorted(Path("msg").glob("*.msg"))]),
        ("share/dystream_ros/srv", [str(p) for p in sorted(Path("srv").glob("*.srv"))]),
        ("share/dystream_ros/config", [str(p) for p in sorted(Path("config").glob("*.yaml"))]),
    ],
    install_requires=install_requires(),
    entry_points={"console_scripts": ["dystream = dystream_ros.cli:main"]},
)
