"""`hystar train-mini-v2`: train hystar-mini v2, its stride-32 stages trained for styles (`hystar.train.mini_v2`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..paths import MINI_DIR
from ..train.doodle_set import DoodleConfig
from ..train.mini_v2 import V2TrainConfig, train_mini_v2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train-mini-v2", help="train hystar-mini v2 (trainable stride-32 stages)")
    parser.add_argument("--out", type=Path, default=Path("runs/mini-v2"), help="checkpoint folder (never assets/)")
    parser.add_argument("--epochs", type=int, default=V2TrainConfig.epochs)
    parser.add_argument("--limit", type=int, default=0, help="train photos per dataset (0: all)")
    parser.add_argument("--same-class", type=int, default=V2TrainConfig.same_class,
                        help="photos of one class side by side in a batch (hard negatives; 1: plain shuffle)")
    parser.add_argument("--lowres-weight", type=float, default=V2TrainConfig.lowres_weight,
                        help="weight of each photo against its own low-res rendering (0: off)")
    parser.add_argument("--sketch-batch", type=int, default=V2TrainConfig.sketch_batch,
                        help="photos with real sketches per step, each against one of its sketches (0: off)")
    parser.add_argument("--caption-weight", type=float, default=V2TrainConfig.caption_weight,
                        help="weight of COCO-mini train photos against one of their captions (text -> image)")
    parser.add_argument("--lr-text", type=float, default=V2TrainConfig.lr_text,
                        help="learning rate of the text projection, shared by captions, class prompts and doodle "
                             "words (default: the head's; 0: frozen, so doodle words move only the image side)")
    parser.add_argument("--start-from", type=Path, default=MINI_DIR,
                        help="the hystar-mini folder whose weights training starts from (default: the shipped model)")
    doodles = parser.add_argument_group("Quick, Draw! doodles (hystar-mini v3 and later)")
    doodles.add_argument("--doodle-batch", type=int, default=DoodleConfig.batch, help="doodles per step (0: none)")
    doodles.add_argument("--doodle-views", type=int, default=DoodleConfig.views,
                         help="augmented canvas drawings of each train doodle (strokes dropped or shortened)")
    doodles.add_argument("--bitmaps", type=int, default=DoodleConfig.bitmaps_per_category,
                         help="28x28 bitmap doodles per bitmap category (0: none)")
    doodles.add_argument("--doodle-text-weight", type=float, default=DoodleConfig.text_weight,
                         help='doodle -> "a drawing of a {category}" over the trainable categories')
    doodles.add_argument("--doodle-photo-weight", type=float, default=DoodleConfig.photo_weight,
                         help="doodle -> a photo of the class it depicts")
    parser.add_argument("--seed", type=int, default=V2TrainConfig.seed)
    parser.add_argument("--save", type=Path, default=None,
                        help="write the trained model folder here (config.json + weights.safetensors), e.g. "
                             "runs/mini-v2/model; load it with --encoder hystar-mini:FOLDER")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if "assets" in args.out.resolve().parts:
        raise ValueError("refusing to write under assets/ (the shipped model); pick --out runs/...")
    summary = train_mini_v2(V2TrainConfig(epochs=args.epochs, limit=args.limit, seed=args.seed,
                                          same_class=args.same_class, lowres_weight=args.lowres_weight,
                                          sketch_batch=args.sketch_batch, caption_weight=args.caption_weight,
                                          lr_text=args.lr_text,
                                          doodles=DoodleConfig(batch=args.doodle_batch, views=args.doodle_views,
                                                               bitmaps_per_category=args.bitmaps,
                                                               text_weight=args.doodle_text_weight,
                                                               photo_weight=args.doodle_photo_weight)),
                            args.out, args.save, args.start_from)
    print(json.dumps({k: summary[k] for k in ("photos", "renderings", "category_views", "seen_classes", "log")}))
    return 0
