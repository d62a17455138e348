"""``dystream train autoencoder``: the warping autoencoder (appearance + motion encoders, warp decoder).

Each example is a pair (source, driving) of frames of the *same* person and conversation: the model
renders the source's appearance with the driving frame's motion and is scored against the driving
frame. Half of the sources are the conversation's reference image (what a session starts from), half
random frames. Loss: L1 (weighted up where source and driving differ, i.e. on what moved: mouth,
eyes, head outline) + L1 at 1/2 and 1/4 scale + L1 of image gradients (a cheap perceptual term; no
pretrained VGG is available offline). With ground-truth articulation (synthetic data) an auxiliary
linear probe reads the articulation from the motion latent, which organises the latent around the
face's degrees of freedom (the probe is a training-only module, not exported).

Validation: PSNR (dB, on uint8 images) of reference -> frame reconstructions of held-out conversations
(held-out identities), with the EMA weights.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn
from tqdm import tqdm

from dystream_ros.config import ModelConfig, load_profile
from dystream_ros.model.checkpoint import load_checkpoint, read_config, save_checkpoint
from dystream_ros.model.dystream import DyStreamModel, build_model
from dystream_ros.train.common import (
    EMA,
    JsonLog,
    all_mean,
    barrier,
    cleanup_distributed,
    finish_run,
    init_distributed,
    load_state,
    lr_at,
    save_state,
)
from dystream_ros.train.data import FrameBank, normalise_params, to_tensor

__all__ = [
    "AELoss",
    "box_mask",
    "copy_motion_encoder",
    "psnr",
    "sample_pairs",
    "train_autoencoder",
    "validation_pairs",
    "validate",
]

NUM_PARAMS = 13


def sample_pairs(
    bank: FrameBank, rng: np.random.Generator, batch: int, ref_fraction: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``batch`` (source, driving) uint8 pairs, the driving frames' normalised articulation and mouth
    boxes (B, 4) in pixels; articulation and boxes are None unless the data is synthetic."""
    src, drv, par, box = [], [], [], []
    for _ in range(batch):
        c = int(rng.integers(len(bank)))
        n = bank.num_frames(c)
        t = int(rng.integers(n))
        if rng.random() < ref_fraction:
            s = bank.reference(c)
        else:
            s = bank.frame(c, int(rng.integers(n)))
        src.append(s)
        drv.append(bank.frame(c, t))
        p = bank.params(c, t)
        par.append(None if p is None else normalise_params(p))
        box.append(bank.mouth_box(c, t))
    params = None if any(p is None for p in par) else np.stack(par)
    boxes = None if any(b is None for b in box) else np.stack(box)
    return np.stack(src), np.stack(drv), params, boxes


def validation_pairs(
    bank: FrameBank, count: int, seed: int = 1234
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Fixed (reference, frame) pairs for PSNR: ``count`` frames spread over the conversations, and the
    frames' mouth boxes (None unless synthetic)."""
    rng = np.random.default_rng(seed)
    src, drv, box = [], [], []
    for i in range(count):
        c = i % len(bank)
        t = int(rng.integers(bank.num_frames(c)))
        src.append(bank.reference(c))
        drv.append(bank.frame(c, t))
        box.append(bank.mouth_box(c, t))
    return np.stack(src), np.stack(drv), None if any(b is None for b in box) else np.stack(box)


def box_mask(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel boxes (B, 4) as (x0, y0, x1, y1) -> (B, 1, size, size) float mask, 1 on pixel centres inside."""
    c = torch.arange(size, dtype=torch.float32, device=boxes.device) + 0.5
    inx = (c >= boxes[:, 0:1]) & (c <= boxes[:, 2:3])  # (B, S)
    iny = (c >= boxes[:, 1:2]) & (c <= boxes[:, 3:4])
    return (iny[:, :, None] & inx[:, None, :]).float()[:, None]


def psnr(pred_u8: np.ndarray, target_u8: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-image PSNR in dB of uint8 images (B, S, S, 3); with a bool ``mask`` (B, S, S) only inside it."""
    d = pred_u8.astype(np.float64) - target_u8.astype(np.float64)
    sq = (d * d).mean(axis=-1).reshape(d.shape[0], -1)
    if mask is None:
        mse = sq.mean(axis=1)
    else:
        m = mask.reshape(d.shape[0], -1)
        mse = (sq * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1)
    return 10.0 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


def _to_u8(x: torch.Tensor) -> np.ndarray:
    return (x.permute(0, 2, 3, 1) * 127.5 + 128.0).clamp(0, 255).to(torch.uint8).cpu().numpy()


@torch.no_grad()
def validate(
    ae: nn.Module, src: np.ndarray, drv: np.ndarray, boxes: np.ndarray | None = None, batch: int = 16
) -> dict[str, Any]:
    """PSNR of ``ae`` reconstructing ``drv`` from ``src`` (uint8 arrays): mean/min, and with mouth boxes
    (B, 4) also ``mouth_psnr`` (mean over the pairs of the PSNR inside each box); plus the images."""
    ae.eval()
    dev = next(ae.parameters()).device
    outs = []
    for i in range(0, len(src), batch):
        out = ae.reconstruct(to_tensor(src[i : i + batch], dev), to_tensor(drv[i : i + batch], dev))
        outs.append(_to_u8(out["image"]))
    pred = np.concatenate(outs)
    p = psnr(pred, drv)
    res = {"psnr": float(p.mean()), "psnr_min": float(p.min()), "pred": pred}
    if boxes is not None:
        inside = box_mask(torch.from_numpy(boxes), drv.shape[1])[:, 0].numpy().astype(bool)  # (B, S, S)
        res["mouth_psnr"] = float(psnr(pred, drv, inside).mean())
    return res


def _weighted_l1(pred: torch.Tensor, target: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """L1 of (B, 3, S, S) images with per-pixel weights (B, 1, S, S), normalised by the mean weight."""
    return ((pred - target).abs() * w).mean() / w.mean()


def _box_mse(pred: torch.Tensor, target: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Mean squared error of (B, 3, S, S) images inside the (B, 1, S, S) box masks."""
    return ((pred - target).square() * box).sum() / (3.0 * box.sum().clamp(min=1.0))


class AELoss(nn.Module):
    """Autoencoder (+ optional articulation probe) -> scalar loss; the module DDP wraps."""

    def __init__(
        self,
        autoencoder: nn.Module,
        latent_dim: int,
        aux_weight: float,
        motion_weight: float,
        seed: int = 0,
        mouth_weight: float = 0.0,
        synth_weight: float = 0.0,
        mouth_l2: float = 0.0,
        param_stats: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        super().__init__()
        self.ae = autoencoder
        self.aux_weight = float(aux_weight)
        self.motion_weight = float(motion_weight)
        self.mouth_weight = float(mouth_weight)
        self.synth_weight = float(synth_weight)
        self.mouth_l2 = float(mouth_l2)
        self.aux_only = False
        self.probe = None
        if aux_weight > 0:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)  # deterministic init, whatever the global RNG state
                self.probe = nn.Linear(latent_dim, NUM_PARAMS)
        # The probe regresses *standardised* articulation: the raw parameters' spreads differ by 5x
        # (head roll std 0.03 vs lip rounding 0.24 on [0, 1]), and unscaled MSE left the small ones unlearnt.
        mean, std = param_stats if param_stats is not None else (np.zeros(NUM_PARAMS), np.ones(NUM_PARAMS))
        self.register_buffer("param_mean", torch.as_tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("param_std", torch.as_tensor(std, dtype=torch.float32), persistent=False)

    def _aux(self, m: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.probe(m), (params - self.param_mean) / self.param_std)

    def pixel_weights(self, src: torch.Tensor, drv: torch.Tensor, mouth: torch.Tensor | None) -> torch.Tensor:
        """(B, 1, S, S) L1 weights: 1 + motion_weight * (smoothed |drv - src|) + mouth_weight * mouth box."""
        moved = F.avg_pool2d((drv - src).abs().mean(1, keepdim=True), 9, stride=1, padding=4)
        w = 1.0 + self.motion_weight * moved
        if self.mouth_weight > 0:
            # The mouth is ~2 % of the frame: without this the decoder draws openings and teeth weakly.
            if mouth is None:
                raise ValueError("--mouth-weight needs mouth boxes (synthetic data from `dystream synth`)")
            w = w + self.mouth_weight * box_mask(mouth, drv.shape[-1])
        return w

    def forward(
        self,
        src: torch.Tensor,
        drv: torch.Tensor,
        params: torch.Tensor | None,
        mouth: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """src/drv (B, 3, S, S), params (B, 13) normalised or None, mouth boxes (B, 4) pixels or None."""
        if self.aux_only:
            if self.probe is None or params is None:
                raise ValueError("--aux-only needs ground-truth params and --aux-weight > 0")
            aux = self._aux(self.ae.motion(drv), params)
            return aux, {"aux": aux.detach(), "loss": aux.detach(), "l1": aux.detach() * 0}
        out = self.ae.reconstruct(src, drv)
        pred = out["image"]
        w = self.pixel_weights(src, drv, mouth)
        l1 = _weighted_l1(pred, drv, w)
        ms = sum(F.l1_loss(F.avg_pool2d(pred, k), F.avg_pool2d(drv, k)) for k in (2, 4)) / 2.0
        gx = lambda x: x[..., :, 1:] - x[..., :, :-1]  # noqa: E731
        gy = lambda x: x[..., 1:, :] - x[..., :-1, :]  # noqa: E731
        grad = F.l1_loss(gx(pred), gx(drv)) + F.l1_loss(gy(pred), gy(drv))
        loss = l1 + 0.5 * ms + 0.5 * grad
        parts = {"l1": l1.detach(), "grad": grad.detach()}
        if self.synth_weight > 0:
            # The output blends the synthesis branch with the warped reference; once the blend saturates
            # on the reference, the synthesis gets no gradient and never learns what the reference lacks
            # (an open mouth's inside, teeth). Scoring the synthesis on its own keeps it learning.
            synth = _weighted_l1(out["generated"], drv, w)
            loss = loss + self.synth_weight * synth
            parts["synth"] = synth.detach()
        if self.probe is not None:
            if params is None:
                raise ValueError("the articulation probe needs ground-truth params (use --aux-weight 0)")
            aux = self._aux(out["m_driving"], params)
            loss = loss + self.aux_weight * aux
            parts["aux"] = aux.detach()
        if self.mouth_l2 > 0:
            # L1 is median-seeking: while the decoder places the lips a few pixels off, the median of the
            # mouth box's pixels is lip or skin and the dark opening is never drawn. The squared error is
            # mean-seeking, so a partly open mouth already pulls those pixels darker.
            if mouth is None:
                raise ValueError("--mouth-l2 needs mouth boxes (synthetic data from `dystream synth`)")
            box = box_mask(mouth, drv.shape[-1])
            ml2 = _box_mse(pred, drv, box)
            if self.synth_weight > 0:
                ml2 = ml2 + self.synth_weight * _box_mse(out["generated"], drv, box)
            loss = loss + self.mouth_l2 * ml2
            parts["mouth_l2"] = ml2.detach()
        parts["loss"] = loss.detach()
        return loss, parts


def _build(args) -> tuple[DyStreamModel, ModelConfig]:
    if args.init and args.init_motion:
        raise ValueError("--init and --init-motion are exclusive (--init already holds a motion encoder)")
    if args.init:
        model = load_checkpoint(args.init, render=True)
        return model.train(), model.cfg
    cfg = load_profile(args.profile)
    model = build_model(cfg, render=True, seed=args.seed)
    if args.init_motion:
        copy_motion_encoder(args.init_motion, model)
    return model, cfg


_MOTION_FIELDS = ("image_size", "motion_size", "motion_channels", "motion_extra_convs")
_MOTION_PREFIX = "autoencoder.motion."


def copy_motion_encoder(path: str | Path, dst: DyStreamModel) -> None:
    """Put the motion encoder of checkpoint ``path`` (and so its latent space) into ``dst``.

    Only the motion encoder's tensors are read, so the file may hold a decoder of another design; its
    motion-encoder config and every name and shape must match ``dst``'s. Lets a decoder of a new design
    train on a motion encoder (and latents, and a generator) that exist.
    """
    src = read_config(path)
    a, b = src.autoencoder, dst.cfg.autoencoder
    diff = [f for f in _MOTION_FIELDS if getattr(a, f) != getattr(b, f)]
    if src.latent_dim != dst.cfg.latent_dim:
        diff.append("latent_dim")
    if diff:
        raise ValueError(f"--init-motion: the checkpoint's motion encoder differs from the profile's: {diff}")
    with safe_open(str(path), framework="pt") as f:
        state = {k[len(_MOTION_PREFIX) :]: f.get_tensor(k) for k in f.keys() if k.startswith(_MOTION_PREFIX)}
    dst.autoencoder.motion.load_state_dict(state, strict=True)


def export_autoencoder(
    model: DyStreamModel, ema: EMA, path: Path, step: int, extra: dict | None = None
) -> Path:
    """Full-model checkpoint (``load_pipeline`` format) carrying the autoencoder's EMA weights."""
    out = copy.deepcopy(model).cpu()
    ema.copy_to(out.autoencoder)
    meta = {"stage": "autoencoder", "step": str(step)}
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    return save_checkpoint(out, path, extra=meta)


def train_autoencoder(args) -> int:
    info = init_distributed(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    state_path = out_dir / "state.safetensors"
    log = JsonLog(out_dir / "log.jsonl", enabled=info.main)
    try:
        model, cfg = _build(args)
        size = cfg.autoencoder.image_size
        bank = FrameBank(args.data, size=size, max_conversations=args.max_conversations, keep_audio=False)
        aux = args.aux_weight if bank.has_params else 0.0
        loss_mod = AELoss(
            model.autoencoder,
            cfg.latent_dim,
            aux,
            args.motion_weight,
            args.seed,
            param_stats=bank.param_stats() if aux > 0 else None,
            mouth_weight=args.mouth_weight,
            synth_weight=args.synth_weight,
            mouth_l2=args.mouth_l2,
        ).to(info.device)
        if args.aux_only:
            # Motion-encoder pre-training: articulation probe only, no decoder (synthetic data).
            loss_mod.aux_only = True
            for prm in list(model.autoencoder.appearance.parameters()) + list(
                model.autoencoder.decoder.parameters()
            ):
                prm.requires_grad_(False)
        if args.freeze_motion:
            # Keep the motion encoder (and so the latent space) fixed, e.g. while a generator trains on
            # latents it produced; only appearance encoder and decoder learn.
            for prm in model.autoencoder.motion.parameters():
                prm.requires_grad_(False)
        ema = EMA(model.autoencoder, args.ema)
        trainable = [p for p in loss_mod.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
        step = 0
        if args.resume and state_path.is_file():
            step, _ = load_state(state_path, module=loss_mod, ema=ema, optimizer=opt)
            if info.main:
                print(f"resumed from {state_path} at step {step}")
        val = None
        if args.val_data and info.main:
            vbank = FrameBank(args.val_data, size=size, keep_audio=False)
            val = validation_pairs(vbank, args.val_pairs)
        ddp = loss_mod
        if info.distributed:
            ddp = nn.parallel.DistributedDataParallel(
                loss_mod, device_ids=[info.device.index] if info.device.type == "cuda" else None
            )
        run_meta = {
            "kind": "autoencoder",
            "args": {k: str(v) for k, v in vars(args).items() if k != "func"},
            "world": info.world,
        }
        if info.main:
            log.write(
                event="start",
                step=step,
                world=info.world,
                conversations=len(bank),
                params=sum(p.numel() for p in model.autoencoder.parameters()),
            )
        bar = tqdm(
            total=args.steps,
            initial=step,
            desc="autoencoder",
            unit="step",
            disable=not info.main,
            dynamic_ncols=True,
        )
        t_start = time.time()
        acc: dict[str, float] = {}
        best = -math.inf
        use_boxes = args.mouth_weight > 0 or args.mouth_l2 > 0
        while step < args.steps:
            rng = np.random.default_rng([args.seed, info.rank, step])
            src, drv, par, box = sample_pairs(bank, rng, args.batch, args.ref_fraction)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, args.lr, args.warmup, args.steps)
            ddp.train()
            loss, parts = ddp(
                to_tensor(src, info.device),
                to_tensor(drv, info.device),
                None if par is None or aux == 0 else torch.from_numpy(par).to(info.device),
                None if box is None or not use_boxes else torch.from_numpy(box).to(info.device),
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(trainable, args.clip)
            opt.step()
            ema.update(model.autoencoder)
            step += 1
            for k, v in parts.items():
                acc[k] = acc.get(k, 0.0) + float(v)
            acc["n"] = acc.get("n", 0.0) + 1
            bar.update(1)
            if step % args.log_every == 0 or step == args.steps:
                n = acc.pop("n")
                avg = all_mean({k: v / n for k, v in acc.items()}, info)
                acc = {}
                if info.main:
                    bar.set_postfix(loss=f"{avg['loss']:.4f}", l1=f"{avg['l1']:.4f}")
                    log.write(
                        event="train",
                        step=step,
                        lr=opt.param_groups[0]["lr"],
                        grad_norm=float(gnorm),
                        elapsed_s=round(time.time() - t_start, 1),
                        **avg,
                    )
            last = step == args.steps
            if info.main and val is not None and (step % args.val_every == 0 or last):
                ev = copy.deepcopy(model.autoencoder)
                ema.copy_to(ev)
                res = validate(ev, *val)
                best = max(best, res["psnr"])
                mouth = {"mouth_psnr": res["mouth_psnr"]} if "mouth_psnr" in res else {}
                log.write(
                    event="val",
                    step=step,
                    psnr=res["psnr"],
                    psnr_min=res["psnr_min"],
                    **mouth,
                    elapsed_s=round(time.time() - t_start, 1),
                )
                extra = f", mouth {res['mouth_psnr']:.2f}" if mouth else ""
                bar.write(
                    f"step {step}: held-out PSNR {res['psnr']:.2f} dB (min {res['psnr_min']:.2f}{extra})"
                )
            if info.main and (step % args.save_every == 0 or last):
                save_state(
                    state_path,
                    module=loss_mod,
                    ema=ema,
                    optimizer=opt,
                    step=step,
                    meta={**run_meta, "config": cfg.to_dict()},
                )
                export_autoencoder(model, ema, out_dir / "autoencoder.safetensors", step)
            barrier(info)
        bar.close()
        return finish_run(loss_mod, info, log, step, t_start,
                          f"autoencoder: {step} steps; checkpoint {out_dir / 'autoencoder.safetensors'}")
    finally:
        cleanup_distributed()


def add_arguments(p) -> None:
    p.add_argument("--data", required=True, help="training data: a `dystream synth` dir or a video folder")
    p.add_argument("--val-data", default=None, help="held-out data for PSNR (held-out identities)")
    p.add_argument("--out", required=True, help="run directory (state, log, checkpoint)")
    p.add_argument("--profile", default="lite", help="model profile when not --init (default lite)")
    p.add_argument("--init", default=None, help="start from this dystream checkpoint (fine-tuning)")
    p.add_argument(
        "--init-motion",
        default=None,
        help="build --profile afresh but take the motion encoder from this checkpoint (use with "
        "--freeze-motion to train a new decoder on an existing latent space)",
    )
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=8, help="pairs per step per process")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip")
    p.add_argument("--ema", type=float, default=0.995, help="EMA decay of the exported weights")
    p.add_argument(
        "--aux-weight",
        type=float,
        default=1.0,
        help="weight of the articulation probe on the latent (synthetic data only; 0 = off)",
    )
    p.add_argument("--motion-weight", type=float, default=10.0, help="L1 up-weighting of regions that moved")
    p.add_argument(
        "--mouth-weight",
        type=float,
        default=0.0,
        help="L1 up-weighting of the mouth box (synthetic data; the renderer knows where the mouth is)",
    )
    p.add_argument(
        "--synth-weight",
        type=float,
        default=0.0,
        help="weight of an L1 on the decoder's synthesis branch alone (before the blend with the warped "
        "reference), so it learns to draw what the reference lacks",
    )
    p.add_argument(
        "--mouth-l2",
        type=float,
        default=0.0,
        help="weight of a squared error inside the mouth box (synthetic data; mean-seeking, so the opening "
        "is drawn while the lips are still placed imprecisely)",
    )
    p.add_argument("--ref-fraction", type=float, default=0.5, help="share of sources that are the reference")
    p.add_argument("--max-conversations", type=int, default=None)
    p.add_argument("--val-pairs", type=int, default=48)
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (0 = default)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--resume", action="store_true", help="continue from OUT/state.safetensors")
    p.add_argument(
        "--aux-only",
        action="store_true",
        help="pre-train the motion encoder on the articulation probe only (no decoder)",
    )
    p.add_argument(
        "--freeze-motion",
        action="store_true",
        help="keep the motion encoder fixed (train appearance encoder + decoder only)",
    )
