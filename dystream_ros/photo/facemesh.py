"""MediaPipe FaceMesh (``mediapipe==0.10.14``, model bundled in the wheel) on still images.

One FaceMesh graph per process, created on first use and guarded by a lock (MediaPipe graphs are not
re-entrant). :func:`find_faces` returns every face found (up to ``MAX_FACES``) as ``[478, 3]`` float64
landmarks in *pixels* of the image passed in: x, y, and z on the x scale (negative = towards the camera),
with MediaPipe's fixed numbering (468 mesh points + 10 iris points, ``refine_landmarks=True``).

Named landmark groups used by the rig live here too, so the numbering is written down in one place.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np

__all__ = ["FaceMeshUnavailable", "MAX_FACES", "NUM_LANDMARKS", "find_faces"]

NUM_LANDMARKS = 478
#: Faces asked from FaceMesh: two, so that a second face in the photo can be refused.
MAX_FACES = 2
MEDIAPIPE_INSTALL = "pip install --no-deps mediapipe==0.10.14 (see requirements.txt)"

# ---- fixed MediaPipe FaceMesh numbering -------------------------------------------------------------
FOREHEAD, CHIN, NOSE_TIP = 10, 152, 1
CHEEK_A, CHEEK_B = 234, 454  # silhouette at cheek height, image left / right in a frontal photo
MOUTH_CORNER_A, MOUTH_CORNER_B = 61, 291
# Inner lip contours, corner to corner (78 ... 308), upper and lower; point i of one faces point i of the
# other.
INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
# Eyes: corners + upper lid and corners + lower lid, same length so lid i faces lower i.
# "A" is the eye on the image left of a frontal photo (MediaPipe's "right eye"), "B" the image right.
EYE_A_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
EYE_A_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
EYE_B_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)
EYE_B_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
IRIS_A, IRIS_B = 468, 473  # iris centres (refine_landmarks); 469-472 and 474-477 their rings
BROW_A = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107)
BROW_B = (276, 283, 282, 295, 285, 300, 293, 334, 296, 336)
#: Face silhouette, in order round the face (starts at the forehead, goes towards the image right).
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)


class FaceMeshUnavailable(RuntimeError):
    """MediaPipe is missing or its graph does not start (e.g. protobuf >= 5)."""


_lock = threading.Lock()
_mesh = None


def _graph():
    global _mesh
    if _mesh is None:
        try:
            from mediapipe.python.solutions import face_mesh
        except Exception as e:  # ImportError, or a protobuf too new for the generated code
            raise FaceMeshUnavailable(f"MediaPipe is not usable here ({type(e).__name__}: {e}); "
                                      f"install it with: {MEDIAPIPE_INSTALL}") from e
        try:
            _mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=MAX_FACES,
                                       refine_landmarks=True, min_detection_confidence=0.5)
        except Exception as e:
            raise FaceMeshUnavailable(f"MediaPipe FaceMesh failed to start ({type(e).__name__}: {e}); "
                                      f"install: {MEDIAPIPE_INSTALL}") from e
    return _mesh


def find_faces(rgb: np.ndarray) -> list[np.ndarray]:
    """Faces in an ``[H, W, 3]`` uint8 RGB image: a list of ``[478, 3]`` float64 landmark arrays in pixels
    (x, y, z; z on the x scale), largest face first."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"find_faces wants uint8 [H, W, 3] RGB, got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    with _lock:
        mesh = _graph()
        with warnings.catch_warnings():  # protobuf 4.25 deprecation chatter from the graph runner
            warnings.simplefilter("ignore", UserWarning)
            res = mesh.process(np.ascontiguousarray(rgb))
    faces = []
    for f in res.multi_face_landmarks or []:
        lm = np.array([(p.x, p.y, p.z) for p in f.landmark], dtype=np.float64)
        if lm.shape[0] != NUM_LANDMARKS:
            raise FaceMeshUnavailable(f"FaceMesh returned {lm.shape[0]} landmarks, expected {NUM_LANDMARKS} "
                                      f"(refine_landmarks); is this mediapipe 0.10.14?")
        faces.append(lm * np.array([w, h, w], dtype=np.float64))
    faces.sort(key=lambda p: -float(np.linalg.norm(p[CHIN, :2] - p[FOREHEAD, :2])))
    return faces


def eye_centres(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres (x, y) of the image-left eye "A" and the image-right eye "B"."""
    a = lm[list(EYE_A_UPPER + EYE_A_LOWER), :2].mean(axis=0)
    b = lm[list(EYE_B_UPPER + EYE_B_LOWER), :2].mean(axis=0)
    return a, b


def face_frame(lm: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(origin, roll, face_height)`` of a face: origin = midpoint of the eye centres (pixels), roll =
    angle of the eye line (radians, image coordinates, y down), face height = forehead (10) to chin (152)
    distance."""
    a, b = eye_centres(lm)
    d = b - a
    fh = float(np.linalg.norm(lm[CHIN, :2] - lm[FOREHEAD, :2]))
    return (a + b) / 2.0, float(np.arctan2(d[1], d[0])), fh


def to_face_coords(lm: np.ndarray) -> np.ndarray:
    """``[N, 2]`` landmark positions in the face frame: origin between the eyes, x along the eye line (towards
    the image right), y down, unit = face height."""
    o, roll, fh = face_frame(lm)
    c, s = np.cos(-roll), np.sin(-roll)
    p = lm[:, :2] - o
    return np.stack([c * p[:, 0] - s * p[:, 1], s * p[:, 0] + c * p[:, 1]], axis=1) / fh
