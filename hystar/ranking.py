"""The one top-k: the k best of a score vector, best first, ties in index order (as a full stable sort); and query
expansion, which turns a query's best matches into a better query."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class QueryExpansion:
    """α-query expansion (Radenović et al., 2018) that keeps the query's best match first: the query plus `weight`
    times the mean of its `neighbors` best gallery vectors, weighted by similarity ** `power`, ranks the rest.
    Category search gains (a sketch's best photos pull in more of its class); the best match, what instance search
    asks for, stays where it was. The defaults are chosen on the val split (`hystar eval --split val --expand`)."""
    neighbors: int = 5
    weight: float = 1.5
    power: float = 3.0

    def __post_init__(self):
        if self.neighbors < 1 or self.weight < 0 or self.power < 0:
            raise ValueError(f"query expansion needs neighbors >= 1, weight >= 0 and power >= 0; got {self}")

    def expand(self, queries: np.ndarray, neighbor_vectors: np.ndarray, neighbor_scores: np.ndarray) -> np.ndarray:
        """Expanded unit queries (q, d) from queries (q, d), their best gallery vectors (q, n, d) and scores (q, n);
        rows of a neighbour that is absent (score -inf) or dissimilar (score <= 0) weigh nothing."""
        weights = np.clip(np.nan_to_num(neighbor_scores, neginf=0.0), 0.0, None) ** self.power
        total = weights.sum(1, keepdims=True)
        mean = np.einsum("qn,qnd->qd", weights, neighbor_vectors) / np.maximum(total, 1e-12)
        expanded = queries + self.weight * mean
        return (expanded / np.maximum(np.linalg.norm(expanded, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def scores(self, queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        """Scores (q, g) of every gallery vector for each query: the expanded query's similarity, the query's best
        match (and any vector tied with it, such as a duplicate photo) lifted to the top (`keep_first`) and scored
        with its plain similarity where that is higher (a photo searched with itself shows 1.0)."""
        plain = queries @ gallery.T
        best = np.stack([top_k(row, self.neighbors)[0] for row in plain])
        expanded = self.expand(queries, gallery[best], np.take_along_axis(plain, best, 1))
        out = expanded @ gallery.T
        keep_first(out, plain >= plain.max(1, keepdims=True), plain)
        return out


def keep_first(scores: np.ndarray, first: np.ndarray, floor: np.ndarray | None = None) -> None:
    """In place: the entries of each row where the mask `first` (same shape) holds get (just above) the row's top
    score, or `floor` (same shape) where that is higher, so they rank first."""
    lifted = np.nextafter(scores.max(1, keepdims=True), np.inf, dtype=scores.dtype)
    if floor is not None:
        lifted = np.maximum(lifted, floor.astype(scores.dtype))
    np.copyto(scores, np.broadcast_to(lifted, scores.shape), where=first)
