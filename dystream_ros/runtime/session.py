"""Public API: ``load_pipeline`` -> :class:`Pipeline` -> :class:`Session` (streaming, frame by frame).

A session buffers both audio channels by absolute sample index and produces frame ``n`` as soon as both
hold audio up to ``40(n+1) + L`` ms. Each frame: audio features from a fixed window per channel, one
generator step against the KV ring, guided Euler sampling of the latent with noise seeded by
(session seed, frame index), and (unless latents-only) a warp-render of the reference. Replays are
bit-reproducible: nothing depends on wall-clock timing or on how the audio was chunked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dystream_ros.audio import mono_float
from dystream_ros.config import ModelConfig, load_profile, sampler_value
from dystream_ros.model.articulation import Readout, load_readout, readout_path
from dystream_ros.model.checkpoint import checkpoint_id, load_checkpoint, read_config
from dystream_ros.model.dystream import DyStreamModel, build_model
from dystream_ros.model.flow_head import Guidance, guidance_branches, head_guidance_coef
from dystream_ros.model.generator import empty_cache

__all__ = ["ASSETS", "Frame", "Pipeline", "Session", "default_checkpoint_path", "frame_seed", "load_pipeline"]

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_AVATAR = ASSETS / "avatars" / "default.png"
_MASK64 = (1 << 64) - 1


def default_checkpoint_path(profile: str) -> Path:
    return ASSETS / "models" / f"{profile}.safetensors"


def frame_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for frame ``index`` of a session seeded ``seed`` (splitmix64)."""
    z = (int(seed) * 0x9E3779B97F4A7C15 + int(index) * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E5B9) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


@dataclass
class Frame:
    index: int
    audio_time_s: float
    latent: np.ndarray  # (D,) float32
    image: np.ndarray | None  # (S, S, 3) uint8 RGB, None in latents-only mode
    timings: dict[str, float] = field(default_factory=dict)  # ms: audio, generator, head, render, total


class _SampleBuffer:
    """Mono samples by absolute index: what was pushed minus what was discarded (amortised O(1) appends).

    ``buf[lo:hi]`` holds samples ``[received - (hi - lo), received)``.
    """

    def __init__(self) -> None:
        self.buf = np.zeros(1 << 14, dtype=np.float32)
        self.lo = self.hi = 0
        self.received = 0  # absolute index one past the last pushed sample
        self.keep_from = 0  # samples before this index are (or will be, when they arrive) discarded

    @property
    def start(self) -> int:
        return self.received - (self.hi - self.lo)

    def push(self, x: np.ndarray) -> None:
        skip = min(max(self.keep_from - self.received, 0), len(x))
        self.received += len(x)
        x = x[skip:]
        if not len(x):
            return
        n = self.hi - self.lo
        if self.hi + len(x) > len(self.buf):  # compact, growing if needed
            cap = len(self.buf)
            while cap < n + len(x):
                cap *= 2
            new = np.empty(cap, dtype=np.float32) if cap != len(self.buf) else self.buf
            new[:n] = self.buf[self.lo : self.hi]
            self.buf, self.lo, self.hi = new, 0, n
        self.buf[self.hi : self.hi + len(x)] = x
        self.hi += len(x)

    def discard_before(self, index: int) -> None:
        self.keep_from = max(self.keep_from, index)
        drop = min(max(index - self.start, 0), self.hi - self.lo)
        self.lo += drop

    def zero_from(self, index: int) -> None:
        """Silence the buffered samples at absolute indices >= ``index``."""
        a = max(int(index), self.start) - self.start
        if a < self.hi - self.lo:
            self.buf[self.lo + a : self.hi] = 0.0

    def read(self, a: int, b: int) -> np.ndarray:
        """Samples [a, b); indices < 0 read as silence. Requires b <= received."""
        start = self.start
        if b > self.received or max(a, 0) < start:
            raise RuntimeError(f"samples [{a}, {b}) not buffered (have [{start}, {self.received}))")
        out = np.zeros(b - a, dtype=np.float32)
        lo = max(a, 0)
        out[lo - a :] = self.buf[self.lo + lo - start : self.lo + b - start]
        return out


def _image_tensor(image: np.ndarray, size: int, device: torch.device) -> torch.Tensor:
    """HxWx3 uint8 RGB (HxWx4: alpha dropped) -> (1, 3, size, size) float in [-1, 1].

    Non-square images are centre-cropped to a square first, then resized (bicubic).
    """
    from PIL import Image

    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (3, 4) or min(img.shape[:2]) < 1:
        raise ValueError(f"reference image must be HxWx3 uint8 RGB, got shape {img.shape} dtype {img.dtype}")
    img = img[..., :3]
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    if s != size:
        img = np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((size, size), Image.BICUBIC))
    t = torch.from_numpy(np.array(img, copy=True)).to(device=device, dtype=torch.float32)
    return (t.permute(2, 0, 1)[None] / 127.5) - 1.0


class Session:
    """One conversation stream. Not thread-safe: call from one thread (the node's timer)."""

    def __init__(self, pipe: Pipeline, reference_image: np.ndarray, seed: int = 0) -> None:
        cfg = pipe.config
        self._pipe = pipe
        self._backend = pipe.backend
        self._cfg = cfg
        self.seed = int(seed)
        self._steps = cfg.sampler.steps
        self._temperature = float(cfg.sampler.temperature)
        self._head_temperature = float(cfg.sampler.head_temperature)
        self._head_basis = pipe.model.head_basis.detach().to("cpu", torch.float32)  # (3, D)
        self.guidance = Guidance(cfg.sampler.guidance_speaker, cfg.sampler.guidance_listener,
                                 cfg.sampler.guidance_anchor, cfg.sampler.guidance_head)
        self._generated = 0
        self.set_reference(reference_image)
        self.reset()

    # -- settings ---------------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        return self._steps

    @steps.setter
    def steps(self, n: int) -> None:
        self._steps = sampler_value("steps", n, owner="Session")

    @property
    def temperature(self) -> float:
        """Scale of the flow's starting noise (SamplerConfig.temperature; range: config.SAMPLER_LIMITS)."""
        return self._temperature

    @temperature.setter
    def temperature(self, t: float) -> None:
        self._temperature = sampler_value("temperature", t, owner="Session")

    @property
    def head_temperature(self) -> float:
        """Scale of the starting noise along the model's head-pose directions (``head_basis``)."""
        return self._head_temperature

    @head_temperature.setter
    def head_temperature(self, t: float) -> None:
        self._head_temperature = sampler_value("head_temperature", t, owner="Session")

    def start_noise(self, n: int) -> torch.Tensor:
        """(1, D) noise the flow of frame ``n`` starts from: a seeded N(0, I) draw scaled by
        ``head_temperature`` along ``head_basis`` and by ``temperature`` everywhere else."""
        g = torch.Generator().manual_seed(frame_seed(self.seed, n))
        e = torch.randn(1, self._cfg.latent_dim, generator=g)
        if self._head_temperature == self._temperature:
            return self._temperature * e
        along = (e @ self._head_basis.T) @ self._head_basis  # projection on the head-pose directions
        return self._temperature * e + (self._head_temperature - self._temperature) * along

    @property
    def guidance(self) -> Guidance:
        return self._guidance

    @guidance.setter
    def guidance(self, g: Guidance) -> None:
        if not isinstance(g, Guidance):
            raise ValueError(f"guidance must be a Guidance(speaker=, listener=, anchor=), got {g!r}")
        self._guidance = g
        self._branches = guidance_branches(g)
        self._head_coef = head_guidance_coef(g)

    # -- state ------------------------------------------------------------------------------------
    @property
    def next_index(self) -> int:
        return self._next

    def reset(self) -> None:
        """Restart the stream at frame 0 with the same reference (audio, history and ring cleared)."""
        self._next = 0
        self._generated = 0
        self._audio = (_SampleBuffer(), _SampleBuffer())
        self._k, self._v = empty_cache(self._pipe.model.generator, self._backend.device)
        self._prev = self._m0

    def set_reference(self, image: np.ndarray) -> None:
        """New appearance and reference motion m0 (also the anchor; a custom anchor is cleared).

        The stream goes on (index, audio, history); before the first frame of a stream the history also
        starts from the new m0, so it equals a session started with this image.
        """
        ref = _image_tensor(image, self._cfg.autoencoder.image_size, self._backend.device)
        appearance, self._m0 = self._backend.encode_reference(ref)
        # one immutable tuple, swapped whole: a frame rendered on another thread (render_image) reads a
        # consistent reference even while this runs
        self._face = (self._m0, appearance, ref)
        self._anchor = None
        if self._generated == 0:
            self._prev = self._m0

    @property
    def reference_motion(self) -> np.ndarray:
        """m0, the motion latent of the current reference image, (D,) float32."""
        return self._m0[0].detach().cpu().numpy().copy()

    @property
    def anchor(self) -> np.ndarray:
        """The anchor latent conditioning every frame, (D,) float32: m0 unless set."""
        a = self._m0 if self._anchor is None else self._anchor
        return a[0].detach().cpu().numpy().copy()

    @anchor.setter
    def anchor(self, latent: np.ndarray | None) -> None:
        """A custom anchor latent (D,), or None for the reference motion m0 (also after set_reference)."""
        if latent is None:
            self._anchor = None
            return
        a = np.asarray(latent, dtype=np.float32)
        if a.shape != (self._cfg.latent_dim,) or not np.all(np.isfinite(a)):
            raise ValueError(f"anchor must be a finite ({self._cfg.latent_dim},) latent, got shape {a.shape}")
        self._anchor = torch.from_numpy(a.copy())[None].to(self._backend.device)

    def push_audio(self, speaker: np.ndarray | None = None, listener: np.ndarray | None = None) -> None:
        """Append 16 kHz mono float samples to either channel (any lengths, including 0 / None)."""
        spk, lis = mono_float(speaker, "speaker"), mono_float(listener, "listener")
        self._audio[0].push(spk)
        self._audio[1].push(lis)

    def silence(self, channel: str, from_index: int) -> None:
        """Silence ``channel``'s ("speaker" / "listener") buffered audio from sample ``from_index`` on
        (a barge-in: speech the model already holds as lookahead is not spoken)."""
        self._audio[("speaker", "listener").index(channel)].zero_from(from_index)

    def frames_available(self) -> int:
        a = self._cfg.audio
        need = (self._next + 1) * a.samples_per_frame + a.lookahead_samples
        have = min(b.received for b in self._audio)
        return 0 if have < need else (have - need) // a.samples_per_frame + 1

    def skip(self, n: int) -> int:
        """Drop the next ``n`` frames (their audio is discarded); the history goes on from the last latent."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"skip needs an int >= 0, got {n!r}")
        self._next += int(n)
        self._discard()
        return int(n)

    def _discard(self) -> None:
        first = self._next * self._cfg.audio.samples_per_frame - self._cfg.audio.context_samples
        for b in self._audio:
            b.discard_before(first)

    # -- the frame --------------------------------------------------------------------------------
    @property
    def face(self) -> tuple:
        """The current reference as the renderer uses it (opaque; pass to :meth:`render_image`)."""
        return self._face

    def render_image(self, latent: np.ndarray, face: tuple | None = None) -> np.ndarray:
        """The (S, S, 3) uint8 image of a (D,) ``latent`` on ``face`` (default: the current reference).

        Safe to call from another thread than :meth:`step` (the node renders on a thread of its own)."""
        m0, appearance, ref = self._face if face is None else face
        lat = torch.from_numpy(np.ascontiguousarray(latent, dtype=np.float32))[None].to(self._backend.device)
        img = self._backend.decode(lat, m0, appearance, ref)
        image = (img[0].permute(1, 2, 0) * 127.5 + 128.0).clamp_(0.0, 255.0).to(torch.uint8)  # rounds
        return image.contiguous().cpu().numpy()

    def step(self, render: bool = True) -> Frame | None:
        """Produce the next frame, or None until its audio (incl. lookahead) is buffered on both channels.

        ``render=False`` leaves ``image`` None (and ``timings["render"]`` out) for a caller that renders
        the latent itself with :meth:`render_image`."""
        if self.frames_available() == 0:
            return None
        a, be, n = self._cfg.audio, self._backend, self._next
        dev = be.device
        t0 = time.perf_counter()
        start = n * a.samples_per_frame - a.context_samples
        windows = np.stack([b.read(start, start + a.window_samples) for b in self._audio])
        feats = be.encode_audio(torch.from_numpy(windows)[None].to(dev))
        t1 = time.perf_counter()
        drop, coef = self._branches
        cond, self._k, self._v = be.generator_step(
            self._prev,
            feats,
            self._m0 if self._anchor is None else self._anchor,
            drop.to(dev),
            self._k,
            self._v,
            torch.tensor(self._generated, dtype=torch.int64, device=dev),
        )
        t2 = time.perf_counter()
        head = None if self._head_coef is None else (self._head_coef.to(dev), self._head_basis.to(dev))
        latent = be.sample(self.start_noise(n).to(dev), cond, coef.to(dev), self._steps, head)
        latent_np = latent[0].detach().cpu().numpy().astype(np.float32, copy=True)
        t3 = time.perf_counter()
        image = self.render_image(latent_np) if self._pipe.render and render else None
        t4 = time.perf_counter()
        self._prev = latent
        self._generated += 1
        self._next += 1
        self._discard()
        ms = 1000.0
        timings = {
            "audio": (t1 - t0) * ms,
            "generator": (t2 - t1) * ms,
            "head": (t3 - t2) * ms,
            "total": (t4 - t0) * ms,
        }
        if image is not None:
            timings["render"] = (t4 - t3) * ms
        return Frame(
            index=n,
            audio_time_s=n * (a.samples_per_frame / a.sample_rate),  # == 0.04 * n exactly
            latent=latent_np,
            image=image,
            timings=timings,
        )


class Pipeline:
    """A loaded model plus its execution backend. Create sessions with :meth:`start_session`."""

    def __init__(
        self,
        model: DyStreamModel,
        checkpoint_id: str,
        backend: str = "auto",
        device: str | torch.device = "cpu",
        readout: Readout | None = None,
    ) -> None:
        from dystream_ros.runtime.backends import make_backend

        self.model = model.eval()
        #: latent (D,) -> articulation (13,) in PARAM_RANGES units, or None: an articulation model's own
        #: de-standardisation, a latent checkpoint's fitted side file (what the photo renderer and the
        #: FaceArticulation output need)
        self.readout = Readout.of_model(model) if model.cfg.motion == "articulation" else readout
        self.config: ModelConfig = model.cfg
        self.render = model.render
        self.checkpoint_id = checkpoint_id
        self.backend = make_backend(backend, self.model, device)

    # The model's facts, read from its config (no copies): timing from ``config.audio``.
    sample_rate = property(lambda self: self.config.audio.sample_rate, doc="Hz (16000)")
    fps = property(lambda self: self.config.audio.fps, doc="frames per second (25)")
    lookahead_ms = property(lambda self: self.config.audio.lookahead_ms, doc="the model's lookahead")
    samples_per_frame = property(lambda self: self.config.audio.samples_per_frame)
    lookahead_samples = property(lambda self: self.config.audio.lookahead_samples)
    latent_dim = property(lambda self: self.config.latent_dim)
    image_size = property(lambda self: self.config.autoencoder.image_size)
    profile = property(lambda self: self.config.profile)

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def default_reference(self) -> np.ndarray:
        """The embedded avatar image (HxWx3 uint8 RGB)."""
        from PIL import Image

        if not DEFAULT_AVATAR.is_file():
            raise FileNotFoundError(f"default avatar image missing: {DEFAULT_AVATAR}")
        with Image.open(DEFAULT_AVATAR) as im:
            return np.asarray(im.convert("RGB")).copy()

    def start_session(self, reference_image: np.ndarray, seed: int = 0) -> Session:
        return Session(self, reference_image, seed=seed)


def _is_official(path) -> bool:
    from dystream_ros.official.model import is_official

    p = Path(path)
    return p.is_file() and is_official(p)


def load_pipeline(
    checkpoint: str | Path | None = None,
    profile: str | ModelConfig = "lite",
    device: str | torch.device = "cpu",
    render: bool = True,
    backend: str = "auto",
) -> Pipeline:
    """Load a model for streaming.

    checkpoint: None -> the embedded default ``dystream_ros/assets/models/<profile>.safetensors``;
    ``"random"`` -> seeded random weights (seed 0) built from ``profile`` (a name or a ModelConfig);
    a path -> that checkpoint (its config comes from the file; ``profile`` is ignored); a file written by
    ``dystream convert-official`` (or ``profile="official"`` with ``"random"``) loads the released
    DyStream architecture (:mod:`dystream_ros.official`, torch only, mode from its config).
    render=False: latents only (no appearance encoder / decoder); an articulation model (config
    ``motion="articulation"``) never has a decoder and loads as render=False.
    backend: ``auto`` (CPU: onnxruntime for audio/generator/head + torch for rendering; CUDA: torch),
    ``torch``, ``onnxruntime``.
    """
    if checkpoint == "random" and profile == "official" or checkpoint not in (None, "random") \
            and _is_official(checkpoint):
        from dystream_ros.official.config import OfficialConfig
        from dystream_ros.official.pipeline import load as load_official

        return load_official(OfficialConfig() if checkpoint == "random" else checkpoint, device, render)
    if checkpoint == "random":
        cfg = profile if isinstance(profile, ModelConfig) else load_profile(profile)
        render = render and cfg.motion == "latent"
        return Pipeline(build_model(cfg, render=render, seed=0), "random", backend, device)
    if checkpoint is None and profile == "official":
        raise FileNotFoundError("the official profile ships no weights: download the released checkpoints, "
                                "convert them with `dystream convert-official --generator last.ckpt "
                                "--autoencoder AE.ckpt --out official.safetensors` and pass that file as "
                                "the checkpoint (docs/OFFICIAL.md)")
    if checkpoint is None:
        name = profile.profile if isinstance(profile, ModelConfig) else profile
        path = default_checkpoint_path(name)
        if not path.is_file():
            raise FileNotFoundError(
                f"embedded default checkpoint missing: {path}. Pass checkpoint='random' for randomly "
                f"initialised weights, or train one and save it there."
            )
    else:
        path = Path(checkpoint)
    render = render and read_config(path).motion == "latent"
    model = load_checkpoint(path, render=render, device="cpu")
    side = readout_path(path)
    readout = load_readout(side, model.cfg.latent_dim) if side.is_file() else None
    return Pipeline(model, checkpoint_id(path), backend, device, readout=readout)
