"""`hystar train-mini`: train the offline hystar-mini encoder on photos (`hystar.train.mini`)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from ..encoder.mini import MiniConfig, joined_tokens_config
from ..paths import MINI_DIR
from ..train.mini import MiniTrainConfig, train_mini


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train-mini", help="train the offline hystar-mini encoder on photos")
    parser.add_argument("--out", type=Path, default=MINI_DIR, help="folder for config.json + weights.safetensors")
    parser.add_argument("--epochs", type=int, default=MiniTrainConfig.epochs)
    parser.add_argument("--seed", type=int, default=MiniTrainConfig.seed)
    parser.add_argument("--instance-weight", type=float, default=MiniTrainConfig.instance_weight,
                        help="weight of instance discrimination between two augmented views of each photo")
    parser.add_argument("--fine-tokens", action="store_true",
                        help="join the 2x2 stride-16 cells beneath each stride-32 token (7x7x768; an ablation)")
    parser.add_argument("--fine-scale", type=float, default=MiniConfig.fine_scale,
                        help="with --fine-tokens: factor on the stride-16 cells (1: unscaled)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model_cfg = replace(joined_tokens_config(), fine_scale=args.fine_scale) if args.fine_tokens else MiniConfig()
    train_cfg = MiniTrainConfig(epochs=args.epochs, seed=args.seed, instance_weight=args.instance_weight)
    summary = train_mini(train_cfg, args.out, model_cfg)
    print(json.dumps({k: summary[k] for k in ("train_photos", "captions", "seen_classes", "seconds")}))
    return 0
