"""MP4 files (PyAV): H.264 yuv420p video with AAC audio tracks, written frame by frame; stream facts.

:class:`VideoWriter` encodes frames as they arrive (``add_frame``), so a long replay never holds its
images in memory. On ``close`` the audio tracks are muxed (each starts at frame 0's start) and, unless
``hold_last_frame`` is off, when the audio runs longer than the frames (the last ``lookahead`` ms of a
stream cannot produce frames) the last image is held so that the video lasts as long as its audio.
:func:`write_mp4` writes a whole clip (frames from an iterable, audio given at once) with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from dystream_ros.config import FPS, SAMPLE_RATE

__all__ = ["VideoWriter", "probe", "write_mp4"]

AUDIO_FRAME = 1024  # AAC frame size in samples
_CHANNELS = {"mono": 1, "stereo": 2}


class VideoWriter:
    def __init__(self, path: str | Path, fps: int = FPS, sample_rate: int | None = SAMPLE_RATE, crf: int = 20,
                 preset: str = "veryfast", audio_layouts: Sequence[str] = ("mono",),
                 hold_last_frame: bool = True):
        """``sample_rate``: rate of the audio given to :meth:`close` (``None``: no audio track);
        ``audio_layouts``: one AAC stream per entry (``mono`` or ``stereo``), in the order :meth:`close`
        takes their samples.

        All streams are created before the first packet (an MP4 header cannot grow streams later): with
        the first frame, or on :meth:`close` for a file without video.
        """
        self.path = Path(path)
        self.sample_rate = sample_rate
        self._layouts = tuple(audio_layouts) if sample_rate else ()
        for layout in self._layouts:
            if layout not in _CHANNELS:
                raise ValueError(f"audio layout {layout!r}: expected one of {tuple(_CHANNELS)}")
        self._audio: list = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = int(fps)
        self._crf, self._preset = crf, preset
        self._hold = hold_last_frame
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
        self._open_audio()

    def _open_audio(self) -> None:
        for layout in self._layouts:
            audio = self._container.add_stream("aac", rate=int(self.sample_rate))
            audio.layout = layout
            audio.time_base = Fraction(1, int(self.sample_rate))
            self._audio.append(audio)

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
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:h, :w]), format="rgb24")
        frame.pts = self.frames
        for packet in self._video.encode(frame):
            self._container.mux(packet)
        self.frames += 1
        self._last = img

    def _add_audio(self, stream, layout: str, samples: np.ndarray) -> None:
        """``samples``: (N,) mono or (N, 2) stereo float, clipped to [-1, 1] and fed in AAC-sized frames."""
        x = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1, _CHANNELS[layout]).T, -1.0, 1.0)
        for start in range(0, x.shape[1], AUDIO_FRAME):
            block = np.ascontiguousarray(x[:, start : start + AUDIO_FRAME])
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
            frame.sample_rate = int(self.sample_rate)
            frame.pts = start
            for packet in stream.encode(frame):
                self._container.mux(packet)
        for packet in stream.encode(None):
            self._container.mux(packet)

    def close(self, *tracks: np.ndarray | None) -> None:
        """Finish the file; ``tracks`` (one per audio layout, ``(N,)`` mono / ``(N, 2)`` stereo float32
        at ``sample_rate``; a missing or ``None`` track is silent) start at frame 0's start."""
        given = [t for t in tracks if t is not None]
        if given and not self._layouts:
            raise ValueError("VideoWriter was created without an audio track (sample_rate=None)")
        if len(tracks) > len(self._layouts):
            raise ValueError(f"{len(tracks)} audio tracks for {len(self._layouts)} audio streams")
        if given and self._hold and self._last is not None:
            longest = max(len(np.asarray(t)) for t in given)
            need = int(np.ceil(longest * self.fps / self.sample_rate - 1e-9))
            while self.frames < need:
                self.add_frame(self._last)
                self.held_frames += 1
        if self._video is not None:
            for packet in self._video.encode(None):
                self._container.mux(packet)
        elif given:  # audio only
            self._open_audio()
        padded = list(tracks) + [None] * (len(self._layouts) - len(tracks))
        # no streams were opened when the file has neither frames nor audio (then nothing is written)
        for stream, layout, samples in zip(self._audio, self._layouts, padded, strict=False):
            self._add_audio(stream, layout, samples if samples is not None else np.zeros(0, np.float32))
        self._container.close()


def write_mp4(
    path,
    frames: Iterable[np.ndarray],
    fps: int = FPS,
    audio_tracks: Sequence[np.ndarray] = (),
    sample_rate: int = SAMPLE_RATE,
    crf: int = 18,
    stereo_track: np.ndarray | None = None,
) -> int:
    """Encode RGB uint8 frames (H.264, yuv420p) and mono float32 audio tracks (AAC, one stream each).

    ``stereo_track`` (N x 2 float32), if given, is written as one two-channel stream after the mono
    tracks. The frames are written as given (no frame is held to cover longer audio). Returns the
    number of video frames written.
    """
    tracks = list(audio_tracks) + ([stereo_track] if stereo_track is not None else [])
    layouts = ["mono"] * len(audio_tracks) + (["stereo"] if stereo_track is not None else [])
    writer = VideoWriter(path, fps=fps, sample_rate=sample_rate, crf=crf, audio_layouts=layouts,
                         hold_last_frame=False)
    for frame in frames:
        writer.add_frame(frame)
    writer.close(*tracks)
    return writer.frames


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
