"""The rig's shipped tables: per-landmark motion weights and the face-mesh triangles.

Both are written once by :mod:`dystream_ros.photo.author` on MediaPipe FaceMesh's fixed numbering and shipped
in ``dystream_ros/assets/photos/`` (CSV, a few tens of kB); no photo's rig guesses weights of its own.

``facemesh_weights.csv``: one row per landmark 0..477, columns :data:`WEIGHT_COLUMNS`, each in [0, 1]:

- ``jaw``: follows the jaw when it opens (lower lip, chin, jaw line; fading up the cheeks)
- ``upper_lip`` / ``lower_lip``: the lips themselves (rounding, protrusion, pressing together)
- ``corner_l`` / ``corner_r``: around the mouth corner on the image left / right (spread, round, smile)
- ``cheek_l`` / ``cheek_r``: the cheek raised by a smile
- ``lid_lower_l`` / ``lid_lower_r``: lower eyelids (a smile lifts them)
- ``brow_l`` / ``brow_r``: brows and the forehead above them
- ``lip_depth``: inside the lips, 0 on the outer contour to 1 on the inner one (0 elsewhere)

``facemesh_triangles.csv``: rows ``a,b,c`` of landmark indices, the triangles of the 468-point mesh (eye and
mouth openings are holes here; the rig fills them).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dystream_ros.photo.facemesh import NUM_LANDMARKS

__all__ = ["ASSET_DIR", "TRIANGLES_FILE", "WEIGHTS_FILE", "WEIGHT_COLUMNS", "RigTables", "TableError",
           "load_tables"]

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "photos"
WEIGHTS_FILE = ASSET_DIR / "facemesh_weights.csv"
TRIANGLES_FILE = ASSET_DIR / "facemesh_triangles.csv"
WEIGHT_COLUMNS: tuple[str, ...] = ("jaw", "upper_lip", "lower_lip", "corner_l", "corner_r", "cheek_l",
                                   "cheek_r", "lid_lower_l", "lid_lower_r", "brow_l", "brow_r", "lip_depth")
AUTHOR_COMMAND = "python -m dystream_ros.photo.author"


class TableError(RuntimeError):
    """A missing or malformed shipped table."""


@dataclass(frozen=True)
class RigTables:
    weights: np.ndarray  # [478, len(WEIGHT_COLUMNS)] float32 in [0, 1]
    triangles: np.ndarray  # [F, 3] int32 landmark indices < 468

    def column(self, name: str) -> np.ndarray:
        return self.weights[:, WEIGHT_COLUMNS.index(name)]


def _read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    if not path.is_file():
        raise TableError(f"rig table not found: {path} (write it with: {AUTHOR_COMMAND})")
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    header = lines[0].split(",")
    try:
        rows = np.array([[float(v) for v in ln.split(",")] for ln in lines[1:]], dtype=np.float64)
    except ValueError as e:
        raise TableError(f"{path}: non-numeric value ({e})") from None
    if rows.ndim != 2 or rows.shape[1] != len(header):
        raise TableError(f"{path}: rows do not match the header {header}")
    return header, rows


@functools.lru_cache(maxsize=1)
def load_tables() -> RigTables:
    """Read and check both tables (cached)."""
    header, rows = _read_csv(WEIGHTS_FILE)
    if header != ["landmark", *WEIGHT_COLUMNS]:
        raise TableError(f"{WEIGHTS_FILE}: header {header} != {['landmark', *WEIGHT_COLUMNS]}")
    if rows.shape[0] != NUM_LANDMARKS or not np.array_equal(rows[:, 0], np.arange(NUM_LANDMARKS)):
        raise TableError(f"{WEIGHTS_FILE}: needs one row per landmark 0..{NUM_LANDMARKS - 1} in order")
    w = rows[:, 1:].astype(np.float32)
    if not np.all((w >= 0) & (w <= 1)):
        raise TableError(f"{WEIGHTS_FILE}: weights outside [0, 1]")
    header, tri = _read_csv(TRIANGLES_FILE)
    if header != ["a", "b", "c"]:
        raise TableError(f"{TRIANGLES_FILE}: header {header} != ['a', 'b', 'c']")
    tri = tri.astype(np.int32)
    if tri.min() < 0 or tri.max() >= 468 or len(tri) < 500:
        raise TableError(f"{TRIANGLES_FILE}: indices outside 0..467 or too few triangles ({len(tri)})")
    return RigTables(weights=w, triangles=tri)
