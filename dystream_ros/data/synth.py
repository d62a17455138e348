"""``dystream synth``: write a dataset of synthetic dyadic conversations.

    dystream synth --out data/synth_train --conversations 400 --seed 0
    dystream synth --out data/synth_heldout --conversations 20 --seed 0 --split heldout --render

Layout::

    OUT/index.json                 list of conversations (+ split, seed, duration, columns)
    OUT/conv_0000/speaker.wav      party A = the avatar's own voice, 16 kHz 16-bit mono
    OUT/conv_0000/listener.wav     party B = the other person, 16 kHz 16-bit mono
    OUT/conv_0000/params.npy       T x 13 float32 articulation of A at 25 fps
    OUT/conv_0000/meta.json        identity, voices, turns with times/text/phonemes, seed
    OUT/conv_0000/video.mp4        with --render: the rendered avatar (H.264) + both audio tracks

Conversation ``i`` uses the seed :func:`conversation_seed` (seed, split, i), so a dataset can be
extended (``--start``) or regenerated in parallel (``--workers``) with identical results. The train
split uses only training voices and identities, the held-out split only held-out ones; ``train-wide`` is the
train split's identities with 24 more training-only voices (``speech.WIDE_VOICES``), for models that must
hear more speakers.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dystream_ros.config import FPS, SAMPLE_RATE
from dystream_ros.data.conversation import generate_conversation
from dystream_ros.data.face import ARTICULATION_FIELDS

INDEX_FORMAT = "dystream-synth-index-v1"
_SPLIT_CODE = {"train": 1, "heldout": 2, "train-wide": 3}


def conversation_seed(seed: int, split: str, index: int) -> int:
    """Seed of conversation ``index`` in a dataset generated with ``seed`` for ``split``."""
    ss = np.random.SeedSequence([int(seed), _SPLIT_CODE[split], int(index)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def _one(job: tuple) -> dict:
    out, index, seed, split, duration_s, render, size = job
    conv = generate_conversation(conversation_seed(seed, split, index), split=split, duration_s=duration_s)
    name = f"conv_{index:04d}"
    d = conv.write(Path(out) / name)
    if render:
        from dystream_ros.io.video import write_mp4

        write_mp4(d / "video.mp4", conv.frames(size), fps=FPS, audio_tracks=[conv.speaker, conv.listener])
    return {
        "dir": name,
        "seed": conv.seed,
        "identity_seed": int(conv.identity.seed),
        "voices": {"A": conv.voice_a.key, "B": conv.voice_b.key},
        "num_frames": conv.num_frames,
        "duration_s": conv.duration,
        "video": bool(render),
    }


def synthesize_dataset(
    out,
    conversations: int,
    seed: int = 0,
    split: str = "train",
    duration_s: float = 30.0,
    render: bool = False,
    size: int = 256,
    workers: int = 1,
    start: int = 0,
    progress: bool = True,
) -> dict:
    """Generate conversations ``start .. start+conversations-1`` into ``out``; returns the index.

    An existing ``index.json`` with the same split/seed/duration is extended (entries with the same
    directory name are replaced).
    """
    if split not in _SPLIT_CODE:
        raise ValueError(f"unknown split {split!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), i, seed, split, duration_s, render, size) for i in range(start, start + conversations)]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            it = pool.map(_one, jobs)
            entries = list(
                tqdm(it, total=len(jobs), desc=f"synth {split}", unit="conv", disable=not progress)
            )
    else:
        entries = [_one(j) for j in tqdm(jobs, desc=f"synth {split}", unit="conv", disable=not progress)]

    index_path = out / "index.json"
    header = {
        "format": INDEX_FORMAT,
        "split": split,
        "seed": int(seed),
        "duration_s": float(duration_s),
        "fps": FPS,
        "sample_rate": SAMPLE_RATE,
        "params_columns": list(ARTICULATION_FIELDS),
    }
    old = []
    if index_path.exists():
        prev = json.loads(index_path.read_text())
        if all(prev.get(k) == v for k, v in header.items() if k != "params_columns"):
            old = prev.get("conversations", [])
    by_dir = {e["dir"]: e for e in old}
    by_dir.update({e["dir"]: e for e in entries})
    index = {**header, "conversations": [by_dir[k] for k in sorted(by_dir)]}
    tmp = index_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, index_path)
    return index


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate synthetic dyadic conversations (training data for the embedded model)",
        description="Write synthetic dyadic conversations (speaker/listener WAV, per-frame articulation, "
        "metadata, optional rendered video) for training and evaluation.",
    )
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--conversations", type=int, default=10, help="number of conversations (default 10)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--split", choices=sorted(_SPLIT_CODE), default="train", help="voices/identities to use")
    p.add_argument("--duration-s", type=float, default=30.0, help="length of each conversation (default 30)")
    p.add_argument("--render", action="store_true", help="also write video.mp4 of the rendered avatar")
    p.add_argument("--size", type=int, default=256, help="render size with --render (default 256)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--start", type=int, default=0, help="index of the first conversation (to extend a set)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    if args.conversations < 1:
        print("dystream synth: --conversations must be >= 1")
        return 2
    index = synthesize_dataset(
        args.out,
        args.conversations,
        seed=args.seed,
        split=args.split,
        duration_s=args.duration_s,
        render=args.render,
        size=args.size,
        workers=max(1, args.workers),
        start=args.start,
    )
    total = sum(e["duration_s"] for e in index["conversations"])
    print(f"{len(index['conversations'])} conversations ({total / 60:.1f} min) in {args.out}")
    return 0
