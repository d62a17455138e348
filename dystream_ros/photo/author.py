"""Write the rig's shipped tables (``python -m dystream_ros.photo.author``); see :mod:`.table`.

The weights are authored on MediaPipe FaceMesh's fixed numbering: named landmark groups (lips, eyelids, brows,
silhouette) get weight 1 and the weights fall off smoothly with distance from them, measured in the face frame
(unit = face height) of a template face: the FaceMesh landmarks of the shipped astronaut photo. The rules
are the functions below; the output is deterministic for a given mediapipe version and is checked into the
repository,
so a rig never derives weights from the photo it animates.

The triangles are MediaPipe's tessellation graph (``FACEMESH_TESSELATION``) turned into faces: every
3-clique of the edge graph, less the two separating cliques that are not faces (each of their edges borders
two faces).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from dystream_ros.photo import facemesh as fm
from dystream_ros.photo.table import ASSET_DIR, TRIANGLES_FILE, WEIGHT_COLUMNS, WEIGHTS_FILE

TEMPLATE = ASSET_DIR / "astronaut.png"


def _smoothstep(x, a, b):
    t = np.clip((np.asarray(x, np.float64) - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _dist_to_polyline(p: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Distance of each point of ``p`` [N, 2] to the polyline ``line`` [M, 2]."""
    best = np.full(len(p), np.inf)
    for a, b in zip(line[:-1], line[1:], strict=True):
        ab = b - a
        t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-12), 0, 1)
        best = np.minimum(best, np.linalg.norm(p - (a + t[:, None] * ab), axis=1))
    return best


def _inside(p: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Points of ``p`` strictly inside the polygon ``poly`` (even-odd rule)."""
    import cv2

    c = poly.astype(np.float32).reshape(-1, 1, 2)
    return np.array([cv2.pointPolygonTest(c, (float(x), float(y)), False) > 0 for x, y in p])


def author_weights(q: np.ndarray) -> np.ndarray:
    """``[478, len(WEIGHT_COLUMNS)]`` weights from template landmarks ``q`` in the face frame (unit = face
    height)."""
    n = len(q)
    x, y = q[:, 0], q[:, 1]
    up = np.array(fm.OUTER_UPPER + fm.INNER_UPPER[1:-1])
    lo = np.array(fm.OUTER_LOWER + fm.INNER_LOWER[1:-1])
    corners = [fm.MOUTH_CORNER_A, fm.MOUTH_CORNER_B, 78, 308]
    y_corner = float(q[corners, 1].mean())
    mouth_cx = float(q[corners, 0].mean())
    mouth_hw = float(abs(q[fm.MOUTH_CORNER_B, 0] - q[fm.MOUTH_CORNER_A, 0])) / 2
    out = {}
    # Jaw: everything below the mouth-corner line moves with the jaw; the weight fades out up the cheeks and
    # sideways towards the ears (the jaw hinges there, so points near it barely move in a frontal view).
    below = _smoothstep(y, y_corner - 0.03, y_corner + 0.09)
    side = 1.0 - _smoothstep(np.abs(x - mouth_cx), 0.16, 0.42)
    jaw = below * side
    # Inside the lips (between the outer and inner contours) the lip a point belongs to decides, whatever its
    # height: the upper lip's lower rows must not follow the jaw, nor the lower lip's inner rows stay behind.
    in_up = _inside(q[:, :2], q[list(fm.OUTER_UPPER + fm.INNER_UPPER[::-1]), :2])
    in_lo = _inside(q[:, :2], q[list(fm.OUTER_LOWER + fm.INNER_LOWER[::-1]), :2])
    up = np.union1d(up, np.flatnonzero(in_up))
    lo = np.union1d(lo, np.flatnonzero(in_lo))
    # Along the lips the weight changes smoothly into the corners (0.45 there): upper lip 0 -> 0.45, lower
    # lip 1 -> 0.45, so the rows next to a corner do not cross it.
    near = np.exp(-0.5 * (np.minimum(np.linalg.norm(q[:, :2] - q[fm.MOUTH_CORNER_A, :2], axis=1),
                                     np.linalg.norm(q[:, :2] - q[fm.MOUTH_CORNER_B, :2], axis=1))
                          / (0.22 * mouth_hw)) ** 2)
    jaw[lo] = 1.0 - 0.55 * near[lo]
    jaw[up] = 0.45 * near[up]
    jaw[corners] = 0.45
    out["jaw"] = jaw
    d_up = _dist_to_polyline(q[:, :2], q[list(fm.OUTER_UPPER), :2])
    d_lo = _dist_to_polyline(q[:, :2], q[list(fm.OUTER_LOWER), :2])
    ul = np.exp(-0.5 * (d_up / 0.035) ** 2) * (y <= y_corner + 0.01)
    ul[up] = 1.0
    ul[lo] = 0.0
    ll = np.exp(-0.5 * (d_lo / 0.035) ** 2) * (y >= y_corner - 0.01)
    ll[lo] = 1.0
    ll[up] = 0.0
    ul[corners] = ll[corners] = 1.0
    out["upper_lip"], out["lower_lip"] = ul, ll
    # Depth into the lips from the outer contour (0) to the inner one (1): sealing a parted mouth moves the
    # lips' inner rows nearly all the way and the outer contour a quarter, so the red of the lip is what
    # stretches, not the few pixels at its edge.
    depth = np.zeros(n)
    for outer, inner, members in ((fm.OUTER_UPPER, fm.INNER_UPPER, up), (fm.OUTER_LOWER, fm.INNER_LOWER, lo)):
        d_out = _dist_to_polyline(q[:, :2], q[list(outer), :2])
        d_in = _dist_to_polyline(q[:, :2], q[list(inner), :2])
        depth[members] = d_out[members] / np.maximum(d_out[members] + d_in[members], 1e-9)
    depth[corners] = 0.0
    out["lip_depth"] = depth
    for tag, idx in (("l", fm.MOUTH_CORNER_A), ("r", fm.MOUTH_CORNER_B)):
        d = np.linalg.norm(q[:, :2] - q[idx, :2], axis=1)
        w = np.exp(-0.5 * (d / (0.55 * mouth_hw)) ** 2)
        # Only the half of the mouth on this side (the other corner keeps its own weight).
        w *= _smoothstep((x - mouth_cx) * (1 if tag == "r" else -1), -0.15 * mouth_hw, 0.3 * mouth_hw)
        out[f"corner_{tag}"] = w
    for tag, eye_lo, brow in (("l", fm.EYE_A_LOWER, fm.BROW_A), ("r", fm.EYE_B_LOWER, fm.BROW_B)):
        lid = q[list(eye_lo), :2]
        cheek_c = lid.mean(axis=0) + np.array([0.0, 0.16])
        out[f"cheek_{tag}"] = np.exp(-0.5 * (np.linalg.norm(q[:, :2] - cheek_c, axis=1) / 0.08) ** 2)
        d = _dist_to_polyline(q[:, :2], lid)
        w = np.exp(-0.5 * (d / 0.025) ** 2) * (y >= lid[:, 1].min() - 0.005)
        w[list(eye_lo[1:-1])] = 1.0
        w[list(eye_lo[::len(eye_lo) - 1])] = 0.0  # eye corners stay
        out[f"lid_lower_{tag}"] = w
        bl = q[list(brow), :2]
        d = _dist_to_polyline(q[:, :2], bl[np.argsort(bl[:, 0])])
        above = y < bl[:, 1].mean()
        w = np.where(above, np.exp(-0.5 * (d / 0.09) ** 2), np.exp(-0.5 * (d / 0.03) ** 2))
        w[list(brow)] = 1.0
        out[f"brow_{tag}"] = w
    # Nothing the mouth does reaches above the base of the nose (landmark 2): the mouth weights fade out over
    # the upper half of the philtrum, so the eyes, brows and nose stay as they are while only the mouth moves.
    y_nose, y_lip = float(q[2, 1]), float(q[0, 1])
    taper = _smoothstep(y, y_nose + 0.35 * (y_lip - y_nose), y_nose + 0.85 * (y_lip - y_nose))
    for c in ("jaw", "upper_lip", "lower_lip", "corner_l", "corner_r", "lip_depth"):
        out[c] = out[c] * taper
    w = np.stack([np.clip(out[c], 0, 1) for c in WEIGHT_COLUMNS], axis=1)
    w[w < 1e-3] = 0.0
    assert w.shape == (n, len(WEIGHT_COLUMNS))
    return w


def author_triangles() -> np.ndarray:
    """Faces of MediaPipe's tessellation graph, ``[F, 3]``: its 3-cliques less the separating ones (a clique
    whose three edges each border two other cliques is not a face of the mesh)."""
    from collections import Counter

    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    adj: dict[int, set[int]] = {}
    for a, b in FACEMESH_TESSELATION:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    tris = sorted({tuple(sorted((a, b, c))) for a in adj for b in adj[a] for c in adj[a] & adj[b]})
    uses = Counter(e for a, b, c in tris for e in ((a, b), (b, c), (a, c)))
    keep = [t for t in tris if not all(uses[e] > 2 for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])))]
    return np.array(keep, dtype=np.int32)


def template_landmarks() -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(TEMPLATE), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"cannot read the template photo {TEMPLATE}")
    faces = fm.find_faces(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    if len(faces) != 1:
        raise SystemExit(f"template {TEMPLATE}: {len(faces)} faces found, expected 1")
    return faces[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dystream_ros.photo.author",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only compare with the shipped tables")
    args = ap.parse_args(argv)
    lm = template_landmarks()
    q = fm.to_face_coords(lm)
    w = author_weights(q)
    tri = author_triangles()
    wtxt = "landmark," + ",".join(WEIGHT_COLUMNS) + "\n" + "".join(
        f"{i}," + ",".join(f"{v:.3f}" for v in row) + "\n" for i, row in enumerate(w))
    ttxt = "a,b,c\n" + "".join(f"{a},{b},{c}\n" for a, b, c in tri)
    if args.check:
        same = WEIGHTS_FILE.read_text() == wtxt and TRIANGLES_FILE.read_text() == ttxt
        print("tables match" if same else "tables differ from a fresh authoring")
        return 0 if same else 1
    WEIGHTS_FILE.write_text(wtxt)
    TRIANGLES_FILE.write_text(ttxt)
    print(f"wrote {WEIGHTS_FILE} ({len(w)} landmarks) and {TRIANGLES_FILE} ({len(tri)} triangles)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
