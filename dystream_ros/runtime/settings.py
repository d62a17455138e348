"""The avatar's settings: one typed, frozen table with defaults, descriptions, ranges and validation.

:class:`Settings` is the single source: ``dystream_node`` declares one ROS parameter per field (with
a descriptor built from the field's metadata, ``nodes/params.py``), ``config/default.yaml`` mirrors it
(a test checks they agree), and the ROS-free :class:`~dystream_ros.runtime.engine.AvatarEngine`,
``dystream replay`` and ``bench`` read it from a parameter file with :func:`load_settings`. Fields marked
``read_only`` take effect when the engine is built (the node's configure transition); the others may
change at runtime (``ros2 param set``) and are validated by :meth:`Param.validate` first.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from dystream_ros.audio.messages import AUDIO_MSG_TYPES
from dystream_ros.config import BACKENDS, SAMPLER_LIMITS, SamplerConfig

__all__ = ["PARAMS", "PARAM_BY_NAME", "Param", "Settings", "load_params", "load_settings"]



def param(default, description: str, *, read_only: bool = False, lo: float | None = None,
          hi: float | None = None, choices: tuple = ()):
    """A :class:`Settings` field: its default and what the node's parameter descriptor says about it."""
    meta = {"description": description, "read_only": read_only, "lo": lo, "hi": hi, "choices": tuple(choices)}
    return dataclasses.field(default=default, metadata=meta)


_SAMPLER = SamplerConfig()  # the sampler settings' defaults


def _limits(name: str) -> dict:
    """A sampler setting's range, from the one table in ``config.SAMPLER_LIMITS``."""
    lo, hi = SAMPLER_LIMITS[name]
    return {"lo": lo, "hi": hi}


@dataclass(frozen=True)
class Settings:
    """Every setting of the avatar node and its engine (names = the node's ROS parameters)."""

    # --- model (read-only: applied on configure) --------------------------------------------------------
    profile: str = param("lite", "model profile (lite: real time on 2 CPU cores; base: paper scale; "
        "official: the released DyStream architecture, from a `dystream convert-official` file)",
        read_only=True, choices=("lite", "base", "official"))
    checkpoint: str = param("", "'' = the embedded default checkpoint of the profile; 'random' = random "
        "weights (tests, demos without a checkpoint); or a path to a .safetensors checkpoint", read_only=True)
    reference: str = param("", "reference face image (PNG/JPEG path); '' = the embedded avatar. Change at "
        "runtime with the ~/set_reference service", read_only=True)
    reference_dirs: str = param("", "directories (separated by ':') that ~/set_reference may read image "
        "files from; '' = the package's avatars and the directory of `reference`. Symlinks are followed "
        "first", read_only=True)
    reference_max_pixels: int = param(2048 * 2048, "largest reference image (width x height) accepted from a "
        "file or an Image message; checked before decoding", read_only=True, lo=1, hi=1 << 30)
    reference_max_bytes: int = param(16 * 1024 * 1024, "largest reference image file accepted",
        read_only=True, lo=1, hi=1 << 34)
    reference_min_side: int = param(64, "smallest width/height of a reference image",
        read_only=True, lo=1, hi=4096)
    device: str = param("cpu", "torch device: cpu, cuda, cuda:N, or auto (cuda when available)",
        read_only=True)
    backend: str = param("auto", "execution backend: auto (CPU: onnxruntime for audio/generator/head + torch "
        "rendering; CUDA: torch), torch, onnxruntime", read_only=True, choices=BACKENDS)
    render: bool = param(True, "render face images (false: motion latents only)", read_only=True)
    renderer: str = param("auto", "how images are drawn: learned (the checkpoint's decoder: the DyStream "
        "path, for the faces it was trained on), photo (the training-free photo rig on the reference "
        "photograph, driven by the frame's articulation), auto (photo when the reference looks like a "
        "photograph or the model has no decoder; ~/info and the log say which)",
        choices=("learned", "photo", "auto"))
    render_thread: bool = param(True, "render each face image on a thread of its own while the next frame's "
        "model step runs (2+ cores: the frame rate is bounded by the slower half, not their sum); false: "
        "render on the frame thread", read_only=True)
    num_threads: int = param(1, "torch intra-op threads (0 = torch's default). 1 suits the lite model on "
        "small CPUs: the executor, DDS and image threads need the other cores, and intra-op sync on a small "
        "model costs more than it gains, badly so when other processes compete", read_only=True, lo=0, hi=256)
    seed: int = param(0, "session seed: per-frame noise is seeded by (seed, frame index), so replays repeat",
        read_only=True, lo=0, hi=(1 << 31) - 1)
    lookahead_ms: int = param(-1, "audio after a frame's end to wait for before producing it; -1 = the "
        "model's lookahead (60 ms lite); larger values add a jitter buffer, smaller ones are refused",
        read_only=True, lo=-1, hi=1000)
    image_size: int = param(0, "output image side in pixels; 0 = the model's resolution (lite 256)",
        read_only=True, lo=0, hi=4096)
    warmup_frames: int = param(5, "frames run on silence at configure so the first real frame is not slow",
        read_only=True, lo=0, hi=1000)
    frame_id: str = param("avatar", "header.frame_id of the outputs", read_only=True)
    # --- inputs -----------------------------------------------------------------------------------------
    audio_msg_type: str = param("dystream_ros/msg/AudioChunk", "message type of speaker_audio / "
        "listener_audio (audio_common_msgs needs that package installed; its format comes from <topic>_info)",
        read_only=True, choices=AUDIO_MSG_TYPES)
    input_qos: str = param("reliable", "audio subscriptions: reliable (nothing lost in transport; matches "
        "reliable publishers only, a best-effort one is logged and counted as incompatible) or sensor_data "
        "(best effort, REP-2003: matches every publisher, but DDS may drop whole messages, counted as "
        "<channel>_messages_lost)", read_only=True, choices=("reliable", "sensor_data"))
    input_qos_depth: int = param(200, "audio subscription queue depth (deep enough for TTS bursts)",
        read_only=True, lo=1, hi=10000)
    buffer_s: float = param(30.0, "audio buffered ahead per channel; more is dropped and counted",
        read_only=True, lo=1.0, hi=3600.0)
    sample_rates: tuple[int, ...] = param(
        (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 192000), "accepted "
        "input sample rates (Hz); others are rejected and counted. Each has a short polyphase filter to 16 "
        "kHz, so resampling stays cheap (an arbitrary rate such as 383999 Hz has none)", read_only=True,
        lo=1000, hi=384000)
    max_message_s: float = param(60.0, "longest accepted audio message; longer ones are rejected and counted",
        read_only=True, lo=0.1, hi=3600.0)
    max_message_bytes: int = param(8 * 1024 * 1024, "largest accepted audio message (bytes of data; 8 MiB is "
        "43 s of 48 kHz stereo S16); larger ones are rejected before decoding and counted",
        read_only=True, lo=1024, hi=1 << 31)
    # --- outputs ----------------------------------------------------------------------------------------
    output_qos_depth: int = param(5, "keep-last depth of the output publishers",
        read_only=True, lo=1, hi=1000)
    output_reliability: str = param("reliable", "output publishers: reliable or best_effort",
        read_only=True, choices=("reliable", "best_effort"))
    publish_image: bool = param(True, "publish face_image (sensor_msgs/Image rgb8)")
    publish_compressed: bool = param(False, "publish face_image/compressed (JPEG)")
    jpeg_quality: int = param(85, "JPEG quality of face_image/compressed", lo=1, hi=100)
    publish_latent: bool = param(True, "publish motion_latent")
    publish_state: bool = param(True, "publish state (AvatarState)")
    publish_articulation: bool = param(True, "publish face_articulation (FaceArticulation) when the model "
        "has an articulation read-out")
    idle_publish_hz: float = param(25.0, "before any audio arrives, publish the idle face at this rate (0 = "
        "off)", lo=0.0, hi=25.0)
    # --- streaming (runtime) ----------------------------------------------------------------------------
    wake_on_audio: bool = param(True, "also run the frame producer as soon as arriving audio completes a due "
        "frame (saves up to one 40 ms timer period of latency); the 40 ms timer keeps running")
    steps: int = param(_SAMPLER.steps, "flow-matching Euler steps per frame", **_limits("steps"))
    guidance_speaker: float = param(_SAMPLER.guidance_speaker, "classifier-free guidance weight of the "
        "speaker audio", **_limits("guidance_speaker"))
    guidance_listener: float = param(_SAMPLER.guidance_listener, "classifier-free guidance weight of the "
        "listener audio", **_limits("guidance_listener"))
    guidance_anchor: float = param(_SAMPLER.guidance_anchor, "classifier-free guidance weight of the anchor "
        "(reference motion)", **_limits("guidance_anchor"))
    guidance_head: float = param(_SAMPLER.guidance_head, "extra listener guidance along the head-pose "
        "directions (head_basis; none on a model without one): more head motion while the avatar listens",
        **_limits("guidance_head"))
    temperature: float = param(_SAMPLER.temperature, "scale of the flow's starting noise: 1 = full variety, "
        "lower = closer to the most likely motion (sharper lip-sync)", **_limits("temperature"))
    head_temperature: float = param(_SAMPLER.head_temperature, "the same along the latent's head-pose "
        "directions (the model's head_basis): higher = a livelier head in every state, the mouth unchanged",
        **_limits("head_temperature"))
    catch_up_limit: int = param(8, "most frames produced per 40 ms tick; older due frames are skipped and "
        "counted. Keep it above (listener_wait_ms + 40) / 40 so frames that waited for a late channel are "
        "not skipped when it resumes", lo=1, hi=10000)
    speaker_wait_ms: float = param(200.0, "a missing or late speaker channel counts as silence after this "
        "wait", lo=0.0, hi=60000.0)
    listener_wait_ms: float = param(200.0, "a missing or late listener channel counts as silence after this "
        "wait", lo=0.0, hi=60000.0)
    channel_idle_ms: float = param(1000.0, "a channel that has had no audio for this long after its wait (a "
        "robot's speaker between utterances) holds no frame back until it delivers again, so the face "
        "follows the other channel without the wait; a chunk arriving later than its frames after such a "
        "pause is dropped (counted). 0 = always wait", lo=0.0, hi=600000.0)
    stamp_tolerance_ms: float = param(10.0, "stamp jitter between consecutive chunks treated as contiguous "
        "audio; a larger gap is counted and filled with silence. Keep it below the publisher's chunk length "
        "so one lost chunk is counted (docs/STREAM_TIMING.md)", lo=0.0, hi=1000.0)
    stamp_jump_ms: float = param(1000.0, "a chunk stamped further ahead than this, or before the end of the "
        "audio so far, is held until the next chunk shows whether the stream moved (then followed) or the "
        "chunk was wrong (then dropped and counted)", lo=1.0, hi=60000.0)
    max_stamp_skew_s: float = param(10.0, "audio stamps further than this from the node clock (or zero) are "
        "replaced by the receive time (counted)", lo=0.1, hi=1000000.0)
    max_clock_jump_s: float = param(5.0, "a forward jump of the ROS clock (sim time) larger than this "
        "restarts the stream (backward jumps always do)", read_only=True, lo=0.1, hi=1000000.0)
    speaking_threshold_db: float = param(-45.0, "RMS level (dBFS) above which a channel counts as audible in "
        "state", lo=-120.0, hi=0.0)
    step_warn_ms: float = param(40.0, "diagnostics WARN when the step time p95 exceeds this",
        lo=1.0, hi=10000.0)
    diagnostics_period_s: float = param(1.0, "period of /diagnostics (steady clock)",
        read_only=True, lo=0.05, hi=60.0)
    autostart: bool = param(True, "configure and activate on start (set false when a launch file or "
        "lifecycle manager drives the transitions)", read_only=True)

    def replace(self, **changes) -> Settings:
        """A copy with ``changes`` (each validated; unknown names raise ``KeyError``)."""
        return dataclasses.replace(self, **_validated(changes))

    @classmethod
    def from_params(cls, params: dict) -> Settings:
        """Settings from a parameter mapping: known names validated, defaults for the rest; names
        that are not settings are ignored (a parameter file may configure other nodes too)."""
        return cls(**_validated({k: v for k, v in params.items() if k in PARAM_BY_NAME}))


@dataclass(frozen=True)
class Param:
    """One setting as a ROS parameter: name, default and the descriptor's facts."""

    name: str
    default: object
    description: str
    read_only: bool = False
    lo: float | None = None
    hi: float | None = None
    choices: tuple = ()

    def coerce(self, value):
        """``value`` as the field's type (an int for a float field, a list for a tuple field)."""
        if isinstance(self.default, float) and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(self.default, tuple) and isinstance(value, list | tuple):
            return tuple(value)
        return value

    def validate(self, value) -> str | None:
        """None if ``value`` is acceptable, else the reason."""
        value = self.coerce(value)
        t = type(self.default)
        if not isinstance(value, t) or (t is int and isinstance(value, bool)):
            return f"{self.name} must be a {t.__name__}, got {type(value).__name__} {value!r}"
        if t is tuple:  # a non-empty list of integers, each in [lo, hi]
            if not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                return f"{self.name} must be a non-empty list of integers, got {value!r}"
            if any(self.lo is not None and v < self.lo or self.hi is not None and v > self.hi for v in value):
                return f"{self.name}: every value must be in [{self.lo}, {self.hi}], got {list(value)}"
            return None
        if t is float and not math.isfinite(value):
            return f"{self.name} must be finite, got {value!r}"
        if self.lo is not None and value < self.lo or self.hi is not None and value > self.hi:
            return f"{self.name} must be in [{self.lo}, {self.hi}], got {value!r}"
        if self.choices and value not in self.choices:
            return f"{self.name} must be one of {list(self.choices)}, got {value!r}"
        return None


PARAMS: tuple[Param, ...] = tuple(Param(f.name, f.default, **f.metadata)
                                  for f in dataclasses.fields(Settings))
PARAM_BY_NAME = {p.name: p for p in PARAMS}


def _validated(changes: dict) -> dict:
    out = {}
    for name, value in changes.items():
        p = PARAM_BY_NAME[name]
        reason = p.validate(value)
        if reason:
            raise ValueError(reason)
        out[name] = p.coerce(value)
    return out


def load_params(path: str | Path | None) -> dict:
    """The ``ros__parameters`` of a node parameter file (every node section merged; nested keys
    flattened with dots)."""
    if path is None:
        return {}
    import yaml

    doc = yaml.safe_load(Path(path).read_text()) or {}
    out: dict = {}

    def flat(d: dict, prefix: str = "") -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                flat(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v

    for section in doc.values():
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            flat(section["ros__parameters"])
    return out


def load_settings(params_file: str | Path | None = None, **overrides) -> Settings:
    """The node's settings for ``params_file`` (its defaults where the file is silent), then ``overrides``
    (None values ignored): what a replay or benchmark needs to run as the node would."""
    params = load_params(params_file)
    params.update({k: v for k, v in overrides.items() if v is not None})
    return Settings.from_params(params)
