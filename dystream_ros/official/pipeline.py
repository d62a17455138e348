"""The official model behind the streaming API: :class:`OfficialPipeline` -> :class:`OfficialSession`.

Same interface as ``runtime/session.py``'s ``Pipeline`` / ``Session`` (start_session, push_audio,
frames_available, step -> Frame, reset, skip, set_reference, steps / temperature / guidance, next_index),
so the engine, node, replay and render can drive it unchanged. Two modes (``OfficialStreaming.mode``):

``release`` -- the released offline computation, frame for frame: both tracks with a 94-frame zero prefix,
normalised and encoded **as a whole** (features are recomputed over everything buffered whenever new
audio arrived; exact when the whole clip is pushed before stepping, as replay and render do); frame k
uses features ``k+1 .. k+94`` of the prefixed clip, the history of the last 94 latents (filled with m0)
and the anchor m0; every frame recomputes the 94-token window. Frame k needs audio up to frame k+1
(one 40 ms frame of lookahead, the released window's unused last slot). Rendering uses the first
generated latent as the LIA source (the released app). Cost grows with the clip: a reference, not a live
mode.

``streaming`` -- causal: frame k's feature comes from a window of ``audio_window_frames`` frames of
audio ending ``lookahead_frames`` frames after frame k (each window normalised on its own, silence before
the stream), computed once; a window of pure silence reuses a cached feature. The GPT keeps keys and
values on a static ring of 94 tokens (positions saturate at 93; the first window is the released one),
so each frame runs one token. Rendering uses m0 as the LIA source (the streaming convention).

Noise: frame n starts from N(0, I) seeded by (session seed, n), scaled by ``temperature``, identical in
both modes, so the modes can be compared frame by frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dystream_ros.audio import mono_float
from dystream_ros.config import sampler_value
from dystream_ros.io.images import fit_square
from dystream_ros.model.flow_head import Guidance
from dystream_ros.official.audio import prepare, to_25hz
from dystream_ros.official.config import MODES, OfficialConfig
from dystream_ros.official.infer import Engine
from dystream_ros.official.model import OfficialModel, load_official

__all__ = ["Frame", "OfficialPipeline", "OfficialSession", "load", "noise_seed"]

_MASK64 = (1 << 64) - 1
HALF = {"none": None, "float16": torch.float16, "bfloat16": torch.bfloat16}
ASSETS = Path(__file__).resolve().parent.parent / "assets"


def noise_seed(seed: int, index: int) -> int:
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


class _Samples:
    """Mono samples by absolute index (silence before 0); keeps what is not discarded."""

    def __init__(self) -> None:
        self.data = np.zeros(0, dtype=np.float32)
        self.start = 0  # absolute index of data[0]
        self.keep_from = 0

    @property
    def received(self) -> int:
        return self.start + len(self.data)

    def push(self, x: np.ndarray) -> None:
        self.data = np.concatenate([self.data, x])
        self.discard_before(self.keep_from)

    def discard_before(self, index: int) -> None:
        self.keep_from = max(self.keep_from, index)
        drop = min(max(self.keep_from - self.start, 0), len(self.data))
        if drop:
            self.data = self.data[drop:].copy()
            self.start += drop

    def read(self, a: int, b: int, discarded_as_silence: bool = False) -> np.ndarray:
        """[a, b): indices < 0 read as silence; needs b <= received and a >= the kept start.

        ``discarded_as_silence``: discarded samples read as silence (frames skipped before a first window)."""
        if b > self.received or (max(a, 0) < self.start and self.start > 0 and not discarded_as_silence):
            raise RuntimeError(f"samples [{a}, {b}) not buffered (have [{self.start}, {self.received}))")
        out = np.zeros(b - a, dtype=np.float32)
        lo = max(a, self.start, 0)
        if lo < b:
            out[lo - a :] = self.data[lo - self.start : b - self.start]
        return out

    def zero_from(self, index: int) -> None:
        i = max(index - self.start, 0)
        self.data[i:] = 0.0


class _AudioView:
    """What the engine reads as ``pipe.config.audio``."""

    def __init__(self, cfg: OfficialConfig, mode: str) -> None:
        s = cfg.streaming
        self.sample_rate = cfg.sample_rate
        self.samples_per_frame = cfg.samples_per_frame
        self.fps = cfg.sample_rate // cfg.samples_per_frame
        la = s.lookahead_frames if mode == "streaming" else 1
        self.lookahead_samples = la * cfg.samples_per_frame
        self.lookahead_ms = 1000 * self.lookahead_samples // cfg.sample_rate
        ctx = (s.audio_window_frames - 1 - la) * cfg.samples_per_frame
        self.context_samples = ctx if mode == "streaming" else 0


@dataclass(frozen=True)
class _SamplerView:
    steps: int
    temperature: float
    head_temperature: float
    guidance_speaker: float
    guidance_listener: float
    guidance_anchor: float
    guidance_head: float = 0.0


class _ConfigView:
    """``pipe.config`` as the engine reads it: ``audio`` timing, ``sampler`` defaults, ``profile``."""

    def __init__(self, cfg: OfficialConfig, mode: str) -> None:
        s = cfg.sampler
        self.official = cfg
        self.profile = cfg.profile
        self.motion = "latent"
        self.latent_dim = cfg.latent_dim
        self.audio = _AudioView(cfg, mode)
        t = s.temperature
        self.sampler = _SamplerView(s.steps, t, t, s.cfg_audio, s.cfg_other, s.cfg_anchor)


class _Backend:
    name = "torch"

    def __init__(self, device: torch.device) -> None:
        self.device = device


class OfficialSession:
    """One conversation stream. Not thread-safe: call from one thread."""

    def __init__(self, pipe: OfficialPipeline, reference_image: np.ndarray, seed: int = 0) -> None:
        self._pipe = pipe
        self._eng = pipe.engine
        self._cfg = pipe.official
        self.mode = pipe.mode
        self.seed = int(seed)
        s = self._cfg.sampler
        self._steps = s.steps
        self._temperature = float(s.temperature)
        self._guidance = Guidance(s.cfg_audio, s.cfg_other, s.cfg_anchor)
        self._custom_anchor: torch.Tensor | None = None
        self._silent: dict[int, torch.Tensor] = {}
        self._generated = 0
        self.set_reference(reference_image)
        self.reset()

    # -- settings ---------------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        return self._steps

    @steps.setter
    def steps(self, n: int) -> None:
        self._steps = sampler_value("steps", n, owner="session")

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, t: float) -> None:
        self._temperature = sampler_value("temperature", t, owner="session")

    @property
    def head_temperature(self) -> float:
        """The official model has no head-pose basis: the same as ``temperature``."""
        return self._temperature

    @head_temperature.setter
    def head_temperature(self, t: float) -> None:
        sampler_value("head_temperature", t, owner="session")

    @property
    def guidance(self) -> Guidance:
        """speaker / listener / anchor = the released cfg_audio / cfg_audio_other / cfg_anchor (x0 space).
        ``head`` (guidance_head) has no effect: the official model has no head-pose basis."""
        return self._guidance

    @guidance.setter
    def guidance(self, g: Guidance) -> None:
        if not isinstance(g, Guidance):
            raise ValueError(f"guidance must be a Guidance(speaker=, listener=, anchor=), got {g!r}")
        self._guidance = g

    def _weights(self) -> torch.Tensor:
        g = self._guidance
        return torch.tensor([0.0, g.anchor, g.speaker, g.listener, self._cfg.sampler.cfg_all])

    def start_noise(self, n: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(noise_seed(self.seed, n))
        return self._temperature * torch.randn(1, 1, self._cfg.latent_dim, generator=g)

    # -- state ------------------------------------------------------------------------------------
    @property
    def next_index(self) -> int:
        return self._next

    def reset(self) -> None:
        """Restart at frame 0 with the same reference (audio, history, ring cleared)."""
        self._next = 0
        self._generated = 0
        self._audio = (_Samples(), _Samples())
        self._first_latent: torch.Tensor | None = None
        if getattr(self, "_volume", None) is not None:
            self._face = (self._m0.to(self._volume.dtype), self._volume)
        R = self._cfg.gpt.history
        self._history = self._m0.reshape(1, 1, -1).expand(1, R, -1).clone()
        self._prev = self._m0.reshape(1, 1, -1)
        self._ring = None
        self._feats: tuple[torch.Tensor, torch.Tensor] | None = None
        self._feats_at = -1

    def set_reference(self, image: np.ndarray) -> None:
        """New appearance and m0 (also the anchor; a custom anchor is cleared)."""
        model, dev, dt = self._pipe.model, self._eng.device, self._eng.dtype
        with torch.no_grad():
            if model.ae is not None:
                ae_dt = next(model.ae.parameters()).dtype
                ref = _image_tensor(image, self._cfg.autoencoder.image_size, dev, ae_dt)
                self._m0 = model.ae.motion_encoder(ref).to(dt)
                self._volume = model.ae.face_encoder(ref) if self._pipe.render else None
                self._face = None if self._volume is None else (self._m0.to(ae_dt), self._volume)
            else:  # latents-only file: no motion encoder; a neutral latent
                self._m0 = torch.zeros(1, self._cfg.latent_dim, device=dev, dtype=dt)
                self._volume = self._face = None
        self._custom_anchor = None
        self._set_anchor()
        if self._generated == 0:
            R = self._cfg.gpt.history
            self._history = self._m0.reshape(1, 1, -1).expand(1, R, -1).clone()
            self._prev = self._m0.reshape(1, 1, -1)

    def _set_anchor(self) -> None:
        a = self._m0 if self._custom_anchor is None else self._custom_anchor
        _, self._anchor_terms = self._eng.anchor_terms(a.reshape(1, 1, -1))

    @property
    def reference_motion(self) -> np.ndarray:
        return self._m0[0].detach().float().cpu().numpy().copy()

    @property
    def anchor(self) -> np.ndarray:
        a = self._m0 if self._custom_anchor is None else self._custom_anchor
        return a.reshape(-1).detach().float().cpu().numpy().copy()

    @anchor.setter
    def anchor(self, latent: np.ndarray | None) -> None:
        if latent is None:
            self._custom_anchor = None
        else:
            a = np.asarray(latent, dtype=np.float32)
            if a.shape != (self._cfg.latent_dim,) or not np.all(np.isfinite(a)):
                raise ValueError(f"anchor must be a finite ({self._cfg.latent_dim},) latent, got {a.shape}")
            self._custom_anchor = torch.from_numpy(a.copy())[None].to(self._eng.device, self._eng.dtype)
        self._set_anchor()

    def push_audio(self, speaker: np.ndarray | None = None, listener: np.ndarray | None = None) -> None:
        self._audio[0].push(mono_float(speaker, "speaker"))
        self._audio[1].push(mono_float(listener, "listener"))

    def silence(self, channel: str, from_index: int) -> None:
        """Silence ``channel``'s buffered audio from sample ``from_index`` on (barge-in)."""
        self._audio[("speaker", "listener").index(channel)].zero_from(from_index)
        self._feats_at = -1

    def frames_available(self) -> int:
        a = self._pipe.config.audio
        need = (self._next + 1) * a.samples_per_frame + a.lookahead_samples
        have = min(b.received for b in self._audio)
        return 0 if have < need else (have - need) // a.samples_per_frame + 1

    def skip(self, n: int) -> int:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"skip needs an int >= 0, got {n!r}")
        self._next += int(n)
        self._discard()
        return int(n)

    def _discard(self) -> None:
        if self.mode == "streaming":
            first = (self._next + 1) * self._cfg.samples_per_frame - self._pipe.config.audio.context_samples
            first -= 2 * self._cfg.samples_per_frame  # margin: the window reads from frame start - context
            for b in self._audio:
                b.discard_before(first)

    # -- audio features ---------------------------------------------------------------------------
    def _release_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """25 Hz features of the whole buffered clip with the 94-frame zero prefix (redone on new audio)."""
        have = min(b.received for b in self._audio)
        if self._feats is None or self._feats_at != have:
            R, spf = self._cfg.gpt.history, self._cfg.samples_per_frame
            pre = R * spf
            fs = [
                self._eng.encode_track(enc, b.read(-pre, have))
                for enc, b in zip(
                    (self._pipe.model.audio_self, self._pipe.model.audio_other), self._audio, strict=True
                )
            ]
            self._feats, self._feats_at = (fs[0], fs[1]), have
        return self._feats

    def _window_feature(self, ch: int, frame: int) -> torch.Tensor:
        """(1, 1, C) streaming feature of ``frame`` on channel ``ch`` (window ending L frames after it)."""
        s, spf = self._cfg.streaming, self._cfg.samples_per_frame
        end = (frame + 1 + s.lookahead_frames) * spf
        w = (
            self._audio[ch].read(end - s.audio_window_frames * spf, end, self._ring is None)
            if end > 0
            else None
        )
        if w is None or not np.any(w):
            if ch not in self._silent:
                self._silent[ch] = self._encode_window(ch, np.zeros(s.audio_window_frames * spf, np.float32))
            return self._silent[ch]
        return self._encode_window(ch, w)

    @torch.no_grad()
    def _encode_window(self, ch: int, w: np.ndarray) -> torch.Tensor:
        enc = (self._pipe.model.audio_self, self._pipe.model.audio_other)[ch]
        x = prepare(w, self._cfg.audio.pad_samples).to(self._eng.device, self._eng.audio_dtype)
        f = to_25hz(enc(x)).to(self._eng.dtype)
        i = f.shape[1] - 1 - self._cfg.streaming.lookahead_frames
        return f[:, i : i + 1]

    def _stream_tokens(self, frames: range) -> torch.Tensor:
        """(5, len(frames), W) fused audio tokens of the given frames (streaming features)."""
        fs = torch.cat([self._window_feature(0, k) for k in frames], dim=1)
        fo = torch.cat([self._window_feature(1, k) for k in frames], dim=1)
        return self._eng.audio_tokens(fs, fo)

    # -- the frame --------------------------------------------------------------------------------
    def _clock(self) -> float:
        """perf_counter after the device's queued work (per-stage times on CUDA)."""
        if self._eng.device.type == "cuda":
            torch.cuda.synchronize(self._eng.device)
        return time.perf_counter()

    @torch.no_grad()
    @property
    def face(self) -> tuple | None:
        """What the decoder renders on (opaque; for :meth:`render_image`): (LIA source latent, volume)."""
        return self._face

    @torch.no_grad()
    def render_image(self, latent: np.ndarray, face: tuple | None = None) -> np.ndarray:
        """The (512, 512, 3) uint8 image of a (D,) latent on ``face`` (default: the current reference).

        Safe to call from another thread than :meth:`step` (reads only the immutable ``face`` tuple)."""
        src, volume = self._face if face is None else face
        ae = self._pipe.model.ae
        lat = torch.from_numpy(np.ascontiguousarray(latent, dtype=np.float32))[None].to(
            volume.device, volume.dtype
        )
        img = ae.decode(src.to(volume.dtype), lat, volume)
        image = (img[0].permute(1, 2, 0).float() * 127.5 + 128.0).clamp_(0.0, 255.0).to(torch.uint8)
        return image.contiguous().cpu().numpy()

    def step(self, render: bool = True) -> Frame | None:
        """Produce the next frame, or None until its audio (incl. lookahead) is buffered on both channels.

        ``render=False`` leaves ``image`` None (and ``timings["render"]`` out), for a caller that renders
        the latent itself with :meth:`render_image`."""
        if self.frames_available() == 0:
            return None
        n, eng, cfg = self._next, self._eng, self._cfg
        R = cfg.gpt.history
        gpt = self._pipe.model.gpt
        t0 = self._clock()
        if self.mode == "release":
            fs, fo = self._release_features()
            t1 = self._clock()
            # frame n = window start n of the prefixed clip: features n+1 .. n+R
            w = self._weights()
            used = [0] + [b for b in range(1, 5) if float(w[b]) != 0.0]  # a weight-0 branch is never read
            c, _, _ = eng.window_condition(
                self._history, fs[:, n + 1 : n + 1 + R], fo[:, n + 1 : n + 1 + R], self._anchor_terms, used
            )
        else:
            if self._ring is None:  # the first window: R tokens for frames n-R+1 .. n, history m0
                audio = self._stream_tokens(range(n - R + 1, n + 1))
                t1 = self._clock()
                self._ring = gpt.new_ring(5, eng.device, eng.dtype)
                c = gpt.ring_prefill(self._ring, self._history, audio, self._anchor_terms)[:, None]
            else:
                audio = self._stream_tokens(range(n, n + 1))
                t1 = self._clock()
                c = gpt.ring_step(self._ring, self._prev, audio, self._anchor_terms)[:, None]
        t2 = self._clock()
        sig, ts, temb = eng.grid(self._steps)
        from dystream_ros.official.head import sample

        latent = sample(
            self._pipe.model.head,
            self._pipe.model.time_embed,
            c,
            self.start_noise(n).to(eng.device, eng.dtype),
            self._weights(),
            sig,
            ts,
            temb_cache=temb,
        )
        t3 = self._clock()
        if self._first_latent is None:
            self._first_latent = latent.reshape(1, -1)
            if self.mode == "release" and self._volume is not None:  # the released app's LIA source
                self._face = (self._first_latent, self._volume)
        latent_np = latent.reshape(-1).float().cpu().numpy().astype(np.float32, copy=True)
        image = self.render_image(latent_np) if render and self._face is not None else None
        t4 = self._clock()
        self._prev = latent
        self._history = torch.cat([self._history[:, 1:], latent], dim=1)
        self._generated += 1
        self._next += 1
        self._discard()
        ms = 1000.0
        timings = {"audio": (t1 - t0) * ms, "generator": (t2 - t1) * ms, "head": (t3 - t2) * ms}
        if image is not None:
            timings["render"] = (t4 - t3) * ms
        timings["total"] = (t4 - t0) * ms
        return Frame(
            index=n,
            audio_time_s=n * (cfg.samples_per_frame / cfg.sample_rate),
            latent=latent_np,
            image=image,
            timings=timings,
        )


def _image_tensor(image: np.ndarray, size: int, device, dtype) -> torch.Tensor:
    """HxWx3 uint8 RGB (alpha dropped) -> (1, 3, size, size) in [-1, 1] (centre square crop, resized)."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (3, 4) or min(img.shape[:2]) < 1:
        raise ValueError(f"reference image must be HxWx3 uint8 RGB, got shape {img.shape} dtype {img.dtype}")
    img = fit_square(np.ascontiguousarray(img[..., :3]), size)
    t = torch.from_numpy(np.array(img, copy=True)).to(device=device, dtype=torch.float32)
    return ((t.permute(2, 0, 1)[None] / 127.5) - 1.0).to(dtype)


class OfficialPipeline:
    """The loaded official model on a device, in one mode. Create sessions with :meth:`start_session`."""

    def __init__(
        self,
        model: OfficialModel,
        checkpoint_id: str,
        device: str | torch.device = "cpu",
        mode: str | None = None,
        render: bool = True,
    ) -> None:
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.model = model.eval()
        self.official: OfficialConfig = model.cfg
        self.mode = mode or model.cfg.streaming.mode
        self.render = bool(render and model.ae is not None)
        self.checkpoint_id = checkpoint_id
        self.readout = None  # no articulation read-out: the photo renderer does not apply
        self.engine = Engine(model, device)
        self.backend = _Backend(self.engine.device)
        self.config = _ConfigView(model.cfg, self.mode)
        a = self.config.audio
        self.sample_rate = a.sample_rate
        self.fps = a.fps
        self.lookahead_ms = a.lookahead_ms
        self.samples_per_frame = a.samples_per_frame
        self.lookahead_samples = a.lookahead_samples
        self.latent_dim = model.cfg.latent_dim
        self.image_size = model.cfg.autoencoder.image_size
        self.profile = model.cfg.profile

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def default_reference(self) -> np.ndarray:
        from PIL import Image

        path = ASSETS / "avatars" / "default.png"
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")).copy()

    def start_session(self, reference_image: np.ndarray, seed: int = 0) -> OfficialSession:
        return OfficialSession(self, reference_image, seed=seed)


def load(
    checkpoint: str | Path | OfficialConfig,
    device: str | torch.device = "cpu",
    render: bool = True,
    mode: str | None = None,
    half: str = "none",
) -> OfficialPipeline:
    """A converted checkpoint (``dystream convert-official``), or an :class:`OfficialConfig` for seeded random
    weights, as a pipeline.

    ``half``: ``float16`` or ``bfloat16`` runs the GPT, time embedding and flow head in that precision (the
    head's LayerNorm-modulation and Euler update stay fp32, as released); the wav2vec2 encoders and the
    autoencoder stay fp32 (fp16 attention in wav2vec2 and fp16 SPADE are known to degrade / overflow).
    """
    if half not in HALF:
        raise ValueError(f"half must be one of {sorted(HALF)}, got {half!r}")
    if isinstance(checkpoint, OfficialConfig):
        torch.manual_seed(0)
        model, cid = OfficialModel(checkpoint, render=render), "random"
    else:
        path = Path(checkpoint)
        model, cid = load_official(path, render=render), path.name
    model = model.to(device).eval()
    if HALF[half] is not None:
        for part in (model.gpt, model.time_embed, model.head):
            part.to(HALF[half])
    return OfficialPipeline(model, cid, device, mode, render)
