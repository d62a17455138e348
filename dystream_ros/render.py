"""``dystream render``: offline rendering of a conversation through the streaming session.

    dystream render --speaker A.wav --listener B.wav [--reference IMG] [--checkpoint C] --out video.mp4
                    [--mix both|speaker] [--seed 0]

The avatar speaks with the speaker channel's voice and listens to the listener channel. Both WAVs may
have any sample rate, bit depth and channel count (mixed down to mono, resampled to 16 kHz with a
polyphase filter); the shorter one is padded with silence. Frames are produced by the same
:class:`~dystream_ros.model.pipeline.Session` the ROS node uses, so the video is exactly what the
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


def render_conversation(
    pipe,
    speaker: np.ndarray,
    listener: np.ndarray,
    reference: np.ndarray,
    seed: int = 0,
    progress: bool = True,
) -> Iterator[np.ndarray]:
    """Yield one RGB frame per 40 ms of the (longer) 16 kHz input, streamed through a session."""
    from tqdm import tqdm

    spf = pipe.samples_per_frame
    n = max(len(speaker), len(listener))
    frames = max(1, math.ceil(n / spf))
    total = frames * spf + pipe.lookahead_samples  # silence after the end lets the last frames finish
    spk = np.zeros(total, np.float32)
    lis = np.zeros(total, np.float32)
    spk[: len(speaker)] = speaker
    lis[: len(listener)] = listener
    sess = pipe.start_session(reference, seed=seed)
    bar = tqdm(total=frames, desc="render", unit="frame", disable=not progress)
    chunk = 4 * spf  # feed audio in 160 ms chunks, as a stream would arrive
    fed = 0
    done = 0
    try:
        while done < frames:
            frame = sess.step()
            if frame is None:
                sess.push_audio(speaker=spk[fed : fed + chunk], listener=lis[fed : fed + chunk])
                fed += chunk
                continue
            done += 1
            bar.update(1)
            yield frame.image
    finally:
        bar.close()


def _load_reference(path: str | None, pipe) -> np.ndarray:
    if path is None:
        return pipe.default_reference()
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


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
    from dystream_ros.model import load_pipeline

    speaker = read_wav(args.speaker)
    listener = read_wav(args.listener) if args.listener else np.zeros(0, np.float32)
    pipe = load_pipeline(checkpoint=args.checkpoint, profile=args.profile, backend=args.backend)
    reference = _load_reference(args.reference, pipe)
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
    frames = render_conversation(pipe, spk, lis, reference, seed=args.seed, progress=not args.no_progress)
    count = write_mp4(out, frames, fps=pipe.fps, audio_tracks=[mix], sample_rate=SAMPLE_RATE, crf=args.crf)
    dur = Fraction(n, SAMPLE_RATE)
    print(
        f"{out}: {count} frames ({count / pipe.fps:.2f} s video, {float(dur):.2f} s audio), "
        f"checkpoint {pipe.checkpoint_id}, backend {pipe.backend_name}"
    )
    return 0
