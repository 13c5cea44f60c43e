"""Style codes: what an adapter reads the query's style from (Gram statistics of early tokens, and others)."""

from __future__ import annotations

import torch

STYLE_CODES = ("gram", "embedding", "tokens")


def gram_projection(width: int, rank: int) -> torch.Tensor:
    """The fixed, seeded random projection of tokens before their Gram matrix (width × rank)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(width, rank, generator=generator) / width ** 0.5


def gram_code(tokens: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """FreestyleRet-like style statistics: upper triangle of the Gram matrix of projected early tokens."""
    z = tokens[:, 1:] @ projection
    gram = z.transpose(1, 2) @ z / z.shape[1]
    rows, cols = torch.triu_indices(gram.shape[1], gram.shape[2], device=gram.device)
    return gram[:, rows, cols]

