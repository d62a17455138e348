"""The photo rig (dystream_ros.photo): tables, neutral = reference, mouth opening read back by an independent
reader (MediaPipe FaceMesh through eval.mouth_reader) rising with the jaw, closure, the identity region left
alone while only the mouth moves, eyelids, head-pose clamp, and the answers to bad references."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from dystream_ros.data.face import ARTICULATION_FIELDS, NUM_PARAMS
from dystream_ros.io.images import load_image_file
from dystream_ros.photo import ASTRONAUT, PhotoRefused, build_rig, looks_like_photo, photo_score
from dystream_ros.photo import facemesh as fm
from dystream_ros.photo.table import WEIGHT_COLUMNS, load_tables

F = {f: i for i, f in enumerate(ARTICULATION_FIELDS)}
AVATARS = sorted((ASTRONAUT.parents[1] / "avatars").glob("*.png"))


def art(**kw) -> np.ndarray:
    a = np.zeros(NUM_PARAMS, np.float32)
    for k, v in kw.items():
        a[F[k]] = v
    return a


def psnr(a, b) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return load_image_file(ASTRONAUT)


@pytest.fixture(scope="module")
def hopper() -> np.ndarray:
    """Grace Hopper (public domain), the photo matplotlib ships as sample data."""
    from matplotlib import cbook

    return load_image_file(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


@pytest.fixture(scope="module")
def rig(astronaut):
    return build_rig(astronaut, 256)


@pytest.fixture(scope="module")
def reader():
    from dystream_ros.eval.mouth_reader import MouthReader

    r = MouthReader.load("mediapipe")
    yield r
    r.close()


def test_tables_are_complete_and_the_mesh_is_a_surface():
    t = load_tables()
    assert t.weights.shape == (fm.NUM_LANDMARKS, len(WEIGHT_COLUMNS))
    assert t.weights.min() >= 0 and t.weights.max() <= 1
    # Named groups carry their weight: the lower lip follows the jaw, the upper lip does not, brows are brows.
    assert t.column("jaw")[14] == 1 and t.column("jaw")[13] == 0 and t.column("jaw")[152] == 1
    assert t.column("jaw")[10] == 0 and t.column("brow_l")[105] == 1 and t.column("brow_r")[334] == 1
    # Nothing of the mouth reaches the eyes.
    eyes = list(fm.EYE_A_UPPER + fm.EYE_A_LOWER + fm.EYE_B_UPPER + fm.EYE_B_LOWER)
    for c in ("jaw", "upper_lip", "lower_lip", "corner_l", "corner_r"):
        assert t.column(c)[eyes].max() == 0, c
    uses = Counter(tuple(sorted(e)) for a, b, c in t.triangles for e in ((a, b), (b, c), (a, c)))
    assert max(uses.values()) == 2  # a manifold: every edge borders at most two triangles
    border = {e for e, n in uses.items() if n == 1}
    expected = set()
    for chain in (fm.FACE_OVAL + fm.FACE_OVAL[:1], fm.INNER_UPPER, fm.INNER_LOWER, fm.EYE_A_UPPER,
                  fm.EYE_A_LOWER, fm.EYE_B_UPPER, fm.EYE_B_LOWER):
        expected |= {tuple(sorted(e)) for e in zip(chain[:-1], chain[1:], strict=True)}
    assert border == expected  # holes only at the eyes and the mouth, edge only at the silhouette


def test_neutral_is_the_reference_and_frames_have_the_right_shape(astronaut):
    for size in (256, 512):
        r = build_rig(astronaut, size)
        assert r.size == size and r.reference.shape == (size, size, 3)
        f = r.render(r.neutral)
        assert f.dtype == np.uint8 and f.shape == (size, size, 3)
        assert np.array_equal(f, r.reference)
        moved = r.render(art(jaw_open=0.8, head_yaw=0.1))
        assert moved.shape == (size, size, 3) and not np.array_equal(moved, r.reference)
    with pytest.raises(ValueError, match="size"):
        build_rig(astronaut, 300)


def test_render_is_deterministic_and_checks_its_input(rig):
    a = art(jaw_open=0.6, lip_round=0.4, blink_l=0.7, head_pitch=0.1, gaze_x=0.5)
    assert np.array_equal(rig.render(a), rig.render(a.copy()))
    with pytest.raises(ValueError, match="needs 13 values"):
        rig.render(np.zeros(5))
    bad = a.copy()
    bad[F["jaw_open"]] = np.nan
    bad[F["head_yaw"]] = np.inf
    good = a.copy()
    good[F["jaw_open"]] = 0.0
    good[F["head_yaw"]] = 0.0
    assert np.array_equal(rig.render(bad), rig.render(good))


@pytest.mark.parametrize("which", ["astronaut", "hopper"])
def test_mouth_opening_read_by_facemesh_rises_with_the_jaw(which, request, reader):
    r = build_rig(request.getfixturevalue(which), 256)
    jaws = np.linspace(0, 1, 6)
    m = reader.read(np.stack([r.render(art(jaw_open=j)) for j in jaws]))["mouth"]
    assert np.isfinite(m).all()
    assert np.all(np.diff(m) > 0), m  # monotonic
    assert m[-1] - m[0] > 0.06, m  # a clearly open mouth at jaw_open = 1 (opening / face height)


def test_closure_brings_the_opening_to_the_closed_reference(hopper, reader):
    r = build_rig(hopper, 256)
    closed = reader.read(np.stack([r.render(art(jaw_open=j, lip_close=1)) for j in (0.3, 0.6, 1.0)]))["mouth"]
    open_ = reader.read(r.render(art(jaw_open=0.6)))["mouth"][0]
    assert np.all(closed < 0.015), closed
    assert open_ > 5 * closed.max()


@pytest.mark.parametrize("size", [256, 512])
def test_sealed_lips_cover_the_photos_own_teeth(astronaut, reader, size):
    """The astronaut smiles with her teeth showing: sealed lips leave no thread of teeth between them."""
    r = build_rig(astronaut, size)
    import cv2

    U, L = list(fm.INNER_UPPER), list(fm.INNER_LOWER)
    P = r.landmarks[:, :2]
    inner = np.zeros((size, size), np.uint8)  # between the reference's inner lips: where the teeth show
    cv2.fillPoly(inner, [np.round(np.concatenate([P[U], P[L[-2:0:-1]]])).astype(np.int32)], 1)
    inner = inner.astype(bool)

    def white(im):  # bright and not red: teeth, not the lips' highlights
        im = im.astype(np.int16)
        return inner & (im.mean(axis=2) > 170) & (im[..., 0] - im[..., 1] < 25)

    assert white(r.reference).sum() > 0.3 * inner.sum()  # about 35 % of the opening is teeth
    for jaw in (0.0, 0.6):
        left = white(r.render(art(jaw_open=jaw, lip_close=1.0))).sum()
        assert left < 0.02 * inner.sum(), f"jaw {jaw}: {left} teeth pixels left between the sealed lips"
    # the independent reader sees the lips nearer closed than the smiling reference
    read = reader.read(np.stack([r.reference, r.render(art(lip_close=1.0))]))["mouth"]
    assert read[1] < 0.8 * read[0], read


def test_identity_region_unchanged_while_only_the_mouth_moves(rig):
    P = rig.landmarks[:, :2]
    idx = list(fm.BROW_A + fm.BROW_B + fm.EYE_A_UPPER + fm.EYE_A_LOWER + fm.EYE_B_UPPER + fm.EYE_B_LOWER)
    x0, y0 = np.floor(P[idx].min(axis=0)).astype(int)
    x1 = int(np.ceil(P[idx, 0].max()))
    y1 = int(P[2, 1])  # base of the nose
    ref = rig.reference[y0:y1, x0:x1]
    rng = np.random.default_rng(0)
    for _ in range(12):
        a = art(jaw_open=rng.uniform(0, 1), lip_spread=rng.uniform(0, 1), lip_round=rng.uniform(0, 1),
                lip_close=rng.uniform(0, 1) * (rng.uniform() < 0.5))
        f = rig.render(a)
        assert psnr(f[y0:y1, x0:x1], ref) >= 40.0
        assert psnr(f, rig.reference) < 40.0 or a[F["jaw_open"]] < 0.15  # the mouth did move


def test_blinks_paint_the_eye_closed(rig):
    # Read back by FaceMesh with its attention mesh (refine_landmarks), which follows the lids.
    def eye_opening(img):  # lid gap over eye width, both eyes
        lm = fm.find_faces(img)[0]
        return np.array([abs(lm[145, 1] - lm[159, 1]) / abs(lm[133, 0] - lm[33, 0]),
                         abs(lm[374, 1] - lm[386, 1]) / abs(lm[362, 0] - lm[263, 0])])

    o = eye_opening(rig.reference)
    half = eye_opening(rig.render(art(blink_l=0.5, blink_r=0.5)))
    shut = eye_opening(rig.render(art(blink_l=1, blink_r=1)))
    assert np.all(o > 0.25) and np.all(half < 0.85 * o) and np.all(shut < 0.3 * o), (o, half, shut)
    # Painted, not stretched: the dark iris and pupil are gone from the closed eye.
    P = rig.landmarks
    shut_img = rig.render(art(blink_l=1, blink_r=1))
    for up, lo in ((fm.EYE_A_UPPER, fm.EYE_A_LOWER), (fm.EYE_B_UPPER, fm.EYE_B_LOWER)):
        x0, y0 = np.floor(P[list(up + lo), :2].min(axis=0)).astype(int)
        x1, y1 = np.ceil(P[list(up + lo), :2].max(axis=0)).astype(int)
        dark = [float((img[y0:y1, x0:x1].mean(axis=2) < 70).mean()) for img in (rig.reference, shut_img)]
        assert dark[0] > 0.1 and dark[1] < 0.01, dark
    # One eye at a time: the other stays as it is.
    f = rig.render(art(blink_l=1))
    P = rig.landmarks
    xb0, yb0 = np.floor(P[list(fm.EYE_B_UPPER + fm.EYE_B_LOWER), :2].min(axis=0)).astype(int) - 2
    xb1, yb1 = np.ceil(P[list(fm.EYE_B_UPPER + fm.EYE_B_LOWER), :2].max(axis=0)).astype(int) + 2
    assert np.array_equal(f[yb0:yb1, xb0:xb1], rig.reference[yb0:yb1, xb0:xb1])
    xa0 = int(P[list(fm.EYE_A_UPPER), 0].min())
    xa1 = int(P[list(fm.EYE_A_UPPER), 0].max())
    assert not np.array_equal(f[yb0:yb1, xa0:xa1], rig.reference[yb0:yb1, xa0:xa1])


def test_the_warp_covers_each_triangle_exactly_and_inverts_its_affine():
    """The backward map's rasteriser: every grid point inside a moved triangle gets that triangle's output ->
    reference affine image and no point outside any is touched, on the full and a coarse grid; a triangle
    with no moved vertex is left out."""
    from dystream_ros.photo.rig import _rasterise

    Vd = np.array([[10.3, 12.1], [40.7, 18.4], [22.2, 44.9], [55.0, 50.5], [5.0, 60.0], [60.0, 5.0],
                   [60.0, 60.0]])
    V0 = Vd + np.array([[1.0, -2.0], [0.5, 1.5], [-1.0, 0.0], [2.0, 1.0], [0, 0], [0, 0], [0, 0]])
    # triangle 2 has no moved vertex (it overlaps triangle 1, whose affine must win there)
    tris = np.array([[0, 1, 2], [1, 3, 2], [4, 5, 6]], np.int32)
    moved = np.array([True, True, True, True, False, False, False])
    f1, f2 = V0[tris[:, 1]] - V0[tris[:, 0]], V0[tris[:, 2]] - V0[tris[:, 0]]
    min_det = np.maximum(1e-3, 0.05 * np.abs(f1[:, 0] * f2[:, 1] - f2[:, 0] * f1[:, 1]))

    def affine(t):  # output -> reference of triangle t, solved from its three vertex pairs
        X = np.c_[Vd[tris[t]], np.ones(3)]
        return np.linalg.solve(X, V0[tris[t]]).T  # (2, 3)

    def bary_min(p, t):
        a, b, c = Vd[tris[t]]
        b1, b2 = np.linalg.solve(np.stack([b - a, c - a], 1), p - a)
        return min(b1, b2, 1 - b1 - b2)

    for k, (i0, j0, w, h) in ((1.0, (0, 0, 64, 64)), (2.0, (3, 2, 28, 30))):
        qx = np.full((h, w), -1e6, np.float32)
        qy = np.full((h, w), -1e6, np.float32)
        _rasterise(Vd, tris, V0[tris[:, 0]], f1, f2, min_det, moved, k, i0, j0, qx, qy)
        n_inside = 0
        for j in range(h):
            for i in range(w):
                p = np.array([k * (i + i0 + 0.5) - 0.5, k * (j + j0 + 0.5) - 0.5])
                m = [bary_min(p, t) for t in range(2)]
                if max(m) > 1e-3:  # clearly inside one drawn triangle: through that triangle's affine
                    n_inside += 1
                    np.testing.assert_allclose((qx[j, i], qy[j, i]), affine(int(np.argmax(m))) @ [*p, 1],
                                               atol=1e-3)
                elif max(m) < -1e-3:  # outside both (inside triangle 2 or none): untouched
                    assert qx[j, i] == -1e6 and qy[j, i] == -1e6, (k, p)
        assert n_inside > 20
    with pytest.raises(TypeError):  # a compiled signature: wrong dtypes fail loudly
        _rasterise(Vd.astype(np.float32), tris, V0[tris[:, 0]], f1, f2, min_det, moved, 1.0, 0, 0, qx, qy)


def test_head_pose_is_clamped_to_what_a_warp_can_show(rig):
    from dystream_ros.photo import POSE_LIMITS

    for name, lim in POSE_LIMITS.items():
        beyond = rig.render(art(**{name: 0.6 if name == "head_yaw" else 0.4}))
        at = rig.render(art(**{name: lim}))
        assert np.array_equal(beyond, at), name
        assert not np.array_equal(at, rig.reference)


def test_photos_and_drawn_faces_are_told_apart(astronaut, hopper):
    assert looks_like_photo(astronaut) and looks_like_photo(hopper)
    assert AVATARS, "shipped procedural avatars missing"
    for p in AVATARS:
        img = load_image_file(p)
        assert not looks_like_photo(img), (p.name, photo_score(img))


# ---- bad references --------------------------------------------------------------------------------------


def _canvas(img, side, face_scale, at=(0.5, 0.5)):
    import cv2

    c = np.full((side, side, 3), 128, np.uint8)
    s = cv2.resize(img, None, fx=face_scale, fy=face_scale, interpolation=cv2.INTER_AREA)
    h, w = s.shape[:2]
    y, x = int(at[1] * side - h / 2), int(at[0] * side - w / 2)
    c[y:y + h, x:x + w] = s
    return c


def test_no_face_is_refused():
    rng = np.random.default_rng(1)
    noise = (rng.random((240, 320, 3)) * 255).astype(np.uint8)
    with pytest.raises(PhotoRefused, match="no face"):
        build_rig(noise, 256)
    with pytest.raises(PhotoRefused, match="no face"):
        build_rig(np.full((200, 200, 3), 90, np.uint8), 256)


def test_two_faces_are_refused(astronaut):
    with pytest.raises(PhotoRefused, match="2 faces"):
        build_rig(np.concatenate([astronaut, astronaut[:, ::-1]], axis=1), 256)


def test_tiny_images_and_tiny_faces_are_refused(astronaut):
    with pytest.raises(PhotoRefused, match="too small"):
        build_rig(astronaut[::10, ::10], 256)
    import cv2

    small = cv2.resize(astronaut, (120, 120), interpolation=cv2.INTER_AREA)  # found, but 51 px tall
    with pytest.raises(PhotoRefused, match=r"the face is too small: \d+ px from forehead to chin"):
        build_rig(small, 256)
    distant = _canvas(astronaut, 900, 0.45)  # a 48 px face in a 900 px photo: the detector does not find it
    with pytest.raises(PhotoRefused, match="no face found.*crop distant or group photos"):
        build_rig(distant, 256)


def test_grayscale_rgba_and_other_arrays_are_converted_or_refused(astronaut):
    gray = astronaut.mean(axis=2).astype(np.uint8)
    r = build_rig(gray, 256)
    assert "grayscale converted to RGB" in r.info.notes
    assert np.allclose(r.reference[..., 0], r.reference[..., 1], atol=1)
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    r = build_rig(rgba, 256)
    assert "RGBA composited over grey" in r.info.notes
    assert np.array_equal(r.render(r.neutral), r.reference)
    with pytest.raises(PhotoRefused, match="not an image"):
        build_rig(np.zeros((10, 10, 10, 3), np.uint8), 256)
    with pytest.raises(PhotoRefused, match="dtype"):
        build_rig(astronaut.astype(np.int64), 256)


def test_a_black_and_white_photo_talks_in_grey(hopper):
    """Painted teeth, cavity and tongue take the photo's colourfulness: none on a black-and-white photo."""
    r = build_rig(hopper.mean(axis=2).astype(np.uint8), 256)
    f = r.render(art(jaw_open=1.0)).astype(np.int16)
    assert not np.array_equal(f, r.reference)
    assert (f.max(axis=2) - f.min(axis=2)).max() <= 2


def test_a_4000_pixel_photo_is_reduced_not_refused(astronaut):
    import cv2

    big = cv2.resize(astronaut, (4000, 4000), interpolation=cv2.INTER_CUBIC)
    r = build_rig(big, 512)
    assert any("reduced from 4000x4000" in n for n in r.info.notes)
    assert r.info.face_px > 1000  # measured in the photo as given
    assert r.render(art(jaw_open=1)).shape == (512, 512, 3)
    with pytest.raises(PhotoRefused, match="too large"):
        build_rig(np.zeros((7000, 7000), np.uint8), 256)


def test_turned_faces_are_refused(astronaut, monkeypatch):
    import dystream_ros.photo.rig as rigmod

    # A real profile photo is not to be had here: check the rule on the measured pose instead.
    yaw, pitch, _ = rigmod.head_pose_deg(fm.find_faces(astronaut)[0])
    assert abs(yaw) < 10 and abs(pitch) < rigmod.MAX_PITCH_DEG
    monkeypatch.setattr(rigmod, "MAX_YAW_DEG", abs(yaw) / 2)
    with pytest.raises(PhotoRefused, match="turned too far"):
        build_rig(astronaut, 256)
