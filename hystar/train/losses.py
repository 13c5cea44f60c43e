"""Losses for styled-query → photo training: StyleNCE, InfoNCE, FreestyleRet's symmetric triplet.

All take L2-normalised query embeddings q (B, D) and photo embeddings p (B, D), where p[i] is q[i]'s positive, and an
optional boolean `not_negative` (B, B): True where photo j must not count as a negative for query i (another photo of
the same class for a category-level query, the same photo twice). The diagonal is always the positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class StyleNCEConfig:
    temperature: float = 0.07  # τ
    gamma: float = 80.0        # γ: scale of the negative weights
    lam: float = 1.0           # λ: kernel bandwidth
    kernel_sign: float = 1.0   # +1: the reference K = exp((1 − s)/λ); −1: exp(−(1 − s)/λ), hard negatives up
    iterations: int = 50


def sinkhorn(kernel: torch.Tensor, iterations: int = 50) -> torch.Tensor:
    """Alternately normalise rows and columns of a non-negative matrix towards sums of 1 (a transport plan)."""
    plan = kernel
    for _ in range(iterations):
        plan = plan / plan.sum(dim=1, keepdim=True).clamp_min(1e-12)
        plan = plan / plan.sum(dim=0, keepdim=True).clamp_min(1e-12)
    return plan


def _negative_mask(batch: int, not_negative: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    mask = ~torch.eye(batch, dtype=torch.bool, device=device)
    return mask & ~not_negative if not_negative is not None else mask


def negative_weights(similarity: torch.Tensor, negatives: torch.Tensor, cfg: StyleNCEConfig) -> torch.Tensor:
    """w = γ · P, P the Sinkhorn plan of K = exp(sign · (1 − s) / λ) restricted to the negatives (no gradient)."""
    with torch.no_grad():
        logits = cfg.kernel_sign * (1 - similarity) / cfg.lam
        logits = logits - logits.max()  # scale-free: Sinkhorn is invariant to a constant factor
        kernel = torch.exp(logits) * negatives
        return cfg.gamma * sinkhorn(kernel, cfg.iterations)


def weighted_nce(similarity: torch.Tensor, weights: torch.Tensor, negatives: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """−log softmax of the positive, where logit_ii = s_ii/τ and logit_ij = s_ij/τ + log w_ij for negatives."""
    logits = similarity / temperature + torch.log(weights.clamp_min(1e-30))
    logits = torch.where(negatives, logits, torch.full_like(logits, float("-inf")))
    diagonal = torch.arange(len(similarity), device=similarity.device)
    logits[diagonal, diagonal] = similarity.diagonal() / temperature
    return F.cross_entropy(logits, diagonal)


def style_nce(q: torch.Tensor, p: torch.Tensor, not_negative: torch.Tensor | None = None,
              cfg: StyleNCEConfig = StyleNCEConfig()) -> torch.Tensor:
    similarity = q @ p.T
    negatives = _negative_mask(len(q), not_negative, q.device)
    return weighted_nce(similarity, negative_weights(similarity, negatives, cfg), negatives, cfg.temperature)


def info_nce(q: torch.Tensor, p: torch.Tensor, not_negative: torch.Tensor | None = None,
             temperature: float = 0.07) -> torch.Tensor:
    similarity = q @ p.T
    negatives = _negative_mask(len(q), not_negative, q.device)
    return weighted_nce(similarity, torch.ones_like(similarity), negatives, temperature)


def symmetric_info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """CLIP's loss: row k of `a` and row k of `b` are the positive pair, both directions averaged."""
    logits = a @ b.T / temperature
    ids = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, ids) + F.cross_entropy(logits.T, ids))


def symmetric_triplet(q: torch.Tensor, p: torch.Tensor, not_negative: torch.Tensor | None = None,
                      margin: float = 1.0) -> torch.Tensor:
    """FreestyleRet: distance 1 − cos, margin 1, hardest negative, query→photo and photo→query."""
    distance = 1 - q @ p.T
    negatives = _negative_mask(len(q), not_negative, q.device)
    positive = distance.diagonal()
    far = torch.full_like(distance, float("inf"))
    hardest_row = torch.where(negatives, distance, far).min(dim=1).values
    hardest_col = torch.where(negatives, distance, far).min(dim=0).values
    loss = F.relu(positive - hardest_row + margin) + F.relu(positive - hardest_col + margin)
    return loss[torch.isfinite(loss)].mean()


LOSSES = {"stylence": style_nce, "infonce": info_nce, "triplet": symmetric_triplet}
