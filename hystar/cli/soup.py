"""`hystar soup`: average hystar-mini models of one config into a new model folder (`hystar.train.soup`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..train.soup import write_soup


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("soup", help="average hystar-mini models of one config (a model soup)")
    parser.add_argument("models", type=Path, nargs="+", help="hystar-mini folders (config.json, weights.safetensors)")
    parser.add_argument("--weights", type=float, nargs="+", default=None,
                        help="one weight a model, normalised to sum 1 (default: uniform)")
    parser.add_argument("--out", type=Path, required=True, help="the new model folder (never assets/)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if "assets" in args.out.resolve().parts:
        raise ValueError("refusing to write under assets/ (the shipped model); pick --out runs/...")
    out = write_soup(args.models, args.out, args.weights)
    print(f"wrote {out}: load it with --encoder hystar-mini:{out}")
    return 0
