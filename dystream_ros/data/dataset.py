"""One data API for training: synthetic conversations and real videos look the same.

    from dystream_ros.data.dataset import load_conversation, iter_dataset
    conv = load_conversation("data/synth/conv_0003")      # or a video file
    conv.speaker, conv.listener      # float32 16 kHz mono, num_frames * 640 samples each
    conv.params                      # (T, 13) ground-truth articulation, or None for real video
    for frame in conv.iter_frames(): # T frames, size x size x 3 uint8 RGB
        ...
    for conv in iter_dataset("data/synth"):   # a synth directory (index.json) or a folder of videos
        ...

Synthetic frames are rendered on the fly from the stored parameters (exact and cheap: a few ms
per frame), so a dataset stores no video.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from dystream_ros.data.example import ConversationData
from dystream_ros.data.face import FaceIdentity


def load_conversation(path) -> ConversationData:
    """Load a synthetic conversation directory (``meta.json`` + WAVs + ``params.npy``) or, for a
    video file, read it with :func:`dystream_ros.data.video_folder.read_video`."""
    from dystream_ros.io.wav import read_wav

    path = Path(path)
    if path.is_file():
        from dystream_ros.data.video_folder import read_video

        return read_video(path)
    meta = json.loads((path / "meta.json").read_text())
    params = np.load(path / "params.npy").astype(np.float32)
    speaker = read_wav(path / "speaker.wav")
    listener = read_wav(path / "listener.wav")
    n = int(meta["num_frames"])
    if params.shape[0] != n or len(speaker) != n * 640 or len(listener) != n * 640:
        raise ValueError(f"{path}: inconsistent lengths (params {params.shape}, audio {len(speaker)})")
    return ConversationData(
        name=path.name,
        speaker=speaker,
        listener=listener,
        num_frames=n,
        params=params,
        identity=FaceIdentity.from_dict(meta["identity"]),
        meta=meta,
        fps=int(meta.get("fps", 25)),
        sample_rate=int(meta.get("sample_rate", 16000)),
    )


def list_conversations(root) -> list[Path]:
    """Conversation directories of a synth dataset (from ``index.json``, else any ``*/meta.json``)."""
    root = Path(root)
    index = root / "index.json"
    if index.exists():
        return [root / e["dir"] for e in json.loads(index.read_text())["conversations"]]
    return sorted(p.parent for p in root.glob("*/meta.json"))


def iter_dataset(root, **video_options) -> Iterator[ConversationData]:
    """Every example under ``root``: a synth dataset, or a folder of videos (``video_options`` go
    to :func:`~dystream_ros.data.video_folder.read_video`)."""
    root = Path(root)
    convs = list_conversations(root)
    if convs:
        for c in convs:
            yield load_conversation(c)
        return
    from dystream_ros.data.video_folder import VideoFolder

    yield from VideoFolder(root, **video_options)


def render_conversation_frames(path, size: int = 256) -> Iterator[np.ndarray]:
    """Frames of a stored synthetic conversation (ground-truth renders)."""
    yield from load_conversation(path).iter_frames(size)
