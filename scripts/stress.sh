#!/usr/bin/env bash
# make test-stress: the ROS tests (pytest -m ros) while a CPU hog keeps one core busy at normal
# priority, as on a robot whose other processes compete with the node. The tests wait on conditions,
# so they must pass here too; a failure under load is a bug in a test or in the node.
set -euo pipefail
cd "$(dirname "$0")/.."
hog() { while :; do :; done; }
hog &
HOG=$!
trap 'kill "$HOG" 2>/dev/null || true' EXIT
echo "[stress] CPU hog pid $HOG on one core; running the ROS tests"
DYSTREAM_REQUIRE_ROS=1 pytest -m ros "$@"
