"""The one top-k: the k best of a score vector, best first, ties in index order (as a full stable sort)."""

from __future__ import annotations

import numpy as np


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, scores) of the k best entries of the 1-d `scores`, best first."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, np.int64), scores[:0]
    negated = -scores
    if k < len(scores):  # every entry at least as good as the k-th, ties included, then a stable sort of those
        candidates = np.flatnonzero(negated <= np.partition(negated, k - 1)[k - 1])
    else:
        candidates = np.arange(len(scores))
    top = candidates[np.argsort(negated[candidates], kind="stable")[:k]]
    return top, scores[top]


def padded_top_k(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (score, row) pairs as float32 scores and int64 rows, padded with (-inf, -1) to length k."""
    order, _ = top_k(scores, k)
    out_scores = np.full(k, -np.inf, np.float32)
    out_rows = np.full(k, -1, np.int64)
    out_scores[:len(order)], out_rows[:len(order)] = scores[order], rows[order]
    return out_scores, out_rows
