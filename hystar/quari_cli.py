"""`hystar train-quari`: train the QuARI re-ranker on the search encoder's embeddings of the train split.

Queries are every train-split styled query (real sketches, paintings, cartoons, synthetic mosaic / art / pencil) and
the COCO-mini train captions; the gallery is the train photos. An instance query's target is its photo; a
category query accepts any photo of its class (one drawn per epoch).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from .adapters import load_adapted
from .data import iter_datasets
from .embed import embed_texts
from .encoder import DEFAULT_ENCODER
from .evaluate import embed_features
from .rerank import QuARIConfig, TrainConfig, default_path, save_reranker, train_quari
from .styles import SYNTHETIC_STYLES
from .train import TRAIN_DATASETS, build_pairs


def quari_training_data(encoder, datasets) -> tuple[np.ndarray, list, np.ndarray, np.ndarray]:
    """(query vectors, per-query target rows, gallery vectors, gallery labels) from the train split."""
    base = getattr(encoder, "base", encoder)
    pairs = build_pairs(base, datasets, SYNTHETIC_STYLES)
    gallery = embed_features(encoder, pairs.photos)
    queries = embed_features(encoder, pairs.queries)
    rows_of_class: dict[str, np.ndarray] = {}
    for row, label in enumerate(pairs.photo_class):
        rows_of_class.setdefault(label, []).append(row)
    rows_of_class = {k: np.array(v) for k, v in rows_of_class.items()}
    targets = [np.array([row]) if row >= 0 else rows_of_class[label]
               for row, label in zip(pairs.query_photo, pairs.query_class, strict=True)]
    row_of_key = {key: row for row, key in enumerate(pairs.photo_key)}
    captions = [(t.text, row_of_key[t.instance_id]) for d in datasets for t in d.text_queries("train")
                if t.instance_id in row_of_key]
    if captions:
        queries = np.concatenate([queries, embed_texts(encoder, [c for c, _ in captions])])
        targets += [np.array([row]) for _, row in captions]
    labels = np.array([hash(label) % (2**31) for label in pairs.photo_class], dtype=np.int64)
    return queries, targets, gallery, labels


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
    encoder = load_adapted(args.encoder, args.adapter)
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
