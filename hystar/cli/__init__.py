"""`hystar` command line: argparse over the library, one module per subcommand family (`python -m hystar.cli`).

Each command module exposes `register(subparsers)`, which adds its parser and sets `func` to a function that takes
the parsed args and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [f"hystar.cli.{name}" for name in
                   ("train_mini", "train_mini_v2", "soup", "train", "eval", "search", "quari")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hystar", description="Style-adaptive image search.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"hystar {args.command}: error: {error}", file=sys.stderr)
        return 2

