"""Shared training machinery: distributed set-up (torchrun DDP), EMA, resumable safetensors state.

Multi-process training uses PyTorch's own engine: launch with ``torchrun --nproc-per-node N -m
dystream_ros.cli train ...`` (or ``python -m torch.distributed.run``); each process reads the usual
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` environment, joins a process group (NCCL on CUDA, gloo on CPU)
and wraps its loss module in :class:`torch.nn.parallel.DistributedDataParallel`. Without those
variables everything runs in one process. ``--batch`` is per process.

Training state (``<out>/state.safetensors``, written atomically) holds the trainable weights
(``model.``), their EMA (``ema.``) and the optimiser state (``optim.``), with the step, the model config
and the run's arguments in the metadata, so ``--resume`` continues exactly where the run stopped.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

__all__ = [
    "EMA",
    "DistInfo",
    "JsonLog",
    "all_mean",
    "barrier",
    "cleanup_distributed",
    "init_distributed",
    "load_state",
    "lr_at",
    "ranks_in_sync",
    "save_state",
]

STATE_FORMAT = "dystream_ros-train/1"


# -- distributed ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group when launched by torchrun; otherwise a single process.

    ``device``: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    dev = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, world=world, local_rank=local, device=dev)


def ranks_in_sync(module: nn.Module, info: DistInfo) -> bool:
    """True when every rank holds bit-identical parameters (DDP keeps them so; checked at the end)."""
    if not info.distributed:
        return True
    v = torch.stack([p.detach().double().sum() for p in module.parameters()]).to(
        info.device if info.device.type == "cuda" else "cpu"
    )
    hi, lo = v.clone(), v.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    return bool(torch.equal(hi, lo))


def finish_run(module: nn.Module, info: DistInfo, log, step: int, t_start: float, summary: str) -> int:
    """End of a training run: check that all ranks hold the same weights, log it, print ``summary``."""
    in_sync = ranks_in_sync(module, info)
    if info.main:
        log.write(event="done", step=step, elapsed_s=round(time.time() - t_start, 1), world=info.world,
                  ranks_in_sync=in_sync)
        print(summary)
    if not in_sync:
        raise RuntimeError("DDP ranks ended with different weights")
    # every rank leaves together: a rank that tore its process group down while the main one was still
    # logging aborted once in gloo's teardown ("terminate called without an active exception")
    barrier(info)
    return 0


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_mean(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average scalar metrics over ranks (identity in one process)."""
    if not info.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if info.device.type == "cuda":
        t = t.to(info.device)
    dist.all_reduce(t)
    t /= info.world
    return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}


# -- EMA -----------------------------------------------------------------------------------------


class EMA:
    """Exponential moving average of a module's parameters (and a copy of its buffers).

    Decay warms up as ``min(decay, (1 + n) / (10 + n))`` (n = updates so far), as in the published
    recipe, so early averages are not dominated by the random initialisation.
    """

    def __init__(self, module: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """One EMA step. Frozen parameters (``requires_grad=False``) are copied exactly, not averaged."""
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        frozen = {k for k, p in module.named_parameters() if not p.requires_grad}
        for k, v in module.state_dict().items():
            s = self.shadow[k]
            if v.dtype.is_floating_point and k not in frozen:
                s.mul_(d).add_(v.detach(), alpha=1.0 - d)
            else:
                s.copy_(v)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def copy_to(self, module: nn.Module) -> None:
        module.load_state_dict(self.shadow, strict=True)


# -- learning rate -------------------------------------------------------------------------------


def lr_at(step: int, base: float, warmup: int, total: int, final_ratio: float = 0.1) -> float:
    """Linear warm-up, then cosine decay to ``final_ratio * base`` at ``total`` steps."""
    if step < warmup:
        return base * (step + 1) / max(warmup, 1)
    p = min(1.0, (step - warmup) / max(total - warmup, 1))
    return base * (final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * p)))


# -- state files -----------------------------------------------------------------------------------


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(v)
            tensors[f"optim.{idx}.{k}"] = t.detach().to("cpu").contiguous()
    return tensors, json.dumps(sd["param_groups"])


def save_state(
    path: str | Path,
    *,
    module: nn.Module,
    ema: EMA | None,
    optimizer: torch.optim.Optimizer,
    step: int,
    meta: dict[str, Any],
) -> Path:
    """Write the resumable training state atomically (``path`` is replaced only when complete)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().to("cpu").contiguous() for k, v in ema.shadow.items()})
    opt_tensors, groups = _flatten_optimizer(optimizer)
    tensors.update(opt_tensors)
    metadata = {
        "format": STATE_FORMAT,
        "step": str(int(step)),
        "ema_updates": str(ema.updates if ema is not None else 0),
        "param_groups": groups,
        "meta": json.dumps(meta, sort_keys=True, default=str),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def load_state(
    path: str | Path,
    *,
    module: nn.Module,
    ema: EMA | None,
    optimizer: torch.optim.Optimizer | None,
) -> tuple[int, dict[str, Any]]:
    """Restore a :func:`save_state` file into ``module``/``ema``/``optimizer``; returns (step, meta)."""
    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        md = f.metadata() or {}
        if md.get("format") != STATE_FORMAT:
            raise ValueError(f"{path}: not a dystream training state (format={md.get('format')!r})")
        keys = list(f.keys())
        model_sd = {k[6:]: f.get_tensor(k) for k in keys if k.startswith("model.")}
        ema_sd = {k[4:]: f.get_tensor(k) for k in keys if k.startswith("ema.")}
        opt_t = {k[6:]: f.get_tensor(k) for k in keys if k.startswith("optim.")}
    module.load_state_dict(model_sd, strict=True)
    if ema is not None:
        if not ema_sd:
            raise ValueError(f"{path}: has no EMA weights")
        for k, v in ema_sd.items():
            ema.shadow[k].copy_(v)
        ema.updates = int(md.get("ema_updates", "0"))
    if optimizer is not None:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in opt_t.items():
            idx, name = k.split(".", 1)
            state.setdefault(int(idx), {})[name] = v
        optimizer.load_state_dict({"state": state, "param_groups": json.loads(md["param_groups"])})
    return int(md["step"]), json.loads(md.get("meta", "{}"))


class JsonLog:
    """Append-only JSON-lines log (``<out>/log.jsonl``), written by rank 0 only."""

    def __init__(self, path: str | Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.t0 = time.time()
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record: Any) -> None:
        if not self.enabled:
            return
        record.setdefault("time", round(time.time(), 3))
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record, sort_keys=True, default=float) + "\n")
