"""Rewrite the build machine's Python include dirs in the ROS wheels' CMake export files.

The ROS 2 PyPI wheels were built on a manylinux image, and their ``share/*/cmake/*.cmake`` export
files name include directories of that machine (``/opt/python/cp311-cp311/include/python3.11`` and
its numpy include dir). Message builds that link against those targets then fail because the
directories do not exist here. This rewrites them to this interpreter's include directories.

numpy's include dir lives inside the venv, which lives inside the source tree; CMake refuses an
exported target whose include dirs are "prefixed in the source directory". So numpy's include dir is
reached through a symlink outside the tree (under ~/.cache/dystream_ros). Safe to run repeatedly.

Usage: python scripts/fix_cmake_exports.py VENV_PREFIX   (prints the numpy include link on stdout)
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import sysconfig
from pathlib import Path

import numpy

PY_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+[^;\"\s]*?/include/python3\.\d+")
NP_INCLUDE = re.compile(r"/[^;\"\s]*?/numpy/_?core/include|/[^;\"\s]*?/dystream_ros/numpy-include-[0-9a-f]+")


def numpy_include_link() -> str:
    """A stable symlink outside the source tree that points at numpy's include dir."""
    real = numpy.get_include()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dystream_ros"
    cache.mkdir(parents=True, exist_ok=True)
    link = cache / f"numpy-include-{hashlib.sha256(real.encode()).hexdigest()[:12]}"
    if not (link.is_symlink() and os.readlink(link) == real):
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(real)
    return str(link)


def main(prefix: str) -> int:
    py_inc = sysconfig.get_paths()["include"]
    np_inc = numpy_include_link()
    changed = 0
    for path in Path(prefix, "share").glob("*/cmake/*.cmake"):
        text = path.read_text(errors="surrogateescape")
        new = NP_INCLUDE.sub(np_inc, PY_INCLUDE.sub(py_inc, text))
        if new != text:
            path.write_text(new, errors="surrogateescape")
            changed += 1
    print(f"fix_cmake_exports: rewrote {changed} file(s) -> {py_inc}, {np_inc}", file=sys.stderr)
    print(np_inc)  # stdout: the numpy include link, passed to CMake as Python3_NumPy_INCLUDE_DIR
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
