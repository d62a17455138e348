"""Typed model configuration: the one source of every size in the model.

A :class:`ModelConfig` is a tree of frozen dataclasses. Profiles (``lite``, ``base``) are named
instances; a checkpoint carries its config as JSON (``ModelConfig.to_json``) and loading rebuilds the
model from it (``ModelConfig.from_dict``). Construction validates every field, so an inconsistent
config fails at load time with a message naming the field, not deep inside a forward pass.

Audio timing (all derived, see :class:`AudioConfig`): one video frame is ``samples_per_frame`` samples
(640 at 16 kHz / 25 fps). Frame ``n``'s audio feature is a function of exactly the samples
``[n*640 - context_samples, (n+1)*640 + lookahead_samples)`` of each channel, so frame ``n`` can be
produced once audio up to ``40(n+1) + L`` ms has arrived.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import typing
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FPS",
    "NS",
    "SAMPLES_PER_FRAME",
    "SAMPLE_RATE",
    "ARTICULATION_DIM",
    "AudioConfig",
    "AutoencoderConfig",
    "ConfigError",
    "GeneratorConfig",
    "HeadConfig",
    "MOTION_SPACES",
    "ModelConfig",
    "PROFILES",
    "SamplerConfig",
    "TrainConfig",
    "load_profile",
    "stamp_to_ns",
]

#: The core's audio rate (Hz) and video frame rate (DESIGN.md §3): what the data, the model's default
#: :class:`AudioConfig` and the node's output use; one frame is ``SAMPLES_PER_FRAME`` samples.
SAMPLE_RATE = 16000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
#: Motion spaces a model can generate in (``ModelConfig.motion``): ``latent`` (the warping autoencoder's
#: learned latent, rendered by its decoder) or ``articulation`` (the renderer's articulation vector,
#: ``data.face.ARTICULATION_FIELDS``, standardised by statistics stored in the checkpoint; no autoencoder).
MOTION_SPACES = ("latent", "articulation")
#: Width of the articulation vector (``len(data.face.ARTICULATION_FIELDS)``; tested).
ARTICULATION_DIM = 13
#: Nanoseconds per second (ROS stamps and bag times are integer nanoseconds).
NS = 1_000_000_000


def stamp_to_ns(stamp) -> int:
    """A ``builtin_interfaces/Time`` (rclpy or rosbags message, anything with ``sec``/``nanosec``) in ns."""
    return int(stamp.sec) * NS + int(stamp.nanosec)


class ConfigError(ValueError):
    """An invalid configuration value; the message names the offending field."""


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {msg}")


def _pos_int(obj: Any, *names: str) -> None:
    prefix = type(obj).__name__
    for n in names:
        v = getattr(obj, n)
        _check(
            isinstance(v, int) and not isinstance(v, bool) and v > 0,
            f"{prefix}.{n}",
            f"must be a positive int, got {v!r}",
        )


def _is_pow2(x: int) -> bool:
    return x > 0 and (x & (x - 1)) == 0


@dataclass(frozen=True)
class AudioConfig:
    """Log-mel front end + causal dilated-conv encoder + lookahead module (shared by both channels).

    The encoder uses *valid* (unpadded) convolutions over mel frames, so an output at mel frame ``j``
    depends on mel frames ``j - receptive_field + 1 .. j`` only (causal). The lookahead module reads the
    ``lookahead_frames`` encoder outputs that cover the current 40 ms frame plus ``lookahead_ms`` of
    future audio and nothing later.
    """

    sample_rate: int = SAMPLE_RATE
    fps: int = FPS
    n_mels: int = 80
    win_ms: int = 25
    hop_ms: int = 10
    n_fft: int = 512
    fmin: float = 40.0
    fmax: float = 7600.0
    lookahead_ms: int = 60
    channels: int = 128
    kernel_size: int = 3
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    feature_dim: int = 128

    def __post_init__(self) -> None:
        _pos_int(
            self,
            "sample_rate",
            "fps",
            "n_mels",
            "win_ms",
            "hop_ms",
            "n_fft",
            "channels",
            "kernel_size",
            "feature_dim",
        )
        _check(self.sample_rate % self.fps == 0, "AudioConfig.fps", "sample_rate must be a multiple of fps")
        _check(
            self.sample_rate * self.hop_ms % 1000 == 0,
            "AudioConfig.hop_ms",
            "hop must be a whole number of samples",
        )
        _check(
            self.sample_rate * self.win_ms % 1000 == 0,
            "AudioConfig.win_ms",
            "window must be a whole number of samples",
        )
        _check(
            self.samples_per_frame % self.hop_samples == 0,
            "AudioConfig.hop_ms",
            "a video frame must be a whole number of hops",
        )
        _check(self.n_fft >= self.win_samples, "AudioConfig.n_fft", "must be >= the window length in samples")
        _check(
            isinstance(self.lookahead_ms, int) and 0 <= self.lookahead_ms <= 1000,
            "AudioConfig.lookahead_ms",
            f"must be an int in 0..1000, got {self.lookahead_ms!r}",
        )
        _check(
            self.lookahead_ms % self.hop_ms == 0,
            "AudioConfig.lookahead_ms",
            f"must be a multiple of hop_ms={self.hop_ms}, got {self.lookahead_ms}",
        )
        _check(
            0 <= self.fmin < self.fmax <= self.sample_rate / 2,
            "AudioConfig.fmax",
            "need 0 <= fmin < fmax <= sample_rate/2",
        )
        _check(self.kernel_size >= 2, "AudioConfig.kernel_size", "must be >= 2")
        _check(
            len(self.dilations) >= 1 and all(isinstance(d, int) and d > 0 for d in self.dilations),
            "AudioConfig.dilations",
            "must be a non-empty tuple of positive ints",
        )

    @property
    def samples_per_frame(self) -> int:
        return self.sample_rate // self.fps

    @property
    def hop_samples(self) -> int:
        return self.sample_rate * self.hop_ms // 1000

    @property
    def win_samples(self) -> int:
        return self.sample_rate * self.win_ms // 1000

    @property
    def lookahead_samples(self) -> int:
        return self.sample_rate * self.lookahead_ms // 1000

    @property
    def hops_per_frame(self) -> int:
        return self.samples_per_frame // self.hop_samples

    @property
    def receptive_field(self) -> int:
        """Mel frames one encoder output depends on."""
        return 1 + (self.kernel_size - 1) * sum(self.dilations)

    @property
    def lookahead_frames(self) -> int:
        """Encoder outputs read by the lookahead module: the frame's own hops plus the lookahead hops."""
        return self.hops_per_frame + self.lookahead_ms // self.hop_ms

    @property
    def window_mels(self) -> int:
        return self.receptive_field + self.lookahead_frames - 1

    @property
    def window_samples(self) -> int:
        """Samples of audio one frame's feature depends on (per channel)."""
        return self.hop_samples * (self.window_mels - 1) + self.win_samples

    @property
    def context_samples(self) -> int:
        """Samples before the frame's start that its feature depends on."""
        return self.window_samples - self.samples_per_frame - self.lookahead_samples


@dataclass(frozen=True)
class GeneratorConfig:
    """Causal transformer over per-frame tokens with a sliding window of ``window`` frames."""

    width: int = 256
    layers: int = 4
    heads: int = 4
    mlp_ratio: int = 2
    window: int = 100
    rope_base: float = 10000.0
    rope_period: int = 65536
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _pos_int(self, "width", "layers", "heads", "mlp_ratio", "window", "rope_period")
        _check(self.width % self.heads == 0, "GeneratorConfig.heads", "must divide width")
        _check(
            self.head_dim % 2 == 0, "GeneratorConfig.heads", "head_dim (width/heads) must be even for rotary"
        )
        _check(self.rope_period >= 2 * self.window, "GeneratorConfig.rope_period", "must be >= 2*window")
        _check(
            self.rope_period < 2**24, "GeneratorConfig.rope_period", "must be < 2**24 (exact float32 angles)"
        )
        _check(self.rope_base > 1.0, "GeneratorConfig.rope_base", "must be > 1")
        _check(0.0 <= self.dropout < 1.0, "GeneratorConfig.dropout", "must be in [0, 1)")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads


@dataclass(frozen=True)
class HeadConfig:
    """Per-frame flow-matching MLP with AdaLN on (time embedding + condition)."""

    width: int = 256
    blocks: int = 3
    mlp_ratio: int = 2
    time_freq_dim: int = 128

    def __post_init__(self) -> None:
        _pos_int(self, "width", "blocks", "mlp_ratio", "time_freq_dim")
        _check(self.time_freq_dim % 2 == 0, "HeadConfig.time_freq_dim", "must be even")


#: Accepted range (inclusive) of every sampler setting: the one source read by :class:`SamplerConfig`,
#: the streaming session's setters, :class:`~dystream_ros.model.flow_head.Guidance` and the node's
#: parameter descriptors (``runtime/settings.py``). ``steps`` is an int, the others finite numbers.
SAMPLER_LIMITS: dict[str, tuple[float, float]] = {
    "steps": (1, 10),
    "guidance_speaker": (0.0, 20.0),
    "guidance_listener": (0.0, 20.0),
    "guidance_anchor": (0.0, 20.0),
    "guidance_head": (0.0, 20.0),
    "temperature": (0.0, 2.0),
    "head_temperature": (0.0, 2.0),
}


def sampler_value(name: str, value: Any, owner: str = "sampler") -> int | float:
    """``value`` of sampler setting ``name`` checked against :data:`SAMPLER_LIMITS` (``ConfigError``, a
    ``ValueError``, naming ``owner.name`` and the range otherwise); an int for ``steps``, else a float."""
    lo, hi = SAMPLER_LIMITS[name]
    if name == "steps":
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and lo <= value <= hi
        _check(ok, f"{owner}.{name}", f"must be an int in {lo}..{hi}, got {value!r}")
        return int(value)
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value) and lo <= value <= hi)
    _check(ok, f"{owner}.{name}", f"must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class SamplerConfig:
    """Inference defaults: Euler steps, classifier-free guidance weights and the sampling temperatures.

    ``temperature`` scales the Gaussian noise the flow ODE starts from (1 = the training prior, 0 = the
    same start for every frame). Below 1 the samples move towards the most likely motion, which sharpens
    the lip-sync (docs/TRAINING.md gives the embedded model's numbers at 0.5 and 1.0).
    ``head_temperature`` replaces it along the latent directions the head pose moves along (the model's
    ``head_basis``, fitted when the generator is exported from latents with ground-truth articulation;
    a model without a fitted basis, all zeros, uses ``temperature`` everywhere). Raising it makes the
    head livelier in every state, including silence, without changing the mouth; on the embedded model
    1.0 lowered the listening/silence head-motion ratio, so the default equals ``temperature``.
    ``guidance_head`` is extra listener guidance along the same directions: there the listener audio's
    weight is ``guidance_listener + guidance_head`` (more head motion while the avatar listens, where the
    listener-free branch differs; 0, the default, guides every direction alike).
    """

    steps: int = 5
    guidance_speaker: float = 1.0
    guidance_listener: float = 0.5
    guidance_anchor: float = 0.0
    guidance_head: float = 0.0
    temperature: float = 0.5
    head_temperature: float = 0.5

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            sampler_value(f.name, getattr(self, f.name), owner="SamplerConfig")


@dataclass(frozen=True)
class TrainConfig:
    """Generator training recipe used by the helpers in ``dystream_ros.model.training``.

    ``voice_warp`` and ``voice_gain_db`` augment the training audio per window and channel (speaker
    variation, ``dystream_ros.train.generator.augment_mels``): the spectrum's frequency axis scaled by a
    factor drawn from ``[1 - voice_warp, 1 + voice_warp]`` (a vocal-tract-length warp) and a gain drawn
    from ``[-voice_gain_db, voice_gain_db]`` dB; 0 (the default) leaves the audio as it is.
    ``loss_weight``: one positive weight per motion column for the velocity loss (scaled to mean 1, so
    the loss keeps its size), e.g. more weight on an articulation model's mouth columns; empty (the
    default) weighs every column alike.
    """

    drop_speaker: float = 0.1
    drop_listener: float = 0.1
    drop_anchor: float = 0.1
    history_noise_p: float = 0.5
    history_noise_max: float = 0.5
    anchor_last: int = 10
    voice_warp: float = 0.0
    voice_gain_db: float = 0.0
    loss_weight: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for n in ("drop_speaker", "drop_listener", "drop_anchor", "history_noise_p", "history_noise_max"):
            v = getattr(self, n)
            _check(
                isinstance(v, (int, float)) and 0.0 <= v <= 1.0,
                f"TrainConfig.{n}",
                f"must be in [0, 1], got {v!r}",
            )
        _pos_int(self, "anchor_last")
        _check(isinstance(self.voice_warp, (int, float)) and 0.0 <= self.voice_warp <= 0.3,
               "TrainConfig.voice_warp", f"must be in [0, 0.3], got {self.voice_warp!r}")
        _check(isinstance(self.voice_gain_db, (int, float)) and 0.0 <= self.voice_gain_db <= 20.0,
               "TrainConfig.voice_gain_db", f"must be in [0, 20], got {self.voice_gain_db!r}")
        _check(isinstance(self.loss_weight, tuple)
               and all(isinstance(w, (int, float)) and math.isfinite(w) and w > 0 for w in self.loss_weight),
               "TrainConfig.loss_weight", f"must be a tuple of positive numbers, got {self.loss_weight!r}")


@dataclass(frozen=True)
class AutoencoderConfig:
    """Warping autoencoder.

    Appearance features live at ``warp_size``² with ``app_channels`` channels; the flow net grows a
    ``flow_channels[0]`` x 8 x 8 seed to ``warp_size`` (one x2 stage per further entry); the decoder
    upsamples from ``warp_size`` to ``image_size`` in x2 stages: ``up_channels`` are the channels after
    each stage but the last, which yields RGB (so log2(image_size/warp_size) - 1 entries).
    The motion encoder reads the image area-downsampled to ``motion_size``², one stride-2 stage per
    ``motion_channels`` entry (plus a stride-1 conv in the stages listed in ``motion_extra_convs``).
    ``shading``: the decoder also predicts a brightness gain for the warped reference from its refine
    features (warping alone cannot darken an opening mouth; checkpoints without the field were built
    without it).
    """

    image_size: int = 256
    warp_size: int = 64
    app_channels: int = 24
    enc_channels: tuple[int, ...] = (16, 32)
    enc_blocks: int = 2
    motion_size: int = 128
    motion_channels: tuple[int, ...] = (24, 32, 64, 96, 128)
    motion_extra_convs: tuple[int, ...] = (2, 3)
    flow_channels: tuple[int, ...] = (128, 64, 32, 16)
    refine_channels: int = 24
    refine_blocks: int = 1
    up_channels: tuple[int, ...] = (8,)
    shading: bool = False

    def __post_init__(self) -> None:
        _pos_int(
            self, "image_size", "warp_size", "app_channels", "enc_blocks", "refine_channels", "motion_size"
        )
        _check(
            isinstance(self.refine_blocks, int) and self.refine_blocks >= 0,
            "AutoencoderConfig.refine_blocks",
            "must be an int >= 0",
        )
        _check(isinstance(self.shading, bool), "AutoencoderConfig.shading", "must be true or false")
        for n in ("enc_channels", "motion_channels", "flow_channels", "up_channels"):
            v = getattr(self, n)
            _check(
                all(isinstance(c, int) and c > 0 for c in v),
                f"AutoencoderConfig.{n}",
                "must be a tuple of positive ints",
            )
        _check(
            _is_pow2(self.image_size) and _is_pow2(self.warp_size) and self.warp_size <= self.image_size,
            "AutoencoderConfig.warp_size",
            "image_size and warp_size must be powers of 2, warp_size <= image_size",
        )
        n_up = int(math.log2(self.image_size // self.warp_size))
        _check(n_up >= 1, "AutoencoderConfig.warp_size", "must be smaller than image_size")
        _check(
            len(self.up_channels) == max(n_up - 1, 0),
            "AutoencoderConfig.up_channels",
            f"needs log2(image_size/warp_size) - 1 = {max(n_up - 1, 0)} entries, got {len(self.up_channels)}",
        )
        _check(
            len(self.enc_channels) == n_up,
            "AutoencoderConfig.enc_channels",
            f"needs log2(image_size/warp_size) = {n_up} entries, got {len(self.enc_channels)}",
        )
        _check(
            self.warp_size >= 8 and 8 * 2 ** (len(self.flow_channels) - 1) == self.warp_size,
            "AutoencoderConfig.flow_channels",
            f"needs log2(warp_size/8)+1 = {int(math.log2(max(self.warp_size, 8) // 8)) + 1} entries",
        )
        _check(
            _is_pow2(self.motion_size) and self.motion_size <= self.image_size,
            "AutoencoderConfig.motion_size",
            "must be a power of 2 and <= image_size",
        )
        _check(
            len(self.motion_channels) >= 1 and self.motion_size // 2 ** len(self.motion_channels) >= 2,
            "AutoencoderConfig.motion_channels",
            "too many stride-2 stages for motion_size",
        )
        _check(
            all(c % 8 == 0 for c in self.motion_channels),
            "AutoencoderConfig.motion_channels",
            "must be multiples of 8 (GroupNorm with 8 groups)",
        )
        _check(
            all(isinstance(i, int) and 0 <= i < len(self.motion_channels) for i in self.motion_extra_convs),
            "AutoencoderConfig.motion_extra_convs",
            "must be stage indices into motion_channels",
        )


@dataclass(frozen=True)
class ModelConfig:
    """The whole model. ``latent_dim`` is the motion latent shared by generator, head and autoencoder.

    ``motion``: the space the generator's motion lives in (:data:`MOTION_SPACES`). ``"articulation"``:
    ``latent_dim`` is :data:`ARTICULATION_DIM`, the model has no autoencoder (``autoencoder`` only sizes
    the reference image the session reads) and its normalisation statistics are tensors of the
    checkpoint (``model.articulation``).
    """

    profile: str = "lite"
    latent_dim: int = 64
    motion: str = "latent"
    audio: AudioConfig = field(default_factory=AudioConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)

    def __post_init__(self) -> None:
        _check(
            isinstance(self.profile, str) and self.profile != "", "ModelConfig.profile", "must be a string"
        )
        _pos_int(self, "latent_dim")
        _check(
            self.motion in MOTION_SPACES,
            "ModelConfig.motion",
            f"must be one of {MOTION_SPACES}, got {self.motion!r}",
        )
        _check(
            self.motion != "articulation" or self.latent_dim == ARTICULATION_DIM,
            "ModelConfig.latent_dim",
            f"must be {ARTICULATION_DIM} (the articulation vector) with motion 'articulation', "
            f"got {self.latent_dim}",
        )
        for n, t in (
            ("audio", AudioConfig),
            ("generator", GeneratorConfig),
            ("head", HeadConfig),
            ("sampler", SamplerConfig),
            ("train", TrainConfig),
            ("autoencoder", AutoencoderConfig),
        ):
            _check(isinstance(getattr(self, n), t), f"ModelConfig.{n}", f"must be an {t.__name__}")
        _check(
            len(self.train.loss_weight) in (0, self.latent_dim),
            "TrainConfig.loss_weight",
            f"needs one weight per motion column ({self.latent_dim}), got {len(self.train.loss_weight)}",
        )

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return _from_dict(cls, d, "ModelConfig")

    @classmethod
    def from_json(cls, s: str) -> ModelConfig:
        try:
            d = json.loads(s)
        except json.JSONDecodeError as e:
            raise ConfigError(f"ModelConfig: invalid JSON ({e})") from None
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> ModelConfig:
        """Copy with changes; nested sections may be given as dicts of field changes."""
        out = {}
        for k, v in changes.items():
            cur = getattr(self, k, None)
            if dataclasses.is_dataclass(cur) and isinstance(v, dict):
                v = dataclasses.replace(cur, **{kk: _coerce(type(cur), kk, vv) for kk, vv in v.items()})
            out[k] = v
        return dataclasses.replace(self, **out)


def _coerce(cls: type, name: str, value: Any) -> Any:
    hints = typing.get_type_hints(cls)
    if name not in hints:
        raise ConfigError(f"{cls.__name__}.{name}: unknown field")
    t = hints[name]
    if typing.get_origin(t) is tuple and isinstance(value, list):
        return tuple(value)
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _from_dict(cls: type, d: Any, where: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}")
    kwargs = {}
    for k, v in d.items():
        t = hints[k]
        if dataclasses.is_dataclass(t):
            kwargs[k] = _from_dict(t, v, f"{where}.{k}")
        else:
            kwargs[k] = _coerce(cls, k, v)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def _lite() -> ModelConfig:
    return ModelConfig(profile="lite", autoencoder=AutoencoderConfig(shading=True))


def _base() -> ModelConfig:
    return ModelConfig(
        profile="base",
        latent_dim=512,
        audio=AudioConfig(channels=512, dilations=(1, 2, 4, 8, 16), feature_dim=768),
        generator=GeneratorConfig(width=768, layers=12, heads=12, mlp_ratio=4, window=100),
        head=HeadConfig(width=768, blocks=6, mlp_ratio=4, time_freq_dim=256),
        autoencoder=AutoencoderConfig(
            image_size=512,
            warp_size=128,
            app_channels=64,
            enc_channels=(32, 64),
            enc_blocks=3,
            motion_size=256,
            motion_channels=(32, 64, 128, 256, 512, 512),
            flow_channels=(256, 128, 64, 48, 32),
            refine_channels=64,
            refine_blocks=2,
            up_channels=(32,),
        ),
    )


PROFILES: dict[str, typing.Callable[[], ModelConfig]] = {"lite": _lite, "base": _base}

# Execution backends (runtime/backends.py implements each; the node and `dystream bench` offer these).
BACKENDS = ("auto", "torch", "onnxruntime")


def load_profile(name: str, **overrides: Any) -> ModelConfig:
    """The named profile's config, optionally with overrides (``audio={"lookahead_ms": 120}``)."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; known: {sorted(PROFILES)}")
    cfg = PROFILES[name]()
    return cfg.replace(**overrides) if overrides else cfg
