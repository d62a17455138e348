"""ONNX export of the per-frame step functions (``runtime.steps``), opset 17.

The generator step takes and returns the KV ring explicitly; the only dynamic axis is ``Q``, the number
of guidance branches. These graphs are what the onnxruntime backend runs and the basis for TensorRT.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from dystream_ros.model.dystream import DyStreamModel
from dystream_ros.runtime import steps

__all__ = [
    "OPSET",
    "SPECS",
    "STEP_NAMES",
    "cache_root",
    "cached_export",
    "example_inputs",
    "export_onnx",
    "export_step",
]

OPSET = 17

# name -> (module class, input names, output names, dynamic axes)
SPECS: dict[str, tuple[type[nn.Module], list[str], list[str], dict[str, dict[int, str]]]] = {
    "audio": (steps.AudioStep, ["windows"], ["features"], {}),
    "generator_step": (
        steps.GeneratorStep,
        ["prev", "audio", "anchor", "drop", "k_cache", "v_cache", "pos"],
        ["cond", "k_cache_out", "v_cache_out"],
        {"drop": {0: "Q"}, "cond": {0: "Q"}},
    ),
    "head_condition": (steps.HeadCondition, ["cond"], ["cond_mod"], {"cond": {0: "Q"}, "cond_mod": {0: "Q"}}),
    "head_time": (steps.HeadTime, ["t"], ["time_mod"], {"t": {0: "N"}, "time_mod": {0: "N"}}),
    "head_step": (
        steps.HeadStep,
        ["x", "time_mod", "dt", "cond_mod", "coef"],
        ["x_next"],
        {"cond_mod": {0: "Q"}, "coef": {0: "Q"}},
    ),
    "motion": (steps.MotionStep, ["image"], ["m0"], {}),
    "reference": (steps.ReferenceStep, ["image"], ["appearance", "m0"], {}),
    "decoder": (steps.DecodeStep, ["latent", "m0", "appearance", "reference"], ["image"], {}),
}
STEP_NAMES = tuple(SPECS)
RENDER_STEPS = ("reference", "decoder")


def example_inputs(model: DyStreamModel, name: str, branches: int = 3) -> tuple[torch.Tensor, ...]:
    """Deterministic example inputs of the right shapes for step ``name`` (also used by parity tests)."""
    cfg = model.cfg
    g = torch.Generator().manual_seed(1234)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    d, f = cfg.latent_dim, cfg.audio.feature_dim
    mod = (3 * cfg.head.blocks + 2) * cfg.head.width
    ae = cfg.autoencoder
    if name == "audio":
        return (0.1 * rnd(1, 2, cfg.audio.window_samples),)
    if name == "generator_step":
        drop = torch.zeros(branches, 3, dtype=torch.bool)
        for i in range(1, branches):
            drop[i, (i - 1) % 3] = True
        shape = model.generator.cache_shape
        return (
            rnd(1, d),
            rnd(1, 2, f),
            rnd(1, d),
            drop,
            rnd(*shape),
            rnd(*shape),
            torch.tensor(cfg.generator.window + 3, dtype=torch.int64),
        )
    if name == "head_condition":
        return (rnd(branches, cfg.head.width),)
    if name == "head_time":
        return (torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8]),)
    if name == "head_step":
        coef = torch.full((branches,), -0.5)
        coef[0] = 1.0 + 0.5 * (branches - 1)
        return (rnd(1, d), rnd(1, mod), torch.tensor([0.2]), rnd(branches, mod), coef)
    if name in ("motion", "reference"):
        return (rnd(1, 3, ae.image_size, ae.image_size).clamp(-1, 1),)
    if name == "decoder":
        return (
            rnd(1, d),
            rnd(1, d),
            rnd(1, ae.app_channels, ae.warp_size, ae.warp_size),
            rnd(1, 3, ae.image_size, ae.image_size).clamp(-1, 1),
        )
    raise KeyError(f"unknown step {name!r}; known: {STEP_NAMES}")


def export_step(model: DyStreamModel, name: str, path: str | Path | None = None) -> bytes:
    """Export one step to ONNX; returns the serialized model (and writes it to ``path`` if given)."""
    cls, inputs, outputs, dynamic = SPECS[name]
    module = cls(model).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy (TorchScript) exporter's deprecation notices
        torch.onnx.export(
            module,
            example_inputs(model, name),
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic or None,
            do_constant_folding=True,
        )
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def _export_bar(names):
    """A progress bar over the exports, on a terminal only: on a pipe (a node's log under ``ros2 launch``,
    a log file) tqdm's carriage returns would glue the bar to the next log line."""
    return tqdm(names, desc="onnx export", unit="graph", leave=False, file=sys.stderr, disable=None)


def export_onnx(
    model: DyStreamModel, out_dir: str | Path, names: tuple[str, ...] | None = None
) -> dict[str, Path]:
    """Export the steps (default: all the model supports) to ``out_dir/<name>.onnx``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if names is None:
        names = tuple(n for n in STEP_NAMES if model.render or n not in RENDER_STEPS)
    paths = {}
    for n in _export_bar(names):
        paths[n] = out / f"{n}.onnx"
        export_step(model, n, paths[n])
    return paths


def cache_root() -> Path:
    """``$DYSTREAM_CACHE_DIR/onnx`` or ``~/.cache/dystream_ros/onnx``."""
    base = os.environ.get("DYSTREAM_CACHE_DIR") or Path.home() / ".cache" / "dystream_ros"
    return Path(base) / "onnx"


def _model_key(model: DyStreamModel) -> str:
    """Content hash of everything an export depends on: config, weights, opset, torch version."""
    h = hashlib.sha256()
    h.update(f"{model.cfg.to_json()}|opset={OPSET}|torch={torch.__version__}".encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def cached_export(model: DyStreamModel, names: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Export the steps once per (config, weights) into the cache directory and reuse them after.

    Files are written to temporary names and renamed into place, so concurrent processes never see partial
    files; the ``MAX_CACHED_MODELS`` most recently used models are kept. Falls back to a private temporary
    directory if the cache is not writable.
    """
    if names is None:
        names = tuple(n for n in STEP_NAMES if model.render or n not in RENDER_STEPS)
    model = model.eval()
    key_dir = cache_root() / _model_key(model)
    paths = {n: key_dir / f"{n}.onnx" for n in names}
    missing = tuple(n for n, p in paths.items() if not p.is_file())
    try:
        key_dir.mkdir(parents=True, exist_ok=True)
        os.utime(key_dir)  # most recently used
        for n in _export_bar(missing):
            fd, tmp = tempfile.mkstemp(dir=key_dir, suffix=".onnx.tmp")
            os.close(fd)
            export_step(model, n, tmp)
            os.replace(tmp, paths[n])
        if missing:
            _prune(key_dir.parent, keep=key_dir)
        return paths
    except OSError:
        private = Path(tempfile.mkdtemp(prefix="dystream_onnx_"))
        out = export_onnx(model, private, names)
        _PRIVATE_DIRS.append(private)
        return out


MAX_CACHED_MODELS = 12


def _prune(root: Path, keep: Path) -> None:
    """Keep the ``MAX_CACHED_MODELS`` most recently used exports (others are deleted)."""
    dirs = sorted((d for d in root.iterdir() if d.is_dir() and d != keep), key=lambda d: d.stat().st_mtime)
    for d in dirs[: max(len(dirs) - (MAX_CACHED_MODELS - 1), 0)]:
        shutil.rmtree(d, ignore_errors=True)


_PRIVATE_DIRS: list[Path] = []


def _cleanup_private() -> None:
    for d in _PRIVATE_DIRS:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup_private)


def main(argv: list[str] | None = None) -> int:
    """``python -m dystream_ros.runtime.onnx_export --out DIR [--checkpoint PATH | --profile lite]``."""
    import argparse

    from dystream_ros.config import load_profile
    from dystream_ros.model.checkpoint import load_checkpoint
    from dystream_ros.model.dystream import build_model

    ap = argparse.ArgumentParser(description="export the per-frame step graphs to ONNX")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--checkpoint", default=None, help="checkpoint path (default: random weights)")
    ap.add_argument("--profile", default="lite", help="profile for random weights")
    ap.add_argument("--no-render", action="store_true", help="leave out the reference encoder and decoder")
    args = ap.parse_args(argv)
    render = not args.no_render
    if args.checkpoint:
        model = load_checkpoint(args.checkpoint, render=render)
    else:
        model = build_model(load_profile(args.profile), render=render)
    for name, path in export_onnx(model.eval(), args.out).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
