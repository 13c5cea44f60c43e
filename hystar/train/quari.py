"""Training the QuARI re-ranker (`hystar.rerank`) on cached embeddings: noisy queries, soft targets over each target
and its semi-positives.

A target's group is the target and its `semi_k` semi-positives (its nearest gallery neighbours), weighted
softmax(sim / semi_tau) with sim(target, target) = 1. The candidates of a batch are the union of its groups;
each query scores every candidate in its own transformed space, and the loss is the mean of the soft-target
cross-entropies over candidates (rows) and over queries (columns) at temperature `tau`. With
`gallery_labels`, a candidate that shares the query's label without being in its group is left out of its
softmaxes, not pushed away.

Query noise: q ← normalise(q + u · noise · ε), u ~ U[0, 1], ε ~ N(0, I/d). The issue's N(0, I) would give the
noise a norm of √d ≈ 20 against ‖q‖ = 1; with I/d its norm is about u · noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..rerank.model import QuARI, QuARIConfig, similarity
from .schedule import warmup_cosine

Targets = np.ndarray | Sequence[np.ndarray]   # per query one gallery index, or several (one drawn per epoch)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 256
    lr: float = 3e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 100
    tau: float = 0.07
    noise: float = 1.0
    semi_k: int = 2
    semi_pool: int = 100
    semi_tau: float = 0.07
    seed: int = 0


@dataclass
class SemiPositives:
    """Per mined item: its group (the item, then its semi-positives) and their soft-target weights."""
    indices: np.ndarray           # (n, 1 + k) int64 gallery indices
    weights: np.ndarray           # (n, 1 + k) float32, rows sum to 1


@dataclass
class TrainResult:
    model: QuARI
    epoch_losses: list[float] = field(default_factory=list)


def mine_semi_positives(gallery_vecs: np.ndarray, k: int = 2, pool: int = 100, tau: float = 0.07,
                        labels: np.ndarray | None = None, items: np.ndarray | None = None) -> SemiPositives:
    """For each of `items` (default: every gallery row) its k nearest among its `pool` nearest neighbours;
    with labels, those sharing its label come first."""
    import faiss

    gallery = np.ascontiguousarray(gallery_vecs, dtype=np.float32)
    items = np.arange(len(gallery)) if items is None else np.asarray(items, dtype=np.int64)
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(gallery)
    sims, near = index.search(gallery[items], min(pool + 1, len(gallery)))
    sims[near == items[:, None]] = -np.inf                                  # never its own semi-positive
    rank_key = sims - (0.0 if labels is None else 4.0 * (labels[near] != labels[items, None]))
    order = np.argsort(-rank_key, axis=1, kind="stable")[:, :k]
    picked, picked_sims = np.zeros((len(items), k), np.int64), np.full((len(items), k), -np.inf, np.float32)
    picked[:, :order.shape[1]] = np.take_along_axis(near, order, 1)
    picked_sims[:, :order.shape[1]] = np.take_along_axis(sims, order, 1)
    stand_in = ~np.isfinite(picked_sims)              # fewer than k other gallery rows: the item stands in
    picked[stand_in], picked_sims[stand_in] = items[np.nonzero(stand_in)[0]], 1.0
    group_sims = np.concatenate([np.ones((len(items), 1), np.float32), picked_sims], axis=1)
    weights = np.exp((group_sims - 1) / tau)
    return SemiPositives(np.concatenate([items[:, None], picked], axis=1),
                         (weights / weights.sum(1, keepdims=True)).astype(np.float32))


def add_query_noise(q: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    u = torch.rand(q.shape[0], 1, generator=generator, device=q.device)
    noise = torch.randn(q.shape, generator=generator, device=q.device) / math.sqrt(q.shape[1])
    return F.normalize(q + u * scale * noise, dim=-1)


def soft_targets(groups: torch.Tensor, weights: torch.Tensor, group_labels: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Groups (B, 1 + k) → candidate gallery ids (m,), soft targets (B, m), softmax entries to keep (B, m)."""
    candidates, inverse = torch.unique(groups, return_inverse=True)
    targets = torch.zeros(groups.shape[0], len(candidates), device=groups.device)
    targets.scatter_add_(1, inverse, weights)
    if group_labels is None:
        return candidates, targets, torch.ones_like(targets, dtype=torch.bool)
    candidate_labels = torch.empty(len(candidates), dtype=group_labels.dtype, device=groups.device)
    candidate_labels[inverse.flatten()] = group_labels.flatten()
    keep = (candidate_labels[None] != group_labels[:, :1]) | (targets > 0)
    return candidates, targets, keep


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the rows with a target of -Σ p log softmax(logits), p the row's targets normalised."""
    has = targets.sum(1) > 0
    p = targets[has] / targets[has].sum(1, keepdim=True)
    log_p = logits[has].log_softmax(1).masked_fill(p == 0, 0.0)
    return -(p * log_p).sum(1).mean()


def soft_contrastive_loss(scores: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor, tau: float
                          ) -> torch.Tensor:
    """Symmetric: queries → candidates and candidates → queries."""
    logits = (scores / tau).masked_fill(~keep, float("-inf"))
    return 0.5 * (soft_cross_entropy(logits, targets) + soft_cross_entropy(logits.T, targets.T))


def draw_targets(query_targets: Targets, rng: np.random.Generator) -> np.ndarray:
    if isinstance(query_targets, np.ndarray) and query_targets.ndim == 1:
        return query_targets.astype(np.int64)
    return np.array([options[rng.integers(len(options))] for options in query_targets], dtype=np.int64)


@dataclass
class TrainingData:
    """Everything a step needs, on the training device; groups are indexed by `group_of[gallery index]`."""
    queries: torch.Tensor
    gallery: torch.Tensor
    groups: torch.Tensor
    group_weights: torch.Tensor
    group_of: torch.Tensor
    labels: torch.Tensor | None


def prepare(query_vecs: np.ndarray, query_targets: Targets, gallery_vecs: np.ndarray, train: TrainConfig,
            gallery_labels: np.ndarray | None, device: str | torch.device) -> TrainingData:
    flat = query_targets if isinstance(query_targets, np.ndarray) else np.concatenate(list(query_targets))
    used = np.unique(flat)
    semi = mine_semi_positives(gallery_vecs, train.semi_k, train.semi_pool, train.semi_tau, gallery_labels,
                               used)
    group_of = np.zeros(len(gallery_vecs), dtype=np.int64)
    group_of[used] = np.arange(len(used))
    as_tensor = lambda a, dtype=None: torch.as_tensor(a, dtype=dtype, device=device)
    return TrainingData(as_tensor(query_vecs, torch.float32), as_tensor(gallery_vecs, torch.float32),
                        as_tensor(semi.indices), as_tensor(semi.weights), as_tensor(group_of),
                        None if gallery_labels is None else as_tensor(gallery_labels))


def batch_loss(model: QuARI, data: TrainingData, batch: torch.Tensor, group_ids: torch.Tensor,
               train: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    groups = data.groups[group_ids]
    labels = None if data.labels is None else data.labels[groups]
    candidates, targets, keep = soft_targets(groups, data.group_weights[group_ids], labels)
    U, V, q_prime = model(add_query_noise(data.queries[batch], train.noise, generator))
    scores = similarity(q_prime, U, V, data.gallery[candidates], model.cfg.alpha, model.cfg.similarity)
    return soft_contrastive_loss(scores, targets, keep, train.tau)


def train_quari(query_vecs: np.ndarray, query_targets: Targets, gallery_vecs: np.ndarray, cfg: QuARIConfig,
                train: TrainConfig | None = None, *, gallery_labels: np.ndarray | None = None,
                device: str | torch.device = "cpu", progress: bool = True) -> TrainResult:
    """Train a QuARI from scratch on L2-normalised query_vecs (Q, d) and gallery_vecs (G, d).

    query_targets: per query the gallery index of its target, or an array of acceptable ones (one drawn per
    epoch).
    """
    train = train or TrainConfig()
    if query_vecs.shape[1] != cfg.dim or gallery_vecs.shape[1] != cfg.dim:
        raise ValueError(f"embeddings have dimension {query_vecs.shape[1]} (queries) and "
                         f"{gallery_vecs.shape[1]} (gallery), the config says {cfg.dim}")
    torch.manual_seed(train.seed)
    rng = np.random.default_rng(train.seed)
    generator = torch.Generator(device).manual_seed(train.seed)
    data = prepare(query_vecs, query_targets, gallery_vecs, train, gallery_labels, device)
    model = QuARI(cfg).to(device).train()
    steps_per_epoch = math.ceil(len(query_vecs) / train.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    total_steps = train.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total_steps, train.warmup_steps))
    result = TrainResult(model)
    bar = tqdm(total=train.epochs * steps_per_epoch, desc="training QuARI", unit="step", disable=not progress)
    for _ in range(train.epochs):
        group_ids = data.group_of[torch.as_tensor(draw_targets(query_targets, rng), device=device)]
        total = 0.0
        order = torch.randperm(len(query_vecs), generator=generator, device=device)
        for batch in order.split(train.batch_size):
            loss = batch_loss(model, data, batch, group_ids[batch], train, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        result.epoch_losses.append(total / len(query_vecs))
    bar.close()
    model.eval()
    return result
