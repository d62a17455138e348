"""The photo rig: a face photograph animated by an articulation vector, training-free, on CPU.

Built once per reference (:func:`build_rig`, tens of ms):

1. The image is checked and converted (grayscale and RGBA become RGB, very large images are reduced) and
   MediaPipe FaceMesh finds its landmarks (:mod:`.facemesh`); no face, two faces, a face too small or turned
   too far is refused with :class:`PhotoRefused`.
2. Framing and 2-D frontalisation: the face is rotated so that the eye line is level, scaled to
   ``FACE_FRACTION`` of the frame height and centred; the reference frame (``rig.reference``) is that crop,
   and its expression is the neutral.
3. The mesh: the 478 landmarks with MediaPipe's triangles (:mod:`.table`), fans that fill the eyes round the
   iris centres, a mouth strip split in two along the lips' midline (upper half with the upper lip and upper
   teeth,
   lower half with the jaw, so a photo with an open mouth keeps its teeth on the right jaw), and three margin
   rings round the face silhouette (the first follows the head partly, the outer ones hold hair and background
   still).
4. Per-vertex displacement bases (pixels) from the shipped weights table and the face's size; colours of the
   lips, skin, eyelids and teeth sampled from the photo.

Per frame (:meth:`PhotoRig.render`, a few ms at 256x256): articulation -> vertex displacements (linear bases,
the jaw-lip closure product, head pose rotated in 3-D with FaceMesh's depth and clamped to what a 2-D warp can
show) -> a backward map by rasterising the deformed triangles (a numba kernel), each inverted exactly (on a
grid of at most 64x64, upsampled, and at full resolution round the lips) -> one ``cv2.remap`` of the
reference -> the mouth interior painted where the lips part (dark cavity, upper and lower teeth, tongue tint,
lip shadow) -> eyelids painted closed over the eye.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import cv2
import numba
import numpy as np

from dystream_ros.data.face import ARTICULATION_FIELDS, NUM_PARAMS, clip_params
from dystream_ros.photo import facemesh as fm
from dystream_ros.photo.table import WEIGHT_COLUMNS, load_tables

__all__ = ["PhotoRefused", "PhotoRig", "build_rig", "SIZES", "POSE_LIMITS"]

SIZES = (256, 512)
#: Face height (forehead to chin) as a fraction of the output frame.
FACE_FRACTION = 0.47
#: Vertical position of the point between the eyes in the output frame (fraction of the height).
EYE_LINE_Y = 0.40
MIN_SIDE = 32  # px: images smaller than this are refused before any detection
MIN_FACE_PX = 64  # px: face height (forehead-chin) in the photo
MAX_PIXELS = 40_000_000  # larger images are refused (a 4000x4000 photo, 16 MP, is reduced, not refused)
DETECT_MAX_SIDE = 1600  # photos larger than this are reduced (INTER_AREA) before detection and cropping
SECOND_FACE_RATIO = 0.35  # a second face at least this fraction of the first's height refuses the photo
MAX_YAW_DEG = 30.0
MAX_PITCH_DEG = 30.0
MAX_ROLL_DEG = 50.0
#: Head pose a 2-D warp of a frontal photo can show (radians); articulation beyond is clamped.
POSE_LIMITS = {"head_yaw": 0.25, "head_pitch": 0.20, "head_roll": 0.22}
RING_SCALES = (1.22, 1.65, 4.0)  # margin rings, as scales of the silhouette about its centre
RING_FOLLOW = (0.6, 0.0, 0.0)  # fraction of the silhouette's motion each ring follows
#: Lips sealed over a photo's own teeth: their seam is painted from this share of the lip gap closed.
SEAM_FROM = 0.6
SEAM_HALF_WIDTH = 0.012  # of the mouth width: half the dark line where the lips meet
SEAM_SHADE = 0.45  # the line's colour: the lip colour times this
SEAM_REACH = 3.0  # the painted lips either side of the line, in those units (the squeezed teeth strips)
#: Depth of the head-pose pivot behind the silhouette's mean depth (face heights).
PIVOT_DEPTH = 0.25
DEPTH_RELIEF = 0.35
MAP_MAX = 64  # the backward map is computed at most at this resolution (the field is smooth off the lips)

# Motion amplitudes at articulation 1, as fractions of the face height (fh) or mouth width (mw).
JAW_DROP = 0.15  # fh: lower lip / chin drop at jaw_open = 1 (mouth height ~ half its width)
SPREAD = 0.12  # mw: each corner outwards at lip_spread = 1
ROUND_IN = 0.14  # mw: each corner inwards at lip_round = 1
ROUND_OPEN = 0.018  # fh: lips pushed apart by rounding (protrusion)
SMILE_UP, SMILE_OUT = 0.045, 0.05  # fh, mw: corner lift and widening at smile = 1
CHEEK_UP, LID_UP = 0.018, 0.010  # fh at smile = 1
BROW_UP, BROW_KNIT = 0.045, 0.018  # fh at brow = +1 / -1
GAZE_X, GAZE_Y = 0.16, 0.10  # eye width at gaze = 1

_F = {name: i for i, name in enumerate(ARTICULATION_FIELDS)}


class PhotoRefused(ValueError):
    """A photo the rig cannot animate; ``reason`` (also the message) is safe to show to the caller."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------------------------------------
# Image intake


def prepare_image(image) -> tuple[np.ndarray, list[str]]:
    """Any reasonable image array -> ``[H, W, 3]`` uint8 RGB plus notes on what was converted.

    Grayscale (``[H, W]`` or ``[H, W, 1]``) is converted to RGB; RGBA is composited over mid grey; uint16 and
    float images in [0, 1] are converted to uint8; images whose long side exceeds ``DETECT_MAX_SIDE`` are
    reduced.
    Refused: other shapes or dtypes, images under ``MIN_SIDE`` px, images over ``MAX_PIXELS``.
    """
    notes: list[str] = []
    a = np.asarray(image)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise PhotoRefused(f"not an image: array of shape {a.shape} (expected HxW, HxWx3 or HxWx4)")
    h, w = a.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise PhotoRefused(f"image {w}x{h} is too small (needs at least {MIN_SIDE} px a side)")
    if h * w > MAX_PIXELS:
        raise PhotoRefused(f"image {w}x{h} is too large ({h * w / 1e6:.0f} MP; at most "
                           f"{MAX_PIXELS / 1e6:.0f} MP)")
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
        notes.append("16-bit image reduced to 8 bits")
    elif a.dtype.kind == "f":
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise PhotoRefused("float image must hold values in [0, 1]")
        a = np.round(a * 255).astype(np.uint8)
        notes.append("float image converted to 8 bits")
    elif a.dtype != np.uint8:
        raise PhotoRefused(f"unsupported image dtype {a.dtype} (uint8, uint16 or float in [0, 1])")
    if a.ndim == 2 or a.shape[2] == 1:
        a = np.repeat(a.reshape(h, w, 1), 3, axis=2)
        notes.append("grayscale converted to RGB")
    elif a.shape[2] == 4:
        alpha = a[..., 3:4].astype(np.float32) / 255.0
        a = np.round(a[..., :3] * alpha + 128.0 * (1 - alpha)).astype(np.uint8)
        notes.append("RGBA composited over grey")
    if max(h, w) > DETECT_MAX_SIDE:
        f = DETECT_MAX_SIDE / max(h, w)
        a = cv2.resize(a, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        notes.append(f"reduced from {w}x{h} to {a.shape[1]}x{a.shape[0]}")
    return np.ascontiguousarray(a), notes


def head_pose_deg(lm: np.ndarray) -> tuple[float, float, float]:
    """``(yaw, pitch, roll)`` in degrees of a face in a photo, from its landmarks (pixels, z on the x scale).

    Yaw from the depth difference of the two cheek silhouette points, pitch from the forehead-chin axis'
    depth (offset by the frontal-face value, since a frontal forehead leans back), roll from the eye line."""
    d = lm[fm.CHEEK_B] - lm[fm.CHEEK_A]
    yaw = math.degrees(math.atan2(d[2], d[0]))
    ax = lm[fm.CHIN] - lm[fm.FOREHEAD]
    pitch = math.degrees(math.atan2(-ax[2], ax[1])) - FRONTAL_PITCH_DEG
    roll = math.degrees(fm.face_frame(lm)[1])
    return yaw, pitch, roll


#: Forehead-chin axis angle FaceMesh reports for a face looking straight at the camera (foreheads lean back):
#: -10.5 deg on the shipped astronaut, -6.5 on Grace Hopper, -3.4 to -4.4 on the procedural avatars.
FRONTAL_PITCH_DEG = -7.0


# --------------------------------------------------------------------------------------------------------
# The rig


@dataclass
class BuildInfo:
    notes: list[str] = field(default_factory=list)
    face_px: float = 0.0  # face height (forehead-chin) in the photo, pixels
    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    roll_deg: float = 0.0
    mouth_open_ref: float = 0.0  # the reference's own lip gap over face height
    build_ms: float = 0.0


def _smooth_mask(poly: np.ndarray, shape: tuple[int, int], origin: np.ndarray) -> np.ndarray:
    """Anti-aliased float32 mask [0, 1] of a polygon (output px) inside a box of ``shape`` at ``origin``."""
    m = np.zeros(shape, np.uint8)
    pts = np.round((poly - origin) * 16).astype(np.int32)
    cv2.fillPoly(m, [pts], 255, lineType=cv2.LINE_AA, shift=4)
    return m.astype(np.float32) * (1 / 255)


def _median_colour(img: np.ndarray, mask: np.ndarray, fallback) -> np.ndarray:
    sel = img[mask > 0]
    return np.median(sel, axis=0).astype(np.float32) if len(sel) >= 4 else np.asarray(fallback, np.float32)


class PhotoRig:
    """A built rig for one reference photo. ``render(articulation)`` -> ``[size, size, 3]`` uint8 RGB.

    Attributes: ``size``; ``reference`` (the framed photo, the neutral frame); ``info`` (:class:`BuildInfo`);
    ``landmarks`` (``[478, 3]``, reference frame pixels)."""

    def __init__(self, rgb: np.ndarray, lm: np.ndarray, size: int, info: BuildInfo):
        if size not in SIZES:
            raise ValueError(f"size must be one of {SIZES}, got {size}")
        self.size = size
        self.info = info
        tables = load_tables()
        col = {n: tables.column(n) for n in WEIGHT_COLUMNS if n != "lip_depth"}

        # ---- framing and frontalisation (image -> output frame affine) --------------------------------
        origin, roll, fh_img = fm.face_frame(lm)
        s = FACE_FRACTION * size / fh_img
        c, sn = math.cos(-roll), math.sin(-roll)
        rot = np.array([[c, -sn], [sn, c]]) * s
        t = np.array([size / 2, EYE_LINE_Y * size]) - rot @ origin
        M = np.hstack([rot, t[:, None]])
        src = rgb
        if s < 0.6:  # reduce first so the warp does not alias
            f = min(1.0, 1.6 * s)
            src = cv2.resize(rgb, (max(1, round(rgb.shape[1] * f)), max(1, round(rgb.shape[0] * f))),
                             interpolation=cv2.INTER_AREA)
            M = M @ np.array([[1 / f, 0, 0], [0, 1 / f, 0], [0, 0, 1]])
            M = M[:2]
        self.reference = cv2.warpAffine(src, M, (size, size), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REPLICATE)
        P = np.empty((fm.NUM_LANDMARKS, 3))
        P[:, :2] = lm[:, :2] @ rot.T + t
        P[:, 2] = lm[:, 2] * s
        self.landmarks = P
        fh = FACE_FRACTION * size
        mw = float(np.linalg.norm(P[fm.MOUTH_CORNER_B, :2] - P[fm.MOUTH_CORNER_A, :2]))
        self._fh, self._mw = fh, mw

        # ---- vertices ---------------------------------------------------------------------------------
        U, L = np.array(fm.INNER_UPPER), np.array(fm.INNER_LOWER)
        mids = (P[U[1:-1]] + P[L[1:-1]]) / 2  # 9 midline points, two copies each
        n_lm = fm.NUM_LANDMARKS
        self._mu = np.arange(n_lm, n_lm + 9)
        self._ml = np.arange(n_lm + 9, n_lm + 18)
        oval = np.array(fm.FACE_OVAL)
        centre = P[oval, :2].mean(axis=0)
        rings = [centre + k * (P[oval, :2] - centre) for k in RING_SCALES]
        n_face = n_lm + 18
        self._ring_start = n_face
        V2 = np.concatenate([P[:, :2], mids[:, :2], mids[:, :2], *rings])
        self._n_core = n_face
        self._V0 = V2  # [V, 2] reference vertex positions, output px
        # Depth of the core vertices (for head pose), relative to a pivot behind the face.
        z = np.concatenate([P[:, 2], mids[:, 2], mids[:, 2]])
        z_mean = float(P[oval, 2].mean())
        self._pivot = np.array([origin_out(size)[0], origin_out(size)[1] + 0.35 * fh])
        # Depth relief is halved: a 2-D warp cannot show what turns out of view, and full relief folds the
        # silhouette side of the face over itself.
        self._zrel = DEPTH_RELIEF * (z - z_mean) - PIVOT_DEPTH * fh

        # ---- per-vertex weights for the core vertices (landmarks + midline copies) ----------------------
        def core(w):  # landmark weights -> core vertices (upper copies take the upper lip's, lower ones the
            # lower lip's)
            return np.concatenate([w, w[U[1:-1]], w[L[1:-1]]]).astype(np.float64)

        w = {k: core(v) for k, v in col.items()}
        B = {}
        down = np.array([0.0, 1.0])
        B["jaw"] = w["jaw"][:, None] * down * (JAW_DROP * fh)
        # The lips' share of the jaw drop that pressing them together takes back (lower lip and its skin).
        lipness = np.maximum(w["lower_lip"], w["upper_lip"])
        B["jaw_lip"] = (lipness * w["jaw"])[:, None] * down * (JAW_DROP * fh)
        corner = w["corner_l"] + w["corner_r"]
        cx = np.where(w["corner_l"] >= w["corner_r"], -1.0, 1.0)
        B["lip_spread"] = np.stack([corner * cx * SPREAD * mw, np.zeros(n_face)], axis=1)
        B["lip_round"] = np.stack([-corner * cx * ROUND_IN * mw,
                                   (w["lower_lip"] - w["upper_lip"]) * ROUND_OPEN * fh], axis=1)
        cheek = w["cheek_l"] + w["cheek_r"]
        lids = w["lid_lower_l"] + w["lid_lower_r"]
        B["smile"] = np.stack([corner * cx * SMILE_OUT * mw,
                               -(corner * SMILE_UP + cheek * CHEEK_UP + lids * LID_UP) * fh], axis=1)
        brow = w["brow_l"] + w["brow_r"]
        bx = np.where(w["brow_l"] >= w["brow_r"], 1.0, -1.0)  # knitting pulls each brow towards the middle
        B["brow"] = np.stack([np.zeros(n_face), -brow * BROW_UP * fh], axis=1)
        B["knit"] = np.stack([brow * bx * BROW_KNIT * fh, brow * 0.3 * BROW_KNIT * fh], axis=1)
        # Sealing the lips of a photo whose mouth is open: inner lips to the midline, outer lips half way.
        gap = P[L, :2] - P[U, :2]  # [11, 2], zero at the corners
        order = np.argsort(P[U, 0])
        half = np.stack([np.interp(V2[:n_face, 0], P[U, 0][order], gap[order, c] / 2) for c in range(2)], 1)
        depth = core(tables.column("lip_depth"))
        reach = 0.25 + 0.75 * depth
        upper = (w["upper_lip"] > 0.999) & (w["lower_lip"] < 0.001)  # the lips themselves, corners excluded
        lower = (w["lower_lip"] > 0.999) & (w["upper_lip"] < 0.001)
        seal = np.zeros((n_face, 2))
        seal[upper] = half[upper] * reach[upper, None]
        seal[lower] = -half[lower] * reach[lower, None]
        seal[n_lm:] = 0.0  # the midline copies already sit where the lips meet
        B["seal"] = seal
        eye_a_w = np.linalg.norm(P[fm.EYE_A_UPPER[-1], :2] - P[fm.EYE_A_UPPER[0], :2])
        eye_b_w = np.linalg.norm(P[fm.EYE_B_UPPER[-1], :2] - P[fm.EYE_B_UPPER[0], :2])
        gz = np.zeros((n_face, 2))
        ia = [fm.IRIS_A, *range(469, 473)]
        ib = [fm.IRIS_B, *range(474, 478)]
        gz[ia] = (eye_a_w + eye_b_w) / 2
        gz[ib] = (eye_a_w + eye_b_w) / 2
        B["gaze_x"] = gz * np.array([GAZE_X, 0.0])
        B["gaze_y"] = gz * np.array([0.0, GAZE_Y])
        self._B = {k: v.astype(np.float32) for k, v in B.items()}
        self._ring_of = np.tile(np.arange(len(oval)), 3)  # ring vertex -> silhouette index
        self._ring_follow = np.repeat(np.array(RING_FOLLOW), len(oval))
        self._oval = oval

        # ---- triangles ------------------------------------------------------------------------------------
        tris: list[np.ndarray] = []
        ring_ids = [oval] + [n_face + i * len(oval) + np.arange(len(oval)) for i in range(3)]
        for r in range(3, 0, -1):
            a, b = ring_ids[r - 1], ring_ids[r]
            a1, b1 = np.roll(a, -1), np.roll(b, -1)
            tris += [np.stack([a, a1, b1], 1), np.stack([a, b1, b], 1)]
        tris.append(tables.triangles)
        for up, lo, iris in ((fm.EYE_A_UPPER, fm.EYE_A_LOWER, fm.IRIS_A),
                             (fm.EYE_B_UPPER, fm.EYE_B_LOWER, fm.IRIS_B)):
            ring = np.array(list(up) + list(lo[-2:0:-1]))
            tris.append(np.stack([ring, np.roll(ring, -1), np.full(len(ring), iris)], 1))
        mu = np.concatenate([[U[0]], self._mu, [U[-1]]])
        ml = np.concatenate([[L[0]], self._ml, [L[-1]]])
        for chain, mid in ((U, mu), (L, ml)):
            for i in range(len(chain) - 1):
                for tri in ((chain[i], chain[i + 1], mid[i + 1]), (chain[i], mid[i + 1], mid[i])):
                    if len(set(tri)) == 3:
                        tris.append(np.array([tri]))
        T = np.concatenate(tris).astype(np.int32)
        self._tris = T

        # Reference triangles as an origin and two edges (for the deformed -> reference affine per frame).
        self._ref_v0 = V2[T[:, 0]]
        self._ref_e1 = V2[T[:, 1]] - V2[T[:, 0]]
        self._ref_e2 = V2[T[:, 2]] - V2[T[:, 0]]
        f1, f2 = self._ref_e1, self._ref_e2
        self._min_det = np.maximum(1e-3, 0.05 * np.abs(f1[:, 0] * f2[:, 1] - f2[:, 0] * f1[:, 1]))

        # The coarse map grid (at most MAP_MAX square), pixel centres in output coordinates.
        R = min(size, MAP_MAX)
        k = size / R
        self._k = k
        r2 = rings[1]  # outside the second ring nothing moves
        lo_xy = np.floor(np.clip((r2.min(axis=0) + 0.5) / k - 0.5 - 2, 0, R)).astype(int)
        hi_xy = np.ceil(np.clip((r2.max(axis=0) + 0.5) / k - 0.5 + 2, 0, R)).astype(int)
        x0, y0, x1, y1 = int(lo_xy[0]), int(lo_xy[1]), int(hi_xy[0]), int(hi_xy[1])
        gy, gx = np.mgrid[y0:y1, x0:x1]
        self._grid_origin = (x0, y0)
        self._gx = (k * (gx.astype(np.float32) + 0.5) - 0.5).astype(np.float32)  # [h, w]
        self._gy = (k * (gy.astype(np.float32) + 0.5) - 0.5).astype(np.float32)
        self._roi_shape = (y1 - y0, x1 - x0)
        self._roi_out = (round(x0 * k), round(y0 * k), round(x1 * k), round(y1 * k))
        ox0, oy0, ox1, oy1 = self._roi_out
        ogy, ogx = np.mgrid[oy0:oy1, ox0:ox1].astype(np.float32)
        self._ogx, self._ogy = ogx, ogy
        lips = np.array(fm.OUTER_UPPER + fm.OUTER_LOWER)
        self._lips = lips

        # ---- colours sampled from the photo ---------------------------------------------------------------
        ref = self.reference
        box0 = np.zeros(2)
        hw = (size, size)
        lips_poly = np.concatenate([P[list(fm.OUTER_UPPER), :2], P[list(fm.OUTER_LOWER[-2:0:-1]), :2]])
        inner_poly = np.concatenate([P[list(U), :2], P[list(L[-2:0:-1]), :2]])
        lip_m = (_smooth_mask(lips_poly, hw, box0) > 0.9) & ~(_smooth_mask(inner_poly, hw, box0) > 0.1)
        self._lip_col = _median_colour(ref, lip_m, (170, 90, 90))
        skin_poly = P[list(fm.FACE_OVAL), :2]
        skin_m = _smooth_mask(skin_poly, hw, box0) > 0.9
        self._skin_col = _median_colour(ref, skin_m, (200, 160, 140))
        inner_m = _smooth_mask(inner_poly, hw, box0) > 0.9
        gap_ref = float(np.max(np.linalg.norm(P[L[1:-1], :2] - P[U[1:-1], :2], axis=1)))
        info.mouth_open_ref = float(np.linalg.norm(P[14, :2] - P[13, :2]) / fh)
        luma = ref.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        bright_skin = float(np.clip(self._skin_col.mean() / 140, 0.8, 1.02))
        tooth_default = np.array([246, 238, 222], np.float32) * bright_skin
        # Painted tints scale with the skin's saturation: a black-and-white photo talks in grey.
        sat = float((self._skin_col.max() - self._skin_col.min()) / max(self._skin_col.max(), 1.0))
        tint = min(1.0, sat / 0.15)

        def tinted(c):
            c = np.asarray(c, np.float32)
            return (c.mean() + (c - c.mean()) * tint).astype(np.float32)

        tooth_default = tinted(tooth_default)
        self._own_teeth = bool(gap_ref > 0.02 * fh and inner_m.sum() > 8)
        if self._own_teeth:
            bright = inner_m & (luma > np.percentile(luma[inner_m], 60))
            self._teeth_col = _median_colour(ref, bright, tooth_default)
        else:
            self._teeth_col = tooth_default
        self._cavity_col = tinted(np.clip(self._lip_col * np.array([0.34, 0.24, 0.24]), 12, 90))
        self._tongue_col = tinted(np.clip(self._lip_col * np.array([0.95, 0.62, 0.65]), 0, 255))
        self._lid_col = []
        for up, lo in ((fm.EYE_A_UPPER, fm.EYE_A_LOWER), (fm.EYE_B_UPPER, fm.EYE_B_LOWER)):
            upper = P[list(up), :2]
            eye_h = float(np.max(P[list(lo), 1]) - np.min(P[list(up), 1]))
            band = np.concatenate([upper + np.array([0, -max(1.0, 0.35 * eye_h)]),
                                   (upper + np.array([0, -max(2.0, 0.9 * eye_h)]))[::-1]])
            m = _smooth_mask(band, hw, box0) > 0.9
            self._lid_col.append(_median_colour(ref, m, self._skin_col))
        self._lash_col = np.clip(np.minimum(self._lid_col[0], self._lid_col[1]) * 0.28, 0, 90)

    # -----------------------------------------------------------------------------------------------------
    @property
    def neutral(self) -> np.ndarray:
        """The all-zero articulation (the reference's own expression)."""
        return np.zeros(NUM_PARAMS, np.float32)

    def clamp(self, articulation) -> np.ndarray:
        """Articulation clipped to the parameter ranges, head pose to :data:`POSE_LIMITS` (NaN / inf -> 0)."""
        a = np.asarray(articulation, np.float32).reshape(-1)
        if a.shape[0] != NUM_PARAMS:
            raise ValueError(f"articulation needs {NUM_PARAMS} values ({', '.join(ARTICULATION_FIELDS)}), "
                             f"got {a.shape[0]}")
        a = clip_params(np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0))  # NaN: no motion, not a crash
        for name, lim in POSE_LIMITS.items():
            a[_F[name]] = np.clip(a[_F[name]], -lim, lim)
        return a

    def vertices(self, articulation) -> np.ndarray:
        """``[V, 2]`` deformed vertex positions (output px) for one articulation vector."""
        return self._V0 + self._displacement(self.clamp(articulation))

    def _displacement(self, a: np.ndarray) -> np.ndarray:
        g = lambda n: float(a[_F[n]])  # noqa: E731
        B = self._B
        jaw, close = g("jaw_open"), g("lip_close")
        brow = g("brow")
        d = (B["jaw"] * jaw - B["jaw_lip"] * (jaw * close) + B["seal"] * close
             + B["lip_spread"] * g("lip_spread") + B["lip_round"] * g("lip_round") + B["smile"] * g("smile")
             + B["brow"] * brow + B["knit"] * max(-brow, 0.0)
             + B["gaze_x"] * g("gaze_x") + B["gaze_y"] * g("gaze_y")).astype(np.float64)
        n = self._n_core
        yaw, pitch, roll = g("head_yaw"), g("head_pitch"), g("head_roll")
        if yaw or pitch or roll:
            p = self._V0[:n] + d
            x = p[:, 0] - self._pivot[0]
            y = p[:, 1] - self._pivot[1]
            zr = self._zrel
            cy_, sy_ = math.cos(yaw), math.sin(yaw)
            x2 = x * cy_ - zr * sy_
            z2 = x * sy_ + zr * cy_
            cp, sp = math.cos(pitch), math.sin(pitch)
            y2 = y * cp + z2 * sp
            cr, sr = math.cos(roll), math.sin(roll)
            x3 = x2 * cr - y2 * sr
            y3 = x2 * sr + y2 * cr
            new = np.stack([x3 + self._pivot[0], y3 + self._pivot[1]], 1)
            d = new - self._V0[:n]
        full = np.zeros((len(self._V0) + 1, 2))
        full[:n] = d
        full[self._ring_start:-1] = d[self._oval[self._ring_of]] * self._ring_follow[:, None]
        return full[:-1]

    def render(self, articulation) -> np.ndarray:
        """One frame, ``[size, size, 3]`` uint8 RGB, for an articulation vector in the column order of
        ``ARTICULATION_FIELDS`` (values outside ``PARAM_RANGES`` are clipped, head pose to
        ``POSE_LIMITS``)."""
        a = self.clamp(articulation)
        disp = self._displacement(a)
        V = self._V0 + disp
        out = self.reference.copy()
        if np.abs(disp).max() > 1e-3:
            self._warp(V, disp, out)
        self._paint_mouth(V, out)
        if self._own_teeth:
            self._paint_seam(V, out)
        for e, name in enumerate(("blink_l", "blink_r")):
            b = float(a[_F[name]])
            if b > 0.02:
                self._paint_lid(V, out, e, b)
        return out

    # ---- warp ---------------------------------------------------------------------------------------------
    def _warp(self, Vd: np.ndarray, disp: np.ndarray, out: np.ndarray) -> None:
        """Warp the reference into ``out`` by the vertex displacements ``disp`` ``[V, 2]`` (``Vd``: the moved
        vertices, reference + ``disp``): every triangle moves affinely, so each output pixel a moved triangle
        covers samples the reference through that triangle's inverse affine (:func:`_rasterise`); pixels no
        moved triangle covers keep the reference's own. The map is found on the coarse grid and upsampled,
        then again at full resolution round the lips, where it jumps across the mouth opening."""
        moved = np.abs(disp).max(axis=1) > 1e-3
        k = self._k
        x0, y0 = self._grid_origin
        qx, qy = self._gx.copy(), self._gy.copy()  # uncovered grid points: no displacement
        _rasterise(Vd, self._tris, self._ref_v0, self._ref_e1, self._ref_e2, self._min_det, moved,
                   k, x0, y0, qx, qy)
        fdx, fdy = self._gx - qx, self._gy - qy  # output minus reference position on the grid
        ox0, oy0, ox1, oy1 = self._roi_out
        if k != 1:
            size_out = (ox1 - ox0, oy1 - oy0)
            fdx = cv2.resize(fdx, size_out, interpolation=cv2.INTER_LINEAR)
            fdy = cv2.resize(fdy, size_out, interpolation=cv2.INTER_LINEAR)
        mapx = self._ogx - fdx
        mapy = self._ogy - fdy
        if k != 1:
            lp = np.concatenate([Vd[self._lips], self._V0[self._lips]])
            bx0, by0 = np.maximum(np.floor(lp.min(axis=0)).astype(int) - 3, (ox0, oy0))
            bx1, by1 = np.minimum(np.ceil(lp.max(axis=0)).astype(int) + 4, (ox1, oy1))
            if bx1 > bx0 and by1 > by0:
                rows, cols = slice(by0 - oy0, by1 - oy0), slice(bx0 - ox0, bx1 - ox0)
                _rasterise(Vd, self._tris, self._ref_v0, self._ref_e1, self._ref_e2, self._min_det, moved,
                           1.0, int(bx0), int(by0), mapx[rows, cols], mapy[rows, cols])
        out[oy0:oy1, ox0:ox1] = cv2.remap(self.reference, mapx, mapy, cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_REPLICATE)

    def _box(self, poly: np.ndarray, margin: int = 2) -> tuple[int, int, int, int] | None:
        """Pixel box (x0, y0, x1, y1) round a polygon, ``margin`` (and one more px past the end) clear of
        it, inside the frame; None if empty."""
        x0, y0 = np.floor(poly.min(axis=0)).astype(int) - margin
        x1, y1 = np.ceil(poly.max(axis=0)).astype(int) + margin + 1
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, self.size), min(y1, self.size)
        return None if x1 - x0 < 2 or y1 - y0 < 2 else (int(x0), int(y0), int(x1), int(y1))

    # ---- mouth interior -----------------------------------------------------------------------------------
    def _paint_mouth(self, V: np.ndarray, out: np.ndarray) -> None:
        U, L = fm.INNER_UPPER, fm.INNER_LOWER
        up = np.concatenate([V[[U[0]]], V[self._mu], V[[U[-1]]]])
        lo = np.concatenate([V[[L[0]]], V[self._ml], V[[L[-1]]]])
        gaps = lo[1:-1] - up[1:-1]
        gap = float(np.max(gaps[:, 1]))
        if gap < 0.35:
            return
        poly = np.concatenate([up, lo[-2:0:-1]])
        box = self._box(poly)
        if box is None:
            return
        x0, y0, x1, y1 = box
        o = np.array([x0, y0], np.float64)
        shape = (y1 - y0, x1 - x0)
        m = _smooth_mask(poly, shape, o)
        if m.max() <= 0:
            return
        mw = float(np.linalg.norm(up[-1] - up[0]))
        layer = np.empty(shape + (3,), np.float32)
        layer[:] = self._cavity_col
        # Tongue: a soft ellipse resting on the lower lip, visible once the mouth is well open.
        tongue = np.zeros(shape, np.uint8)
        tc = (lo[5] - o) + np.array([0.0, -0.15 * gap])
        axes = (max(1, int(round(0.32 * mw * 16))), max(1, int(round(0.5 * gap * 16))))
        cv2.ellipse(tongue, (int(round(tc[0] * 16)), int(round(tc[1] * 16))), axes, 0, 180, 360, 255,
                    -1, cv2.LINE_AA, 4)
        ta = tongue.astype(np.float32)[..., None] * (min(1.0, gap / (0.08 * mw)) * 0.85 / 255)
        layer = layer * (1 - ta) + self._tongue_col * ta
        # Teeth: upper row under the upper lip, lower row above the lower lip (narrower and lower).
        th_u = 0.0 if self._own_teeth else min(0.42 * gap, 0.085 * mw)
        th_l = 0.0 if self._own_teeth else min(0.22 * gap, 0.05 * mw)
        teeth = np.zeros(shape, np.uint8)
        uu = up[2:-2] - o
        cv2.fillPoly(teeth, [np.round(np.concatenate([uu, (uu + [0, th_u])[::-1]]) * 16).astype(np.int32)],
                     255, cv2.LINE_AA, 4)
        ll = lo[3:-3] - o
        lower_t = np.zeros(shape, np.uint8)
        cv2.fillPoly(lower_t, [np.round(np.concatenate([ll, (ll - [0, th_l])[::-1]]) * 16).astype(np.int32)],
                     255, cv2.LINE_AA, 4)
        tu = teeth.astype(np.float32)[..., None] / 255
        tl = lower_t.astype(np.float32)[..., None] * (0.9 / 255)
        # Lip shadow: darker towards the lips' edges, most under the upper lip; the cavity takes all of it,
        # the teeth (nearer the light) a third.
        sig = max(0.6, 0.18 * gap)
        rim = cv2.GaussianBlur(1.0 - m, (0, 0), sig)
        yy = np.arange(shape[0], dtype=np.float32)[:, None] + y0
        top = np.interp(np.arange(x0, x1), up[:, 0], up[:, 1]).astype(np.float32)[None, :]
        under = np.exp(-np.clip(yy - top, 0, None) / max(0.8, 0.35 * gap))
        shade = np.clip(1.0 - 0.5 * rim - 0.3 * under, 0.15, 1.0)[..., None]
        tooth_shade = 1.0 - (1.0 - shade) / 3
        layer *= shade
        layer = layer * (1 - tu) + self._teeth_col * tooth_shade * tu
        layer = layer * (1 - tl) + (self._teeth_col * 0.9) * tooth_shade * tl
        mm = m[..., None]
        roi = out[y0:y1, x0:x1].astype(np.float32)
        out[y0:y1, x0:x1] = np.clip(roi * (1 - mm) + layer * mm + 0.5, 0, 255).astype(np.uint8)

    def _paint_seam(self, V: np.ndarray, out: np.ndarray) -> None:
        """Lips sealed over the photo's own teeth: the strip the warp squeezed to a line still samples a
        thread of teeth, so paint the meeting lips there (lip colour, a darker line where they touch),
        fading in as the inner lips close more than ``SEAM_FROM`` of the reference's gap."""
        U, L = list(fm.INNER_UPPER[1:-1]), list(fm.INNER_LOWER[1:-1])
        g0 = self._V0[L, 1] - self._V0[U, 1]
        g = V[L, 1] - V[U, 1]
        ok = g0 > 0.5
        if not ok.any():
            return
        sealed = float(np.mean(1.0 - np.clip(g[ok] / g0[ok], 0.0, 1.0)))
        alpha = float(np.clip((sealed - SEAM_FROM) / (1.0 - SEAM_FROM), 0.0, 1.0))
        if alpha <= 0.0:
            return
        up = V[list(fm.INNER_UPPER)]
        lo = V[list(fm.INNER_LOWER)]
        mw = float(np.linalg.norm(up[-1] - up[0]))
        h = max(1.0, SEAM_HALF_WIDTH * mw)
        poly = np.concatenate([up - [0, SEAM_REACH * h], (lo + [0, SEAM_REACH * h])[::-1]])
        box = self._box(poly)
        if box is None:
            return
        x0, y0, x1, y1 = box
        o = np.array([x0, y0], np.float64)
        shape = (y1 - y0, x1 - x0)
        m = cv2.GaussianBlur(_smooth_mask(poly, shape, o), (0, 0), 0.5 * h)
        line = np.zeros(shape, np.uint8)
        mid = ((up + lo) / 2 - o) * 16
        cv2.polylines(line, [np.round(mid).astype(np.int32)], False, 255, max(1, int(round(h))),
                      cv2.LINE_AA, 4)
        la = cv2.GaussianBlur(line.astype(np.float32), (0, 0), 0.35 * h)[..., None] * (0.9 / 255)
        layer = np.empty(shape + (3,), np.float32)
        layer[:] = self._lip_col
        layer = layer * (1 - la) + (self._lip_col * SEAM_SHADE) * la
        mm = m[..., None] * alpha
        roi = out[y0:y1, x0:x1].astype(np.float32)
        out[y0:y1, x0:x1] = np.clip(roi * (1 - mm) + layer * mm + 0.5, 0, 255).astype(np.uint8)

    # ---- eyelids ------------------------------------------------------------------------------------------
    def _paint_lid(self, V: np.ndarray, out: np.ndarray, eye: int, b: float) -> None:
        up_i, lo_i = ((fm.EYE_A_UPPER, fm.EYE_A_LOWER), (fm.EYE_B_UPPER, fm.EYE_B_LOWER))[eye]
        up, lo = V[list(up_i)], V[list(lo_i)]
        edge = up + min(b, 1.0) * (lo - up)
        if b >= 0.98:
            edge = lo + (lo - up) * 0.06  # fully closed: cover the lower lash line too
        eye_h = float(np.max(lo[:, 1]) - np.min(up[:, 1]))
        poly = np.concatenate([up + [0, -max(1.0, 0.2 * eye_h)], edge[::-1]])  # covers the open lid's lashes
        box = self._box(poly, margin=3)
        if box is None:
            return
        x0, y0, x1, y1 = box
        o = np.array([x0, y0], np.float64)
        shape = (y1 - y0, x1 - x0)
        m = _smooth_mask(poly, shape, o)
        m = cv2.GaussianBlur(m, (0, 0), 0.5 + self.size / 512)
        # The lid: the colour of the photo's own lid skin (sampled above the open lid at build time),
        # darkening a little towards the lid's edge, feathered into the skin round it.
        xs = np.arange(x0, x1, dtype=np.float32)
        u_y = np.interp(xs, up[:, 0], up[:, 1]).astype(np.float32)[None, :]
        e_y = np.interp(xs, edge[:, 0], edge[:, 1]).astype(np.float32)[None, :]
        yy = np.arange(y0, y1, dtype=np.float32)[:, None]
        t = np.clip((yy - u_y) / np.maximum(e_y - u_y, 1.0), 0, 1)
        lid = np.empty(shape + (3,), np.float32)
        lid[:] = self._lid_col[eye]
        lid *= (1.0 - 0.14 * t * t)[..., None]
        lash = np.zeros(shape, np.uint8)
        cv2.polylines(lash, [np.round((edge - o) * 16).astype(np.int32)], False, 255, 1, cv2.LINE_AA, 4)
        if self.size >= 512:
            lash = cv2.GaussianBlur(lash, (0, 0), 0.7)
        la = lash.astype(np.float32)[..., None] * (min(1.0, 0.3 + b) * 0.5 / 255)
        mm = m[..., None]
        roi = out[y0:y1, x0:x1].astype(np.float32)
        res = roi * (1 - mm) + lid * mm
        res = res * (1 - la) + self._lash_col * la
        out[y0:y1, x0:x1] = np.clip(res + 0.5, 0, 255).astype(np.uint8)


# Compiled when the module is imported (cached next to it after the first time), not at a first frame.
@numba.njit("void(f8[:, :], i4[:, :], f8[:, :], f8[:, :], f8[:, :], f8[:], b1[:], f8, i8, i8, f4[:, :], "
            "f4[:, :])", cache=True, nogil=True)
def _rasterise(Vd, tris, ref_v0, ref_e1, ref_e2, min_det, moved, k, i0, j0, qx, qy):
    """Rasterise the moved triangles on a grid and write the reference position of every point they cover.

    ``Vd`` ``[V, 2]`` deformed vertices (output px); ``tris`` ``[T, 3]`` vertex indices; ``ref_v0``,
    ``ref_e1``, ``ref_e2`` ``[T, 2]`` each reference triangle as an origin and two edges; ``min_det`` ``[T]``
    the smallest deformed |det| drawn (a lip strip sealed shut collapses and covers no pixel); ``moved``
    ``[V]`` bool: triangles with no moved vertex are skipped. Grid point (i, j) of ``qx``, ``qy`` ``[h, w]``
    sits at output pixel ``(k * (i + i0 + 0.5) - 0.5, k * (j + j0 + 0.5) - 0.5)``; a point inside a deformed
    triangle (barycentric test with 1e-4 slack, so points on shared edges are covered) gets that
    triangle's output -> reference affine image, others keep their values.
    """
    h, w = qx.shape
    for t in range(tris.shape[0]):
        a, b, c = tris[t, 0], tris[t, 1], tris[t, 2]
        if not (moved[a] or moved[b] or moved[c]):
            continue
        px, py = Vd[a, 0], Vd[a, 1]
        e1x, e1y = Vd[b, 0] - px, Vd[b, 1] - py
        e2x, e2y = Vd[c, 0] - px, Vd[c, 1] - py
        det = e1x * e2y - e2x * e1y
        if abs(det) <= min_det[t]:
            continue
        inv = 1.0 / det
        # barycentric (b1, b2) = A (x - p), A = inv([e1, e2]); reference = r0 + f1 b1 + f2 b2
        a00, a01, a10, a11 = e2y * inv, -e2x * inv, -e1y * inv, e1x * inv
        f1x, f1y, f2x, f2y = ref_e1[t, 0], ref_e1[t, 1], ref_e2[t, 0], ref_e2[t, 1]
        rx, ry = ref_v0[t, 0], ref_v0[t, 1]
        lo_x = min(px, px + e1x, px + e2x)
        hi_x = max(px, px + e1x, px + e2x)
        lo_y = min(py, py + e1y, py + e2y)
        hi_y = max(py, py + e1y, py + e2y)
        ilo = max(int(math.ceil((lo_x + 0.5) / k - 0.5)) - i0, 0)
        ihi = min(int(math.floor((hi_x + 0.5) / k - 0.5)) - i0, w - 1)
        jlo = max(int(math.ceil((lo_y + 0.5) / k - 0.5)) - j0, 0)
        jhi = min(int(math.floor((hi_y + 0.5) / k - 0.5)) - j0, h - 1)
        for j in range(jlo, jhi + 1):
            dy = k * (j + j0 + 0.5) - 0.5 - py
            for i in range(ilo, ihi + 1):
                dx = k * (i + i0 + 0.5) - 0.5 - px
                b1 = a00 * dx + a01 * dy
                b2 = a10 * dx + a11 * dy
                if b1 >= -1e-4 and b2 >= -1e-4 and b1 + b2 <= 1.0 + 1e-4:
                    qx[j, i] = rx + f1x * b1 + f2x * b2
                    qy[j, i] = ry + f1y * b1 + f2y * b2


def origin_out(size: int) -> tuple[float, float]:
    """Where the point between the eyes lands in the output frame (pixels)."""
    return size / 2, EYE_LINE_Y * size


def build_rig(image_rgb: np.ndarray, size: int = 256) -> PhotoRig:
    """Build the rig of a reference photo (see the module docstring). Raises :class:`PhotoRefused` with a
    reason for images it cannot animate; grayscale / RGBA / very large images are converted
    (``rig.info.notes``)."""
    t0 = time.perf_counter()
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size}")
    rgb, notes = prepare_image(image_rgb)
    faces = fm.find_faces(rgb)
    if not faces:
        raise PhotoRefused("no face found in the photo (a frontal, well-lit face filling a good part of the "
                           "picture is needed: crop distant or group photos to the face; drawn faces are "
                           "often not found: use the learned renderer for those)")
    fh0 = float(np.linalg.norm(faces[0][fm.CHIN, :2] - faces[0][fm.FOREHEAD, :2]))
    if len(faces) > 1:
        fh1 = float(np.linalg.norm(faces[1][fm.CHIN, :2] - faces[1][fm.FOREHEAD, :2]))
        if fh1 >= SECOND_FACE_RATIO * fh0:
            raise PhotoRefused(f"{len(faces)} faces found in the photo; use a photo with one face "
                               f"(or crop it)")
    lm = faces[0]
    scale_back = max(np.asarray(image_rgb).shape[:2]) / max(rgb.shape[:2])
    face_px = fh0 * scale_back
    if fh0 < MIN_FACE_PX and face_px < MIN_FACE_PX:
        raise PhotoRefused(f"the face is too small: {int(face_px)} px from forehead to chin, needs at least "
                           f"{MIN_FACE_PX} px")
    yaw, pitch, roll = head_pose_deg(lm)
    if abs(yaw) > MAX_YAW_DEG:
        raise PhotoRefused(f"the face is turned too far sideways ({yaw:+.0f} deg; at most "
                           f"{MAX_YAW_DEG:.0f} deg): use a frontal photo")
    if abs(pitch) > MAX_PITCH_DEG:
        raise PhotoRefused(f"the face is tilted too far up or down ({pitch:+.0f} deg; at most "
                           f"{MAX_PITCH_DEG:.0f} deg): use a frontal photo")
    if abs(roll) > MAX_ROLL_DEG:
        raise PhotoRefused(f"the head is rolled too far ({roll:+.0f} deg; at most {MAX_ROLL_DEG:.0f} deg)")
    info = BuildInfo(notes=notes, face_px=face_px, yaw_deg=yaw, pitch_deg=pitch, roll_deg=roll)
    rig = PhotoRig(rgb, lm, size, info)
    info.build_ms = (time.perf_counter() - t0) * 1e3
    return rig
