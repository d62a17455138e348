"""``dystream render``: offline rendering of a conversation through the streaming session.

    dystream render --speaker A.wav --listener B.wav [--reference IMG] [--checkpoint C] --out video.mp4
                    [--mix both|speaker] [--seed 0]

The avatar speaks with the speaker channel's voice and listens to the listener channel. Both WAVs may
have any sample rate, bit depth and channel count (mixed down to mono, resampled to 16 kHz with a
polyphase filter); the shorter one is padded with silence. Frames are produced by the same
:class:`~dystream_ros.runtime.session.Session` the ROS node uses, so the video is exactly what the
robot would show; the audio track (AAC, both channels mixed, or the speaker only) is muxed in and
lasts as long as the longer WAV.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from dystream_ros.config import SAMPLE_RATE
from dystream_ros.io.wav import read_wav

__all__ = ["register", "render_conversation"]


def render_conversation(engine, speaker: np.ndarray, listener: np.ndarray,
                        progress: bool = True) -> Iterator[np.ndarray]:
    """Yield one RGB frame per 40 ms of the (longer) 16 kHz input, streamed through ``engine``
    (:meth:`~dystream_ros.runtime.engine.AvatarEngine.offline`: the node's scheduler and session)."""
    from tqdm import tqdm

    frames = max(1, math.ceil(max(len(speaker), len(listener)) / engine.pipe.samples_per_frame))
    with tqdm(total=frames, desc="render", unit="frame", disable=not progress) as bar:
        for out in engine.offline(speaker, listener):
            bar.update(1)
            yield out.frame.image


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "render",
        help="render a conversation (speaker + listener WAVs) to an MP4 through the streaming model",
        description="Offline rendering through the streaming session, with the audio muxed in (H.264 + AAC).",
    )
    p.add_argument("--speaker", required=True, help="WAV of the avatar's own voice (any sample rate)")
    p.add_argument("--listener", default=None, help="WAV of the other person (optional; silence if absent)")
    p.add_argument("--reference", default=None, help="reference face image (default: the embedded avatar)")
    p.add_argument("--checkpoint", default=None, help="model checkpoint (default: the embedded lite model)")
    p.add_argument("--profile", default="lite")
    p.add_argument("--renderer", default="auto", choices=("learned", "photo", "auto"),
                   help="learned decoder, the photo rig (needs a checkpoint with an articulation read-out), "
                   "or auto: photo for a photograph (default)")
    p.add_argument("--image-size", type=int, default=0, choices=(0, 256, 512),
                   help="the photo rig's output side (0: 256); the learned decoder draws at its own size")
    p.add_argument("--out", required=True, help="output MP4")
    p.add_argument(
        "--mix",
        choices=("both", "speaker"),
        default="both",
        help="audio track: both channels mixed (default) or the speaker channel only",
    )
    p.add_argument("--seed", type=int, default=0, help="session seed (noise of the flow head)")
    p.add_argument("--backend", default="auto", help="auto | torch | onnxruntime")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality (lower = better)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_main)


def _main(args) -> int:
    from dystream_ros.io.video import write_mp4
    from dystream_ros.runtime.engine import AvatarEngine, model_sampler
    from dystream_ros.runtime.settings import Settings

    speaker = read_wav(args.speaker)
    listener = read_wav(args.listener) if args.listener else np.zeros(0, np.float32)
    # a local file rendered offline: no size limits on the reference (the node's defaults guard a robot)
    settings = Settings(checkpoint=args.checkpoint or "", profile=args.profile, backend=args.backend,
                        seed=args.seed, reference=args.reference or "", render=True, warmup_frames=0,
                        num_threads=0, renderer=args.renderer, image_size=args.image_size,
                        reference_max_pixels=1 << 30, reference_max_bytes=1 << 34, reference_min_side=1)
    engine = AvatarEngine(settings, log=lambda level, msg: print(f"{level}: {msg}"))
    engine.update(**model_sampler(engine.pipe))  # the checkpoint's own sampler defaults
    pipe = engine.pipe
    n = max(len(speaker), len(listener))
    spk = np.pad(speaker, (0, n - len(speaker)))
    lis = np.pad(listener, (0, n - len(listener)))
    if args.mix == "both":
        mix = spk + lis
        peak = float(np.abs(mix).max()) if n else 0.0
        if peak > 0.99:
            mix *= 0.99 / peak
    else:
        mix = spk
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = render_conversation(engine, spk, lis, progress=not args.no_progress)
    count = write_mp4(out, frames, fps=pipe.fps, audio_tracks=[mix], sample_rate=SAMPLE_RATE, crf=args.crf)
    dur = Fraction(n, SAMPLE_RATE)
    print(
        f"{out}: {count} frames ({count / pipe.fps:.2f} s video, {float(dur):.2f} s audio), "
        f"checkpoint {pipe.checkpoint_id}, backend {pipe.backend_name}, renderer {engine.renderer} "
        f"({engine.renderer_reason})"
    )
    return 0
