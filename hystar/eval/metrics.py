"""Retrieval metrics over a full similarity matrix: Recall@K and mean average precision."""

from __future__ import annotations

import numpy as np


def relevance(query_keys: np.ndarray, gallery_keys: np.ndarray) -> np.ndarray:
    """(Q, G) boolean: gallery item g is a correct answer for query q (same instance, or same class)."""
    return query_keys[:, None] == gallery_keys[None, :]


def ranked_relevance(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(relevant, order, axis=1)


def recall_at(ranked: np.ndarray, k: int) -> float:
    """Fraction of queries with at least one correct answer among the top k (in %)."""
    return float(ranked[:, :k].any(axis=1).mean() * 100)


def mean_average_precision(ranked: np.ndarray) -> float:
    """mAP over the full ranking (in %); queries with no correct answer in the gallery are left out."""
    hits = ranked.astype(np.float64)
    cumulative = np.cumsum(hits, axis=1)
    ranks = np.arange(1, hits.shape[1] + 1)
    n_relevant = hits.sum(axis=1)
    valid = n_relevant > 0
    ap = (cumulative / ranks * hits).sum(axis=1)[valid] / n_relevant[valid]
    return float(ap.mean() * 100) if valid.any() else float("nan")


def retrieval_metrics(scores: np.ndarray, relevant: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict:
    ranked = ranked_relevance(scores, relevant)
    out = {f"R@{k}": recall_at(ranked, k) for k in ks}
    out["mAP"] = mean_average_precision(ranked)
    out["queries"] = int(scores.shape[0])
    out["gallery"] = int(scores.shape[1])
    return out


def metrics_by_group(scores: np.ndarray, relevant: np.ndarray, groups: dict[str, np.ndarray]) -> dict[str, dict]:
    """`retrieval_metrics` of each group of queries apart (`groups`: name -> boolean mask over the queries); empty
    groups are left out."""
    return {name: retrieval_metrics(scores[mask], relevant[mask]) for name, mask in groups.items() if mask.any()}


def zero_shot_accuracy(image: np.ndarray, class_text: np.ndarray, labels: np.ndarray) -> float:
    return float(((image @ class_text.T).argmax(1) == labels).mean() * 100)
