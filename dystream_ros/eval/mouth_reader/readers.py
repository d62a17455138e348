"""Mouth readers: ``MouthReader.load(kind).read(frames)`` (see the package docstring)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np

from .network import (
    DEFAULT_WEIGHTS,
    FORMAT,
    FORMAT_VERSION,
    TRAIN_COMMAND,
    MouthReaderError,
    ReaderConfig,
    build_net,
    preprocess,
    to_tensor,
)

__all__ = ["MEDIAPIPE_INSTALL", "MEDIAPIPE_VERSION", "MediaPipeMouthReader", "MouthReader",
           "SyntheticMouthReader"]


class MouthReader:
    """Base class and factory. ``MouthReader.load(kind)`` returns a ready reader; ``read(frames)`` returns
    ``dict(mouth, pitch, jaw_open, lip_close, valid)`` (see the module docstring)."""

    kind = "base"

    @staticmethod
    def load(kind: str = "synthetic", path: str | Path | None = None) -> MouthReader:
        if kind == "synthetic":
            return SyntheticMouthReader.from_file(path or DEFAULT_WEIGHTS)
        if kind == "mediapipe":
            if path is not None:
                raise MouthReaderError("the mediapipe reader uses the model bundled in the wheel; no path")
            return MediaPipeMouthReader()
        raise MouthReaderError(f"unknown mouth reader kind {kind!r} (synthetic | mediapipe)")

    def read(self, frames: np.ndarray) -> dict[str, np.ndarray | None]:
        raise NotImplementedError


class SyntheticMouthReader(MouthReader):
    """The CNN reader for renders of the procedural face (and the generator's imitations of them)."""

    kind = "synthetic"

    def __init__(self, cfg: ReaderConfig, net, meta: dict | None = None):
        self.cfg = cfg
        self.net = net.eval()
        self.meta = meta or {}

    @classmethod
    def from_file(cls, path: str | Path) -> SyntheticMouthReader:
        """Load weights; the config comes from the file's metadata. Every tensor name and shape must
        match the network the config builds, else :class:`MouthReaderError` lists the differences."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise MouthReaderError(f"mouth reader weights not found: {path} "
                                   f"(train them with: {TRAIN_COMMAND})")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("format") != FORMAT:
            raise MouthReaderError(f"{path}: not a mouth reader (metadata format={meta.get('format')!r}, "
                                   f"expected {FORMAT!r})")
        if int(meta.get("format_version", -1)) != FORMAT_VERSION:
            raise MouthReaderError(f"{path}: format_version {meta.get('format_version')} != {FORMAT_VERSION}")
        try:
            cfg = ReaderConfig.from_dict(json.loads(meta["config"]))
        except (KeyError, json.JSONDecodeError, TypeError) as e:
            raise MouthReaderError(f"{path}: bad or missing config metadata: {e}") from e
        net = build_net(cfg)
        expected = net.state_dict()
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        wrong = sorted(
            f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
            for k in set(expected) & set(tensors)
            if tuple(tensors[k].shape) != tuple(expected[k].shape)
        )
        if missing or unexpected or wrong:
            raise MouthReaderError(
                f"{path}: weights do not match the config's network: missing {missing}, unexpected "
                f"{unexpected}, wrong shapes {wrong}"
            )
        net.load_state_dict(tensors, strict=True)
        info = {k: v for k, v in meta.items() if k not in ("config",)}
        for k in ("training", "heldout"):
            if k in info:
                try:
                    info[k] = json.loads(info[k])
                except json.JSONDecodeError:
                    pass
        return cls(cfg, net, info)

    def predict(self, frames: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Raw outputs ``[T, len(cfg.outputs)]`` in parameter units."""
        import torch

        x = preprocess(frames, self.cfg)
        scale = np.asarray(self.cfg.target_scale, np.float32)
        outs = []
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                outs.append(self.net(to_tensor(x[i : i + batch_size])).numpy())
        y = np.concatenate(outs) if outs else np.zeros((0, len(scale)), np.float32)
        return (y * scale).astype(np.float32)

    def read(self, frames: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray | None]:
        y = self.predict(frames, batch_size)
        col = {n: y[:, i] for i, n in enumerate(self.cfg.outputs)}
        return {
            "mouth": np.clip(col["mouth"], 0.0, 1.0),
            "pitch": col["head_pitch"],
            "jaw_open": np.clip(col["jaw_open"], 0.0, 1.0) if "jaw_open" in col else None,
            "lip_close": np.clip(col["lip_close"], 0.0, 1.0) if "lip_close" in col else None,
            "valid": np.ones(len(y), bool),
        }


# MediaPipe FaceMesh landmark indices.
MP_UPPER_INNER_LIP, MP_LOWER_INNER_LIP = 13, 14
MP_FOREHEAD, MP_CHIN = 10, 152
MEDIAPIPE_VERSION = "0.10.14"
MEDIAPIPE_INSTALL = (
    f"pip install --no-deps mediapipe=={MEDIAPIPE_VERSION} protobuf==4.25.9 absl-py==2.5.1 attrs==26.1.0 "
    "flatbuffers  (--no-deps: its declared deps would pull jax and opencv-contrib-python beside "
    "opencv-python-headless; FaceMesh needs none of them; protobuf must be < 5)"
)


class MediaPipeMouthReader(MouthReader):
    """MediaPipe FaceMesh (static images, one face) for photographic faces."""

    kind = "mediapipe"

    def __init__(self, min_detection_confidence: float = 0.5):
        try:
            import mediapipe as mp
            from mediapipe.python.solutions import face_mesh
        except Exception as e:  # ImportError, or a protobuf too new for the generated code
            raise MouthReaderError(f"MediaPipe is not usable here ({type(e).__name__}: {e}). "
                                   f"Install it with: {MEDIAPIPE_INSTALL}") from e
        self.version = getattr(mp, "__version__", "?")
        try:
            self._mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False,
                                            min_detection_confidence=min_detection_confidence)
        except Exception as e:  # protobuf >= 5 breaks mediapipe 0.10.14's graph set-up
            raise MouthReaderError(f"MediaPipe FaceMesh failed to start ({type(e).__name__}: {e}); "
                                   f"install: {MEDIAPIPE_INSTALL}") from e

    def close(self):
        self._mesh.close()

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """``[468, 3]`` normalised landmarks (x, y in [0, 1] of width/height, z ~ width scale) or None."""
        with warnings.catch_warnings():  # protobuf 4.25 deprecation chatter from mediapipe's graph runner
            warnings.simplefilter("ignore", UserWarning)
            res = self._mesh.process(np.ascontiguousarray(image))
        if not res.multi_face_landmarks:
            return None
        lm = res.multi_face_landmarks[0].landmark
        return np.array([(p.x, p.y, p.z) for p in lm], dtype=np.float64)

    def read(self, frames: np.ndarray) -> dict[str, np.ndarray | None]:
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [T, H, W, 3] RGB, got {frames.dtype} {frames.shape}")
        h, w = frames.shape[1:3]
        px = np.array([w, h, w], dtype=np.float64)  # z is on the x scale
        mouth = np.full(len(frames), np.nan, np.float32)
        pitch = np.full(len(frames), np.nan, np.float32)
        for i, f in enumerate(frames):
            lm = self.landmarks(f)
            if lm is None:
                continue
            p = lm * px
            face_h = np.linalg.norm(p[MP_CHIN, :2] - p[MP_FOREHEAD, :2])
            if face_h < 1e-6:
                continue
            mouth[i] = np.linalg.norm(p[MP_LOWER_INNER_LIP, :2] - p[MP_UPPER_INNER_LIP, :2]) / face_h
            axis = p[MP_CHIN] - p[MP_FOREHEAD]  # image y down, z towards the camera is negative
            # Chin up (positive pitch) moves the chin towards the camera relative to the forehead.
            pitch[i] = math.atan2(-axis[2], axis[1])
        return {"mouth": mouth, "pitch": pitch, "jaw_open": None, "lip_close": None,
                "valid": np.isfinite(mouth)}


