# Enter the dystream_ros environment:   source scripts/env.sh
# Activates .venv, points AMENT/CMAKE prefix paths at it (ROS 2 from PyPI wheels) unless a system
# ROS 2 is sourced, and sources the colcon install/ overlay when it has been built.
# Pass --no-install to skip the overlay (used by make setup before the first build).
_dys_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -x "$_dys_root/.venv/bin/python" ]; then
  echo "dystream_ros: no .venv yet; run 'make setup' first" >&2
  return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
VIRTUAL_ENV_DISABLE_PROMPT=1 source "$_dys_root/.venv/bin/activate"
if [ -z "${ROS_DISTRO:-}" ] || [ -n "${DYSTREAM_ROS_FROM_VENV:-}" ]; then
  export DYSTREAM_ROS_FROM_VENV=1
  export AMENT_PREFIX_PATH="$_dys_root/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$_dys_root/.venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
fi
if [ "${1:-}" != "--no-install" ] && [ -f "$_dys_root/install/setup.bash" ]; then
  # shellcheck disable=SC1091
  source "$_dys_root/install/setup.bash"
fi
unset _dys_root
