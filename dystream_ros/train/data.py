"""Training data access shared by the autoencoder and generator trainers.

A data directory is anything :func:`dystream_ros.data.dataset.iter_dataset` reads: a ``dystream synth``
directory (frames rendered on demand from the stored articulation, a few ms each) or a folder of real
videos (decoded face crops). :class:`FrameBank` gives random access to frame ``t`` of conversation
``c`` plus its ground-truth articulation when there is one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dystream_ros.data.dataset import iter_dataset
from dystream_ros.data.example import ConversationData
from dystream_ros.data.face import ARTICULATION_FIELDS, PARAM_RANGES, Articulation, FaceRenderer

__all__ = ["FrameBank", "normalise_params", "to_tensor"]

_LO = np.array([PARAM_RANGES[f][0] for f in ARTICULATION_FIELDS], dtype=np.float32)
_HI = np.array([PARAM_RANGES[f][1] for f in ARTICULATION_FIELDS], dtype=np.float32)


def normalise_params(params: np.ndarray) -> np.ndarray:
    """Articulation (..., 13) -> [0, 1] per column (by the renderer's parameter ranges)."""
    return ((np.asarray(params, np.float32) - _LO) / (_HI - _LO)).astype(np.float32)


def to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (B, S, S, 3) RGB -> float (B, 3, S, S) in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return t.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


class FrameBank:
    """Random access to the avatar frames of every conversation under ``root``.

    ``keep_audio=False`` drops the waveforms after loading (the autoencoder does not need them).
    """

    def __init__(
        self, root: str | Path, size: int = 256, max_conversations: int | None = None, keep_audio: bool = True
    ) -> None:
        self.root = Path(root)
        self.size = int(size)
        self.convs: list[ConversationData] = []
        for i, conv in enumerate(iter_dataset(self.root)):
            if max_conversations is not None and i >= max_conversations:
                break
            if not keep_audio:
                conv.speaker = conv.listener = np.zeros(0, np.float32)
            self.convs.append(conv)
        if not self.convs:
            raise FileNotFoundError(f"no conversations found under {self.root}")
        self._renderers: dict[int, FaceRenderer] = {}
        self._refs: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.convs)

    @property
    def has_params(self) -> bool:
        return all(c.params is not None for c in self.convs)

    def num_frames(self, c: int) -> int:
        return int(self.convs[c].num_frames)

    def _renderer(self, c: int) -> FaceRenderer:
        r = self._renderers.get(c)
        if r is None:
            r = self._renderers[c] = FaceRenderer(self.convs[c].identity, self.size)
        return r

    def frame(self, c: int, t: int) -> np.ndarray:
        """Frame ``t`` of conversation ``c``: (S, S, 3) uint8 RGB."""
        conv = self.convs[c]
        if conv.frames is not None:
            f = conv.frames[t]
            if f.shape[0] != self.size:
                import cv2

                f = cv2.resize(f, (self.size, self.size), interpolation=cv2.INTER_AREA)
            return f
        return self._renderer(c).render(Articulation.from_array(conv.params[t]))

    def reference(self, c: int) -> np.ndarray:
        """The conversation's reference image (what a session is started with)."""
        r = self._refs.get(c)
        if r is None:
            conv = self.convs[c]
            if conv.identity is not None:
                r = self._renderer(c).render(Articulation(smile=0.2))  # == ConversationData.reference_image
            else:
                r = conv.reference_image(self.size)
            self._refs[c] = r
        return r

    def param_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std (13,) of the normalised articulation over every frame of every conversation."""
        if not self.has_params:
            raise ValueError(f"{self.root}: no ground-truth articulation (not a `dystream synth` directory)")
        allp = normalise_params(np.concatenate([c.params for c in self.convs]))
        return allp.mean(0), np.maximum(allp.std(0), 1e-3)

    def mouth_box(self, c: int, t: int) -> np.ndarray | None:
        """Pixel box (x0, y0, x1, y1) of the mouth in frame ``t`` of ``c`` (synthetic data), else None."""
        conv = self.convs[c]
        if conv.params is None or conv.identity is None:
            return None
        return np.array(self._renderer(c).mouth_box(Articulation.from_array(conv.params[t])), np.float32)

    def params(self, c: int, t: int) -> np.ndarray | None:
        p = self.convs[c].params
        return None if p is None else p[t]
