"""``dystream train generator``: audio encoder + autoregressive generator + flow-matching head.

Trained on windows of ``--frames`` consecutive frames of the cached latent set (``dystream train
extract``): both channels' log-mels and the avatar's motion latents. The recipe is the published one
(see ``dystream_ros.model.training``): the generator runs over the whole window under the same banded
sliding-window mask the KV ring gives at inference; the history it conditions on is corrupted (noisy
history, against exposure bias); the anchor is a latent drawn from the last ``anchor_last`` (10) frames
of the window (the reference latent m0 at inference), or with ``--anchor reference`` the conversation's
reference latent m0 itself, so training conditions on the anchor inference uses; speaker audio,
listener audio and anchor are each replaced by learned null embeddings per frame (CFG dropout) so
guidance can null them at inference;
the flow head learns the velocity of a rectified flow from N(0, I) to the latent. Windows that start at
frame 0 condition their first token on the reference latent, as a session does.

An EMA of the weights is kept (decay ``--ema``), validated on held-out conversations and exported:
``OUT/model.safetensors`` is the full pipeline (the autoencoder from ``--autoencoder`` + the EMA
audio encoder, generator and head) in the format ``load_pipeline`` loads.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dystream_ros.config import AudioConfig
from dystream_ros.model.audio import AudioEncoder, LogMel, hz_to_mel, mel_centres
from dystream_ros.model.checkpoint import load_checkpoint, save_checkpoint
from dystream_ros.model.dystream import DyStreamModel
from dystream_ros.model.training import flow_matching_loss
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
from dystream_ros.train.latents import LatentSet, fit_head_basis, motion_fingerprint

__all__ = [
    "ANCHORS",
    "GenLoss",
    "augment_mels",
    "encode_mels",
    "export_articulation_model",
    "export_model",
    "sample_windows",
    "train_generator",
]


#: Where a training window's anchor comes from (``--anchor``, :class:`GenLoss`).
ANCHORS = ("window", "reference")


def encode_mels(enc: AudioEncoder, mels: torch.Tensor) -> torch.Tensor:
    """The audio encoder after its log-mel front end: mels (B, 2, n_mels, M) -> features (B, T, 2, F).

    ``M = window_mels + hops_per_frame * (T - 1)``. Equals ``enc.encode_sequence`` on the waveform
    those mels were computed from (tested), without recomputing the STFT every step.
    """
    cfg = enc.cfg
    b, ch, nm, m = mels.shape
    x = enc.in_proj(mels.reshape(b * ch, nm, m))
    c = x.shape[1]
    x = (x.view(b, ch, c, m) + enc.channel_embed[:, :, None]).view(b * ch, c, m)
    for blk in enc.blocks:
        x = blk(x)
    h = enc.look_norm(x.transpose(1, 2)).reshape(b, ch, -1, c)
    h = h.unfold(2, cfg.lookahead_frames, cfg.hops_per_frame)  # (B, 2, T, C, K)
    return enc._lookahead(h.transpose(-1, -2)).transpose(1, 2)


def sample_windows(
    data: LatentSet, rng: np.random.Generator, batch: int, frames: int, start_fraction: float = 0.1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``batch`` random windows: mels (B, 2, n_mels, M), motion (B, T + 1, D) and the reference latent
    of each window's conversation (B, D) (m0: what a session anchors on).

    ``motion[:, 0]`` is the latent before the window (the reference latent when the window starts at
    frame 0, as in a session); a ``start_fraction`` of the windows start at frame 0.
    """
    a = data.index["audio"]
    hops = a["sample_rate"] * a["hop_ms"] // 1000
    hpf = a["sample_rate"] // a["fps"] // hops
    mel_len = _window_mels(a) + hpf * (frames - 1)
    mels, motion, refs = [], [], []
    for _ in range(batch):
        c = int(rng.integers(len(data)))
        lat = data.latents[c]
        n = len(lat)
        if n < frames:
            raise ValueError(f"{data.names[c]}: {n} frames < window of {frames}")
        f0 = 0 if rng.random() < start_fraction else int(rng.integers(0, n - frames + 1))
        prev = data.refs[c] if f0 == 0 else lat[f0 - 1]
        motion.append(np.concatenate([prev[None], lat[f0 : f0 + frames]]))
        mels.append(data.mels[c][:, :, hpf * f0 : hpf * f0 + mel_len])
        refs.append(data.refs[c])
    return np.stack(mels), np.stack(motion), np.stack(refs).astype(np.float32)


def _window_mels(a: dict) -> int:
    return AudioConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in a.items()}).window_mels


def column_weights(specs: list[str], cfg) -> tuple[float, ...]:
    """``["jaw_open=3", ...]`` -> one loss weight per column of an articulation model (others 1)."""
    from dystream_ros.data.face import ARTICULATION_FIELDS

    if cfg.motion != "articulation":
        raise ValueError("--loss-weight names articulation columns: it needs an articulation set "
                         "(train articulation-set)")
    w = dict.fromkeys(ARTICULATION_FIELDS, 1.0)
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or name not in w:
            raise ValueError(f"--loss-weight {spec!r}: expected FIELD=W with FIELD one of "
                             f"{', '.join(ARTICULATION_FIELDS)}")
        try:
            w[name] = float(value)
        except ValueError:
            raise ValueError(f"--loss-weight {spec!r}: W must be a number") from None
    return tuple(w.values())


def augment_mels(mels: np.ndarray, rng: np.random.Generator, audio: AudioConfig, warp: float,
                 gain_db: float) -> np.ndarray:
    """Speaker variation for log-mel windows (B, 2, n_mels, M), drawn per window and channel: a
    vocal-tract-length warp (the spectrum's frequency axis scaled by ``alpha ~ U[1 - warp, 1 + warp]``, so
    the filter at f takes the energy the voice had at ``f / alpha``; bins past the band take the edge
    filter's) and a gain ``~ U[-gain_db, gain_db]`` dB. Works on the filter energies (the inverse of
    :class:`LogMel`'s log), so silence stays at the floor. Returns float32, the input's shape."""
    b, ch, nm, m = mels.shape
    if warp <= 0 and gain_db <= 0:
        return mels
    e = np.maximum(np.exp((mels.astype(np.float64) - LogMel.OFFSET) / LogMel.SCALE) - LogMel.FLOOR, 0.0)
    e = e.reshape(b * ch, nm, m)
    if warp > 0:
        alpha = rng.uniform(1.0 - warp, 1.0 + warp, size=b * ch)
        centres = mel_centres(nm, audio.fmin, audio.fmax)
        # fractional filter index of f / alpha for each filter's centre f (clamped to the band's edges)
        pos = np.interp(hz_to_mel(centres[None] / alpha[:, None]), hz_to_mel(centres), np.arange(nm))
        i0 = np.minimum(np.floor(pos).astype(np.int64), nm - 2)
        w = (pos - i0)[:, :, None]
        rows = np.arange(b * ch)[:, None]
        e = e[rows, i0] * (1.0 - w) + e[rows, i0 + 1] * w
    if gain_db > 0:
        e = e * 10.0 ** (rng.uniform(-gain_db, gain_db, size=(b * ch, 1, 1)) / 10.0)
    out = np.log(e + LogMel.FLOOR) * LogMel.SCALE + LogMel.OFFSET
    return out.reshape(b, ch, nm, m).astype(np.float32)


class GenLoss(nn.Module):
    """Flow-matching loss of (audio encoder, generator, head); the module DDP wraps.

    Same recipe as :func:`dystream_ros.model.training.generator_loss`, on cached log-mels. ``anchor``:
    ``"window"`` (the published recipe: a latent of the window's last frames) or ``"reference"`` (the
    conversation's reference latent m0, the anchor a session gives the model at inference).
    """

    def __init__(self, model: DyStreamModel, anchor: str = "window") -> None:
        super().__init__()
        if anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
        self.anchor = anchor
        self.cfg = model.cfg
        self.audio = model.audio
        self.generator = model.generator
        self.head = model.head

    def forward(
        self, mels: torch.Tensor, motion: torch.Tensor, refs: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """mels (B, 2, n_mels, M), motion (B, T + 1, D), refs (B, D): see :func:`sample_windows`."""
        t = motion.shape[1] - 1
        feats = encode_mels(self.audio, mels)
        if feats.shape[1] != t:
            raise ValueError(f"mels give {feats.shape[1]} frames, motion {t}")
        anchor = refs if self.anchor == "reference" else None
        loss, _ = flow_matching_loss(self.cfg, self.generator, self.head, feats, motion, generator, anchor)
        return loss, {"loss": loss.detach()}


def _trainable(model: DyStreamModel) -> nn.ModuleDict:
    return nn.ModuleDict({"audio": model.audio, "generator": model.generator, "head": model.head})


def export_model(
    trainable_state: dict[str, torch.Tensor],
    autoencoder: str | Path,
    path: str | Path,
    fingerprint: str | None,
    extra: dict | None = None,
    sampler: dict | None = None,
    head_basis: np.ndarray | None = None,
    train: dict | None = None,
) -> Path:
    """Full pipeline checkpoint: the autoencoder file's weights + ``trainable_state`` (EMA weights)
    (+ the latent's head-pose directions, see :func:`dystream_ros.train.latents.fit_head_basis`);
    ``sampler`` and ``train`` replace fields of the file's config (the training recipe used)."""
    model = load_checkpoint(autoencoder, render=True)
    if fingerprint is not None and motion_fingerprint(model) != fingerprint:
        raise ValueError(
            f"{autoencoder}: its motion encoder is not the one the latents were extracted with "
            f"(fingerprint {motion_fingerprint(model)} != {fingerprint})"
        )
    _trainable(model).load_state_dict(trainable_state, strict=True)
    if head_basis is not None:
        model.head_basis.copy_(torch.as_tensor(head_basis, dtype=torch.float32))
    if sampler:
        model.cfg = model.cfg.replace(sampler=sampler)
    if train:
        model.cfg = model.cfg.replace(train=train)
    meta = {"stage": "full"}
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    return save_checkpoint(model, path, extra=meta)


def export_articulation_model(
    trainable_state: dict[str, torch.Tensor],
    model: DyStreamModel,
    path: str | Path,
    extra: dict | None = None,
    sampler: dict | None = None,
) -> Path:
    """Checkpoint of an articulation model: ``model`` (its standardisation and head axes) with
    ``trainable_state`` (EMA weights) for audio encoder, generator and head; saved latents-only."""
    out = copy.deepcopy(model).cpu()
    _trainable(out).load_state_dict(trainable_state, strict=True)
    if sampler:
        out.cfg = out.cfg.replace(sampler=sampler)
    meta = {"stage": "full", "motion": "articulation"}
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    return save_checkpoint(out, path, extra=meta)


@torch.no_grad()
def init_from_checkpoint(model: DyStreamModel, path: str | Path) -> None:
    """Load the audio encoder, generator and head of the checkpoint ``path`` into ``model`` (fine-tuning).

    The checkpoint must have been trained for the same motion space: the same sizes (every tensor's
    name and shape, strictly), and for an articulation model the same standardisation and rest pose.
    Raises ``ValueError`` otherwise.
    """
    src = load_checkpoint(path, render=False)
    if src.cfg.motion != model.cfg.motion:
        raise ValueError(f"{path}: motion space {src.cfg.motion!r}, this run trains {model.cfg.motion!r}")
    if model.cfg.motion == "articulation":
        for name, a in model.articulation.state_dict().items():
            b = src.articulation.state_dict()[name]
            if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-5, atol=1e-6):
                raise ValueError(
                    f"{path}: its articulation standardisation ({name}) is not this set's; "
                    "build the set with --stats-from the set the checkpoint was trained on"
                )
    elif motion_fingerprint(src) != motion_fingerprint(model):
        raise ValueError(f"{path}: its motion encoder is not the one of this run's latents")
    try:
        _trainable(model).load_state_dict(_trainable(src).state_dict(), strict=True)
    except RuntimeError as e:  # shape mismatch: another profile's sizes
        raise ValueError(f"{path}: its networks do not have this run's sizes ({e})") from None


@torch.no_grad()
def validation_loss(
    loss_mod: GenLoss, windows: tuple[np.ndarray, np.ndarray, np.ndarray], seed: int = 0
) -> float:
    """Mean loss on fixed held-out windows (:func:`sample_windows`) with fixed noise/dropout draws."""
    loss_mod.eval()
    g = torch.Generator().manual_seed(seed)
    dev = next(loss_mod.parameters()).device
    n = len(windows[0])
    tot = 0.0
    for i in range(0, n, 8):
        loss, _ = loss_mod(*(torch.from_numpy(w[i : i + 8]).to(dev) for w in windows), g)
        tot += float(loss) * min(8, n - i)
    return tot / n


def train_generator(args) -> int:
    info = init_distributed(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    state_path = out_dir / "state.safetensors"
    log = JsonLog(out_dir / "log.jsonl", enabled=info.main)
    try:
        data = LatentSet(args.latents, args.max_conversations)
        articulation = data.index.get("motion") == "articulation"
        if articulation:
            # The articulation motion space (train articulation-set): no autoencoder; a fresh model from
            # the run seed carrying the set's standardisation.
            from dystream_ros.train.articulation import build_articulation_model

            if args.autoencoder:
                raise ValueError("--autoencoder does not apply to an articulation set")
            ae_path = None
            model = build_articulation_model(data.index, args.profile, seed=args.seed).train()
        else:
            ae_path = Path(args.autoencoder) if args.autoencoder else data.root / data.index["autoencoder"]
            model = load_checkpoint(ae_path, render=False).train()
            if motion_fingerprint(model) != data.fingerprint:
                raise ValueError(
                    f"{ae_path} does not match the latent set {' '.join(args.latents)} (motion fingerprint)"
                )
        if not articulation and (not args.resume or not state_path.is_file()):
            # Fresh generator weights from the run seed (the autoencoder file may carry any).
            from dystream_ros.model.dystream import build_model

            fresh = build_model(model.cfg, render=False, seed=args.seed)
            for name in ("audio", "generator", "head"):
                getattr(model, name).load_state_dict(getattr(fresh, name).state_dict())
        if args.init and not (args.resume and state_path.is_file()):
            init_from_checkpoint(model, args.init)
            if info.main:
                print(f"initialised audio encoder, generator and head from {args.init}")
        if args.history_noise is not None:  # the recipe's noisy history (TrainConfig validates the values)
            p_hit, p_max = args.history_noise
            model.cfg = model.cfg.replace(train={"history_noise_p": p_hit, "history_noise_max": p_max})
        if args.voice_augment is not None:  # recorded in the exported config like the noisy history
            warp, gain_db = args.voice_augment
            model.cfg = model.cfg.replace(train={"voice_warp": warp, "voice_gain_db": gain_db})
        if args.loss_weight:
            model.cfg = model.cfg.replace(train={"loss_weight": column_weights(args.loss_weight, model.cfg)})
        tcfg = model.cfg.train
        for p in model.autoencoder.parameters():
            p.requires_grad_(False)
        trainable = _trainable(model)
        loss_mod = GenLoss(model, args.anchor).to(info.device)
        ema = EMA(trainable, args.ema)
        opt = torch.optim.AdamW(trainable.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
        step = 0
        if args.resume and state_path.is_file():
            step, _ = load_state(state_path, module=trainable, ema=ema, optimizer=opt)
            if info.main:
                print(f"resumed from {state_path} at step {step}")
        val = None
        if args.val_latents and info.main:
            vset = LatentSet(args.val_latents)
            if vset.fingerprint != data.fingerprint:
                raise ValueError("validation latents come from a different motion encoder")
            val = sample_windows(vset, np.random.default_rng(1234), args.val_windows, args.frames, 0.25)
        ddp = loss_mod
        if info.distributed:
            ddp = nn.parallel.DistributedDataParallel(
                loss_mod, device_ids=[info.device.index] if info.device.type == "cuda" else None
            )
        run_meta = {
            "kind": "generator",
            "args": {k: str(v) for k, v in vars(args).items() if k != "func"},
            "world": info.world,
            "config": model.cfg.to_dict(),
        }
        sampler = {}
        if args.guidance is not None:
            gs, gl, ga = args.guidance
            sampler.update(guidance_speaker=gs, guidance_listener=gl, guidance_anchor=ga)
        if args.temperature is not None:
            sampler["temperature"] = args.temperature
        if args.head_temperature is not None:
            sampler["head_temperature"] = args.head_temperature
        if args.head_guidance is not None:
            sampler["guidance_head"] = args.head_guidance

        # The latent's head-pose directions, for SamplerConfig.head_temperature (synthetic data only;
        # only the main process exports).
        head_basis = None
        if info.main and data.params is not None and not articulation:
            head_basis = fit_head_basis(data.latents, data.params)

        def export(step_: int) -> None:
            if articulation:  # the model's own (fixed) tensors + the EMA weights
                export_articulation_model(
                    ema.state_dict(), model, out_dir / "model.safetensors",
                    extra={"step": step_, "seed": args.seed, "fingerprint": data.fingerprint},
                    sampler=sampler,
                )
                return
            export_model(
                ema.state_dict(),
                ae_path,
                out_dir / "model.safetensors",
                data.fingerprint,
                extra={"step": step_, "seed": args.seed},
                sampler=sampler,
                head_basis=head_basis,
                train=dataclasses.asdict(model.cfg.train),
            )

        if args.export_only:
            if info.main:
                export(step)
                print(f"exported step {step} -> {out_dir / 'model.safetensors'}")
            return 0
        if info.main:
            log.write(
                event="start",
                step=step,
                world=info.world,
                conversations=len(data),
                params=sum(p.numel() for p in trainable.parameters()),
            )
        bar = tqdm(
            total=args.steps,
            initial=step,
            desc="generator",
            unit="step",
            disable=not info.main,
            dynamic_ncols=True,
        )
        t_start = time.time()
        acc: dict[str, float] = {}
        while step < args.steps:
            rng = np.random.default_rng([args.seed, info.rank, step])
            mels, motion, refs = sample_windows(data, rng, args.batch, args.frames, args.start_fraction)
            mels = augment_mels(mels, rng, model.cfg.audio, tcfg.voice_warp, tcfg.voice_gain_db)
            windows = (mels, motion, refs)
            g = torch.Generator(device=info.device).manual_seed(int(rng.integers(2**62)))
            for grp in opt.param_groups:
                grp["lr"] = lr_at(step, args.lr, args.warmup, args.steps)
            ddp.train()
            loss, parts = ddp(*(torch.from_numpy(w).to(info.device) for w in windows), g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(trainable.parameters(), args.clip)
            opt.step()
            ema.update(trainable)
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
                    bar.set_postfix(loss=f"{avg['loss']:.4f}")
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
                ev = copy.deepcopy(loss_mod)
                ema.copy_to(_trainable_of(ev))
                vl = validation_loss(ev, val)
                log.write(event="val", step=step, val_loss=vl, elapsed_s=round(time.time() - t_start, 1))
                bar.write(f"step {step}: held-out loss (EMA) {vl:.4f}")
            if info.main and (step % args.save_every == 0 or last):
                save_state(state_path, module=trainable, ema=ema, optimizer=opt, step=step, meta=run_meta)
                export(step)
            barrier(info)
        bar.close()
        return finish_run(trainable, info, log, step, t_start,
                          f"generator: {step} steps; pipeline checkpoint {out_dir / 'model.safetensors'}")
    finally:
        cleanup_distributed()


def _trainable_of(loss_mod: GenLoss) -> nn.ModuleDict:
    return nn.ModuleDict({"audio": loss_mod.audio, "generator": loss_mod.generator, "head": loss_mod.head})


def add_arguments(p) -> None:
    p.add_argument(
        "--latents",
        required=True,
        nargs="+",
        help="latent set(s) of the training conversations (train extract / articulation-set); several "
        "sets of the same motion encoder or standardisation are trained on together",
    )
    p.add_argument("--val-latents", default=None, help="latent set of held-out conversations")
    p.add_argument(
        "--autoencoder",
        default=None,
        help="autoencoder checkpoint to build the pipeline from (default: the latent set's)",
    )
    p.add_argument("--out", required=True, help="run directory (state, log, model.safetensors)")
    p.add_argument(
        "--profile",
        default="lite",
        help="sizes of an articulation model (articulation sets only): a profile name or a checkpoint file",
    )
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=16, help="windows per step per process")
    p.add_argument("--frames", type=int, default=100, help="frames per training window")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--start-fraction", type=float, default=0.1, help="share of windows starting at frame 0")
    p.add_argument(
        "--history-noise",
        type=float,
        nargs=2,
        default=None,
        metavar=("P", "MAX"),
        help="noisy history: the share of history frames corrupted and the largest noise strength "
        "(default: the profile's TrainConfig, 0.5 0.5)",
    )
    p.add_argument(
        "--voice-augment",
        type=float,
        nargs=2,
        default=None,
        metavar=("WARP", "GAIN_DB"),
        help="speaker variation of the training audio, per window and channel: a frequency-axis warp of "
        "up to +-WARP (e.g. 0.15) and a gain of up to +-GAIN_DB dB (default: the profile's TrainConfig, off)",
    )
    p.add_argument(
        "--loss-weight",
        nargs="+",
        default=None,
        metavar="FIELD=W",
        help="articulation models: weigh these columns' velocity loss by W (others 1; scaled to mean 1), "
        "e.g. jaw_open=3 lip_close=3",
    )
    p.add_argument(
        "--anchor",
        choices=ANCHORS,
        default="window",
        help="the anchor each window trains with: 'window' (a latent of its last frames, the published "
        "recipe) or 'reference' (its conversation's reference latent m0, what a session anchors on)",
    )
    p.add_argument(
        "--guidance",
        type=float,
        nargs=3,
        default=None,
        metavar=("SPEAKER", "LISTENER", "ANCHOR"),
        help="guidance weights written into the exported config (default: the profile's)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="sampling temperature written into the exported config (default: the profile's)",
    )
    p.add_argument(
        "--head-temperature",
        type=float,
        default=None,
        help="sampling temperature along the head-pose directions of the latent, written into the exported "
        "config (default: the profile's)",
    )
    p.add_argument(
        "--head-guidance",
        type=float,
        default=None,
        help="extra listener guidance along the head-pose directions, written into the exported config "
        "(SamplerConfig.guidance_head; default: the profile's, 0)",
    )
    p.add_argument("--max-conversations", type=int, default=None)
    p.add_argument("--val-windows", type=int, default=32)
    p.add_argument("--val-every", type=int, default=200)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--resume", action="store_true", help="continue from OUT/state.safetensors")
    p.add_argument(
        "--init",
        default=None,
        metavar="CHECKPOINT",
        help="start audio encoder, generator and head from this full checkpoint of the same motion space "
        "and sizes (fine-tuning; a fresh optimizer and schedule); ignored when --resume finds a state",
    )
    p.add_argument(
        "--export-only", action="store_true", help="with --resume: only re-export model.safetensors"
    )
