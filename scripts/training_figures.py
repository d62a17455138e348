"""The figures of docs/TRAINING.md, regenerated from a checkpoint, held-out data and a rendered video.

    python scripts/training_figures.py autoencoder --checkpoint CKPT --data /work/data/heldout \
        --out docs/images/autoencoder_heldout.png
    python scripts/training_figures.py video --video sample.mp4 --times 3.0 6.2 11.5 \
        --out docs/images/render_sample.png
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def autoencoder_figure(checkpoint: str, data: str, out: str, pairs: int, seed: int) -> None:
    """Rows of (reference | target frame | reconstruction) for held-out identities, with PSNR."""
    import torch

    from dystream_ros.model.checkpoint import load_checkpoint
    from dystream_ros.train.autoencoder import psnr, validate, validation_pairs
    from dystream_ros.train.data import FrameBank

    torch.set_num_threads(1)
    model = load_checkpoint(checkpoint, render=True)
    bank = FrameBank(data, size=model.cfg.autoencoder.image_size, keep_audio=False)
    src, drv, _ = validation_pairs(bank, pairs, seed=seed)
    pred = validate(model.autoencoder, src, drv)["pred"]
    scores = psnr(pred, drv)
    fig, axes = plt.subplots(pairs, 3, figsize=(7.5, 2.5 * pairs))
    for i in range(pairs):
        for j, (img, title) in enumerate(
            [(src[i], "reference"), (drv[i], "target frame"), (pred[i], f"reconstruction {scores[i]:.1f} dB")]
        ):
            ax = axes[i, j]
            ax.imshow(img)
            ax.set_axis_off()
            ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    print(f"{out}: {pairs} held-out pairs, PSNR mean {scores.mean():.2f} dB")


def video_figure(video: str, times: list[float], out: str) -> None:
    """Frames of an MP4 at the given times (seconds), side by side."""
    import av

    want = sorted(times)
    got: list[tuple[float, np.ndarray]] = []
    with av.open(video) as c:
        for frame in c.decode(video=0):
            if want and frame.time is not None and frame.time >= want[0]:
                got.append((float(frame.time), frame.to_ndarray(format="rgb24")))
                want.pop(0)
            if not want:
                break
    if want:
        raise SystemExit(f"{video}: no frames at {want} s (video too short)")
    fig, axes = plt.subplots(1, len(got), figsize=(3.2 * len(got), 3.4))
    for ax, (t, img) in zip(np.atleast_1d(axes), got, strict=True):
        ax.imshow(img)
        ax.set_axis_off()
        ax.set_title(f"t = {t:.2f} s", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    print(f"{out}: {len(got)} frames of {video}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("autoencoder")
    a.add_argument("--checkpoint", required=True)
    a.add_argument("--data", required=True, help="held-out conversations")
    a.add_argument("--out", required=True)
    a.add_argument("--pairs", type=int, default=4)
    a.add_argument("--seed", type=int, default=7)
    v = sub.add_parser("video")
    v.add_argument("--video", required=True)
    v.add_argument("--times", type=float, nargs="+", required=True)
    v.add_argument("--out", required=True)
    args = p.parse_args()
    if args.cmd == "autoencoder":
        autoencoder_figure(args.checkpoint, args.data, args.out, args.pairs, args.seed)
    else:
        video_figure(args.video, args.times, args.out)


if __name__ == "__main__":
    main()
