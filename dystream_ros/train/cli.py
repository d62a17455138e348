"""``dystream train autoencoder|extract|articulation-set|generator|evaluate``: the training command line."""

from __future__ import annotations

import importlib

_STAGES = {
    "autoencoder": (
        "dystream_ros.train.autoencoder",
        "train the warping autoencoder on (source, driving) frame pairs",
        "train_autoencoder",
    ),
    "extract": (
        "dystream_ros.train.latents",
        "standardise the motion latent and cache per-frame latents + log-mels of every conversation",
        "extract_main",
    ),
    "articulation-set": (
        "dystream_ros.train.articulation",
        "cache standardised ground-truth articulation + log-mels (the training set of an articulation model)",
        "articulation_set_main",
    ),
    "readout": (
        "dystream_ros.train.articulation",
        "fit a latent model's linear read-out latent -> articulation (side file next to the checkpoint)",
        "readout_main",
    ),
    "generator": (
        "dystream_ros.train.generator",
        "train audio encoder + AR generator + flow head on cached latents (EMA, CFG dropout, noisy history)",
        "train_generator",
    ),
    "evaluate": (
        "dystream_ros.train.evaluate",
        "stream held-out conversations through a checkpoint and measure lip-sync / listening behaviour",
        "evaluate_main",
    ),
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the model (autoencoder, latent extraction, generator, evaluation)",
        description="Training pipeline of the DyStream model. Multi-process/multi-GPU: launch with "
        "`torchrun --nproc-per-node N -m dystream_ros.cli train ...` (DistributedDataParallel).",
    )
    sub = p.add_subparsers(dest="stage", metavar="STAGE")
    for name, (module, help_text, _) in _STAGES.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(module)
        getattr(mod, "add_readout_arguments" if name == "readout" else "add_arguments")(sp)
        sp.set_defaults(func=_runner(name))
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _runner(name: str):
    def run(args) -> int:
        module, _, fn = _STAGES[name]
        return int(getattr(importlib.import_module(module), fn)(args) or 0)

    return run
