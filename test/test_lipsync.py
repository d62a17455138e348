"""Lip-sync evaluator (dystream_ros.eval.lipsync): envelope, offset search and its sign, confidence,
listener behaviour, evaluate() on ground-truth renders, and `dystream eval lipsync` on an MP4."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from fractions import Fraction

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from dystream_ros.eval import lipsync as ls

SR = 16000
SPF = 640  # samples per frame at 25 fps


def smooth_noise(n: int, seed: int, sigma: float = 2.0) -> np.ndarray:
    x = gaussian_filter1d(np.random.default_rng(seed).normal(size=n), sigma)
    return (x - x.mean()) / x.std()


def delay(x: np.ndarray, d: int) -> np.ndarray:
    """y[t] = x[t - d] (edge-padded): the signal happens d frames later."""
    if d == 0:
        return x.copy()
    if d > 0:
        return np.concatenate([np.full(d, x[0]), x[:-d]])
    return np.concatenate([x[-d:], np.full(-d, x[-1])])


def espeak(text: str, voice: str = "en") -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (make setup installs it)")
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "speech.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", path, text], check=True,
                       capture_output=True)
        sr, data = wavfile.read(path)
    a = data.astype(np.float32) / 32768.0
    g = np.gcd(sr, SR)
    return resample_poly(a, SR // g, sr // g).astype(np.float32)


# --------------------------------------------------------------------------------------------
# sync_scores


@pytest.mark.parametrize("d", [-9, -3, 0, 2, 7, 15])
def test_sync_scores_finds_known_shift_and_sign(d):
    audio_ref = smooth_noise(500, seed=1)
    # The video shows each sound d frames after it is heard: video lags audio by d -> offset +d.
    mouth = delay(audio_ref, d)
    r = ls.sync_scores(mouth, audio_ref, max_offset=15)
    assert r["offset_frames"] == d
    assert r["correlation"] > 0.97
    assert r["confidence"] > 0.6
    assert r["offsets"] == list(range(-15, 16)) and len(r["curve"]) == 31
    assert r["curve"][r["offsets"].index(d)] == pytest.approx(r["correlation"])


def test_sign_convention_on_events():
    """Mouth opens 3 frames after each sound burst: positive offset (video lags audio)."""
    env = np.zeros(300)
    mouth = np.zeros(300)
    for t0 in (20, 70, 95, 160, 230, 260):
        env[t0 : t0 + 6] = 1.0
        mouth[t0 + 3 : t0 + 9] = 1.0
    assert ls.sync_scores(mouth, env)["offset_frames"] == 3
    assert ls.sync_scores(env, mouth)["offset_frames"] == -3


def test_confidence_high_for_sync_low_for_noise():
    ref = smooth_noise(1000, seed=2, sigma=1.0)
    synced = ls.sync_scores(ref + 0.3 * smooth_noise(1000, seed=3, sigma=1.0), ref)
    assert synced["confidence"] > 0.8
    for seed in range(4, 14):
        unrelated = ls.sync_scores(smooth_noise(1000, seed=seed, sigma=1.0), ref)
        assert unrelated["confidence"] < 0.25, seed
        assert unrelated["confidence"] < synced["confidence"] / 4


def test_sync_scores_skips_nan_frames():
    ref = smooth_noise(400, seed=5)
    mouth = delay(ref, 4)
    mouth[np.random.default_rng(0).random(400) < 0.15] = np.nan
    r = ls.sync_scores(mouth, ref)
    assert r["offset_frames"] == 4 and r["correlation"] > 0.95


def test_sync_scores_degenerate_inputs():
    r = ls.sync_scores(np.ones(100), smooth_noise(100, seed=0))
    assert r["offset_frames"] == 0 and r["confidence"] == 0.0 and np.isnan(r["correlation"])
    short = ls.sync_scores(smooth_noise(12, seed=1), smooth_noise(12, seed=2), max_offset=15)
    assert short["max_offset"] == 6 and len(short["curve"]) == 13


# --------------------------------------------------------------------------------------------
# audio_envelope


def test_envelope_tracks_espeak_speech_vs_silence():
    speech = espeak("Hello there. How are you today? I am fine, thank you.")
    a = np.concatenate([np.zeros(SR), speech, np.zeros(SR)])
    env = ls.audio_envelope(a, 25)
    assert env.dtype == np.float32 and env.shape == (int(np.ceil(len(a) / SPF)),)
    assert env.min() >= 0.0 and env.max() <= 1.0
    # Independent frame level: plain RMS of the raw samples (espeak's pauses are digital silence).
    raw = np.pad(a, (0, len(env) * SPF - len(a))).reshape(-1, SPF)
    db = 10 * np.log10((raw**2).mean(axis=1) + 1e-12)
    loud = db > -35
    quiet = np.convolve(db < -100, np.ones(5), "same") == 5  # silent, and 2 frames from any sound
    assert loud.sum() > 30 and quiet.sum() > 40
    assert env[:24].max() == 0.0 and env[-24:].max() == 0.0
    assert env[quiet].max() < 0.05
    assert (env[loud] > 0.4).mean() > 0.9 and np.median(env[loud]) > 0.75
    # int16 input is scaled, n_frames pads / cuts
    i16 = (a * 32767).astype(np.int16)
    np.testing.assert_allclose(ls.audio_envelope(i16, 25), env, atol=0.02)
    assert len(ls.audio_envelope(a, 25, n_frames=10)) == 10
    assert len(ls.audio_envelope(a, 25, n_frames=len(env) + 5)) == len(env) + 5
    assert ls.audio_envelope(np.zeros(SR), 25).max() == 0.0


def test_envelope_is_frame_aligned_without_delay():
    """A burst that starts exactly at frame 20 shows up at frame 20, not later (zero-phase filtering)."""
    t = np.arange(SR * 2) / SR
    a = np.where((t >= 20 * 0.04) & (t < 30 * 0.04), 0.3 * np.sin(2 * np.pi * 800 * t), 0.0)
    env = ls.audio_envelope(a, 25)
    assert env[18] < 0.2 and env[19] < 0.7
    assert env[20] > 0.8 and env[29] > 0.8
    assert env[31] < 0.7 and env[33] < 0.2


def test_activity_fills_short_gaps():
    env = np.zeros(60)
    env[10:20] = 1.0
    env[22:30] = 1.0  # 2-frame gap: filled
    env[45] = 1.0  # 1-frame blip: dropped
    act = ls.activity(env)
    assert act[10:30].all() and not act[:10].any() and not act[30:].any()


# --------------------------------------------------------------------------------------------
# listener_behaviour


def bursts(n_frames: int, spans, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.zeros(n_frames * SPF, np.float32)
    for s, e in spans:
        a[s * SPF : e * SPF] = 0.2 * rng.normal(size=(e - s) * SPF)
    return a


def test_listener_behaviour_separates_states():
    n = 400
    spk = bursts(n, [(0, 100), (300, 350)], seed=0)  # the avatar speaks
    lst = bursts(n, [(150, 250)], seed=1)  # the other party speaks
    t = np.arange(n)
    pitch = 0.002 * np.sin(t)  # idle micro-motion
    pitch[150:250] += 0.1 * np.sin(2 * np.pi * t[150:250] / 12)  # nods while listening
    pitch[0:100] += 0.02 * np.sin(2 * np.pi * t[0:100] / 30)  # some motion while speaking
    mouth = np.where((t < 100) | ((t >= 300) & (t < 350)), 0.5, 0.02)
    r = ls.listener_behaviour(pitch, spk, lst, mouth=mouth)
    assert r["frames"]["other"] == pytest.approx(100, abs=3)
    assert r["frames"]["self"] == pytest.approx(150, abs=4)
    assert r["frames"]["both"] == 0
    assert r["frames"]["silence"] == pytest.approx(150, abs=6)
    m = r["motion"]
    assert m["other"] > 5 * m["self"] > 5 * m["silence"]
    assert r["listen_vs_silence"] > 10 and r["listen_vs_speak"] > 5
    assert r["mouth"]["other"] < 0.05 < 0.4 < r["mouth"]["self"]
    json.dumps(r)
    # No listener track: nobody is "other"; 2-D pose input works too.
    r2 = ls.listener_behaviour(np.stack([pitch, pitch], 1), spk, None)
    assert r2["frames"]["other"] == 0 and np.isnan(r2["motion"]["other"])


# --------------------------------------------------------------------------------------------
# evaluate() on ground-truth renders (the shipped reader; independent of any generator)


def speech_params(env: np.ndarray, lag: int, seed: int) -> np.ndarray:
    """Ground-truth articulation whose jaw follows the audio envelope ``lag`` frames later."""
    from dystream_ros.data.face import ARTICULATION_FIELDS, Articulation

    rng = np.random.default_rng(seed)
    n = len(env)
    jaw = np.clip(delay(gaussian_filter1d(env.astype(np.float64), 1.0), lag), 0, 1) * 0.9
    pitch = 0.12 * smooth_noise(n, seed, sigma=6.0) / 2
    rows = []
    for t in range(n):
        a = Articulation(jaw_open=float(jaw[t]), lip_spread=float(rng.uniform(0, 0.3)),
                         head_pitch=float(np.clip(pitch[t], -0.4, 0.4)), head_yaw=float(0.1 * np.sin(t / 20)),
                         blink_l=0.0, blink_r=0.0)
        rows.append(a.to_array())
    p = np.stack(rows)
    assert p.shape[1] == len(ARTICULATION_FIELDS)
    return p


def render_params(params: np.ndarray, seed: int = 10_001) -> np.ndarray:
    from dystream_ros.data.face import identity_from_seed
    from dystream_ros.data.face import render_params as rp

    return np.stack(list(rp(identity_from_seed(seed), params, 256)))


@pytest.fixture(scope="module")
def clip():
    speech = espeak("We measure lip sync with a reader that never saw the generator.", "en+f3")
    audio = np.concatenate([np.zeros(SR // 2, np.float32), speech, np.zeros(SR // 2, np.float32)])
    env = ls.audio_envelope(audio, 25)
    return audio, env


def test_evaluate_finds_render_lag(clip):
    audio, env = clip
    params = speech_params(env, lag=2, seed=0)
    frames = render_params(params)
    res = ls.evaluate(frames, audio, None, params)
    json.dumps(res, allow_nan=False)
    assert res["offset_frames"] == 2 and res["offset_ms"] == 80.0
    assert res["correlation"] > 0.8 and res["confidence"] > 0.4
    assert res["gt"]["mouth_correlation"] > 0.95 and res["gt"]["mouth"]["offset_frames"] == 0
    assert res["gt"]["pitch_correlation"] > 0.9
    assert res["face_found"] == 1.0 and res["reader"] == "synthetic" and res["frames"] == len(frames)
    # The same frames against a different utterance: no sync.
    other = espeak("Completely different words arrive at another time altogether, you see.", "en")
    other = np.concatenate([np.zeros(SR, np.float32), other])[: len(audio)]
    bad = ls.evaluate(None, other, None, readings={"mouth": np.asarray(ls.mouth_openness(frames)),
                                                   "pitch": np.zeros(len(frames))})
    assert bad["confidence"] < res["confidence"] / 2


# --------------------------------------------------------------------------------------------
# CLI end to end on an MP4 written with PyAV


def write_mp4(path, frames: np.ndarray, audio: np.ndarray, fps: int = 25):
    import av

    with av.open(str(path), mode="w") as c:
        vs = c.add_stream("libx264" if "libx264" in av.codecs_available else "h264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        vs.time_base = Fraction(1, fps)
        aus = c.add_stream("aac", rate=SR)
        aus.layout = "mono"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            c.mux(vs.encode(vf))
        c.mux(vs.encode(None))
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
        for i in range(0, len(pcm), 1024):
            af = av.AudioFrame.from_ndarray(pcm[None, i : i + 1024], format="s16", layout="mono")
            af.sample_rate, af.pts = SR, i
            c.mux(aus.encode(af))
        c.mux(aus.encode(None))


def test_cli_eval_lipsync_on_mp4(clip, tmp_path, capsys):
    from scipy.io import wavfile

    from dystream_ros import cli

    audio, env = clip
    params = speech_params(env, lag=0, seed=1)
    frames = render_params(params, seed=10_003)
    mp4 = tmp_path / "clip.mp4"
    write_mp4(mp4, frames, audio)
    wav = tmp_path / "speaker.wav"
    wavfile.write(wav, SR, (audio * 32767).astype(np.int16))
    np.save(tmp_path / "params.npy", params)

    assert cli.main(["eval", "lipsync", "--video", str(mp4), "--speaker", str(wav), "--gt",
                     str(tmp_path / "params.npy"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["frames"] == len(frames) and res["fps"] == 25.0
    assert res["offset_frames"] == 0 and res["confidence"] > 0.4
    assert res["gt"]["mouth_correlation"] > 0.9

    # Without --speaker the MP4's own (AAC) audio track is used, aligned to the first video frame.
    assert cli.main(["eval", "lipsync", "--video", str(mp4)]) == 0
    text = capsys.readouterr().out
    assert "offset +0 frames" in text and "confidence" in text

    # A directory of frames works too, and the text report names the states.
    import cv2

    d = tmp_path / "frames"
    d.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(d / f"{i:05d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    assert cli.main(["eval", "lipsync", "--frames-dir", str(d), "--speaker", str(wav), "--listener",
                     str(wav)]) == 0
    assert "listening/silence" in capsys.readouterr().out
