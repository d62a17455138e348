"""Typed configuration of the released DyStream model (``profile="official"``).

The released checkpoints fix every size here (dystream_reference.md §3.1, §6.3); the constructor defaults
are those sizes. :func:`tiny` shrinks widths and depths for fast tests; the structure (block order, the
five guidance branches, the scheduler, the autoencoder stages) is the same at every size.

A converted checkpoint carries its :class:`OfficialConfig` as JSON in the safetensors metadata
(``profile = "official"``) and loading rebuilds the model from it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from dystream_ros.config import SAMPLE_RATE, SAMPLES_PER_FRAME, ConfigError, _check, _from_dict, _pos_int

__all__ = [
    "MODES",
    "OfficialAudio",
    "OfficialAutoencoder",
    "OfficialConfig",
    "OfficialGPT",
    "OfficialHead",
    "OfficialSampler",
    "OfficialStreaming",
    "PROFILE",
    "tiny",
]

PROFILE = "official"
#: ``release``: the released offline computation frame for frame; ``streaming``: causal windowed audio
#: features with a lookahead and the GPT on a KV ring (docs/OFFICIAL.md).
MODES = ("release", "streaming")


@dataclass(frozen=True)
class OfficialAudio:
    """One wav2vec2-base encoder (there are two: self and other), truncated to ``layers`` layers.

    ``conv_*`` is the 7-layer feature CNN (hop 320 samples = 50 Hz); ``pos_kernel``/``pos_groups`` the
    weight-normed positional convolution.
    """

    hidden: int = 768
    layers: int = 8
    heads: int = 12
    ffn: int = 3072
    conv_dim: int = 512
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    pos_kernel: int = 128
    pos_groups: int = 16
    layer_norm_eps: float = 1e-5
    #: zeros appended after the per-input normalisation (so 640*T samples give 2T frames)
    pad_samples: int = 80

    def __post_init__(self) -> None:
        _pos_int(self, "hidden", "layers", "heads", "ffn", "conv_dim", "pos_kernel", "pos_groups")
        _check(self.hidden % self.heads == 0, "OfficialAudio.heads", "must divide hidden")
        _check(self.hidden % self.pos_groups == 0, "OfficialAudio.pos_groups", "must divide hidden")
        _check(len(self.conv_kernel) == len(self.conv_stride), "OfficialAudio.conv_stride", "one per kernel")

    def wav2vec2_kwargs(self) -> dict[str, Any]:
        """``transformers.Wav2Vec2Config`` arguments of this encoder (eval only: no masking, no dropout)."""
        n = len(self.conv_kernel)
        return dict(
            hidden_size=self.hidden,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            intermediate_size=self.ffn,
            hidden_act="gelu",
            layer_norm_eps=self.layer_norm_eps,
            feat_extract_norm="group",
            feat_extract_activation="gelu",
            conv_dim=(self.conv_dim,) * n,
            conv_kernel=tuple(self.conv_kernel),
            conv_stride=tuple(self.conv_stride),
            conv_bias=False,
            num_conv_pos_embeddings=self.pos_kernel,
            num_conv_pos_embedding_groups=self.pos_groups,
            do_stable_layer_norm=False,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
            feat_proj_dropout=0.0,
            final_dropout=0.0,
            layerdrop=0.0,
            mask_time_prob=0.0,
            mask_feature_prob=0.0,
            apply_spec_augment=False,
            add_adapter=False,
            use_weighted_layer_sum=False,
        )


@dataclass(frozen=True)
class OfficialGPT:
    """The autoregressive transformer: ``blocks`` pre-LN blocks over a window of ``history`` tokens."""

    width: int = 768
    blocks: int = 12
    heads: int = 12
    mlp: int = 3072
    #: 94 = the released window of 96 audio features minus 2
    history: int = 94
    #: length of the released position tables (RoPE and sinusoidal PE)
    max_positions: int = 1024

    def __post_init__(self) -> None:
        _pos_int(self, "width", "blocks", "heads", "mlp", "history", "max_positions")
        _check(self.width % self.heads == 0, "OfficialGPT.heads", "must divide width")
        _check(self.width % 2 == 0, "OfficialGPT.width", "must be even (pairwise rotation)")
        _check(self.history <= self.max_positions, "OfficialGPT.history", "must be <= max_positions")

    @property
    def window(self) -> int:
        """Audio features per released window (history + 2)."""
        return self.history + 2


@dataclass(frozen=True)
class OfficialHead:
    """The flow head: ``blocks`` blocks of two AdaLN-MLP sub-blocks (time, then GPT condition)."""

    width: int = 768
    blocks: int = 6
    mlp: int = 3072

    def __post_init__(self) -> None:
        _pos_int(self, "width", "blocks", "mlp")
        _check(self.width % 2 == 0, "OfficialHead.width", "must be even (sinusoidal time embedding)")


@dataclass(frozen=True)
class OfficialSampler:
    """FlowMatchEulerDiscrete (``train_steps`` training steps, ``shift``) and the 5-branch x0 guidance.

    The combined prediction is ``u + audio*(a-u) + other*(o-u) + anchor*(anc-u) + all*(all-u)``.
    """

    steps: int = 5
    train_steps: int = 1000
    shift: float = 1.0
    cfg_audio: float = 0.5
    cfg_other: float = 0.5
    cfg_anchor: float = 0.0
    cfg_all: float = 1.0
    temperature: float = 1.0

    def __post_init__(self) -> None:
        _check(isinstance(self.steps, int) and 1 <= self.steps <= 20, "OfficialSampler.steps", "1..20")
        _pos_int(self, "train_steps")
        _check(self.shift > 0, "OfficialSampler.shift", "must be > 0")
        _check(0.0 <= self.temperature <= 2.0, "OfficialSampler.temperature", "must be in [0, 2]")


@dataclass(frozen=True)
class OfficialAutoencoder:
    """LIA-3D motion encoder, appearance volume and SPADE decoder (dystream_reference.md §1.4-1.7)."""

    image_size: int = 512
    latent_dim: int = 512
    motion_space: int = 64
    motion_channels: tuple[int, ...] = (32, 64, 128, 256, 512, 512, 512, 512)
    app_expansion: int = 64
    app_down: int = 3
    app_max: int = 512
    volume_channels: int = 32
    volume_depth: int = 16
    app_resblocks: int = 6
    warp_channels: tuple[int, ...] = (512, 256, 128, 64, 32)
    group_channels: int = 32
    seg_channels: int = 256
    spade_hidden: int = 128
    decoder_out: int = 64

    def __post_init__(self) -> None:
        _pos_int(self, "image_size", "latent_dim", "motion_space", "volume_channels", "volume_depth")
        _check(
            self.image_size // 2 ** (len(self.motion_channels) - 1) == 4,
            "OfficialAutoencoder.motion_channels",
            "one stride-2 block per entry after the first must bring image_size to 4",
        )
        _check(
            self.app_max == self.volume_channels * self.volume_depth,
            "OfficialAutoencoder.app_max",
            "must equal volume_channels * volume_depth",
        )
        _check(
            self.volume_depth == 16 and self.volume_size == 64,
            "OfficialAutoencoder.app_down",
            "the warp field is built at 16 x 64 x 64: volume_depth 16 and image_size / 2**app_down = 64",
        )
        _check(len(self.warp_channels) == 5, "OfficialAutoencoder.warp_channels", "needs 5 entries")
        _check(self.warp_channels[0] == self.latent_dim, "OfficialAutoencoder.warp_channels", "[0] = latent")
        _check(
            self.warp_channels[-1] == self.volume_channels,
            "OfficialAutoencoder.warp_channels",
            "[-1] must equal volume_channels",
        )

    @property
    def volume_size(self) -> int:
        """Side of the appearance volume (image_size / 2**app_down)."""
        return self.image_size // 2**self.app_down


@dataclass(frozen=True)
class OfficialStreaming:
    """Inference mode and the streaming mode's audio window (docs/OFFICIAL.md gives the measurements).

    ``lookahead_frames``: future 40 ms frames of audio the streaming encoder sees beyond the frame;
    ``audio_window_frames``: 40 ms frames of past audio in each streaming encoder window.
    """

    mode: str = "streaming"
    lookahead_frames: int = 1
    audio_window_frames: int = 50

    def __post_init__(self) -> None:
        _check(self.mode in MODES, "OfficialStreaming.mode", f"must be one of {MODES}, got {self.mode!r}")
        _check(
            isinstance(self.lookahead_frames, int) and 0 <= self.lookahead_frames <= 25,
            "OfficialStreaming.lookahead_frames",
            "must be an int in 0..25",
        )
        _check(
            isinstance(self.audio_window_frames, int) and 2 <= self.audio_window_frames <= 500,
            "OfficialStreaming.audio_window_frames",
            "must be an int in 2..500",
        )


@dataclass(frozen=True)
class OfficialConfig:
    profile: str = PROFILE
    latent_dim: int = 512
    sample_rate: int = SAMPLE_RATE
    samples_per_frame: int = SAMPLES_PER_FRAME
    audio: OfficialAudio = field(default_factory=OfficialAudio)
    gpt: OfficialGPT = field(default_factory=OfficialGPT)
    head: OfficialHead = field(default_factory=OfficialHead)
    sampler: OfficialSampler = field(default_factory=OfficialSampler)
    autoencoder: OfficialAutoencoder = field(default_factory=OfficialAutoencoder)
    streaming: OfficialStreaming = field(default_factory=OfficialStreaming)

    def __post_init__(self) -> None:
        _check(self.profile == PROFILE, "OfficialConfig.profile", f"must be {PROFILE!r}")
        _check(
            self.autoencoder.latent_dim == self.latent_dim,
            "OfficialAutoencoder.latent_dim",
            "must equal OfficialConfig.latent_dim",
        )
        _check(
            self.samples_per_frame == 2 * 320,
            "OfficialConfig.samples_per_frame",
            "the released timing is 2 wav2vec frames (hop 320) per video frame",
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> OfficialConfig:
        try:
            d = json.loads(s)
        except json.JSONDecodeError as e:
            raise ConfigError(f"OfficialConfig: invalid JSON ({e})") from None
        return _from_dict(cls, d, "OfficialConfig")

    def replace(self, **sections: Any) -> OfficialConfig:
        """Copy with changes; sections may be given as dicts of field changes."""
        out = {}
        for k, v in sections.items():
            cur = getattr(self, k)
            out[k] = dataclasses.replace(cur, **v) if isinstance(v, dict) else v
        return dataclasses.replace(self, **out)


def tiny(**sections: Any) -> OfficialConfig:
    """A small config with the released structure, for tests (seconds on a CPU)."""
    cfg = OfficialConfig(
        latent_dim=32,
        audio=OfficialAudio(hidden=48, layers=2, heads=4, ffn=96, conv_dim=32, pos_kernel=16, pos_groups=4),
        gpt=OfficialGPT(width=48, blocks=2, heads=4, mlp=96, history=14, max_positions=64),
        head=OfficialHead(width=48, blocks=2, mlp=96),
        autoencoder=OfficialAutoencoder(
            image_size=128,
            latent_dim=32,
            motion_space=8,
            motion_channels=(8, 8, 16, 16, 16, 16),
            app_expansion=8,
            app_down=1,
            app_max=64,
            volume_channels=4,
            volume_depth=16,
            app_resblocks=1,
            warp_channels=(32, 16, 8, 8, 4),
            group_channels=4,
            seg_channels=16,
            spade_hidden=8,
            decoder_out=8,
        ),
    )
    return cfg.replace(**sections) if sections else cfg
