"""``dystream convert-official`` and ``dystream parity-io``.

``convert-official --generator last.ckpt --autoencoder AE.ckpt --out official.safetensors`` converts the
released checkpoints strictly (:mod:`dystream_ros.official.convert`) and prints what was kept and dropped.

``parity-io --gen G --ae A --inputs in.npz --out out.npz --groups audio,head,step,e2e,ae --workdir W`` is
the candidate command of the parity harness (``shared/official``): it converts the checkpoints the groups
need (failing, naming the key, on any mismatch, before computing anything) and writes this
implementation's outputs for the harness's fixed inputs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["register"]

GEN_GROUPS = ("audio", "head", "step", "e2e")
ALL_GROUPS = (*GEN_GROUPS, "ae")


def _convert_cmd(args: argparse.Namespace) -> int:
    from dystream_ros.official.convert import convert
    from dystream_ros.official.model import OfficialCheckpointError

    t0 = time.perf_counter()
    try:
        report = convert(args.generator, args.autoencoder, args.out)
    except (OfficialCheckpointError, FileNotFoundError) as e:
        print(f"convert-official: {e}", file=sys.stderr)
        return 2
    for line in report.lines():
        print(line)
    print(f"wrote {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0


def _load_parts(gen: str | None, ae: str | None, workdir: Path):
    """Convert what is needed and return a model with those parts loaded (others random, unused)."""
    import torch

    from dystream_ros.official.config import OfficialConfig
    from dystream_ros.official.convert import (
        ConversionReport,
        convert,
        convert_autoencoder,
        convert_generator,
        load_lightning,
    )
    from dystream_ros.official.model import OfficialModel, load_official

    cfg = OfficialConfig()
    if gen and ae:  # the user's path: one converted file, loaded strictly
        out = workdir / "official.safetensors"
        convert(gen, ae, out, cfg)
        return load_official(out, render=True)
    report = ConversionReport()
    tensors = (
        convert_generator(load_lightning(gen), cfg, report)
        if gen
        else convert_autoencoder(load_lightning(ae), cfg, report)
    )
    model = OfficialModel(cfg, render=ae is not None)
    own = model.state_dict()
    part = {k for k in own if k.startswith("ae.") == (ae is not None)}
    if set(tensors) != part:
        raise RuntimeError(
            f"converted tensors do not match the model part: {sorted(set(tensors) ^ part)[:4]}"
        )
    own.update(tensors)
    model.load_state_dict(own, strict=True)
    del own
    torch.set_grad_enabled(False)
    return model.eval()


def _parity_cmd(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from dystream_ros.official.model import OfficialCheckpointError
    from dystream_ros.official.parity import run_groups

    torch.set_grad_enabled(False)
    groups = [g for g in args.groups.split(",") if g]
    bad = [g for g in groups if g not in ALL_GROUPS]
    if bad:
        print(f"parity-io: unknown group(s) {bad}; known {ALL_GROUPS}", file=sys.stderr)
        return 2
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    need_gen = any(g in GEN_GROUPS for g in groups)
    need_ae = "ae" in groups
    t0 = time.perf_counter()
    try:
        model = _load_parts(args.gen if need_gen else None, args.ae if need_ae else None, workdir)
    except (OfficialCheckpointError, FileNotFoundError) as e:
        print(f"parity-io: {e}", file=sys.stderr)
        return 2
    t1 = time.perf_counter()
    inputs = dict(np.load(args.inputs))
    outputs = run_groups(model, inputs, groups)
    np.savez(args.out, **{k: np.asarray(v, dtype=np.float32) for k, v in outputs.items()})
    print(
        f"parity-io: {len(outputs)} outputs for {groups}; load {t1 - t0:.1f} s, compute "
        f"{time.perf_counter() - t1:.1f} s"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert-official",
        help="convert the released DyStream checkpoints (strict)",
        description=_convert_cmd.__doc__ or __doc__,
    )
    p.add_argument("--generator", required=True, help="released motion generator (last.ckpt)")
    p.add_argument(
        "--autoencoder",
        default=None,
        help="released autoencoder (epoch=0-step=312000.ckpt); omit for a latents-only file",
    )
    p.add_argument("--out", required=True, help="output .safetensors")
    p.set_defaults(func=_convert_cmd)

    q = sub.add_parser(
        "parity-io",
        help="candidate command of the official parity harness",
        description="Outputs of this implementation for the harness's inputs (shared/official).",
    )
    q.add_argument("--gen", required=True)
    q.add_argument("--ae", required=True)
    q.add_argument("--inputs", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--groups", default=",".join(ALL_GROUPS))
    q.add_argument("--workdir", required=True)
    q.set_defaults(func=_parity_cmd)
