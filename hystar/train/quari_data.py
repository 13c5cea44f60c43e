"""QuARI's training data: the search encoder's embeddings of the train split (queries, targets, gallery, labels).

Queries are every train-split styled query (real sketches, paintings, cartoons, synthetic mosaic / art / pencil) and
the train captions; the gallery is the train photos. An instance query's target is its photo; a category query
accepts any photo of its class (one drawn per epoch).
"""

from __future__ import annotations

import numpy as np

from ..embed import embed_features, embed_texts
from ..synthetic import SYNTHETIC_STYLES
from .adapters import build_pairs


def quari_training_data(encoder, datasets) -> tuple[np.ndarray, list, np.ndarray, np.ndarray]:
    """(query vectors, per-query target rows, gallery vectors, gallery labels) from the train split."""
    pairs = build_pairs(encoder.base, datasets, SYNTHETIC_STYLES)
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
