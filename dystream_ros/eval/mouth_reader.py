"""Mouth readers: mouth opening and head pitch read from face images, independent of the generator.

Two readers share one interface, ``MouthReader.load(kind).read(frames) -> dict``:

- ``"synthetic"`` (:class:`SyntheticMouthReader`): a small CNN that reads ``jaw_open``, ``lip_close``,
  ``head_pitch`` and the visible mouth opening ``mouth = jaw_open * (1 - lip_close)`` from a face image
  of the procedural renderer (``dystream_ros.data.face``). It is trained **only on ground-truth renders**
  (training identities :data:`~dystream_ros.data.face.TRAIN_IDENTITIES`, random articulations over the
  full parameter ranges, random head pose, blinks, gaze, plus shift/scale/blur/noise/JPEG/colour jitter
  so that it also reads the generator's imperfect renders), never on generator output. Weights ship in
  ``dystream_ros/assets/evaluator/mouth_reader.safetensors``; the config (architecture, crop, outputs,
  training command and held-out accuracy) is JSON in the safetensors metadata. Reproduce with::

      python -m dystream_ros.eval.mouth_reader train \
          --out dystream_ros/assets/evaluator/mouth_reader.safetensors --seed 0

  and measure it on held-out identities with ``python -m dystream_ros.eval.mouth_reader eval``.

- ``"mediapipe"`` (:class:`MediaPipeMouthReader`): MediaPipe FaceMesh (``mediapipe==0.10.14``, whose wheel
  bundles the face-mesh model) for photographic faces. ``mouth`` = inner-lip gap (landmarks 13-14) over
  face height (10-152); ``pitch`` = a head-pitch proxy in radians from the 3-D forehead-chin axis
  (positive = chin up, like the renderer's ``head_pitch``). Frames without a detected face give NaN.
  FaceMesh does not find a face in the cartoon-like synthetic renders (see ``test/test_mouth_reader.py``),
  so use ``"synthetic"`` for those.

``read`` returns float32 arrays of length T: ``mouth``, ``pitch`` (always), ``jaw_open`` and
``lip_close`` (synthetic reader only; ``None`` for MediaPipe) and ``valid`` (bool, face found).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_WEIGHTS",
    "MediaPipeMouthReader",
    "MouthReader",
    "MouthReaderError",
    "ReaderConfig",
    "SyntheticMouthReader",
    "heldout_metrics",
    "train",
]

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "evaluator" / "mouth_reader.safetensors"
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


# --------------------------------------------------------------------------------------------
# Network and preprocessing


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


def _to_tensor(x: np.ndarray):
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float()
    return (t - 127.5) / 64.0


# --------------------------------------------------------------------------------------------
# Readers


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
                outs.append(self.net(_to_tensor(x[i : i + batch_size])).numpy())
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


# --------------------------------------------------------------------------------------------
# Training data (ground-truth renders only)


def sample_articulation(rng: np.random.Generator):
    """A random articulation over the full parameter ranges, with extra mass where speech lives (closed or
    nearly closed mouth, neutral pose) so the reader is accurate there too."""
    from dystream_ros.data.face import PARAM_RANGES, Articulation

    u = rng.uniform

    def mix(p_special, special, lo, hi):
        return float(special() if u() < p_special else u(lo, hi))

    def pose(name, sd):
        lo, hi = PARAM_RANGES[name]
        return float(np.clip(rng.normal(0, sd), lo, hi) if u() < 0.5 else u(lo, hi))

    blink = mix(0.7, lambda: u(0, 0.15), 0, 1)
    r = u()
    lip_close = 0.0 if r < 0.6 else (u(0.7, 1.0) if r < 0.8 else u(0, 1))
    return Articulation(
        jaw_open=mix(0.25, lambda: u(0, 0.08), 0, 1),
        lip_spread=mix(0.4, lambda: 0.0, 0, 1),
        lip_round=mix(0.4, lambda: 0.0, 0, 1),
        lip_close=float(lip_close),
        smile=mix(0.4, lambda: u(-0.2, 0.4), -1, 1),
        blink_l=blink,
        blink_r=(float(np.clip(blink + rng.normal(0, 0.1), 0, 1)) if u() < 0.8
                 else mix(0.6, lambda: 0.0, 0, 1)),
        brow=float(u(-1, 1)),
        head_yaw=pose("head_yaw", 0.2),
        head_pitch=pose("head_pitch", 0.12),
        head_roll=pose("head_roll", 0.1),
        gaze_x=float(u(-1, 1)),
        gaze_y=float(u(-1, 1)),
    )


def targets_of(art, cfg: ReaderConfig) -> np.ndarray:
    vals = {
        "jaw_open": art.jaw_open,
        "lip_close": art.lip_close,
        "head_pitch": art.head_pitch,
        "mouth": art.jaw_open * (1.0 - art.lip_close),
    }
    return np.array([vals[n] for n in cfg.outputs], np.float32)


def augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Imperfect-render robustness: shift/scale/rotation, resolution loss, blur, colour, noise, JPEG."""
    import cv2

    u = rng.uniform
    h, w = img.shape[:2]
    s = u(0.92, 1.08)
    ang = u(-3, 3)
    m = cv2.getRotationMatrix2D((w / 2, h * 0.45), ang, s)
    m[:, 2] += (u(-0.04, 0.04) * w, u(-0.04, 0.04) * h)
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if u() < 0.35:  # resolution loss (a generator rendering at lower resolution, upsampled)
        k = u(0.35, 0.8)
        small = cv2.resize(out, (max(16, int(w * k)), max(16, int(h * k))), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if u() < 0.4:
        sig = u(0.3, 1.8)
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=sig, sigmaY=sig)
    f = out.astype(np.float32)
    gain = u(0.8, 1.2) * rng.uniform(0.93, 1.07, size=3)
    mean = f.mean(axis=(0, 1), keepdims=True)
    f = (f - mean) * u(0.8, 1.2) + mean
    f = f * gain + u(-15, 15)
    if u() < 0.6:
        f += rng.normal(0, u(1, 7), size=f.shape)
    out = np.clip(f, 0, 255).astype(np.uint8)
    if u() < 0.3:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(u(35, 95))])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


def _render_chunk(args) -> tuple[np.ndarray, np.ndarray]:
    """Render ``n`` augmented training (or held-out) samples; runs in a worker process."""
    seed, n, identity_seeds, cfg_dict, do_augment = args
    from dystream_ros.data.face import identity_from_seed, render

    cfg = ReaderConfig.from_dict(cfg_dict)
    rng = np.random.default_rng(seed)
    xs = np.empty((n, cfg.input_size, cfg.input_size, 3), np.uint8)
    ys = np.empty((n, len(cfg.outputs)), np.float32)
    for i in range(n):
        ident = identity_from_seed(int(rng.choice(identity_seeds)))
        art = sample_articulation(rng)
        img = render(ident, art, 256)
        if do_augment:
            img = augment(img, rng)
        xs[i] = preprocess(img[None], cfg)[0]
        ys[i] = targets_of(art, cfg)
    return xs, ys


def render_dataset(n: int, identity_seeds, seed: int, cfg: ReaderConfig, workers: int = 2,
                   augment_: bool = True, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``n`` preprocessed renders of random identities from ``identity_seeds`` with random articulations."""
    from tqdm import tqdm

    chunk = 256
    jobs = [(seed * 1_000_003 + i, min(chunk, n - i * chunk), list(identity_seeds), cfg.to_dict(), augment_)
            for i in range((n + chunk - 1) // chunk)]
    xs, ys = [], []
    bar = tqdm(total=n, desc="render", unit="img", disable=not progress, file=sys.stderr)
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            for x, y in pool.imap(_render_chunk, jobs):
                xs.append(x)
                ys.append(y)
                bar.update(len(x))
    else:
        for job in jobs:
            x, y = _render_chunk(job)
            xs.append(x)
            ys.append(y)
            bar.update(len(x))
    bar.close()
    return np.concatenate(xs), np.concatenate(ys)


# --------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainConfig:
    seed: int = 0
    samples: int = 8192
    epochs: int = 8
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    workers: int = 2
    threads: int = 1
    heldout_samples: int = 512
    reader: ReaderConfig = field(default_factory=ReaderConfig)


def _batch_augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cheap per-epoch augmentation of preprocessed uint8 batches: mirror, +-3 px shift, noise."""
    x = x.copy()
    flip = rng.random(len(x)) < 0.5
    x[flip] = x[flip, :, ::-1]
    dy, dx = rng.integers(-3, 4, size=2)
    x = np.roll(x, (int(dy), int(dx)), axis=(1, 2))
    return x


def train(cfg: TrainConfig, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train the synthetic-face reader on ground-truth renders of training identities and write
    safetensors (config, training settings and held-out metrics in the metadata). Returns the metrics."""
    import torch
    from safetensors.torch import save_file
    from tqdm import tqdm

    from dystream_ros.data.face import HELDOUT_IDENTITIES, TRAIN_IDENTITIES

    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    fingerprint = renderer_fingerprint()  # the renderer the training data comes from
    rng = np.random.default_rng(cfg.seed)
    t0 = time.time()
    x, y = render_dataset(cfg.samples, TRAIN_IDENTITIES, cfg.seed, cfg.reader, cfg.workers, True, progress)
    scale = np.asarray(cfg.reader.target_scale, np.float32)
    yn = y / scale
    net = build_net(cfg.reader)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(x) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15)
    bar = tqdm(total=total, desc="train", unit="step", disable=not progress, file=sys.stderr)
    net.train()
    for _epoch in range(cfg.epochs):
        order = rng.permutation(len(x))
        run = 0.0
        for s in range(steps_per_epoch):
            idx = np.sort(order[s * cfg.batch_size : (s + 1) * cfg.batch_size])
            xb = _to_tensor(_batch_augment(x[idx], rng))
            yb = torch.from_numpy(yn[idx])
            loss = torch.nn.functional.smooth_l1_loss(net(xb), yb, beta=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            lv = float(loss.detach())
            run = 0.98 * run + 0.02 * lv if s else lv
            bar.set_postfix(loss=f"{run:.4f}")
            bar.update(1)
    bar.close()
    net.eval()
    reader = SyntheticMouthReader(cfg.reader, net)
    metrics = heldout_metrics(reader, n=cfg.heldout_samples, seed=cfg.seed + 1, workers=cfg.workers,
                              progress=progress)
    training = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "reader"}
    training.update(identities=f"TRAIN_IDENTITIES {TRAIN_IDENTITIES.start}..{TRAIN_IDENTITIES.stop - 1}",
                    renderer_sha256=fingerprint,
                    command=f"{TRAIN_COMMAND} --seed {cfg.seed}", seconds=round(time.time() - t0, 1),
                    torch=torch.__version__)
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(cfg.reader.to_dict()),
        "training": json.dumps(training),
        "heldout": json.dumps({**metrics, "identities": f"HELDOUT_IDENTITIES {HELDOUT_IDENTITIES.start}.."
                                                         f"{HELDOUT_IDENTITIES.stop - 1}"}),
    }
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata=meta)
    out.chmod(0o644)
    return metrics


def renderer_fingerprint() -> str:
    """SHA-256 (16 hex) of the renderer source the reader was trained on (to spot renderer drift)."""
    import hashlib

    import dystream_ros.data.face as face

    return hashlib.sha256(Path(face.__file__).read_bytes()).hexdigest()[:16]


def heldout_metrics(reader: SyntheticMouthReader, n: int = 512, seed: int = 1, workers: int = 2,
                    augment_: bool = False, progress: bool = False) -> dict[str, float]:
    """Correlation and MAE per output on renders of the held-out identities (random articulations;
    ``augment_`` adds the training degradations)."""
    from dystream_ros.data.face import HELDOUT_IDENTITIES, identity_from_seed, render

    # Render full frames here (the reader does its own preprocessing, as on real input).
    rng = np.random.default_rng(seed)
    frames, ys = [], []
    for _ in range(n):
        art = sample_articulation(rng)
        img = render(identity_from_seed(int(rng.choice(list(HELDOUT_IDENTITIES)))), art, 256)
        frames.append(augment(img, rng) if augment_ else img)
        ys.append(targets_of(art, reader.cfg))
    y = np.stack(ys)
    p = reader.predict(np.stack(frames))
    out: dict[str, float] = {"samples": int(n)}
    for i, name in enumerate(reader.cfg.outputs):
        out[f"{name}_corr"] = float(np.corrcoef(p[:, i], y[:, i])[0, 1])
        out[f"{name}_mae"] = float(np.abs(p[:, i] - y[:, i]).mean())
    if "jaw_open" in reader.cfg.outputs and "lip_close" in reader.cfg.outputs:
        # Pressed lips hide the jaw (only the chin shows it): also report the jaw where the lips are apart.
        j, c = reader.cfg.outputs.index("jaw_open"), reader.cfg.outputs.index("lip_close")
        apart = y[:, c] < 0.3
        if apart.sum() > 2:
            out["jaw_open_lips_apart_samples"] = int(apart.sum())
            out["jaw_open_lips_apart_corr"] = float(np.corrcoef(p[apart, j], y[apart, j])[0, 1])
            out["jaw_open_lips_apart_mae"] = float(np.abs(p[apart, j] - y[apart, j]).mean())
    return out


# --------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dystream_ros.eval.mouth_reader",
                                 description="Train / evaluate the synthetic-face mouth reader.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train on ground-truth renders of training identities")
    t.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    t.add_argument("--seed", type=int, default=0)
    d = TrainConfig()
    t.add_argument("--samples", type=int, default=d.samples)
    t.add_argument("--epochs", type=int, default=d.epochs)
    t.add_argument("--workers", type=int, default=d.workers, help="render processes")
    t.add_argument("--threads", type=int, default=d.threads, help="torch threads")
    t.add_argument("--heldout-samples", type=int, default=d.heldout_samples)
    t.add_argument("--quiet", action="store_true")
    e = sub.add_parser("eval", help="held-out-identity accuracy of a weights file")
    e.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    e.add_argument("--samples", type=int, default=512)
    e.add_argument("--seed", type=int, default=12345)
    e.add_argument("--augment", action="store_true", help="apply the training degradations too")
    args = ap.parse_args(argv)
    if args.cmd == "train":
        cfg = TrainConfig(seed=args.seed, samples=args.samples, epochs=args.epochs, workers=args.workers,
                          threads=args.threads, heldout_samples=args.heldout_samples)
        m = train(cfg, args.out, progress=not args.quiet)
        print(json.dumps({"out": str(args.out), "heldout": m}, indent=2))
        return 0
    import torch

    torch.set_num_threads(1)
    reader = SyntheticMouthReader.from_file(args.weights)
    m = heldout_metrics(reader, n=args.samples, seed=args.seed, augment_=args.augment)
    print(json.dumps({"weights": str(args.weights), "heldout": m}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
