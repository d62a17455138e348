"""Synthetic dyadic conversations: turn-taking, backchannels, listener behaviour, files, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dystream_ros.config import SAMPLES_PER_FRAME
from dystream_ros.data.conversation import generate_conversation
from dystream_ros.data.dataset import load_conversation
from dystream_ros.data.face import ARTICULATION_FIELDS, HELDOUT_IDENTITIES, TRAIN_IDENTITIES
from dystream_ros.data.speech import HELDOUT_VOICES, TRAIN_VOICES, WIDE_VOICES

COL = {n: i for i, n in enumerate(ARTICULATION_FIELDS)}
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def convs():
    return [generate_conversation(s, duration_s=20.0) for s in SEEDS]


def _states(conv):
    return np.array(list(conv.extra["state_per_frame"]))


def test_shapes_and_lengths(convs):
    for c in convs:
        assert c.num_frames == 500
        assert c.params.shape == (500, len(ARTICULATION_FIELDS)) and c.params.dtype == np.float32
        assert len(c.speaker) == len(c.listener) == 500 * SAMPLES_PER_FRAME
        assert c.speaker.dtype == np.float32 and np.abs(c.speaker).max() <= 1.0


def test_turns_alternate_with_pauses_overlaps_and_backchannels(convs):
    n_overlap = n_backchannel = n_pause = 0
    for c in convs:
        turns = [s for s in c.segments if s.kind == "turn"]
        assert len(turns) >= 3
        assert all(a.party != b.party for a, b in zip(turns, turns[1:], strict=False))
        for a, b in zip(turns, turns[1:], strict=False):
            gap = b.start - a.end
            n_overlap += gap < 0
            n_pause += gap > 0.1
        bcs = [s for s in c.segments if s.kind == "backchannel"]
        n_backchannel += len(bcs)
        for bc in bcs:  # a backchannel falls inside the other party's turn
            assert any(t.party != bc.party and t.start <= bc.start < t.end for t in turns)
            assert bc.end - bc.start < 1.5
    assert n_overlap >= 1 and n_backchannel >= 2 and n_pause >= 3


def test_audio_channels_follow_the_parties(convs):
    for c in convs:
        a_only, b_only = np.zeros(len(c.speaker), bool), np.zeros(len(c.speaker), bool)
        for s in c.segments:
            i0, i1 = int(s.start * 16000), int(s.end * 16000)
            (a_only if s.party == "A" else b_only)[i0:i1] = True
        a_only, b_only = a_only & ~b_only, b_only & ~a_only
        rms = lambda x, m: float(np.sqrt(np.mean(x[m] ** 2)))  # noqa: E731
        assert rms(c.speaker, a_only) > 20 * rms(c.speaker, b_only)
        assert rms(c.listener, b_only) > 5 * rms(c.listener, a_only)


def test_mouth_moves_when_the_avatar_speaks(convs):
    for c in convs:
        st = _states(c)
        jaw = c.params[:, COL["jaw_open"]]
        assert jaw[st == "S"].mean() > 0.15
        assert jaw[st == "S"].mean() > 3 * jaw[st == "L"].mean()
        assert jaw[st == "I"].mean() < 0.08


def test_listener_behaviour(convs):
    """While B speaks, A nods (head-pitch variance), smiles more, blinks more and looks at B."""
    st = np.concatenate([_states(c) for c in convs])
    p = np.concatenate([c.params for c in convs])
    listen, speak, silent = st == "L", st == "S", st == "I"
    assert listen.sum() > 100 and silent.sum() > 50
    pitch = p[:, COL["head_pitch"]]
    assert pitch[listen].var() > 1.5 * pitch[silent].var()
    assert p[listen, COL["smile"]].mean() > p[speak, COL["smile"]].mean() + 0.05
    onsets = np.zeros(len(st), bool)  # blink starts per frame, per state
    k = 0
    for c in convs:
        b = c.params[:, COL["blink_l"]] > 0.5
        onsets[k + 1 : k + len(b)] = b[1:] & ~b[:-1]
        k += len(b)
    assert onsets[listen].mean() > 1.3 * onsets[speak | silent].mean()
    for c in convs:
        cst = _states(c)
        partner = np.array(c.extra["partner_gaze"])
        gaze = c.params[:, [COL["gaze_x"], COL["gaze_y"]]]
        d_listen = np.linalg.norm(gaze[cst == "L"] - partner, axis=1).mean()
        d_speak = np.linalg.norm(gaze[cst == "S"] - partner, axis=1).mean()
        assert d_listen < 0.2 and d_listen < d_speak


def test_idle_micro_motion_and_blinks(convs):
    for c in convs:
        p = c.params
        assert p[:, COL["head_yaw"]].std() > 0.01 and p[:, COL["head_roll"]].std() > 0.005
        blinks = np.flatnonzero(np.diff((p[:, COL["blink_l"]] > 0.5).astype(int)) == 1)
        assert 3 <= len(blinks) <= 20  # ~10-30 per minute over 20 s
        assert np.abs(np.diff(p[:, COL["gaze_x"]])).max() > 0.2  # saccades


def test_deterministic_from_seed(convs):
    again = generate_conversation(SEEDS[0], duration_s=20.0)
    assert np.array_equal(again.params, convs[0].params)
    assert np.array_equal(again.speaker, convs[0].speaker) and np.array_equal(
        again.listener, convs[0].listener
    )
    assert json.dumps(again.meta()) == json.dumps(convs[0].meta())
    assert not np.array_equal(convs[0].params, convs[1].params)


def test_written_files_round_trip(convs, tmp_path):
    c = convs[0]
    d = c.write(tmp_path / "conv")
    for name in ("speaker.wav", "listener.wav", "params.npy", "meta.json"):
        assert (d / name).stat().st_size > 0
    meta = json.loads((d / "meta.json").read_text())
    assert meta["params_columns"] == list(ARTICULATION_FIELDS)
    assert meta["identity_seed"] == c.identity.seed and meta["seed"] == 0
    assert meta["voices"]["A"]["key"] == c.voice_a.key and meta["voices"]["B"]["key"] == c.voice_b.key
    turn = next(s for s in meta["segments"] if s["kind"] == "turn")
    assert turn["text"] and turn["phonemes"] and turn["end_s"] > turn["start_s"]
    back = load_conversation(d)
    assert np.array_equal(back.params, c.params)
    assert np.abs(back.speaker - c.speaker).max() < 1e-4 and np.abs(back.listener - c.listener).max() < 1e-4
    assert back.identity == c.identity
    frames = list(back.iter_frames(64))
    assert len(frames) == c.num_frames and frames[0].shape == (64, 64, 3)


def test_heldout_split_uses_only_heldout_voices_and_identities():
    train_keys = {v.key for v in TRAIN_VOICES}
    held_keys = {v.key for v in HELDOUT_VOICES}
    for s in range(3):
        h = generate_conversation(s, split="heldout", duration_s=4.0)
        t = generate_conversation(s, split="train", duration_s=4.0)
        assert h.identity.seed in HELDOUT_IDENTITIES and t.identity.seed in TRAIN_IDENTITIES
        assert {h.voice_a.key, h.voice_b.key} <= held_keys and {t.voice_a.key, t.voice_b.key} <= train_keys
        assert h.voice_a.key != h.voice_b.key
    wide_keys = {v.key for v in TRAIN_VOICES + WIDE_VOICES}
    wide = [generate_conversation(s, split="train-wide", duration_s=4.0) for s in range(12)]
    assert all(w.identity.seed in TRAIN_IDENTITIES for w in wide)
    assert all({w.voice_a.key, w.voice_b.key} <= wide_keys for w in wide)
    assert {w.voice_a.key for w in wide} - train_keys  # the wider pool is drawn from
    with pytest.raises(ValueError):
        generate_conversation(0, split="test")
