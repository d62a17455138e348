#!/usr/bin/env bash
# make demo: the main job. The node, a bag player and a recorder over real DDS on the bundled sample
# conversation; writes out/demo/ (video.mp4, output.mcap, report.json, plots). `make demo` runs
# `make setup` first and enters the environment; extra arguments go to `dystream demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m dystream_ros.cli demo "$@"
