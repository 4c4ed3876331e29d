"""The ``sknet`` command: one sub-command per task, each defined next to its code."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that add a sub-command through ``register_cli(subparsers)``.
COMMAND_MODULES = [
    "sknet.model_table",
    "sknet.train",
    "sknet.evaluate",
    "sknet.export",
    "sknet.bench",
    "sknet.analysis_cli",
    "sknet.study",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sknet", description="Selective Kernel Networks (Li et al., CVPR 2019)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:  # bad input: say what and how to fix, no traceback
        print(f"sknet {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
