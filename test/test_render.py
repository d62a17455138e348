"""``dystream render``: streaming-session video with the audio muxed in, any WAV sample rate."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest
from PIL import Image
from scipy.io import wavfile

from dystream_ros.audio.resample import resample
from dystream_ros.cli import main as cli
from dystream_ros.config import load_profile
from dystream_ros.io.wav import read_wav as read_wav_16k
from dystream_ros.model.checkpoint import save_checkpoint
from dystream_ros.model.dystream import build_model

TINY = dict(
    latent_dim=8,
    audio={"channels": 16, "dilations": [1, 2], "feature_dim": 16},
    generator={"width": 32, "layers": 1, "heads": 2, "mlp_ratio": 2, "window": 16},
    head={"width": 32, "blocks": 1, "mlp_ratio": 2, "time_freq_dim": 16},
    autoencoder={
        "image_size": 32,
        "warp_size": 16,
        "app_channels": 8,
        "enc_channels": [8],
        "enc_blocks": 1,
        "motion_size": 32,
        "motion_channels": [8, 16, 16],
        "motion_extra_convs": [1],
        "flow_channels": [16, 8],
        "refine_channels": 8,
        "up_channels": [],
    },
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("render")
    save_checkpoint(build_model(load_profile("lite", **TINY), seed=0), d / "tiny.safetensors")
    t = np.arange(int(1.3 * 22050)) / 22050.0
    speech = 0.4 * np.sin(2 * np.pi * 300 * t) * (np.sin(2 * np.pi * 3 * t) > 0)
    wavfile.write(d / "speaker_22k.wav", 22050, (speech * 32767).astype(np.int16))
    t16 = np.arange(16000) / 16000.0
    lis = (0.5 * np.sin(2 * np.pi * 500 * t16)).astype(np.float32)
    wavfile.write(d / "listener_16k_stereo.wav", 16000, np.stack([lis, lis], axis=1))
    wavfile.write(d / "silent_8k.wav", 8000, np.zeros(8000, np.int16))
    ref = np.zeros((48, 40, 3), np.uint8)
    ref[..., 0] = 200
    Image.fromarray(ref).save(d / "ref.png")
    return d


def _probe(path):
    with av.open(str(path)) as c:
        v = next(s for s in c.streams if s.type == "video")
        a = next(s for s in c.streams if s.type == "audio")
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(v)]
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(a)])
        rate = a.rate
    return frames, samples, rate


def _render(files, out, speaker, listener, *extra):
    return cli([
        "render", "--speaker", str(files / speaker), "--listener", str(files / listener),
        "--checkpoint", str(files / "tiny.safetensors"), "--reference", str(files / "ref.png"),
        "--out", str(out), "--backend", "torch", "--no-progress", *extra,
    ])  # fmt: skip


def test_render_mp4_duration_matches_the_wavs(files, tmp_path):
    out = tmp_path / "video.mp4"
    assert _render(files, out, "speaker_22k.wav", "listener_16k_stereo.wav") == 0
    frames, samples, rate = _probe(out)
    assert len(frames) == math.ceil(1.3 * 25)  # the longer WAV (1.3 s at 22.05 kHz) sets the length
    assert frames[0].shape == (32, 32, 3)
    assert abs(len(samples) / rate - 1.3) < 0.06
    assert abs(len(frames) / 25 - len(samples) / rate) < 0.06


def test_render_mix_speaker_only(files, tmp_path):
    both, spk = tmp_path / "both.mp4", tmp_path / "spk.mp4"
    assert _render(files, both, "silent_8k.wav", "listener_16k_stereo.wav") == 0
    assert _render(files, spk, "silent_8k.wav", "listener_16k_stereo.wav", "--mix", "speaker") == 0
    _, a_both, _ = _probe(both)
    f_spk, a_spk, rate = _probe(spk)
    assert np.sqrt(np.mean(a_both**2)) > 0.1  # the listener's tone is in the mix
    assert np.sqrt(np.mean(a_spk**2)) < 0.01  # the speaker channel is silent
    assert len(f_spk) == 25 and abs(len(a_spk) / rate - 1.0) < 0.06


def test_resampling_keeps_pitch_and_length(files):
    x = read_wav_16k(files / "speaker_22k.wav")
    assert abs(len(x) - 1.3 * 16000) <= 2 and x.dtype == np.float32
    t = np.arange(22050) / 22050.0
    y = resample(np.sin(2 * np.pi * 440 * t), 22050)
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert abs(np.argmax(spec) * 16000 / len(y) - 440) < 2
    assert len(y) == 16000
