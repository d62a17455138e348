"""The avatar node's parameters: one table with defaults, descriptors and runtime validation.

``config/default.yaml`` mirrors this table (a test checks they agree). Read-only parameters take effect
on the configure transition; the others can be changed at runtime (``ros2 param set``) and are validated
by the node's set-parameters callback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from dystream_ros.config import BACKENDS

from .audio_adapters import AUDIO_MSG_TYPES


@dataclass(frozen=True)
class Spec:
    name: str
    default: object
    description: str
    read_only: bool = False
    lo: float | None = None
    hi: float | None = None
    choices: tuple = ()

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(name=self.name, description=self.description, read_only=self.read_only)
        if self.choices:
            d.additional_constraints = "one of: " + ", ".join(str(c) for c in self.choices)
        if self.lo is not None and self.hi is not None:
            if isinstance(self.default, bool):
                pass
            elif isinstance(self.default, int):
                d.integer_range = [IntegerRange(from_value=int(self.lo), to_value=int(self.hi), step=1)]
            elif isinstance(self.default, float):
                d.floating_point_range = [
                    FloatingPointRange(from_value=float(self.lo), to_value=float(self.hi), step=0.0)]
        return d

    def validate(self, value) -> str | None:
        """None if ``value`` is acceptable, else the reason."""
        t = type(self.default)
        if t is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, t) or (t is int and isinstance(value, bool)):
            return f"{self.name} must be a {t.__name__}, got {type(value).__name__} {value!r}"
        if t is float and not math.isfinite(value):
            return f"{self.name} must be finite, got {value!r}"
        if self.lo is not None and value < self.lo or self.hi is not None and value > self.hi:
            return f"{self.name} must be in [{self.lo}, {self.hi}], got {value!r}"
        if self.choices and value not in self.choices:
            return f"{self.name} must be one of {list(self.choices)}, got {value!r}"
        return None


SPECS: tuple[Spec, ...] = (
    # --- model (read-only: applied on configure) ----------------------------------------------
    Spec("profile", "lite", "model profile (lite: real time on 2 CPU cores; base: paper scale)",
         read_only=True, choices=("lite", "base")),
    Spec("checkpoint", "", "'' = the embedded default checkpoint of the profile; 'random' = random "
         "weights (tests, demos without a checkpoint); or a path to a .safetensors checkpoint",
         read_only=True),
    Spec("reference", "", "reference face image (PNG/JPEG path); '' = the embedded avatar. Change at "
         "runtime with the ~/set_reference service", read_only=True),
    Spec("reference_dirs", "", "directories (separated by ':') that ~/set_reference may read image files "
         "from; '' = the package's avatars and the directory of `reference`. Symlinks are followed first",
         read_only=True),
    Spec("reference_max_pixels", 2048 * 2048, "largest reference image (width x height) accepted from a "
         "file or an Image message; checked before decoding", read_only=True, lo=1, hi=1 << 30),
    Spec("reference_max_bytes", 16 * 1024 * 1024, "largest reference image file accepted", read_only=True,
         lo=1, hi=1 << 34),
    Spec("reference_min_side", 64, "smallest width/height of a reference image", read_only=True,
         lo=1, hi=4096),
    Spec("device", "cpu", "torch device: cpu, cuda, cuda:N, or auto (cuda when available)", read_only=True),
    Spec("backend", "auto", "execution backend: auto (CPU: onnxruntime for audio/generator/head + torch "
         "rendering; CUDA: torch), torch, onnxruntime", read_only=True,
         choices=BACKENDS),
    Spec("render", True, "render face images (false: motion latents only)", read_only=True),
    Spec("num_threads", 1, "torch intra-op threads (0 = torch's default). 1 suits the lite model on small "
         "CPUs: the executor, DDS and image threads need the other cores, and intra-op sync on a small "
         "model costs more than it gains, badly so when other processes compete", read_only=True,
         lo=0, hi=256),
    Spec("seed", 0, "session seed: per-frame noise is seeded by (seed, frame index), so replays repeat",
         read_only=True, lo=0, hi=2**31 - 1),
    Spec("lookahead_ms", -1, "audio after a frame's end to wait for before producing it; -1 = the model's "
         "lookahead (60 ms lite); larger values add a jitter buffer, smaller ones are refused",
         read_only=True, lo=-1, hi=1000),
    Spec("image_size", 0, "output image side in pixels; 0 = the model's resolution (lite 256)",
         read_only=True, lo=0, hi=4096),
    Spec("warmup_frames", 5, "frames run on silence at configure so the first real frame is not slow",
         read_only=True, lo=0, hi=1000),
    Spec("frame_id", "avatar", "header.frame_id of the outputs", read_only=True),
    # --- inputs ---------------------------------------------------------------------------------
    Spec("audio_msg_type", AUDIO_MSG_TYPES[0], "message type of speaker_audio / listener_audio "
         "(audio_common_msgs needs that package installed; its format comes from <topic>_info)",
         read_only=True, choices=AUDIO_MSG_TYPES),
    Spec("input_qos", "reliable", "audio subscriptions: reliable (nothing lost in transport; matches "
         "reliable publishers only, a best-effort one is logged and counted as incompatible) or "
         "sensor_data (best effort, REP-2003: matches every publisher, but DDS may drop whole messages, "
         "counted as <channel>_messages_lost)", read_only=True,
         choices=("reliable", "sensor_data")),
    Spec("input_qos_depth", 200, "audio subscription queue depth (deep enough for TTS bursts)",
         read_only=True, lo=1, hi=10000),
    Spec("buffer_s", 30.0, "audio buffered ahead per channel; more is dropped and counted",
         read_only=True, lo=1.0, hi=3600.0),
    Spec("sample_rates", [8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 192000],
         "accepted input sample rates (Hz); others are rejected and counted. Each has a short polyphase "
         "filter to 16 kHz, so resampling stays cheap (an arbitrary rate such as 383999 Hz has none)",
         read_only=True),
    Spec("max_message_s", 60.0, "longest accepted audio message; longer ones are rejected and counted",
         read_only=True, lo=0.1, hi=3600.0),
    Spec("max_message_bytes", 8 * 1024 * 1024, "largest accepted audio message (bytes of data; 8 MiB is "
         "43 s of 48 kHz stereo S16); larger ones are rejected before decoding and counted",
         read_only=True, lo=1024, hi=1 << 31),
    # --- outputs --------------------------------------------------------------------------------
    Spec("output_qos_depth", 5, "keep-last depth of the output publishers", read_only=True, lo=1, hi=1000),
    Spec("output_reliability", "reliable", "output publishers: reliable or best_effort", read_only=True,
         choices=("reliable", "best_effort")),
    Spec("publish_image", True, "publish face_image (sensor_msgs/Image rgb8)"),
    Spec("publish_compressed", False, "publish face_image/compressed (JPEG)"),
    Spec("jpeg_quality", 85, "JPEG quality of face_image/compressed", lo=1, hi=100),
    Spec("publish_latent", True, "publish motion_latent"),
    Spec("publish_state", True, "publish state (AvatarState)"),
    Spec("idle_publish_hz", 25.0, "before any audio arrives, publish the idle face at this rate (0 = off)",
         lo=0.0, hi=25.0),
    # --- streaming (runtime) --------------------------------------------------------------------
    Spec("wake_on_audio", True, "also run the frame producer as soon as arriving audio completes a due "
         "frame (saves up to one 40 ms timer period of latency); the 40 ms timer keeps running"),
    Spec("steps", 5, "flow-matching Euler steps per frame", lo=1, hi=10),
    Spec("guidance_speaker", 1.0, "classifier-free guidance weight of the speaker audio", lo=0.0, hi=20.0),
    Spec("guidance_listener", 0.5, "classifier-free guidance weight of the listener audio", lo=0.0, hi=20.0),
    Spec("guidance_anchor", 0.0, "classifier-free guidance weight of the anchor (reference motion)",
         lo=0.0, hi=20.0),
    Spec("temperature", 0.5, "scale of the flow's starting noise: 1 = full variety, lower = closer to the "
         "most likely motion (sharper lip-sync)", lo=0.0, hi=2.0),
    Spec("head_temperature", 0.5, "the same along the latent's head-pose directions (the model's "
         "head_basis): higher = a livelier head in every state, the mouth unchanged", lo=0.0, hi=2.0),
    Spec("catch_up_limit", 8, "most frames produced per 40 ms tick; older due frames are skipped and "
         "counted. Keep it above (listener_wait_ms + 40) / 40 so frames that waited for a late channel "
         "are not skipped when it resumes", lo=1, hi=10000),
    Spec("speaker_wait_ms", 200.0, "a missing or late speaker channel counts as silence after this wait",
         lo=0.0, hi=60000.0),
    Spec("listener_wait_ms", 200.0, "a missing or late listener channel counts as silence after this wait",
         lo=0.0, hi=60000.0),
    Spec("stamp_tolerance_ms", 10.0, "stamp jitter between consecutive chunks treated as contiguous audio; "
         "a larger gap is counted and filled with silence. Keep it below the publisher's chunk length so one "
         "lost chunk is counted (docs/STREAM_TIMING.md)", lo=0.0, hi=1000.0),
    Spec("stamp_jump_ms", 1000.0, "a chunk stamped further ahead than this, or before the end of the audio "
         "so far, is held until the next chunk shows whether the stream moved (then followed) or the chunk "
         "was wrong (then dropped and counted)", lo=1.0, hi=60000.0),
    Spec("max_stamp_skew_s", 10.0, "audio stamps further than this from the node clock (or zero) are "
         "replaced by the receive time (counted)", lo=0.1, hi=1e6),
    Spec("max_clock_jump_s", 5.0, "a forward jump of the ROS clock (sim time) larger than this restarts "
         "the stream (backward jumps always do)", read_only=True, lo=0.1, hi=1e6),
    Spec("speaking_threshold_db", -45.0, "RMS level (dBFS) above which a channel counts as audible in "
         "state", lo=-120.0, hi=0.0),
    Spec("step_warn_ms", 40.0, "diagnostics WARN when the step time p95 exceeds this", lo=1.0, hi=10000.0),
    Spec("diagnostics_period_s", 1.0, "period of /diagnostics (steady clock)", read_only=True,
         lo=0.05, hi=60.0),
    Spec("autostart", True, "configure and activate on start (set false when a launch file or lifecycle "
         "manager drives the transitions)", read_only=True),
)

SPEC_BY_NAME = {s.name: s for s in SPECS}
