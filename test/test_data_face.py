"""Procedural face renderer: output format, articulation visibly moves the right parts, identities."""

from __future__ import annotations

import time

import numpy as np
import pytest

from dystream_ros.data.face import (
    ARTICULATION_FIELDS,
    HELDOUT_IDENTITIES,
    NUM_PARAMS,
    PARAM_RANGES,
    TRAIN_IDENTITIES,
    Articulation,
    FaceIdentity,
    clip_params,
    identity_from_seed,
    render,
    render_params,
)

S = 256


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).sum(axis=2)


def _region_ratio(d: np.ndarray, y0, y1, x0, x1) -> float:
    """Mean difference inside the box (fractions of the image) over the mean outside it."""
    ys, xs = slice(int(y0 * S), int(y1 * S)), slice(int(x0 * S), int(x1 * S))
    inside = d[ys, xs].mean()
    mask = np.ones_like(d, bool)
    mask[ys, xs] = False
    return float(inside / max(d[mask].mean(), 1e-3))


def test_shape_dtype_sizes():
    idt = identity_from_seed(0)
    for size in (256, 128, 64):
        img = render(idt, Articulation(), size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
    # anti-aliased, shaded: far more colours than a flat fill would give
    assert len(np.unique(render(idt).reshape(-1, 3), axis=0)) > 2000


def test_jaw_open_changes_mouth_region_most():
    idt = identity_from_seed(1)
    d = _diff(render(idt, Articulation()), render(idt, Articulation(jaw_open=1.0)))
    assert d.mean() > 0.5
    # mouth sits at ~0.62 of the height; the chin drops below it
    assert _region_ratio(d, 0.55, 0.82, 0.32, 0.68) > 8.0


def test_lip_round_and_spread_change_mouth_width():
    idt = identity_from_seed(2)
    base = render(idt, Articulation(jaw_open=0.3))
    for art in (Articulation(jaw_open=0.3, lip_round=1.0), Articulation(jaw_open=0.3, lip_spread=1.0)):
        assert _region_ratio(_diff(base, render(idt, art)), 0.55, 0.75, 0.3, 0.7) > 8.0

    # rounding narrows the dark mouth opening, spreading widens it
    def opening_width(img):
        band = img[int(0.58 * S) : int(0.7 * S), :, :].astype(int)
        dark = (band.sum(axis=2) < 200).any(axis=0)
        cols = np.flatnonzero(dark)
        return cols.max() - cols.min() if len(cols) else 0

    w_round = opening_width(render(idt, Articulation(jaw_open=0.5, lip_round=1.0)))
    w_spread = opening_width(render(idt, Articulation(jaw_open=0.5, lip_spread=1.0)))
    assert w_spread > w_round * 1.4


def test_lip_close_seals_an_open_jaw():
    idt = identity_from_seed(4)
    neutral = render(idt, Articulation())
    open_ = render(idt, Articulation(jaw_open=0.6))
    sealed = render(idt, Articulation(jaw_open=0.6, lip_close=1.0))
    mouth = (slice(int(0.56 * S), int(0.72 * S)), slice(int(0.32 * S), int(0.68 * S)))
    d_open = _diff(open_, neutral)[mouth].mean()
    d_sealed = _diff(sealed, neutral)[mouth].mean()
    assert d_open > 20 and d_sealed < 0.3 * d_open


def test_blink_changes_eye_region_most():
    idt = identity_from_seed(5)
    d = _diff(render(idt, Articulation()), render(idt, Articulation(blink_l=1.0, blink_r=1.0)))
    assert _region_ratio(d, 0.35, 0.5, 0.2, 0.8) > 8.0
    # one eye only: the difference stays on that side of the image
    d_left = _diff(render(idt, Articulation()), render(idt, Articulation(blink_l=1.0)))
    assert d_left[:, : S // 2].sum() > 10 * d_left[:, S // 2 :].sum()


def test_head_yaw_moves_features_sideways():
    def pupils_x(img):
        band = img[int(0.36 * S) : int(0.52 * S)].astype(int).sum(axis=2)
        ys, xs = np.nonzero(band < 60)  # pupils (and the darkest lash pixels)
        return xs.mean()

    for seed in (6, 10002):
        idt = identity_from_seed(seed)
        x_left = pupils_x(render(idt, Articulation(head_yaw=-0.4)))
        x_mid = pupils_x(render(idt, Articulation()))
        x_right = pupils_x(render(idt, Articulation(head_yaw=0.4)))
        assert x_left + 10 < x_mid < x_right - 10


def test_head_pitch_and_roll_and_gaze_change_the_image():
    idt = identity_from_seed(7)
    base = render(idt)
    for art in (
        Articulation(head_pitch=0.3),
        Articulation(head_roll=0.3),
        Articulation(gaze_x=1.0),
        Articulation(smile=1.0),
        Articulation(brow=1.0),
    ):
        assert _diff(base, render(idt, art)).mean() > 0.3, art


def test_identities_differ_and_render_deterministically():
    imgs = [render(identity_from_seed(s)) for s in list(TRAIN_IDENTITIES[:4]) + list(HELDOUT_IDENTITIES[:2])]
    for i in range(len(imgs)):
        for j in range(i + 1, len(imgs)):
            assert _diff(imgs[i], imgs[j]).mean() > 20
    assert identity_from_seed(3) == identity_from_seed(3)
    assert np.array_equal(
        render(identity_from_seed(3), Articulation(jaw_open=0.4)),
        render(identity_from_seed(3), Articulation(jaw_open=0.4)),
    )


def test_identity_split_is_fixed_and_disjoint():
    assert len(TRAIN_IDENTITIES) >= 20 and len(HELDOUT_IDENTITIES) >= 5
    assert not set(TRAIN_IDENTITIES) & set(HELDOUT_IDENTITIES)
    # held-out identities are not copies of training ones
    train = {identity_from_seed(s) for s in TRAIN_IDENTITIES}
    for s in HELDOUT_IDENTITIES:
        idt = identity_from_seed(s)
        assert all(idt.skin != t.skin or idt.hair_color != t.hair_color for t in train)


def test_identity_dict_round_trip():
    idt = identity_from_seed(11)
    back = FaceIdentity.from_dict(idt.to_dict())
    assert back == idt


def test_articulation_array_round_trip_and_clipping():
    art = Articulation(jaw_open=0.3, smile=-0.5, head_yaw=0.2, gaze_y=0.7)
    arr = art.to_array()
    assert arr.shape == (NUM_PARAMS,) and arr.dtype == np.float32
    back = Articulation.from_array(arr)
    assert back.to_array() == pytest.approx(arr) and back.jaw_open == pytest.approx(0.3)
    assert list(ARTICULATION_FIELDS)[:4] == ["jaw_open", "lip_spread", "lip_round", "lip_close"]
    wild = np.full(NUM_PARAMS, 10.0, np.float32)
    clipped = clip_params(wild)
    for i, name in enumerate(ARTICULATION_FIELDS):
        assert clipped[i] == pytest.approx(PARAM_RANGES[name][1])
    with pytest.raises(ValueError):
        Articulation.from_array(np.zeros(3))


def test_render_params_yields_one_frame_per_row():
    params = np.zeros((3, NUM_PARAMS), np.float32)
    params[1, 0] = 1.0
    frames = list(render_params(identity_from_seed(0), params, 64))
    assert len(frames) == 3
    assert np.array_equal(frames[0], frames[2]) and not np.array_equal(frames[0], frames[1])


def test_render_is_fast():
    idt = identity_from_seed(8)
    rng = np.random.default_rng(0)
    arts = [Articulation.from_array(clip_params(rng.uniform(-1, 1, NUM_PARAMS))) for _ in range(20)]
    render(idt, arts[0])  # build the cached renderer
    t0 = time.perf_counter()
    for a in arts * 3:
        render(idt, a)
    ms = (time.perf_counter() - t0) / 60 * 1000
    assert ms < 25.0, f"{ms:.1f} ms/frame"  # ~2-3 ms on one core; loose for shared CI machines
