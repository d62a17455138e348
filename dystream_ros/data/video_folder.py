"""Reader for real data: a folder of talking-head videos with audio.

Each video becomes the same structure as a synthetic conversation
(:class:`~dystream_ros.data.dataset.ConversationData`): square face crops at 25 fps, the
speaker audio (the filmed person) and the listener audio (the other party), 16 kHz mono float32,
exactly 640 samples per frame.

- **Decoding**: PyAV. Video is resampled to 25 fps by nearest frame in time; audio to 16 kHz.
- **Face**: OpenCV's bundled Haar cascade (``cv2.data.haarcascades``; the frontal-face default
  cascade, alt2 as a second try) on a downscaled grey copy of every ``detect_every``-th frame. When
  several faces are found the one nearest the previous detection (else the largest) is taken.
  Misses are interpolated, the box is smoothed over time (Gaussian, ``smooth_s``; twice that for
  its size), and a square of ``margin`` x the box size (the framing of the synthetic renders) is
  cropped, padded by edge replication at the image border, and resized to ``size``. Without any
  detection the centre square of the frame is used (``meta["face_found"] = 0``).
- **Listener audio**: a second audio stream if present; else a two-channel stream whose channels
  differ (correlation < 0.8, e.g. one microphone per person; ``stereo="split"`` forces it,
  ``"mix"`` never splits); else a sidecar ``<video>.listener.wav``; else silence.

Two decoding passes are made (detection, then cropping), so memory holds only the output crops.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from dystream_ros.config import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from dystream_ros.data.example import ConversationData

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
CROP_MARGIN = 1.75  # crop side / Haar box side: matches the synthetic framing


def list_videos(root) -> list[Path]:
    """Video files under ``root`` (recursive, sorted)."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


# --------------------------------------------------------------------------------------------
# decoding


def _iter_output_frames(path, fps: int, max_frames: int | None) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield (output index, source frame) at ``fps`` by nearest source frame in time."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        src_rate = float(stream.average_rate or stream.guessed_rate or fps)
        tol = 0.5 / src_rate
        t0 = None
        n = 0
        prev = None
        last_t = 0.0
        k = 0
        for frame in container.decode(stream):
            t = frame.time if frame.time is not None else k / src_rate
            k += 1
            if t0 is None:
                t0 = t
            t -= t0
            while prev is not None and n / fps < t - tol:
                yield n, prev
                n += 1
                if max_frames is not None and n >= max_frames:
                    return
            prev = frame
            last_t = t
        if prev is not None:
            while n / fps < last_t + 1.0 / src_rate - tol:
                yield n, prev
                n += 1
                if max_frames is not None and n >= max_frames:
                    return


def _video_start_time(path) -> float:
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            return float(frame.time or 0.0)
    return 0.0


def decode_audio_streams(path, rate: int = SAMPLE_RATE) -> list[tuple[np.ndarray, float]]:
    """Every audio stream as (channels x samples float32 at ``rate``, start time in s)."""
    out = []
    with av.open(str(path)) as container:
        n_streams = len(container.streams.audio)
    for idx in range(n_streams):
        with av.open(str(path)) as container:
            stream = container.streams.audio[idx]
            channels = stream.codec_context.channels or 1
            layout = "stereo" if channels >= 2 else "mono"
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
            chunks = []
            start = None
            for frame in container.decode(stream):
                if start is None and frame.time is not None:
                    start = float(frame.time)
                for rf in resampler.resample(frame):
                    chunks.append(rf.to_ndarray())
            for rf in resampler.resample(None):
                chunks.append(rf.to_ndarray())
            data = np.concatenate(chunks, axis=1) if chunks else np.zeros((1, 0), np.float32)
            out.append((data.astype(np.float32), start or 0.0))
    return out


def _fit(audio: np.ndarray, offset_s: float, n_samples: int) -> np.ndarray:
    """Place ``audio`` (starting ``offset_s`` after the first video frame) on the video timeline."""
    shift = int(round(offset_s * SAMPLE_RATE))
    if shift > 0:
        audio = np.concatenate([np.zeros(shift, np.float32), audio])
    elif shift < 0:
        audio = audio[-shift:]
    if len(audio) < n_samples:
        audio = np.concatenate([audio, np.zeros(n_samples - len(audio), np.float32)])
    return np.ascontiguousarray(audio[:n_samples], dtype=np.float32)


def split_channels(
    streams, stereo: str = "auto"
) -> tuple[np.ndarray | None, np.ndarray | None, str, float, float]:
    """(speaker, listener or None, how, speaker start, listener start) from decoded streams."""
    if not streams:
        return None, None, "no audio", 0.0, 0.0
    first, t_first = streams[0]
    if len(streams) >= 2:
        second, t_second = streams[1]
        return first.mean(axis=0), second.mean(axis=0), "second stream", t_first, t_second
    if first.shape[0] >= 2 and stereo != "mix":
        a, b = first[0], first[1]
        if stereo == "split":
            return a, b, "stereo channels", t_first, t_first
        denom = float(np.sqrt(np.sum(a * a) * np.sum(b * b)))
        corr = float(np.sum(a * b)) / denom if denom > 0 else 1.0
        if corr < 0.8:
            return a, b, f"stereo channels (corr {corr:.2f})", t_first, t_first
    return first.mean(axis=0), None, "mono", t_first, t_first


# --------------------------------------------------------------------------------------------
# face track


class FaceDetector:
    """Haar-cascade face detector (OpenCV's bundled frontal-face cascades)."""

    def __init__(self):
        base = Path(cv2.data.haarcascades)
        self.cascades = []
        for name in ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml"):
            c = cv2.CascadeClassifier(str(base / name))
            if c.empty():
                raise RuntimeError(f"OpenCV cascade {name} not found in {base}")
            self.cascades.append(c)

    def detect(self, gray: np.ndarray, prev: np.ndarray | None = None) -> np.ndarray | None:
        """Best face as (cx, cy, side) in ``gray`` pixels, or None."""
        min_side = max(24, int(0.08 * min(gray.shape)))
        for casc, neigh in zip(self.cascades, (5, 4), strict=True):
            faces = casc.detectMultiScale(
                gray, scaleFactor=1.1, minNeighbors=neigh, minSize=(min_side, min_side)
            )
            if len(faces):
                boxes = np.array(
                    [[x + w / 2, y + h / 2, max(w, h)] for x, y, w, h in faces], dtype=np.float64
                )
                if prev is not None:
                    d = np.hypot(boxes[:, 0] - prev[0], boxes[:, 1] - prev[1]) / max(prev[2], 1.0)
                    return boxes[int(np.argmin(d))]
                return boxes[int(np.argmax(boxes[:, 2]))]
        return None


def track_face(
    path,
    fps: int = FPS,
    max_frames: int | None = None,
    detect_every: int = 2,
    detect_width: int = 360,
    smooth_s: float = 0.4,
) -> tuple[np.ndarray, tuple[int, int], float]:
    """Smoothed face box per output frame: ((T, 3) cx, cy, side in source pixels, (H, W), found fraction)."""
    detector = FaceDetector()
    raw = []
    size = (0, 0)
    prev = None
    for n, frame in _iter_output_frames(path, fps, max_frames):
        size = (frame.height, frame.width)
        box = np.full(3, np.nan)
        if n % detect_every == 0:
            scale = min(1.0, detect_width / frame.width)
            dw, dh = max(2, int(frame.width * scale)), max(2, int(frame.height * scale))
            gray = frame.reformat(width=dw, height=dh, format="gray").to_ndarray()
            found = detector.detect(gray, None if prev is None else prev * scale)
            if found is not None:
                box = found / scale
                prev = box
        raw.append(box)
    boxes = np.array(raw, dtype=np.float64).reshape(-1, 3)
    t = len(boxes)
    valid = ~np.isnan(boxes[:, 0])
    detected = int(np.sum(valid))
    attempts = max(1, (t + detect_every - 1) // detect_every)
    if t == 0:
        return boxes, size, 0.0
    h, w = size
    if detected == 0:
        side = min(h, w) / CROP_MARGIN
        return np.tile([w / 2, h / 2, side], (t, 1)), size, 0.0
    idx = np.arange(t)
    vi = np.flatnonzero(valid)
    # reject single-frame jumps: compare with the median of neighbouring detections
    med = np.array([np.median(boxes[vi[max(0, k - 2) : k + 3]], axis=0) for k in range(len(vi))])
    ok = np.abs(boxes[vi, 0] - med[:, 0]) < 0.5 * med[:, 2]
    vi = vi[ok] if ok.any() else vi
    out = np.stack([np.interp(idx, vi, boxes[vi, c]) for c in range(3)], axis=1)
    sigma = max(1e-3, smooth_s * fps)
    out[:, 0] = gaussian_filter1d(out[:, 0], sigma, mode="nearest")
    out[:, 1] = gaussian_filter1d(out[:, 1], sigma, mode="nearest")
    out[:, 2] = gaussian_filter1d(out[:, 2], 2 * sigma, mode="nearest")
    return out, size, detected / attempts


def crop_square(image: np.ndarray, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """Square crop centred at (cx, cy), edge-replicated outside the image, resized to ``size``."""
    h, w = image.shape[:2]
    s = max(2, int(round(side)))
    x0 = int(round(cx - s / 2))
    y0 = int(round(cy - s / 2))
    x1, y1 = x0 + s, y0 + s
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if sx1 <= sx0 or sy1 <= sy0:
        crop = np.zeros((s, s, 3), np.uint8)
    else:
        crop = image[sy0:sy1, sx0:sx1]
        pads = (sy0 - y0, y1 - sy1, sx0 - x0, x1 - sx1)
        if any(pads):
            crop = cv2.copyMakeBorder(crop, *pads, cv2.BORDER_REPLICATE)
    interp = cv2.INTER_AREA if s > size else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interp)


# --------------------------------------------------------------------------------------------


def read_video(
    path,
    size: int = 256,
    max_seconds: float | None = None,
    margin: float = CROP_MARGIN,
    stereo: str = "auto",
    detect_every: int = 2,
    smooth_s: float = 0.4,
) -> ConversationData:
    """Decode one talking-head video into face crops + speaker/listener audio (see module doc)."""
    path = Path(path)
    max_frames = None if max_seconds is None else int(round(max_seconds * FPS))
    track, (h, w), found = track_face(path, FPS, max_frames, detect_every=detect_every, smooth_s=smooth_s)
    frames = np.zeros((len(track), size, size, 3), np.uint8)
    scale = margin / CROP_MARGIN
    for n, frame in _iter_output_frames(path, FPS, len(track)):
        cx, cy, side = track[n]
        frames[n] = crop_square(frame.to_ndarray(format="rgb24"), cx, cy, side * CROP_MARGIN * scale, size)
    t = len(frames)
    n_samples = t * SAMPLES_PER_FRAME
    v0 = _video_start_time(path) if t else 0.0
    speaker, listener, how, t_sp, t_li = split_channels(decode_audio_streams(path), stereo)
    sidecar = path.with_name(path.stem + ".listener.wav")
    if listener is None and sidecar.exists():
        from dystream_ros.io.wav import read_wav

        listener, t_li, how = read_wav(sidecar), v0, how + " + sidecar listener"
    speaker = _fit(speaker if speaker is not None else np.zeros(0, np.float32), t_sp - v0, n_samples)
    listener = _fit(listener if listener is not None else np.zeros(0, np.float32), t_li - v0, n_samples)
    meta = {
        "source": str(path),
        "fps": FPS,
        "sample_rate": SAMPLE_RATE,
        "num_frames": t,
        "source_size": [int(w), int(h)],
        "face_found": round(float(found), 4),
        "audio": how,
        "crop_boxes": np.round(track, 1).tolist(),
    }
    return ConversationData(
        name=path.stem,
        speaker=speaker,
        listener=listener,
        num_frames=t,
        params=None,
        identity=None,
        meta=meta,
        frames=frames,
    )


class VideoFolder:
    """All videos under a folder, read lazily with :func:`read_video` options."""

    def __init__(self, root, **options):
        self.root = Path(root)
        self.options = options
        self.paths = list_videos(self.root)
        if not self.paths:
            raise FileNotFoundError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under {self.root}")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> ConversationData:
        return read_video(self.paths[i], **self.options)

    def __iter__(self) -> Iterator[ConversationData]:
        for p in self.paths:
            yield read_video(p, **self.options)
