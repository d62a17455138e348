"""Small PyAV helpers for the data package: write an MP4 (H.264 + AAC) from frames and audio.

Used by ``dystream synth --render`` and to build test videos for the real-data reader.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from fractions import Fraction

import av
import numpy as np


def write_mp4(
    path,
    frames: Iterable[np.ndarray],
    fps: int = 25,
    audio_tracks: Sequence[np.ndarray] = (),
    sample_rate: int = 16000,
    crf: int = 18,
    stereo_track: np.ndarray | None = None,
) -> int:
    """Encode RGB uint8 frames (H.264, yuv420p) and mono float32 audio tracks (AAC, one stream each).

    ``stereo_track`` (N x 2 float32), if given, is written as one two-channel stream after the mono
    tracks. Returns the number of video frames written.
    """
    it = iter(frames)
    first = next(it, None)
    container = av.open(str(path), mode="w")
    try:
        vstream = None
        if first is not None:  # video first, so players and readers find it as stream 0
            h, w = first.shape[:2]
            vstream = container.add_stream("libx264", rate=Fraction(fps, 1))
            vstream.width, vstream.height = w - w % 2, h - h % 2
            vstream.pix_fmt = "yuv420p"
            vstream.options = {"crf": str(crf), "preset": "veryfast"}
        astreams = [
            ("mono", container.add_stream("aac", rate=sample_rate, layout="mono")) for _ in audio_tracks
        ]
        if stereo_track is not None:
            astreams.append(("stereo", container.add_stream("aac", rate=sample_rate, layout="stereo")))
        count = 0
        if vstream is not None:
            for frame in itertools.chain([first], it):
                img = np.ascontiguousarray(frame[: vstream.height, : vstream.width])
                for packet in vstream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    container.mux(packet)
                count += 1
            for packet in vstream.encode():
                container.mux(packet)
        tracks = [np.asarray(a, np.float32)[None, :] for a in audio_tracks]
        if stereo_track is not None:
            tracks.append(np.ascontiguousarray(np.asarray(stereo_track, np.float32).T))
        for (layout, stream), data in zip(astreams, tracks, strict=True):
            _encode_audio(container, stream, data, layout, sample_rate)
    finally:
        container.close()
    return count


def _encode_audio(container, stream, data: np.ndarray, layout: str, sample_rate: int) -> None:
    """Feed planar float audio (C x N) to an AAC stream in encoder-sized chunks."""
    chunk = 1024
    pts = 0
    n = data.shape[1]
    for i in range(0, n, chunk):
        part = np.ascontiguousarray(np.clip(data[:, i : i + chunk], -1.0, 1.0))
        af = av.AudioFrame.from_ndarray(part, format="fltp", layout=layout)
        af.sample_rate = sample_rate
        af.pts = pts
        af.time_base = Fraction(1, sample_rate)
        pts += part.shape[1]
        for packet in stream.encode(af):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
