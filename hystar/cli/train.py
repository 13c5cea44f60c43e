"""`hystar train`: train Hystar adapters (or a baseline) for an encoder (`hystar.train.adapters`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..adapt import AdapterConfig, PromptConfig
from ..encoder import DEFAULT_ENCODER
from ..paths import ADAPTER_PATH
from ..train.adapters import TrainConfig, train_adapter
from ..train.losses import LOSSES, StyleNCEConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train Hystar adapters for an encoder")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER)
    parser.add_argument("--out", type=Path, default=ADAPTER_PATH)
    parser.add_argument("--variant", choices=("hystar", "static", "gram-prompts"), default="hystar",
                        help="hystar: dynamic ΔS + static MLP offsets; static: MLP offsets only (baseline); "
                             "gram-prompts: FreestyleRet-style deep style prompts (baseline; use --loss triplet)")
    parser.add_argument("--style-code", default=AdapterConfig.style_code)
    parser.add_argument("--loss", default=TrainConfig.loss, choices=sorted(LOSSES))
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--lr-static", type=float, default=TrainConfig.lr_static)
    parser.add_argument("--lr-dynamic", type=float, default=TrainConfig.lr_dynamic)
    parser.add_argument("--anchor-weight", type=float, default=TrainConfig.anchor_weight,
                        help="weight of the term keeping adapted photos near their base embeddings (text search)")
    parser.add_argument("--kernel-sign", type=float, default=StyleNCEConfig.kernel_sign)
    parser.add_argument("--lam", type=float, default=StyleNCEConfig.lam)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--no-doodles", dest="doodles", action="store_false",
                        help="leave out the Quick, Draw! doodles (on by default: one more category-level style)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    adapter_cfg = PromptConfig() if args.variant == "gram-prompts" else AdapterConfig(
        style_code=args.style_code, dynamic_blocks=() if args.variant == "static" else None)
    cfg = TrainConfig(epochs=args.epochs, lr_static=args.lr_static, lr_dynamic=args.lr_dynamic, loss=args.loss,
                      anchor_weight=args.anchor_weight, seed=args.seed, doodles=args.doodles)
    summary = train_adapter(args.encoder, adapter_cfg, cfg, args.out,
                            StyleNCEConfig(kernel_sign=args.kernel_sign, lam=args.lam))
    print(json.dumps({"out": str(args.out), "pairs": summary["pairs"], "seconds": summary["seconds"]}))
    return 0
