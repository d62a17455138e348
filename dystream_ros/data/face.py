"""Procedural 2D talking-head renderer (numpy + OpenCV only).

A face is an identity (:class:`FaceIdentity`, fixed per person) plus per-frame articulation
(:class:`Articulation`). :func:`render` draws the face at ``size`` x ``size`` pixels, RGB uint8.

Drawing model ("2.5D"): every feature is a polygon in head-local units (1 unit = half the face
width, origin between the eyes, +v downwards). Points carry a depth ``z`` (on a cylinder-like head
surface, with extra depth for the nose and lips) and a silhouette weight ``s``; head yaw and pitch
shift points by ``z * sin(angle)`` and foreshorten interior points by ``cos(angle)`` while the
silhouette keeps its size, then head roll rotates everything around the neck. Shapes are filled
with OpenCV anti-aliased polygons at 1/16 pixel precision; soft shading (rim light, shadows under
hair, nose, lip and jaw, cheek blush) is drawn into a half-resolution map, blurred and multiplied
in. Rendering takes about 1-3 ms per 256x256 frame on one CPU core.

Identities: :func:`identity_from_seed` maps an integer seed to a :class:`FaceIdentity`. The split is
fixed: seeds in :data:`TRAIN_IDENTITIES` are used for training, seeds in
:data:`HELDOUT_IDENTITIES` only for evaluation and the shipped reference avatars.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

# Fixed identity split (by identity seed). Training uses seeds 0..63; held-out seeds start at
# 10_000 so the two ranges can never overlap, whatever N training identities a user asks for.
TRAIN_IDENTITIES: range = range(0, 64)
HELDOUT_IDENTITIES: range = range(10_000, 10_008)
# Identity used for the shipped default avatar (``assets/avatars/default.png``); a training seed,
# so the embedded model has seen this face.
DEFAULT_IDENTITY_SEED = 3

HAIR_STYLES = ("short", "fringe", "swept", "long", "bob", "curly", "buzz", "bun", "bald")

RGB = tuple[int, int, int]


# --------------------------------------------------------------------------------------------
# Articulation


@dataclass
class Articulation:
    """Per-frame face articulation. Ranges (values outside are clipped by :meth:`clipped`):

    - ``jaw_open`` [0, 1]: 0 closed jaw, 1 wide open (mouth height ~ half its width).
    - ``lip_spread`` [0, 1]: lips stretched sideways ("ee").
    - ``lip_round`` [0, 1]: lips rounded and protruded ("oo", "w").
    - ``lip_close`` [0, 1]: lips pressed together (p/b/m); 1 seals the mouth whatever the jaw.
    - ``smile`` [-1, 1]: mouth corners up (and cheeks/lower lids raised); negative = frown.
    - ``blink_l``, ``blink_r`` [0, 1]: eyelid closure of the face's left / right eye as seen in
      the image (left = image left); 1 fully closed.
    - ``brow`` [-1, 1]: brows raised (positive) or lowered and knitted (negative).
    - ``head_yaw`` [-0.6, 0.6] rad: positive turns the face towards image right.
    - ``head_pitch`` [-0.4, 0.4] rad: positive tilts the chin up (nodding is pitch oscillation).
    - ``head_roll`` [-0.4, 0.4] rad: positive rotates the head clockwise in the image.
    - ``gaze_x``, ``gaze_y`` [-1, 1]: eye direction, +x towards image right, +y downwards.
    """

    jaw_open: float = 0.0
    lip_spread: float = 0.0
    lip_round: float = 0.0
    lip_close: float = 0.0
    smile: float = 0.0
    blink_l: float = 0.0
    blink_r: float = 0.0
    brow: float = 0.0
    head_yaw: float = 0.0
    head_pitch: float = 0.0
    head_roll: float = 0.0
    gaze_x: float = 0.0
    gaze_y: float = 0.0

    def to_array(self) -> np.ndarray:
        return np.array([getattr(self, f) for f in ARTICULATION_FIELDS], dtype=np.float32)

    @classmethod
    def from_array(cls, values) -> Articulation:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.shape[0] != len(ARTICULATION_FIELDS):
            raise ValueError(f"expected {len(ARTICULATION_FIELDS)} values, got {values.shape[0]}")
        return cls(**{f: float(v) for f, v in zip(ARTICULATION_FIELDS, values, strict=True)})

    def clipped(self) -> Articulation:
        return Articulation.from_array(clip_params(self.to_array()))


# Column order of every ``params.npy`` (T x P float32) written by this package.
ARTICULATION_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Articulation))
NUM_PARAMS = len(ARTICULATION_FIELDS)
PARAM_RANGES: dict[str, tuple[float, float]] = {
    "jaw_open": (0.0, 1.0),
    "lip_spread": (0.0, 1.0),
    "lip_round": (0.0, 1.0),
    "lip_close": (0.0, 1.0),
    "smile": (-1.0, 1.0),
    "blink_l": (0.0, 1.0),
    "blink_r": (0.0, 1.0),
    "brow": (-1.0, 1.0),
    "head_yaw": (-0.6, 0.6),
    "head_pitch": (-0.4, 0.4),
    "head_roll": (-0.4, 0.4),
    "gaze_x": (-1.0, 1.0),
    "gaze_y": (-1.0, 1.0),
}
_LO = np.array([PARAM_RANGES[f][0] for f in ARTICULATION_FIELDS], dtype=np.float32)
_HI = np.array([PARAM_RANGES[f][1] for f in ARTICULATION_FIELDS], dtype=np.float32)


def clip_params(params: np.ndarray) -> np.ndarray:
    """Clip an (..., P) parameter array to :data:`PARAM_RANGES`, float32."""
    return np.clip(np.asarray(params, dtype=np.float32), _LO, _HI)


# --------------------------------------------------------------------------------------------
# Identity


@dataclass(frozen=True)
class FaceIdentity:
    """Appearance of one synthetic person. Colours are RGB 0-255; shape values are unitless
    multipliers around 1 (or 0-1 mixes) of the canonical face."""

    seed: int
    face_width: float  # horizontal scale of the whole face, 0.9-1.06
    face_length: float  # vertical scale of the lower face, 0.93-1.07
    jaw_width: float  # 0 = narrow pointed chin ... 1 = broad square jaw
    chin: float  # chin roundness/length, 0-1
    skin: RGB
    blush: float  # cheek blush strength 0-1
    hair_style: str  # one of HAIR_STYLES
    hair_color: RGB
    hair_volume: float  # thickness of the hair above the skull, 0.06-0.22 units
    hair_part: float  # -1..1: side of the part / sweep direction
    eye_size: float  # 0.85-1.15
    eye_spacing: float  # 0.92-1.08
    eye_tilt: float  # outer corners up (+) or down (-), units
    eye_round: float  # 0 almond ... 1 round
    iris_color: RGB
    lash: float  # lash-line weight 0-1
    brow_thickness: float  # 0.7-1.4
    brow_arch: float  # 0-1
    brow_color: RGB
    nose_size: float  # 0.85-1.15
    nose_width: float  # 0.85-1.2
    mouth_width: float  # 0.85-1.15
    lip_upper: float  # upper lip fullness 0.7-1.3
    lip_lower: float  # lower lip fullness 0.7-1.3
    lip_color: RGB
    ear_size: float  # 0.85-1.15
    glasses: str  # "", "round" or "square"
    glasses_color: RGB
    shirt_color: RGB
    neckline: str  # "round" or "v"
    background_top: RGB
    background_bottom: RGB

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FaceIdentity:
        kw = {}
        for f in dataclasses.fields(cls):
            v = d[f.name]
            kw[f.name] = tuple(int(x) for x in v) if isinstance(v, (list, tuple)) else v
        return cls(**kw)


_SKIN_TONES = np.array(
    [
        (255, 226, 204),
        (246, 205, 177),
        (234, 186, 150),
        (214, 160, 118),
        (190, 134, 96),
        (158, 104, 72),
        (122, 80, 56),
        (94, 62, 44),
    ],
    dtype=np.float64,
)
_HAIR_COLORS = [
    (30, 24, 22),
    (52, 36, 28),
    (86, 58, 38),
    (120, 80, 48),
    (150, 72, 40),
    (196, 160, 100),
    (222, 196, 140),
    (150, 146, 144),
    (70, 90, 140),
    (170, 90, 130),
]
_HAIR_WEIGHTS = np.array([14, 14, 12, 9, 5, 5, 4, 4, 1.5, 1.5])
_IRIS_COLORS = [
    (92, 58, 36),
    (58, 38, 26),
    (120, 92, 52),
    (78, 118, 74),
    (70, 118, 168),
    (112, 128, 140),
]
_GLASSES_COLORS = [(30, 30, 34), (90, 60, 40), (140, 140, 150), (40, 60, 110)]


def _mix(a, b, t: float) -> RGB:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return tuple(int(round(float(x))) for x in np.clip(a * (1.0 - t) + b * t, 0, 255))


def _hsv_rgb(h: float, s: float, v: float) -> RGB:
    hsv = np.array([[[h * 180.0, s * 255.0, v * 255.0]]], dtype=np.float32)
    rgb = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
    return tuple(int(x) for x in rgb)


def sample_identity(rng: np.random.Generator, seed: int = -1) -> FaceIdentity:
    """Draw a random identity from ``rng`` (``seed`` is only recorded in the result)."""
    u = rng.uniform
    tone_pos = u(0, len(_SKIN_TONES) - 1)
    i0 = int(tone_pos)
    i1 = min(i0 + 1, len(_SKIN_TONES) - 1)
    skin = _SKIN_TONES[i0] * (1 - (tone_pos - i0)) + _SKIN_TONES[i1] * (tone_pos - i0)
    skin = skin * np.array([1.0, u(0.97, 1.02), u(0.95, 1.03)])
    skin_rgb = tuple(int(x) for x in np.clip(skin, 0, 255))
    hair_style = str(rng.choice(HAIR_STYLES, p=np.array([14, 12, 12, 14, 12, 9, 6, 8, 3]) / 90.0))
    hair_color = _HAIR_COLORS[int(rng.choice(len(_HAIR_COLORS), p=_HAIR_WEIGHTS / _HAIR_WEIGHTS.sum()))]
    hair_color = _mix(hair_color, (0, 0, 0), u(-0.1, 0.15))
    darkness = tone_pos / (len(_SKIN_TONES) - 1)
    lip_base = _mix(skin_rgb, (170, 62, 72), u(0.3, 0.5))
    lip_color = _mix(lip_base, (60, 30, 30), 0.25 * darkness)
    brow_color = _mix(hair_color, (40, 30, 25), u(0.2, 0.5))
    bg_hue = u(0, 1)
    bg_top = _hsv_rgb(bg_hue, u(0.12, 0.3), u(0.82, 0.95))
    bg_bottom = _hsv_rgb((bg_hue + u(-0.06, 0.06)) % 1.0, u(0.2, 0.4), u(0.62, 0.8))
    shirt = _hsv_rgb(u(0, 1), u(0.25, 0.7), u(0.35, 0.85))
    glasses = str(rng.choice(["", "round", "square"], p=[0.76, 0.12, 0.12]))
    return FaceIdentity(
        seed=int(seed),
        face_width=float(u(0.9, 1.06)),
        face_length=float(u(0.93, 1.07)),
        jaw_width=float(u(0.0, 1.0)),
        chin=float(u(0.0, 1.0)),
        skin=skin_rgb,
        blush=float(u(0.05, 0.6)),
        hair_style=hair_style,
        hair_color=hair_color,
        hair_volume=float(u(0.08, 0.2)),
        hair_part=float(u(-1.0, 1.0)),
        eye_size=float(u(0.88, 1.14)),
        eye_spacing=float(u(0.93, 1.07)),
        eye_tilt=float(u(-0.025, 0.04)),
        eye_round=float(u(0.0, 1.0)),
        iris_color=_mix(_IRIS_COLORS[int(rng.integers(len(_IRIS_COLORS)))], (0, 0, 0), u(-0.1, 0.2)),
        lash=float(u(0.3, 1.0)),
        brow_thickness=float(u(0.75, 1.35)),
        brow_arch=float(u(0.0, 1.0)),
        brow_color=brow_color,
        nose_size=float(u(0.85, 1.15)),
        nose_width=float(u(0.85, 1.2)),
        mouth_width=float(u(0.88, 1.12)),
        lip_upper=float(u(0.75, 1.25)),
        lip_lower=float(u(0.75, 1.3)),
        lip_color=lip_color,
        ear_size=float(u(0.88, 1.12)),
        glasses=glasses,
        glasses_color=_GLASSES_COLORS[int(rng.integers(len(_GLASSES_COLORS)))],
        shirt_color=shirt,
        neckline=str(rng.choice(["round", "v"])),
        background_top=bg_top,
        background_bottom=bg_bottom,
    )


def identity_from_seed(seed: int) -> FaceIdentity:
    """The identity of integer ``seed`` (deterministic across runs and machines)."""
    return sample_identity(np.random.default_rng([int(seed), 0xFACE]), seed=int(seed))


def default_identity() -> FaceIdentity:
    """Identity of the shipped default avatar."""
    return identity_from_seed(DEFAULT_IDENTITY_SEED)


# --------------------------------------------------------------------------------------------
# Geometry helpers

_SHIFT = 4  # OpenCV fixed-point bits: coordinates at 1/16 pixel
_ONE = float(1 << _SHIFT)
_AA = cv2.LINE_AA
_IMG, _SHADE = 0, 1  # draw targets
_FILL, _STROKE = 0, 1


@functools.cache
def _unit_circle(n: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.cos(a), np.sin(a)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 20) -> np.ndarray:
    c, s = _unit_circle(n)
    return np.stack([cx + rx * c, cy + ry * s], axis=1)


def _arc(cx, cy, rx, ry, a0, a1, n) -> np.ndarray:
    a = np.linspace(a0, a1, n)
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], axis=1)


def _smooth_closed(pts: np.ndarray, iters: int = 2) -> np.ndarray:
    """Chaikin corner cutting of a closed polygon (rounder outlines from few control points)."""
    for _ in range(iters):
        nxt = np.roll(pts, -1, axis=0)
        pts = np.stack([0.75 * pts + 0.25 * nxt, 0.25 * pts + 0.75 * nxt], axis=1).reshape(-1, 2)
    return pts


def _surface_depth(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Depth of the head surface at (u, v): a rounded, slightly flattened cylinder."""
    return (
        1.1
        * np.sqrt(np.clip(1.0 - (u / 1.18) ** 2, 0.02, None))
        * np.sqrt(np.clip(1.0 - ((v - 0.15) / 2.2) ** 2, 0.05, None))
    )


class _Pose:
    """Head pose and the head-local -> pixel projection for one frame."""

    def __init__(self, size: int, yaw: float, pitch: float, roll: float):
        self.r = 0.25 * size  # pixels per head unit
        self.cx = 0.5 * size
        self.cy = 0.43 * size
        self.cyaw, self.syaw = math.cos(yaw), math.sin(yaw)
        self.cpit, self.spit = math.cos(pitch), math.sin(pitch)
        self.croll, self.sroll = math.cos(roll), math.sin(roll)
        self.pivot_v = 1.3  # roll pivot (the neck), head units below the eye line
        # The head turns about the neck, not its centre: it drifts a little with yaw and pitch.
        self.dx = 0.1 * self.syaw
        self.dy = -0.08 * self.spit

    def project(self, u, v, z, s) -> np.ndarray:
        """Head-local (u, v, depth z, silhouette weight s) -> pixel coordinates (N, 2)."""
        kx = self.cyaw + (1.0 - self.cyaw) * s
        ky = self.cpit + (1.0 - self.cpit) * s
        x = u * kx + z * self.syaw + self.dx
        y = v * ky - z * self.spit + self.dy - self.pivot_v
        xr = x * self.croll - y * self.sroll
        yr = x * self.sroll + y * self.croll + self.pivot_v
        return np.stack([self.cx + xr * self.r, self.cy + yr * self.r], axis=-1)


class _Shape:
    """A polygon in head units with per-point depth offset dz, surface weight ws (how much of
    the head-surface depth applies) and silhouette weight s. Static shapes are built once."""

    __slots__ = ("pts", "dz", "ws", "s")

    def __init__(self, pts, dz=0.0, ws=1.0, s=0.0):
        pts = np.asarray(pts, dtype=np.float64)
        k = len(pts)
        self.pts = pts
        self.dz = np.broadcast_to(np.asarray(dz, np.float64), (k,))
        self.ws = np.broadcast_to(np.asarray(ws, np.float64), (k,))
        self.s = np.broadcast_to(np.asarray(s, np.float64), (k,))


class _Batch:
    """All shapes of one frame: projected in one vectorised call, then drawn in order."""

    def __init__(self):
        self.shapes: list[_Shape] = []
        self.ops: list[tuple] = []
        self.n = 0

    def _add(self, shape: _Shape) -> tuple[int, int]:
        a = self.n
        self.shapes.append(shape)
        self.n += len(shape.pts)
        return a, self.n

    def fill(self, shape: _Shape, color, layer=_IMG, offset=None, extra=None):
        a, b = self._add(shape)
        self.ops.append((layer, _FILL, a, b, color, 0, False, offset, extra))

    def stroke(self, shape: _Shape, color, width=1.0, closed=False, layer=_IMG):
        a, b = self._add(shape)
        self.ops.append((layer, _STROKE, a, b, color, width, closed, None, None))

    def project(self, pose: _Pose) -> np.ndarray:
        pts = np.concatenate([s.pts for s in self.shapes])
        dz = np.concatenate([s.dz for s in self.shapes])
        ws = np.concatenate([s.ws for s in self.shapes])
        sil = np.concatenate([s.s for s in self.shapes])
        u, v = pts[:, 0], pts[:, 1]
        z = ws * _surface_depth(u, v) + dz
        return pose.project(u, v, z, sil)


# --------------------------------------------------------------------------------------------
# Renderer


class FaceRenderer:
    """Renders one identity at one size. Static parts (background, torso, hair, ears, nose,
    shading templates) are built once; :meth:`render` adds the articulated parts per frame."""

    def __init__(self, identity: FaceIdentity, size: int = 256):
        if size < 32:
            raise ValueError("size must be >= 32")
        self.id = identity
        self.size = int(size)
        self.lw = size / 256.0  # line-width scale
        self.lo = self.size // 2  # shading-map resolution
        self._colors()
        self._static_shapes()
        self._background, self._shade0 = self._make_background()
        # eye / mouth sampling grids
        self._t_eye = np.linspace(-1.0, 1.0, 21)
        self._t_mouth = np.linspace(-1.0, 1.0, 25)

    # -- static ---------------------------------------------------------------------------------
    def _colors(self):
        idt = self.id
        skin = idt.skin
        self.c_skin = skin
        self.c_skin_dark = _mix(skin, (60, 20, 20), 0.22)
        self.c_outline = _mix(skin, (60, 25, 20), 0.3)
        self.c_crease = _mix(skin, (60, 20, 20), 0.14)
        self.c_nostril = _mix(skin, (40, 10, 10), 0.55)
        self.c_nose_line = _mix(skin, (50, 20, 20), 0.3)
        self.c_hair = _mix(idt.hair_color, idt.skin, 0.35) if idt.hair_style == "buzz" else idt.hair_color
        self.c_hair_back = _mix(idt.hair_color, (0, 0, 0), 0.2)
        self.c_strand = _mix(idt.hair_color, (0, 0, 0), 0.35)
        self.c_lash = _mix(idt.hair_color, (10, 8, 8), 0.65)
        self.c_iris_ring = _mix(idt.iris_color, (0, 0, 0), 0.5)
        self.c_lid_shadow = (214, 204, 200)
        lip = idt.lip_color
        self.c_lip_upper = _mix(lip, (40, 10, 10), 0.1)
        self.c_lip_lower = _mix(lip, (255, 235, 230), 0.06)
        self.c_lip_seam = _mix(lip, (30, 5, 10), 0.5)
        self.c_lip_hl = _mix(lip, (255, 255, 255), 0.2)
        b = idt.blush
        self.c_blush = (int(128 + 9 * b), int(128 - 6 * b), int(128 - 5 * b))

    def _static_shapes(self):
        idt = self.id
        fw = idt.face_width
        style = idt.hair_style
        st = {}
        # ears (behind the face, on the silhouette)
        es = idt.ear_size
        for side in (-1.0, 1.0):
            ear = _smooth_closed(
                np.array(
                    [
                        [0.93 * fw, -0.1 * es],
                        [fw + 0.16 * es, -0.14 * es],
                        [fw + 0.2 * es, 0.16 * es],
                        [fw + 0.12 * es, 0.44 * es],
                        [0.95 * fw, 0.52 * es],
                    ]
                ),
                2,
            ) * [side, 1.0]
            st[f"ear{side}"] = _Shape(ear + [0, 0.02], dz=-0.25, ws=0.0, s=1.0)
            inner = _arc(fw + 0.07 * es, 0.17 * es, 0.06 * es, 0.19 * es, -1.5, 1.5, 10) * [side, 1.0]
            st[f"ear_in{side}"] = _Shape(inner + [0, 0.02], dz=-0.25, ws=0.0, s=1.0)
        # nose: a soft curve under the tip, small wings, nostrils
        ns, nw = idt.nose_size, idt.nose_width
        tip_v = 0.47 * ns
        under = _arc(0.0, tip_v - 0.06, 0.1 * nw, 0.085, 0.25 * np.pi, 0.75 * np.pi, 9)
        st["nose_under"] = _Shape(under, dz=0.2)
        for side in (-1.0, 1.0):
            wing = _arc(0.115 * nw, tip_v - 0.03, 0.05 * nw, 0.065, -0.45 * np.pi, 0.45 * np.pi, 7) * [
                side,
                1.0,
            ]
            st[f"wing{side}"] = _Shape(wing, dz=0.14)
            st[f"nostril{side}"] = _Shape(
                _ellipse(side * 0.055 * nw, tip_v + 0.01, 0.028 * nw, 0.013, 10), dz=0.2
            )
        # nose shading (shade map)
        st["nose_side"] = _Shape(_ellipse(0.09 * nw, 0.22 * ns, 0.045, 0.21 * ns, 12), dz=0.12)
        st["nose_below"] = _Shape(_ellipse(0.0, tip_v + 0.05, 0.11 * nw, 0.035, 12), dz=0.1)
        st["nose_tip"] = _Shape(_ellipse(-0.015, tip_v - 0.08, 0.045, 0.045, 10), dz=0.26)
        st["nose_bridge"] = _Shape(_ellipse(-0.03, 0.12 * ns, 0.022, 0.14 * ns, 10), dz=0.15)
        es_ = idt.eye_spacing
        for side in (-1.0, 1.0):
            st[f"socket{side}"] = _Shape(_ellipse(side * 0.42 * es_, -0.03, 0.27, 0.17, 16))
        # hair
        self._hair_shapes(st, fw, style)
        # glasses
        if idt.glasses:
            ew = 0.2 * idt.eye_size
            for side in (-1.0, 1.0):
                ex = side * 0.42 * es_
                if idt.glasses == "round":
                    rim = _ellipse(ex, 0.0, ew * 1.35, ew * 1.2, 28)
                else:
                    sq = np.array([[-1.45, -0.95], [1.45, -0.95], [1.4, 0.9], [-1.4, 0.9]]) * [ew, ew * 1.05]
                    rim = _smooth_closed(sq + [ex, 0.0], 3)
                st[f"rim{side}"] = _Shape(rim, dz=0.14)
                temple = np.array([[ex + side * ew * 1.4, -0.03], [side * fw * 0.99, -0.05]])
                st[f"temple{side}"] = _Shape(temple, dz=0.06)
            gap = 0.42 * es_ - ew * 1.38
            st["bridge"] = _Shape(_arc(0.0, 0.0, gap, 0.05, np.pi, 2 * np.pi, 7), dz=0.22)
        self._st = st

    def _hair_shapes(self, st: dict, fw: float, style: str):
        idt = self.id
        if style == "bald":
            return
        vol = 0.03 if style == "buzz" else idt.hair_volume + (0.1 if style == "curly" else 0.0)
        rx = 1.02 * fw + vol
        ry = 1.0 + 1.15 * vol
        n = 41
        # outer edge of the front cap: over the skull from the left temple to the right one
        a = np.linspace(-0.3, np.pi + 0.3, n)
        ou, ov = -rx * np.cos(a), -0.22 - ry * np.sin(a)
        if style == "curly":
            bump = 0.05 * np.abs(np.sin(a * 9.0))
            ou, ov = ou - np.cos(a) * bump, ov - np.sin(a) * bump
        t = np.linspace(-1.0, 1.0, n)
        hu = t * 0.99 * fw
        side_v = -0.05 if style == "buzz" else 0.1  # how low the hair comes at the temples
        part = idt.hair_part

        def blend_sides(hv, start):
            w = np.clip((np.abs(t) - start) / (1.0 - start), 0.0, 1.0)
            return hv + w * (side_v - hv)

        if style in ("fringe", "bob"):
            hv = blend_sides(-0.5 + 0.06 * t**2 + 0.018 * np.sin(t * 19.0), 0.72)
        elif style in ("swept", "curly"):
            hv = blend_sides(-0.74 + 0.28 * (0.5 + 0.5 * t * np.sign(part)) - 0.08 * (1 - t**2), 0.78)
        elif style == "long":
            hv = np.minimum(-0.86 + 0.45 * np.abs(t - 0.15 * part) ** 0.8, side_v)
        elif style == "buzz":
            hv = blend_sides(-0.82 + 0.12 * t**2, 0.85)
        else:  # short, bun
            hv = blend_sides(-0.76 + 0.05 * t * part + 0.1 * t**2, 0.8)
        # near the temples the hairline turns into silhouette: blend its depth model
        w = np.clip((np.abs(t) - 0.55) / 0.45, 0.0, 1.0) ** 2
        outer = np.stack([ou, ov], axis=1)
        hairline = np.stack([hu, hv], axis=1)
        cap = np.concatenate([outer, hairline[::-1]])
        cap_dz = np.concatenate([np.full(n, 0.1), (0.06 * (1 - w) + 0.1 * w)[::-1]])
        cap_ws = np.concatenate([np.zeros(n), (1 - w)[::-1]])
        cap_s = np.concatenate([np.ones(n), w[::-1]])
        st["cap"] = _Shape(cap, cap_dz, cap_ws, cap_s)
        shadow = np.concatenate([outer, (hairline + [0, 0.1])[::-1]])
        st["cap_shadow"] = _Shape(shadow, cap_dz, cap_ws, cap_s)
        sheen = np.concatenate(
            [outer[9:-9] * [0.82, 0.9] + [-0.1, -0.03], (hairline[9:-9] * [0.7, 1.0])[::-1]]
        )
        st["sheen"] = _Shape(_smooth_closed(sheen, 1), dz=0.3, ws=0.0, s=0.5)
        if style != "buzz":
            strands = []
            seg = slice(int(n * 0.14), int(n * 0.86))
            for f in (0.35, 0.6, 0.82):
                pts = hairline[seg] * (1 - f) + outer[seg] * f
                ww = w[seg]
                strands.append(_Shape(pts, 0.06 * (1 - f) + 0.1 * f, (1 - f) * (1 - ww), f + (1 - f) * ww))
            st["strands"] = strands
        if style == "bun":
            st["bun"] = _Shape(_ellipse(0.0, -1.3 - vol, 0.32, 0.26, 24), dz=-0.2, ws=0.0, s=1.0)
        # hair behind the head
        a = np.linspace(-0.1, np.pi + 0.1, 32)
        top = np.stack([-rx * np.cos(a), -0.22 - ry * np.sin(a)], axis=1)[::-1]  # right -> left
        if style == "buzz":
            back = None
        elif style == "long":
            bottom = 2.35
            right = np.array([[rx + 0.06, 0.6], [rx + 0.2, 1.5], [rx + 0.28, bottom]])
            tips = _arc(0.0, bottom, rx + 0.28, 0.12, 0.0, np.pi, 9)
            left = np.array([[-rx - 0.2, 1.5], [-rx - 0.06, 0.6]])
            back = np.concatenate([top, right, tips[1:], left])
        elif style in ("bob", "curly"):
            bottom = 0.95 if style == "bob" else 0.8
            right = np.array([[rx + 0.06, 0.3], [rx + 0.08, bottom - 0.1]])
            under = _arc(0.0, bottom - 0.1, rx + 0.08, 0.22, 0.0, np.pi, 13)
            left = np.array([[-rx - 0.06, 0.3]])
            back = np.concatenate([top, right, under[1:], left])
            if style == "curly":
                d = back - back.mean(axis=0)
                ang = np.arctan2(d[:, 1], d[:, 0])
                back = back + d * (0.05 * np.abs(np.sin(ang * 8.0)))[:, None]
        else:  # short / fringe / swept / bun: a little hair behind the ears
            right = np.array([[rx, 0.2], [rx - 0.06, 0.5]])
            under = _arc(0.0, 0.5, rx - 0.06, 0.12, 0.0, np.pi, 9)
            left = np.array([[-rx, 0.2]])
            back = np.concatenate([top, right, under[1:], left])
        if back is not None:
            st["back_hair"] = _Shape(_smooth_closed(back, 2), dz=-0.35, ws=0.0, s=1.0)

    def _torso_px(self):
        """Static torso geometry in pixels: shirt polygon and neckline (image coordinates)."""
        idt = self.id
        r, cx, cy = 0.25 * self.size, 0.5 * self.size, 0.43 * self.size
        sw = 1.0 + 0.3 * idt.jaw_width
        shirt = np.array(
            [
                [-0.5, 1.62],
                [-1.15 * sw, 1.82],
                [-1.8 * sw, 2.05],
                [-2.25 * sw, 2.55],
                [-2.5 * sw, 3.4],
                [2.5 * sw, 3.4],
                [2.25 * sw, 2.55],
                [1.8 * sw, 2.05],
                [1.15 * sw, 1.82],
                [0.5, 1.62],
            ]
        )
        shirt = _smooth_closed(shirt, 2)
        if idt.neckline == "v":
            neckline = np.array([[-0.5, 1.66], [-0.24, 1.92], [0.0, 2.14], [0.24, 1.92], [0.5, 1.66]])
        else:
            neckline = _arc(0.0, 1.64, 0.5, 0.3, np.pi, 0.0, 11)
        to_px = np.array([r, r])
        return shirt * to_px + [cx, cy], neckline * to_px + [cx, cy], r

    def _make_background(self):
        s = self.size
        t = np.linspace(0.0, 1.0, s, dtype=np.float32)[:, None, None]
        top = np.asarray(self.id.background_top, np.float32)
        bot = np.asarray(self.id.background_bottom, np.float32)
        bg = np.repeat(top * (1 - t) + bot * t, s, axis=1)
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s - 0.5
        vig = 1.0 - 0.35 * (xx**2 + (yy + 0.1) ** 2)  # soft vignette like a lit display panel
        bg = np.clip(bg * vig[..., None], 0, 255).astype(np.uint8)
        shirt, neckline, r = self._torso_px()
        k = self.lo / self.size
        shade = np.full((self.lo, self.lo, 3), 128, np.uint8)
        # shoulders: darker towards the arms, a soft shadow along the neckline
        cv2.fillPoly(shade, [_fix(shirt * k)], (118, 118, 118), _AA, _SHIFT)
        inner = (shirt - [0.5 * s, 0]) * [0.6, 1.0] + [0.5 * s, 0.1 * r]
        cv2.fillPoly(shade, [_fix(inner * k)], (132, 132, 132), _AA, _SHIFT)
        cv2.fillPoly(shade, [_fix((neckline + [0, 0.08 * r]) * k)], (100, 100, 100), _AA, _SHIFT)
        self._fill_px(bg, shirt, self.id.shirt_color)
        self._neck_bottom = np.concatenate(
            [
                [[0.5 * s - 0.42 * r, 0.43 * s + 1.25 * r]],
                neckline,
                [[0.5 * s + 0.42 * r, 0.43 * s + 1.25 * r]],
            ]
        )
        self._neckline = neckline
        return bg, shade

    # -- drawing --------------------------------------------------------------------------------
    @staticmethod
    def _fill_px(img, pts, color):
        cv2.fillPoly(img, [_fix(pts)], color, _AA, _SHIFT)

    def _execute(self, batch: _Batch, pose: _Pose, img: np.ndarray, shade: np.ndarray):
        px = batch.project(pose)
        fx = np.round(px * _ONE).astype(np.int32)
        k = self.lo / self.size
        fx_lo = np.round(px * (_ONE * k)).astype(np.int32)
        for layer, kind, a, b, color, width, closed, offset, extra in batch.ops:
            if layer == _IMG:
                pts = fx[a:b]
                target = img
            else:
                pts = fx_lo[a:b]
                target = shade
            if offset is not None:
                pts = pts + np.round(np.asarray(offset) * _ONE * (1.0 if layer == _IMG else k)).astype(
                    np.int32
                )
            if extra is not None:
                pts = np.concatenate([pts, extra])
            if kind == _FILL:
                cv2.fillPoly(target, [pts], color, _AA, _SHIFT)
            else:
                w = max(1, int(round(width * self.lw)))
                cv2.polylines(target, [pts], closed, color, w, _AA, _SHIFT)

    # -- per-frame ------------------------------------------------------------------------------
    def render(self, art: Articulation) -> np.ndarray:
        """Render one frame (``size`` x ``size`` x 3 uint8 RGB)."""
        art = art.clipped()
        st = self._st
        idt = self.id
        pose = _Pose(self.size, art.head_yaw, art.head_pitch, art.head_roll)
        b = _Batch()
        if "back_hair" in st:
            b.fill(st["back_hair"], self.c_hair_back)
        # neck: top follows the head, bottom is fixed to the torso
        neck_top = _Shape(np.array([[0.4, 0.85], [-0.4, 0.85]]), dz=-0.35)
        b.fill(neck_top, self.c_skin, extra=_fix(self._neck_bottom))
        for side in (-1.0, 1.0):
            b.fill(st[f"ear{side}"], self.c_skin)
            b.stroke(st[f"ear_in{side}"], self.c_skin_dark)
        ou, ov, oz = self._outline(art)
        outline = _Shape(np.stack([ou, ov], 1), dz=oz, ws=0.0, s=1.0)
        b.fill(outline, self.c_skin)
        b.stroke(outline, self.c_outline, 1.0, closed=True)
        # soft shading of the face (shade map)
        jaw_r = 0.14 * pose.r
        b.fill(outline, (86, 86, 88), layer=_SHADE, offset=(0.0, jaw_r))
        b.fill(outline, (110, 110, 112), layer=_SHADE)
        b.fill(
            _Shape(np.stack([ou * 0.8 - 0.08, ov * 0.84 - 0.06], 1), dz=oz + 0.6, ws=0.0),
            (122,) * 3,
            layer=_SHADE,
        )
        b.fill(
            _Shape(np.stack([ou * 0.5 - 0.12, ov * 0.55 - 0.16], 1), dz=oz + 0.8, ws=0.0),
            (132,) * 3,
            layer=_SHADE,
        )
        for side in (-1.0, 1.0):
            b.fill(st[f"socket{side}"], (117, 115, 115), layer=_SHADE)
            cheek = _ellipse(side * 0.56, 0.44 - 0.06 * max(art.smile, 0.0), 0.2, 0.12, 16)
            b.fill(_Shape(cheek), self.c_blush, layer=_SHADE)
        b.fill(st["nose_side"], (114,) * 3, layer=_SHADE)
        b.fill(st["nose_below"], (102,) * 3, layer=_SHADE)
        b.fill(st["nose_tip"], (144,) * 3, layer=_SHADE)
        b.fill(st["nose_bridge"], (136,) * 3, layer=_SHADE)
        # features
        for side in (-1.0, 1.0):
            b.stroke(st[f"wing{side}"], self.c_nose_line)
            b.fill(st[f"nostril{side}"], self.c_nostril)
        b.stroke(st["nose_under"], self.c_nose_line)
        self._mouth(b, art)
        self._eyes(b, art)
        self._brows(b, art)
        # hair in front
        if "bun" in st:
            b.fill(st["bun"], _mix(self.c_hair, (0, 0, 0), 0.1))
        if "cap" in st:
            b.fill(st["cap_shadow"], (98, 98, 100), layer=_SHADE)
            b.fill(st["cap"], self.c_hair)
            b.fill(st["cap"], (116,) * 3, layer=_SHADE)
            b.fill(st["sheen"], (148,) * 3, layer=_SHADE)
            for strand in st.get("strands", ()):
                b.stroke(strand, self.c_strand)
        if idt.glasses:
            col = idt.glasses_color
            for side in (-1.0, 1.0):
                b.stroke(st[f"rim{side}"], col, 2.0, closed=True)
                b.stroke(st[f"temple{side}"], col, 2.0)
            b.stroke(st["bridge"], col, 2.0)
        img = self._background.copy()
        shade = self._shade0.copy()
        self._execute(b, pose, img, shade)
        sig = 0.05 * pose.r * self.lo / self.size
        shade = cv2.GaussianBlur(shade, (0, 0), sigmaX=sig, sigmaY=sig)
        shade = cv2.resize(shade, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        return cv2.multiply(img, shade, scale=1.0 / 128.0)

    def mouth_box(self, art: Articulation) -> tuple[float, float, float, float]:
        """Pixel box (x0, y0, x1, y1) holding the lips and the widest opening of ``art``'s head pose.

        The box is fixed in head units (centred where :meth:`_mouth` draws, tall enough for the jaw
        fully open and the lower lip below it) and projected with the frame's pose, so it follows the
        head; it does not depend on the mouth's own articulation. Used to weight training losses.
        """
        art = art.clipped()
        idt = self.id
        pose = _Pose(self.size, art.head_yaw, art.head_pitch, art.head_roll)
        mv = 0.78 * idt.face_length
        hw = 0.36 * idt.mouth_width * 1.36 + 0.06  # widest spread/smile + the corners
        u = np.array([-hw, 0.0, hw, -hw, 0.0, hw])
        v = np.array([mv - 0.16] * 3 + [mv + 0.46] * 3)  # upper lip ... open jaw + lower lip
        z = _surface_depth(u, v) + 0.06
        px = pose.project(u, v, z, np.zeros_like(u))
        x0, y0 = px.min(0)
        x1, y1 = px.max(0)
        return float(x0), float(y0), float(x1), float(y1)

    # -- articulated parts ----------------------------------------------------------------------
    def _outline(self, art: Articulation, n: int = 64):
        """Face outline (u, v, z) in head units, with the jaw dropped by ``jaw_open``."""
        idt = self.id
        # ca > 0 is the lower half of the face (towards the chin), sa runs from side to side
        sa, ca = _unit_circle(n)
        fw, fl = idt.face_width, idt.face_length
        top = ca <= 0
        q = np.where(top, 0.0, ca)  # 0 at the temples, 1 at the chin
        taper = 0.5 - 0.22 * idt.jaw_width
        power = 1.6 + 1.4 * idt.jaw_width
        u = fw * sa * (1.0 - taper * q**power)
        chin_len = 1.22 + 0.08 * idt.chin
        v = np.where(top, 1.22 * ca, chin_len * fl * q)
        u = u * (1.0 + 0.04 * np.exp(-(((v - 0.25) / 0.35) ** 2)))  # cheekbones
        drop = 0.22 * art.jaw_open * (1.0 - 0.6 * art.lip_close)
        w = np.clip((v - 0.35) / (chin_len * fl - 0.35), 0.0, 1.0) ** 1.3
        v = v + drop * w
        u = u * (1.0 - 0.05 * art.jaw_open * w)
        z = 0.08 + 0.55 * w**2  # the chin sits forward of the cheeks
        return u, v, z

    def _mouth(self, b: _Batch, art: Articulation):
        idt = self.id
        t = self._t_mouth
        mv = 0.78 * idt.face_length
        mw = 0.36 * idt.mouth_width
        sm_pos, sm_neg = max(art.smile, 0.0), max(-art.smile, 0.0)
        hw = mw * (1.0 + 0.2 * art.lip_spread + 0.16 * sm_pos - 0.4 * art.lip_round)
        gap = (0.36 * art.jaw_open + 0.08 * art.lip_round) * (1.0 - art.lip_close)
        up, down = 0.22 * gap, 0.78 * gap
        mv = mv + 0.22 * art.jaw_open * (1.0 - 0.6 * art.lip_close) * 0.15
        corner = -0.075 * sm_pos + 0.06 * sm_neg
        x = t * hw
        t2 = t * t
        p = min(max(0.55 + 0.7 * art.lip_spread - 0.35 * art.lip_round, 0.25), 1.3)
        g = (1.0 - t2) ** p
        curve = corner * t2 - 0.015 * sm_pos * (1 - t2)
        yui = mv + curve - up * g
        yli = mv + curve + down * g
        thick_k = 1.0 - 0.35 * art.lip_close - 0.15 * art.lip_spread + 0.35 * art.lip_round
        lu = 0.058 * idt.lip_upper * thick_k
        ll = 0.078 * idt.lip_lower * thick_k
        bow = 0.82 + 0.32 * np.exp(-(((np.abs(t) - 0.28) / 0.16) ** 2)) - 0.25 * np.exp(-((t / 0.09) ** 2))
        yuo = yui - lu * (1.0 - t2) ** 0.45 * bow
        ylo = yli + ll * (1.0 - t2) ** 0.55
        dz = 0.06 + 0.08 * art.lip_round
        # shadow under the lower lip (shade map)
        b.fill(
            _Shape(_ellipse(0.0, float(ylo[12]) + 0.05, 0.5 * hw, 0.035, 12), dz=0.04),
            (108,) * 3,
            layer=_SHADE,
        )
        if gap > 0.006:
            opening = np.concatenate([np.stack([x, yui], 1), np.stack([x, yli], 1)[::-1]])
            b.fill(_Shape(opening, dz - 0.02), (62, 22, 28))
            gl = yli - yui
            m = np.abs(t) < 0.62
            tt = t[m] / 0.62
            ttop = yli[m] - 0.38 * gl[m] * np.sqrt(1 - tt**2)
            tongue = np.concatenate([np.stack([x[m], ttop], 1), np.stack([x[m], yli[m] + 0.03], 1)[::-1]])
            b.fill(_Shape(tongue, dz - 0.02), (172, 74, 82))
            m = np.abs(t) < 0.74
            th = np.minimum(0.05, 0.45 * gl[m]) * (1 - (t[m] / 0.74) ** 6)
            teeth = np.concatenate(
                [np.stack([x[m], yui[m] - 0.01], 1), np.stack([x[m], yui[m] + th], 1)[::-1]]
            )
            b.fill(_Shape(teeth, dz - 0.01), (238, 234, 224))
            if gap > 0.12:
                m = np.abs(t) < 0.55
                lh = np.minimum(0.035, 0.2 * gl[m]) * (1 - (t[m] / 0.55) ** 6)
                low = np.concatenate(
                    [np.stack([x[m], yli[m] - lh], 1), np.stack([x[m], yli[m] + 0.01], 1)[::-1]]
                )
                b.fill(_Shape(low, dz - 0.01), (220, 214, 202))
        lower = np.concatenate([np.stack([x, yli], 1), np.stack([x, ylo], 1)[::-1]])
        upper = np.concatenate([np.stack([x, yuo], 1), np.stack([x, yui], 1)[::-1]])
        b.fill(_Shape(lower, dz), self.c_lip_lower)
        b.fill(_Shape(upper, dz), self.c_lip_upper)
        if gap <= 0.006:
            b.stroke(_Shape(np.stack([x, yui], 1), dz), self.c_lip_seam)
        m = np.abs(t) < 0.35
        hl = np.stack([x[m], 0.45 * yli[m] + 0.55 * ylo[m]], 1)
        b.stroke(_Shape(hl, dz + 0.01), self.c_lip_hl)
        if sm_pos > 0.25:
            k = min(1.0, (sm_pos - 0.25) / 0.5)
            col = _mix(self.c_skin, self.c_skin_dark, 0.6 * k)
            for side in (-1.0, 1.0):
                fold = np.array(
                    [
                        [side * 0.2 * idt.nose_width, 0.52],
                        [side * (hw + 0.05), 0.64],
                        [side * (hw + 0.07), float(yui[0]) + 0.03],
                    ]
                )
                b.stroke(_Shape(_smooth_open(fold, 2), 0.04), col)

    def _eyes(self, b: _Batch, art: Articulation):
        idt = self.id
        t = self._t_eye
        n = len(t)
        t2 = t * t
        ew = 0.2 * idt.eye_size
        eh_up = ew * (0.55 + 0.25 * idt.eye_round)
        eh_lo = ew * (0.3 + 0.12 * idt.eye_round) * (1.0 - 0.45 * max(art.smile, 0.0))
        ir = ew * 0.56
        lash_w = 1.3 + 1.1 * idt.lash
        gx = art.gaze_x * ew * 0.4
        gy = art.gaze_y * ew * 0.2 + 0.03 * ew
        up_shape = (1.0 - t2) ** 0.8
        lo_shape = (1.0 - t2) ** 1.1
        for side, blink in ((-1.0, art.blink_l), (1.0, art.blink_r)):
            ex = side * 0.42 * idt.eye_spacing
            ts = t * side  # +1 at the outer corner
            x = ex + t * ew
            tilt = idt.eye_tilt * ts
            skew = 1.0 - 0.18 * (1 - idt.eye_round) * ts  # upper lid peaks towards the inner corner
            y_up_open = -tilt - eh_up * up_shape * skew
            y_lo = -tilt + eh_lo * lo_shape
            closed = -tilt + 0.5 * eh_lo * lo_shape
            y_up = y_up_open + (closed - y_up_open) * blink
            dz = -0.03
            if blink < 0.96:
                opening = np.concatenate([np.stack([x, y_up], 1), np.stack([x, y_lo], 1)[::-1]])
                b.fill(_Shape(opening, dz), (246, 243, 238))
                icx, icy = ex + gx, gy - 0.04 * ew
                b.fill(_Shape(_ellipse(icx, icy, ir, ir, 24), dz), idt.iris_color)
                b.stroke(
                    _Shape(_ellipse(icx, icy, ir * 0.94, ir * 0.94, 24), dz), self.c_iris_ring, 1.0, True
                )
                b.fill(_Shape(_ellipse(icx, icy, ir * 0.46, ir * 0.46, 16), dz), (14, 10, 10))
                b.fill(
                    _Shape(_ellipse(icx - 0.33 * ir, icy - 0.36 * ir, ir * 0.22, ir * 0.22, 10), dz),
                    (255,) * 3,
                )
                # shadow of the upper lid on the eyeball
                b.stroke(_Shape(np.stack([x[3:-3], y_up[3:-3] + 0.012], 1), dz), self.c_lid_shadow, 2.0)
                # the lids hide whatever of the iris lies outside the opening
                top = np.full(n, -2.2 * ew)
                bot = np.full(n, 1.5 * ew)
                b.fill(
                    _Shape(np.concatenate([np.stack([x, y_up], 1), np.stack([x, top], 1)[::-1]]), dz),
                    self.c_skin,
                )
                b.fill(
                    _Shape(np.concatenate([np.stack([x, y_lo], 1), np.stack([x, bot], 1)[::-1]]), dz),
                    self.c_skin,
                )
                crease = y_up_open - 0.28 * eh_up * up_shape**0.75 - 0.025 - 0.3 * blink * eh_up * up_shape
                m = np.abs(t) < 0.8
                b.stroke(_Shape(np.stack([x[m], crease[m]], 1), dz), self.c_crease)
                b.stroke(_Shape(np.stack([x[2:-2], y_lo[2:-2]], 1), dz), self.c_crease)
            # lash line with a small flick at the outer corner
            o = -1 if side > 0 else 0
            flick = np.array([[x[o] + side * 0.06 * ew, y_up[o] - 0.12 * ew]])
            lash = (
                np.concatenate([np.stack([x, y_up], 1), flick])
                if side > 0
                else np.concatenate([flick, np.stack([x, y_up], 1)])
            )
            b.stroke(_Shape(lash, dz + 0.01), self.c_lash, lash_w)

    def _brows(self, b: _Batch, art: Articulation):
        idt = self.id
        t = np.linspace(0.0, 1.0, 12)  # 0 inner end, 1 outer end
        lift = 0.08 * art.brow
        th = 0.052 * idt.brow_thickness * (1.0 - 0.55 * t**1.5)
        arch = (0.05 + 0.05 * idt.brow_arch) * np.sin(np.pi * np.clip(t * 1.15, 0, 1))
        v = -0.36 - arch + 0.06 * t**2 - lift * (0.6 + 0.4 * (1 - t))
        for side in (-1.0, 1.0):
            u = side * (0.2 + 0.5 * t) * idt.eye_spacing
            if art.brow < 0:  # frown knits the inner ends inwards
                u = u + side * 0.03 * art.brow * (1 - t)
            poly = np.concatenate([np.stack([u, v - 0.5 * th], 1), np.stack([u, v + 0.5 * th], 1)[::-1]])
            b.fill(_Shape(poly, 0.04), idt.brow_color)


def _smooth_open(pts: np.ndarray, iters: int = 2) -> np.ndarray:
    """Chaikin smoothing of an open polyline (end points kept)."""
    for _ in range(iters):
        q = 0.75 * pts[:-1] + 0.25 * pts[1:]
        r = 0.25 * pts[:-1] + 0.75 * pts[1:]
        mid = np.stack([q, r], axis=1).reshape(-1, 2)
        pts = np.concatenate([pts[:1], mid, pts[-1:]])
    return pts


def _fix(pts: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(pts) * _ONE).astype(np.int32)


@functools.lru_cache(maxsize=16)
def get_renderer(identity: FaceIdentity, size: int = 256) -> FaceRenderer:
    """A cached :class:`FaceRenderer` for (identity, size)."""
    return FaceRenderer(identity, size)


def render(identity: FaceIdentity, articulation: Articulation | None = None, size: int = 256) -> np.ndarray:
    """Render one frame: ``size`` x ``size`` x 3 uint8 RGB."""
    return get_renderer(identity, int(size)).render(articulation or Articulation())


def render_params(identity: FaceIdentity, params: np.ndarray, size: int = 256):
    """Yield one frame per row of a (T, P) parameter array (columns :data:`ARTICULATION_FIELDS`)."""
    renderer = get_renderer(identity, int(size))
    for row in np.asarray(params, dtype=np.float32):
        yield renderer.render(Articulation.from_array(row))


def identity_grid(
    seeds, articulation: Articulation | None = None, size: int = 128, cols: int = 8
) -> np.ndarray:
    """Tile renders of several identity seeds into one RGB image (for inspection)."""
    tiles = [render(identity_from_seed(s), articulation, size) for s in seeds]
    rows = []
    for i in range(0, len(tiles), cols):
        row = tiles[i : i + cols]
        row += [np.zeros_like(tiles[0])] * (cols - len(row))
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)
