"""MP4 writer (PyAV): H.264 yuv420p video at 25 fps with an AAC audio track.

Frames are encoded as they arrive (``add_frame``), so a long replay never holds its images in memory.
On ``close`` the audio (the conversation: speaker + listener mixed) is muxed and, when the audio runs
longer than the frames (the last ``lookahead`` ms of a stream cannot produce frames), the last
image is held so that the video lasts as long as its audio.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

AUDIO_FRAME = 1024  # AAC frame size in samples


class VideoWriter:
    def __init__(self, path: str | Path, fps: int = 25, sample_rate: int | None = 16000, crf: int = 20,
                 preset: str = "veryfast"):
        """``sample_rate``: rate of the audio given to :meth:`close` (``None``: no audio track).

        Both streams are created before the first packet (an MP4 header cannot grow streams later).
        """
        self.path = Path(path)
        self.sample_rate = sample_rate
        self._audio = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = int(fps)
        self._crf, self._preset = crf, preset
        self._container = av.open(str(self.path), mode="w")
        self._video = None
        self._last: np.ndarray | None = None
        self.frames = 0
        self.held_frames = 0

    def _open_video(self, width: int, height: int) -> None:
        codec = "libx264" if "libx264" in av.codecs_available else "h264"
        stream = self._container.add_stream(codec, rate=self.fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, self.fps)
        if codec == "libx264":
            stream.options = {"crf": str(self._crf), "preset": self._preset}
        self._video = stream
        if self.sample_rate:
            audio = self._container.add_stream("aac", rate=int(self.sample_rate))
            audio.layout = "mono"
            audio.time_base = Fraction(1, int(self.sample_rate))
            self._audio = audio

    def add_frame(self, image: np.ndarray) -> None:
        img = np.ascontiguousarray(image, dtype=np.uint8)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected HxWx3 uint8 RGB, got shape {img.shape}")
        if self._video is None:
            h, w = img.shape[:2]
            # yuv420p needs even sizes
            self._size = (w - w % 2, h - h % 2)
            self._open_video(*self._size)
        w, h = self._size
        frame = av.VideoFrame.from_ndarray(img[:h, :w], format="rgb24")
        frame.pts = self.frames
        for packet in self._video.encode(frame):
            self._container.mux(packet)
        self.frames += 1
        self._last = img

    def _add_audio(self, audio: np.ndarray) -> None:
        stream, sample_rate = self._audio, int(self.sample_rate)
        x = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
        for start in range(0, x.size, AUDIO_FRAME):
            block = x[start : start + AUDIO_FRAME]
            frame = av.AudioFrame.from_ndarray(block[None, :], format="fltp", layout="mono")
            frame.sample_rate = int(sample_rate)
            frame.pts = start
            for packet in stream.encode(frame):
                self._container.mux(packet)
        for packet in stream.encode(None):
            self._container.mux(packet)

    def close(self, audio: np.ndarray | None = None) -> None:
        """Finish the file; ``audio`` (mono float32 at ``sample_rate``) starts at frame 0's start."""
        if audio is not None and self._audio is None and self._video is not None:
            raise ValueError("VideoWriter was created without an audio track (sample_rate=None)")
        if audio is not None and self._last is not None:
            need = int(np.ceil(len(audio) * self.fps / self.sample_rate - 1e-9))
            while self.frames < need:
                self.add_frame(self._last)
                self.held_frames += 1
        if self._video is not None:
            for packet in self._video.encode(None):
                self._container.mux(packet)
        if self._audio is not None:
            self._add_audio(audio if audio is not None else np.zeros(0, np.float32))
        self._container.close()


def probe(path: str | Path) -> dict:
    """Stream facts of a media file: video codec/pix_fmt/fps/frames/duration, audio codec/rate/duration."""
    info: dict = {}
    with av.open(str(path)) as c:
        for s in c.streams:
            if s.type == "video":
                frames = sum(1 for _ in c.demux(s) if _.size)
                info["video"] = {
                    "codec": s.codec_context.name, "pix_fmt": s.codec_context.pix_fmt,
                    "fps": float(s.average_rate or s.base_rate or 0), "frames": frames,
                    "width": s.codec_context.width, "height": s.codec_context.height,
                    "duration_s": float(s.duration * s.time_base) if s.duration else frames / float(
                        s.average_rate or 25),
                }
    with av.open(str(path)) as c:
        for s in c.streams:
            if s.type == "audio":
                samples = sum(f.samples for f in c.decode(s))
                info["audio"] = {"codec": s.codec_context.name, "sample_rate": s.codec_context.sample_rate,
                                 "duration_s": samples / float(s.codec_context.sample_rate)}
    return info
