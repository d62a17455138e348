"""The figures of docs/TRAINING.md, regenerated from a checkpoint, held-out data and a rendered video.

    python scripts/training_figures.py autoencoder --checkpoint CKPT --data /work/data/heldout \
        --out docs/images/autoencoder_heldout.png
    python scripts/training_figures.py video --video sample.mp4 --times 3.0 6.2 11.5 \
        --out docs/images/render_sample.png
    python scripts/training_figures.py decoder-mouth --checkpoint CKPT --data /work/data/heldout \
        --out docs/images/decoder_mouth.png

    python scripts/training_figures.py decoder-crops --checkpoint CKPT --data /work/data/heldout \
        --out docs/images/decoder_crops.png

``decoder-mouth`` measures the decoder's lip-sync ceiling: ground-truth frames are encoded by the
checkpoint's motion encoder and decoded from the reference (no generator), and the independent mouth
reader reads both; it prints the lip-sync correlation (band-passed, as ``dystream train evaluate``
scores it) per conversation and plots the first conversation's mouth signals. ``decoder-crops`` shows
what it draws: mouth crops of the most open frames, ground truth above the decoder's output and its
synthesis branch alone.
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


def _autoencoder_and_data(checkpoint: str, data: str):
    """The checkpoint's autoencoder (eval mode, 2 threads) and the held-out frames at its image size."""
    import torch

    from dystream_ros.model.checkpoint import load_checkpoint
    from dystream_ros.train.data import FrameBank

    torch.set_num_threads(2)
    ae = load_checkpoint(checkpoint, render=True).eval().autoencoder
    return ae, FrameBank(data, size=ae.cfg.image_size, keep_audio=False)


def _decode(ae, reference: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Encode uint8 frames (T, S, S, 3) with the motion encoder and decode them from ``reference``:
    the output images and the synthesis branch alone, both uint8 (T, S, S, 3)."""
    import torch

    from dystream_ros.train.data import to_tensor

    to_u8 = lambda x: (x.permute(0, 2, 3, 1) * 127.5 + 128.0).clamp(0, 255).byte().numpy()  # noqa: E731
    ref = to_tensor(reference[None])
    images, synth = [], []
    with torch.no_grad():
        app, m0 = ae.appearance(ref), ae.motion(ref)
        for i in range(0, len(frames), 25):
            x = to_tensor(frames[i : i + 25])
            b = len(x)
            m = ae.motion(x)
            out = ae.decoder(m, m0.expand(b, -1), app.expand(b, -1, -1, -1), ref.expand(b, -1, -1, -1))
            images.append(to_u8(out["image"]))
            synth.append(to_u8(out["generated"]))
    return np.concatenate(images), np.concatenate(synth)


def decoder_crops_figure(checkpoint: str, data: str, out: str, conversations: int, per: int) -> None:
    """Mouth crops of each conversation's most open frames: ground truth / decoded / synthesis branch."""
    from dystream_ros.eval.lipsync import gt_columns, gt_mouth

    ae, bank = _autoencoder_and_data(checkpoint, data)
    blocks = []
    for c in range(min(conversations, len(bank))):
        n = bank.num_frames(c)
        opening = gt_mouth(gt_columns(bank.convs[c].params[:n]))
        order = np.argsort(opening)[::-1]
        picks = [int(order[int(q * (n - 1))]) for q in np.linspace(0.0, 0.5, per)]  # most open -> median
        truth = np.stack([bank.frame(c, t) for t in picks])
        decoded, synth = _decode(ae, bank.reference(c), truth)
        crops = []
        for i, t in enumerate(picks):
            x0, y0, x1, y1 = bank.mouth_box(c, t)
            cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
            box = (slice(max(cy - 32, 0), cy + 32), slice(max(cx - 48, 0), cx + 48))
            crops.append(np.concatenate([truth[i][box], decoded[i][box], synth[i][box]], axis=0))
        size = min(x.shape for x in crops)
        blocks.append(np.concatenate([x[: size[0], : size[1]] for x in crops], axis=1))
    width = min(b.shape[1] for b in blocks)
    fig, ax = plt.subplots(figsize=(width / 40, sum(b.shape[0] for b in blocks) / 40))
    ax.imshow(np.concatenate([b[:, :width] for b in blocks], axis=0))
    ax.set_axis_off()
    ax.set_title("per conversation: ground truth / decoded from its latent / synthesis branch", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    print(f"{out}: {len(blocks)} conversations x {per} frames")


def decoder_mouth_figure(checkpoint: str, data: str, out: str, conversations: int, frames: int) -> None:
    """Mouth read from ground-truth renders vs from their decoded latents; the correlations it prints."""
    from dystream_ros.eval.lipsync import gt_columns, gt_mouth, mouth_openness, sync_scores

    ae, bank = _autoencoder_and_data(checkpoint, data)
    rows = []
    for c in range(min(conversations, len(bank))):
        n = min(frames, bank.num_frames(c))
        truth = np.stack([bank.frame(c, t) for t in range(n)])
        decoded = _decode(ae, bank.reference(c), truth)[0]
        gt = gt_mouth(gt_columns(bank.convs[c].params[:n]))
        read_truth, read_dec = mouth_openness(truth), mouth_openness(decoded)
        r_truth, r_dec = sync_scores(read_truth, gt)["correlation"], sync_scores(read_dec, gt)["correlation"]
        rows.append((r_truth, r_dec))
        print(f"{bank.convs[c].name}: lip-sync correlation, ground-truth renders {r_truth:.3f}, decoded "
              f"ground-truth latents {r_dec:.3f}; reading std {read_truth.std():.3f} vs {read_dec.std():.3f}")
        if c == 0:
            fig, ax = plt.subplots(figsize=(10, 3))
            t = np.arange(n) / 25.0
            ax.plot(t, gt, label="ground-truth mouth opening", lw=1.5)
            ax.plot(t, read_truth, label="read from the ground-truth render", lw=1)
            ax.plot(t, read_dec, label="read from the decoded latent of that render", lw=1)
            ax.set_xlabel("s")
            ax.legend(fontsize=8, loc="upper right")
            ax.set_title(f"{bank.convs[c].name}: what the decoder draws of the mouth", fontsize=9)
            fig.tight_layout()
            fig.savefig(out, dpi=80)
    r = np.array(rows)
    print(f"mean of {len(r)}: ground-truth renders {r[:, 0].mean():.3f}, decoded {r[:, 1].mean():.3f}; "
          f"plot {out}")


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
    a, d, k = sub.add_parser("autoencoder"), sub.add_parser("decoder-mouth"), sub.add_parser("decoder-crops")
    for q in (a, d, k):  # a checkpoint read on held-out data
        q.add_argument("--checkpoint", required=True)
        q.add_argument("--data", required=True, help="held-out conversations")
        q.add_argument("--out", required=True)
    a.add_argument("--pairs", type=int, default=4)
    a.add_argument("--seed", type=int, default=7)
    d.add_argument("--conversations", type=int, default=4)
    d.add_argument("--frames", type=int, default=375)
    k.add_argument("--conversations", type=int, default=3)
    k.add_argument("--per", type=int, default=6, help="frames per conversation")
    v = sub.add_parser("video")
    v.add_argument("--video", required=True)
    v.add_argument("--times", type=float, nargs="+", required=True)
    v.add_argument("--out", required=True)
    args = p.parse_args()
    if args.cmd == "autoencoder":
        autoencoder_figure(args.checkpoint, args.data, args.out, args.pairs, args.seed)
    elif args.cmd == "decoder-mouth":
        decoder_mouth_figure(args.checkpoint, args.data, args.out, args.conversations, args.frames)
    elif args.cmd == "decoder-crops":
        decoder_crops_figure(args.checkpoint, args.data, args.out, args.conversations, args.per)
    else:
        video_figure(args.video, args.times, args.out)


if __name__ == "__main__":
    main()
