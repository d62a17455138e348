"""Real-data reader on real MP4 files (written with PyAV from synthetic renders and speech)."""

from __future__ import annotations

import numpy as np
import pytest

from dystream_ros.data.conversation import generate_conversation
from dystream_ros.data.dataset import iter_dataset
from dystream_ros.data.video_folder import VideoFolder, crop_square, list_videos, read_video
from dystream_ros.io.video import write_mp4
from dystream_ros.io.wav import write_wav


@pytest.fixture(scope="module")
def conv():
    return generate_conversation(27, split="heldout", duration_s=4.0)  # A speaks, then B


def _moving_face(conv, fps_scale=1.0):
    """Frames of a 320x240 'camera' with the 160 px face moving sideways; also the true centres."""
    faces = list(conv.frames(160))
    centres = []
    frames = []
    n_out = int(round(len(faces) * fps_scale))
    for k in range(n_out):
        f = faces[min(len(faces) - 1, int(k / fps_scale))]
        canvas = np.full((240, 320, 3), 60, np.uint8)
        x = 80 + int(round(50 * np.sin(k / (12.0 * fps_scale))))
        canvas[50:210, x : x + 160] = f
        frames.append(canvas)
        centres.append(x + 80)
    return frames, np.array(centres, float)


def test_reads_crops_and_both_audio_streams(tmp_path, conv):
    frames, centres = _moving_face(conv)
    path = tmp_path / "talk.mp4"
    write_mp4(path, frames, fps=25, audio_tracks=[conv.speaker, conv.listener])
    d = read_video(path)
    assert d.num_frames == 100 and d.frames.shape == (100, 256, 256, 3) and d.frames.dtype == np.uint8
    assert d.meta["face_found"] > 0.8 and d.meta["audio"] == "second stream"
    boxes = np.array(d.meta["crop_boxes"])
    assert np.abs(boxes[:, 0] - centres).mean() < 12.0  # the crop follows the face
    assert len(d.speaker) == len(d.listener) == 100 * 640
    assert np.corrcoef(d.speaker, conv.speaker)[0, 1] > 0.98
    assert np.corrcoef(d.listener, conv.listener)[0, 1] > 0.98
    assert d.params is None and d.identity is None
    # the crop shows the face: centred crop looks like the render (both 256, same framing roughly)
    mid = d.frames[:, 64:192, 64:192].astype(float)
    assert mid.std() > 20 and np.abs(mid.mean(axis=(1, 2, 3)) - 60).min() > 20  # not background


def test_frame_rate_conversion_stereo_split_and_folder(tmp_path, conv):
    frames, _ = _moving_face(conv, fps_scale=1.2)  # 30 fps source, same 4 s
    stereo = np.stack([conv.speaker, conv.listener], axis=1)
    folder = tmp_path / "videos"
    folder.mkdir()
    write_mp4(folder / "a.mp4", frames, fps=30, stereo_track=stereo)
    d = read_video(folder / "a.mp4")
    assert abs(d.num_frames - 100) <= 1
    assert d.meta["audio"].startswith("stereo channels")
    assert np.corrcoef(d.speaker[: len(conv.speaker)], conv.speaker[: len(d.speaker)])[0, 1] > 0.95
    assert np.corrcoef(d.listener[: len(conv.listener)], conv.listener[: len(d.listener)])[0, 1] > 0.95
    # a mono video with a sidecar listener file
    loud = int(np.argmax(np.convolve(conv.listener**2, np.ones(16000), "valid")[::160])) * 160
    write_mp4(folder / "b.mp4", frames[:30], fps=30, audio_tracks=[conv.speaker[:16000]])
    write_wav(folder / "b.listener.wav", conv.listener[loud : loud + 16000])
    b = read_video(folder / "b.mp4", size=128)
    assert b.frames.shape[1:] == (128, 128, 3) and "sidecar" in b.meta["audio"]
    assert np.abs(b.listener).max() > 0.05
    assert list_videos(folder) == [folder / "a.mp4", folder / "b.mp4"]
    assert len(VideoFolder(folder, max_seconds=1.0)) == 2
    items = list(iter_dataset(folder, max_seconds=1.0, size=64))
    assert [it.name for it in items] == ["a", "b"] and items[0].num_frames == 25
    assert next(items[0].iter_frames(64)).shape == (64, 64, 3)


def test_no_face_falls_back_to_centre_and_silence(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 40, (120, 200, 3), dtype=np.uint8) for _ in range(10)]
    path = tmp_path / "noface.mp4"
    write_mp4(path, frames, fps=25)
    d = read_video(path, size=64)
    assert d.num_frames == 10 and d.meta["face_found"] == 0.0 and d.meta["audio"] == "no audio"
    assert not d.speaker.any() and not d.listener.any()


def test_crop_square_pads_outside_the_image():
    img = np.zeros((50, 80, 3), np.uint8)
    img[:, :40] = 200
    out = crop_square(img, 0.0, 25.0, 40.0, 32)  # half the square lies left of the image
    assert out.shape == (32, 32, 3)
    assert out[:, :8].mean() > 190  # edge replication, not black
