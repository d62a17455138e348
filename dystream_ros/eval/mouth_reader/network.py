"""The synthetic-face mouth reader's network: its config (stored as JSON in the weights), the CNN and
the preprocessing (crop and resize)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DEFAULT_WEIGHTS", "FORMAT", "FORMAT_VERSION", "TRAIN_COMMAND", "MouthReaderError", "ReaderConfig",
           "build_net", "preprocess", "to_tensor"]

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "assets" / "evaluator" / "mouth_reader.safetensors"
FORMAT = "dystream-mouth-reader"
FORMAT_VERSION = 1
TRAIN_COMMAND = (
    "python -m dystream_ros.eval.mouth_reader train "
    "--out dystream_ros/assets/evaluator/mouth_reader.safetensors"
)


class MouthReaderError(RuntimeError):
    """A reader that cannot be loaded (missing file, wrong format, names/shapes that do not match the
    config, or MediaPipe not installed)."""


@dataclass(frozen=True)
class ReaderConfig:
    """Architecture and preprocessing of the synthetic-face reader (stored as JSON in the weights)."""

    input_size: int = 96
    #: Crop box (x0, y0, x1, y1) as fractions of the frame, applied before resizing to input_size.
    crop: tuple[float, float, float, float] = (0.12, 0.06, 0.88, 0.86)
    channels: tuple[int, ...] = (24, 32, 64, 96, 128)
    #: Stages (indices into channels) that get a second, stride-1 3x3 conv.
    extra_convs: tuple[int, ...] = (2, 3)
    hidden: int = 64
    outputs: tuple[str, ...] = ("jaw_open", "lip_close", "head_pitch", "mouth")
    #: Targets are divided by these before training (head_pitch spans +-0.4 rad).
    target_scale: tuple[float, ...] = (1.0, 1.0, 0.4, 1.0)

    def __post_init__(self):
        if self.input_size < 32 or self.input_size % (2 ** len(self.channels)):
            raise MouthReaderError(f"input_size {self.input_size} must be >= 32 and divisible by "
                                   f"2**{len(self.channels)}")
        x0, y0, x1, y1 = self.crop
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise MouthReaderError(f"crop {self.crop} is not a box inside [0, 1]^2")
        if len(self.outputs) != len(self.target_scale):
            raise MouthReaderError("outputs and target_scale differ in length")
        if any(not 0 <= i < len(self.channels) for i in self.extra_convs):
            raise MouthReaderError(f"extra_convs {self.extra_convs} index outside channels {self.channels}")
        for name in ("mouth", "head_pitch"):
            if name not in self.outputs:
                raise MouthReaderError(f"outputs must include {name!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ReaderConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise MouthReaderError(f"unknown reader config fields {sorted(unknown)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)




def build_net(cfg: ReaderConfig):
    import torch.nn as nn

    layers: list = []
    c = 3
    for i, o in enumerate(cfg.channels):
        layers += [nn.Conv2d(c, o, 3, 2, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
        if i in cfg.extra_convs:
            layers += [nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
        c = o
    side = cfg.input_size // 2 ** len(cfg.channels)
    return nn.Sequential(
        nn.Sequential(*layers),
        nn.Flatten(),
        nn.Linear(c * side * side, cfg.hidden),
        nn.ReLU(inplace=True),
        nn.Linear(cfg.hidden, len(cfg.outputs)),
    )


def preprocess(frames: np.ndarray, cfg: ReaderConfig) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` RGB -> uint8 ``[T, S, S, 3]``: the config's crop, resized to input_size."""
    import cv2

    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3] RGB, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    h, w = frames.shape[1:3]
    x0, y0, x1, y1 = cfg.crop
    xa, xb = int(round(x0 * w)), int(round(x1 * w))
    ya, yb = int(round(y0 * h)), int(round(y1 * h))
    s = cfg.input_size
    out = np.empty((len(frames), s, s, 3), np.uint8)
    for i, f in enumerate(frames):
        out[i] = cv2.resize(f[ya:yb, xa:xb], (s, s), interpolation=cv2.INTER_AREA)
    return out


def to_tensor(x: np.ndarray):
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float()
    return (t - 127.5) / 64.0


