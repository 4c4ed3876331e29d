"""The ``sknet`` command: one module per sub-command, each a thin layer over a library function.

Every sub-command module has ``register(subparsers)`` (its flags) and ``run(args) -> int``;
bad input (a ``ValueError``, a missing file, a failed write, a missing optional package)
becomes a one-line message on standard error and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from ..io import WriteError
from ..logs import show_logs
from . import analyze, bench, evaluate, export, models, predict, recipes, study, train

COMMANDS = (models, recipes, train, evaluate, predict, export, bench, analyze, study)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sknet", description="Selective Kernel Networks (Li et al., CVPR 2019)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    show_logs()
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, ImportError, WriteError) as e:  # bad input, a missing extra: no traceback
        print(f"sknet {args.command}: error: {e}", file=sys.stderr)
        return 2
