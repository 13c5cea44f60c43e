"""The one top-k: the k best of a score vector, best first, ties in index order (as a full stable sort); and query
expansion, which turns a query's best matches (and theirs) into a better ranking."""

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


def rows_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices (n, k) of the k best entries of each row of `scores` (n, m), best first, equal scores in index order
    (which of several equal to the k-th are kept is unspecified)."""
    k = min(k, scores.shape[1])
    if k <= 0:
        return np.zeros((len(scores), 0), np.int64)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else np.indices(scores.shape)[1]
    order = np.lexsort((part, -np.take_along_axis(scores, part, 1)), axis=-1)
    return np.take_along_axis(part, order, 1)


def padded_top_k(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (score, row) pairs as float32 scores and int64 rows, padded with (-inf, -1) to length k."""
    order, _ = top_k(scores, k)
    out_scores = np.full(k, -np.inf, np.float32)
    out_rows = np.full(k, -1, np.int64)
    out_scores[:len(order)], out_rows[:len(order)] = scores[order], rows[order]
    return out_scores, out_rows


def averaged(vectors: np.ndarray, neighbor_vectors: np.ndarray, neighbor_scores: np.ndarray, weight: float,
             power: float) -> np.ndarray:
    """Unit vectors (n, d): each of `vectors` (n, d) plus `weight` times the mean of its neighbours (n, m, d),
    weighted by their scores (n, m) ** `power`; a neighbour that is absent (-inf) or dissimilar (<= 0) weighs
    nothing."""
    weights = np.clip(np.nan_to_num(neighbor_scores, neginf=0.0), 0.0, None) ** power
    total = weights.sum(1, keepdims=True)
    mean = np.einsum("qn,qnd->qd", weights, neighbor_vectors) / np.maximum(total, 1e-12)
    out = vectors + weight * mean
    return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class QueryExpansion:
    """α-query expansion (Radenović et al., 2018) that keeps the query's best match first: the query plus `weight`
    times the mean of its `neighbors` best gallery vectors, weighted by similarity ** `power`, ranks the rest.
    With `gallery_neighbors`, database-side augmentation (αDBA, same paper) of the expanded query's best
    `candidates`: each is scored by its vector averaged in the same way with its `gallery_neighbors` nearest
    vectors (weight `gallery_weight`), so a photo amid its class ranks above a lone look-alike. Those neighbours
    are sought among the expanded query's best `pool` matches, not the whole gallery: one search per query, and on
    the val split the same figures (`hystar eval --split val`).
    Category search gains (a sketch's best photos pull in more of its class); the best match, what instance search
    asks for, stays where it was. The defaults are chosen on the val split (`hystar eval --split val --expand`)."""
    neighbors: int = 5
    weight: float = 1.5
    power: float = 3.0
    gallery_neighbors: int = 10
    gallery_weight: float = 1.0
    candidates: int = 100
    pool: int = 1000

    def __post_init__(self):
        if (self.neighbors < 1 or self.weight < 0 or self.power < 0 or self.gallery_neighbors < 0
                or self.gallery_weight < 0 or self.candidates < 1 or self.pool < self.candidates):
            raise ValueError("query expansion needs neighbors >= 1, weight >= 0, power >= 0, gallery_neighbors >= 0, "
                             f"gallery_weight >= 0 and 1 <= candidates <= pool; got {self}")

    def expand(self, queries: np.ndarray, neighbor_vectors: np.ndarray, neighbor_scores: np.ndarray) -> np.ndarray:
        """Expanded unit queries (q, d) from queries (q, d), their best gallery vectors (q, n, d) and scores (q, n)."""
        return averaged(queries, neighbor_vectors, neighbor_scores, self.weight, self.power)

    def rescore_pool(self, expanded: np.ndarray, pool: np.ndarray) -> np.ndarray:
        """Scores (p,) of an expanded query (d,)'s best matches `pool` (p, d): its best `candidates` scored by
        their augmented vectors, the rest by their plain scores, below every candidate."""
        scores = pool @ expanded
        if not self.gallery_neighbors:
            return scores
        candidates, _ = top_k(scores, self.candidates)
        near = pool[candidates] @ pool.T
        nearest = rows_top_k(near, self.gallery_neighbors + 1)[:, 1:]  # the first is the candidate itself
        augmented = averaged(pool[candidates], pool[nearest], np.take_along_axis(near, nearest, 1),
                             self.gallery_weight, self.power)
        out = scores - 4.0  # below every candidate's score (>= -1)
        out[candidates] = augmented @ expanded
        return out

    def scores(self, queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        """Scores (q, g) of every gallery vector for each query, as the index search ranks them: the expanded
        query's (`rescore_pool` over its best `pool`, which rank above the rest), the query's best match (and any
        vector tied with it, such as a duplicate photo) lifted to the top (`keep_first`) and scored with its plain
        similarity where that is higher (a photo searched with itself shows 1.0)."""
        plain = queries @ gallery.T
        best = np.stack([top_k(row, self.neighbors)[0] for row in plain])
        expanded = self.expand(queries, gallery[best], np.take_along_axis(plain, best, 1))
        out = expanded @ gallery.T
        if self.gallery_neighbors:
            for row, query in enumerate(expanded):
                pool, _ = top_k(out[row], self.pool)
                rescored = self.rescore_pool(query, gallery[pool])
                out[row] -= 8.0  # below the pool
                out[row, pool] = rescored
        keep_first(out, plain >= plain.max(1, keepdims=True), plain)
        return out


def keep_first(scores: np.ndarray, first: np.ndarray, floor: np.ndarray | None = None) -> None:
    """In place: the entries of each row where the mask `first` (same shape) holds get (just above) the row's top
    score, or `floor` (same shape) where that is higher, so they rank first."""
    lifted = np.nextafter(scores.max(1, keepdims=True), np.inf, dtype=scores.dtype)
    if floor is not None:
        lifted = np.maximum(lifted, floor.astype(scores.dtype))
    np.copyto(scores, np.broadcast_to(lifted, scores.shape), where=first)
