"""`hystar train-quari`: train the QuARI re-ranker on the search encoder's embeddings of the train split
(`hystar.train.quari_data`, `hystar.train.quari`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..data import iter_datasets
from ..encoder import DEFAULT_ENCODER
from ..encoder.search import load_search_encoder
from ..rerank import QuARIConfig, default_path, save_reranker
from ..train.adapters import TRAIN_DATASETS
from ..train.quari import TrainConfig, train_quari
from ..train.quari_data import quari_training_data


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train-quari", help="train the QuARI re-ranker for a search encoder")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER)
    parser.add_argument("--adapter", type=Path, help="adapter file of the search encoder (omit for the base)")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--layers", type=int, default=4, help="transformer layers (reference: 4)")
    parser.add_argument("--steps", type=int, default=4, help="refinement steps (reference: 4)")
    parser.add_argument("--no-class-labels", action="store_true",
                        help="treat other photos of the query's class as negatives (the reference's setting); by "
                             "default they are left out of the softmax")
    parser.add_argument("--blend", type=float, default=1.0,
                        help="weight of QuARI's score at search time; the rest goes to the first-stage cosine "
                             "(1: QuARI alone, as in the paper); saved with the checkpoint")
    parser.add_argument("--out", type=Path, help="default: assets/quari/<encoder>-<fingerprint>.safetensors")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    encoder = load_search_encoder(args.encoder, args.adapter, shared=False)
    with torch.no_grad():
        queries, targets, gallery, labels = quari_training_data(encoder, list(iter_datasets(TRAIN_DATASETS)))
    train = TrainConfig(epochs=args.epochs, seed=args.seed)
    model_config = QuARIConfig(dim=gallery.shape[1], layers=args.layers, steps=args.steps)
    result = train_quari(queries, targets, gallery, model_config, train,
                         gallery_labels=None if args.no_class_labels else labels)
    out = args.out or default_path(encoder.name, encoder.fingerprint)
    spec = args.encoder + (f" + {args.adapter.name}" if args.adapter else "")
    save_reranker(result.model, out, encoder.fingerprint, spec,
                  {"queries": len(queries), "gallery": len(gallery), "epochs": args.epochs,
                   "class_labels": not args.no_class_labels, "command": "hystar " + " ".join(args.argv),
                   "epoch_losses": [round(x, 4) for x in result.epoch_losses]}, blend=args.blend)
    print(json.dumps({"out": str(out), "queries": len(queries), "gallery": len(gallery)}))
    return 0
