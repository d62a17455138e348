"""The ``dystream`` command.

Each subcommand lives in the module that implements it and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` on it. Modules are imported lazily by name so that
``dystream --help`` stays fast and the core never imports rclpy unless a node subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (module, summary) of every subcommand provider, in help order.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "dystream_ros.commands.replay",
    "dystream_ros.commands.make_bag",
    "dystream_ros.data.synth",
    "dystream_ros.commands.demo",
    "dystream_ros.eval.lipsync",
    "dystream_ros.runtime.bench",
    "dystream_ros.train.cli",
    "dystream_ros.commands.render",
    "dystream_ros.official.commands",
)


def build_parser() -> argparse.ArgumentParser:
    from dystream_ros import __version__

    parser = argparse.ArgumentParser(
        prog="dystream",
        description="DyStream talking-head tools: benchmarks, synthesis, training, replay.",
    )
    parser.add_argument("--version", action="version", version=f"dystream_ros {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
