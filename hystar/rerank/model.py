"""QuARI: a transformer hypernetwork that maps a query embedding to a query-specific linear map of the space.

    q ──MLP──> conditioning token (+ step embedding) ──┐
    U-, V-tokens (start at 0, + slot embeddings) ──────┴─> shared transformer, `steps` times: tokens += update
    tokens ──linear──> U, V (d × r, each scaled to unit Frobenius norm);  conditioning token ──> decoded query

    T = I + α U Vᵀ,   q' = normalise(mix · normalise(decoded) + (1 - mix) · q)

Vectors are rows and T acts on the right: a gallery row d becomes d T = d + α (d U) Vᵀ. As
‖U Vᵀ‖₂ ≤ ‖U‖_F ‖V‖_F = 1, T stays within α of the identity. The factor decoders have no bias: zero tokens
decode to U = V = 0, i.e. T = I.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SIMILARITIES = ("dot", "cosine")
Array = TypeVar("Array", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class QuARIConfig:
    dim: int                      # embedding size of the encoder (hystar-mini: 384, ViT-B-32: 512)
    rank: int = 64                # columns of U and V
    n_tokens: int = 64            # tokens per factor; each decodes rank // n_tokens columns
    layers: int = 4
    heads: int = 8
    steps: int = 4                # refinement passes of the shared transformer
    width: int = 128
    alpha: float = 0.8
    query_mix: float = 0.5        # weight of the decoded query in q'
    similarity: str = "dot"       # "dot": <q', dT>, one GEMV per query; "cosine": <q', dT> / ‖dT‖ (paper)

    def __post_init__(self) -> None:
        if self.rank % self.n_tokens:
            raise ValueError(f"rank ({self.rank}) must be a multiple of n_tokens ({self.n_tokens})")
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be a multiple of heads ({self.heads})")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {self.similarity!r}")


def transform(vectors: Array, U: Array, V: Array, alpha: float) -> Array:
    """Rows x ↦ x T = x + α (x U) Vᵀ, never forming T. vectors (..., n, d); U, V (..., d, r)."""
    return vectors + alpha * ((vectors @ U) @ V.swapaxes(-1, -2))


def explicit_matrix(U: Array, V: Array, alpha: float) -> Array:
    """T = I + α U Vᵀ as a d × d matrix: for tests and inspection only."""
    d = U.shape[-2]
    eye = np.eye(d, dtype=U.dtype) if isinstance(U, np.ndarray) else torch.eye(d, dtype=U.dtype)
    return eye + alpha * (U @ V.swapaxes(-1, -2))


def effective_query(q_prime: Array, U: Array, V: Array, alpha: float) -> Array:
    """w = q' Tᵀ, so that <q', d T> = <w, d> for every row d: scoring a gallery is one GEMV per query."""
    return transform(q_prime, V, U, alpha)


def transformed_norms(candidates: Array, U: Array, V: Array, alpha: float) -> Array:
    """‖d T‖ of candidate rows, from their (r)-dim projections only: (..., m, d), (..., d, r) → (..., m).

    ‖d + α (dU) Vᵀ‖² = ‖d‖² + 2α (dU)·(dV) + α² (dU) VᵀV (dU)ᵀ
    """
    du, dv = candidates @ U, candidates @ V
    gram = V.swapaxes(-1, -2) @ V
    squared = ((candidates * candidates).sum(-1) + 2 * alpha * (du * dv).sum(-1)
               + alpha ** 2 * ((du @ gram) * du).sum(-1))
    return squared.clip(1e-12) ** 0.5


def similarity(q_prime: torch.Tensor, U: torch.Tensor, V: torch.Tensor, candidates: torch.Tensor,
               alpha: float, kind: str = "dot") -> torch.Tensor:
    """B queries (q', U, V) against shared candidates (m, d), each in its own space → (B, m)."""
    scores = effective_query(q_prime[:, None], U, V, alpha)[:, 0] @ candidates.T
    if kind == "cosine":
        scores = scores / transformed_norms(candidates, U, V, alpha)
    return scores


def unit_frobenius(factor: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale each (d, r) matrix to unit Frobenius norm; an all-zero matrix stays zero."""
    return factor / factor.flatten(-2).norm(dim=-1).clamp_min(eps)[..., None, None]


class QuARI(nn.Module):
    def __init__(self, cfg: QuARIConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.condition = nn.Sequential(nn.Linear(cfg.dim, w), nn.LayerNorm(w), nn.GELU(), nn.Linear(w, w))
        self.step_embedding = nn.Parameter(torch.randn(cfg.steps, w) * 0.02)
        # Token states start at zero; slot embeddings tell them apart (else all columns of U would agree).
        self.slot_embedding = nn.Parameter(torch.randn(2 * cfg.n_tokens, w) * 0.02)
        layer = nn.TransformerEncoderLayer(w, cfg.heads, 4 * w, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.update = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, w))
        per_token = cfg.dim * (cfg.rank // cfg.n_tokens)
        self.decode_u = nn.Linear(w, per_token, bias=False)
        self.decode_v = nn.Linear(w, per_token, bias=False)
        self.decode_query = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, cfg.dim))

    def refine(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(conditioning token after the last step (B, w), U- then V-token states (B, 2·n_tokens, w))."""
        cond = self.condition(q)
        tokens = q.new_zeros(q.shape[0], 2 * self.cfg.n_tokens, self.cfg.width)
        for step in range(self.cfg.steps):
            x = torch.cat([(cond + self.step_embedding[step])[:, None], tokens + self.slot_embedding], dim=1)
            out = self.transformer(x)
            tokens = tokens + self.update(out[:, 1:])
        return out[:, 0], tokens

    def decode_factors(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states (B, 2·n_tokens, w) → U, V (B, d, r), each of unit Frobenius norm (or zero)."""
        n, batch = self.cfg.n_tokens, tokens.shape[0]
        as_columns = lambda flat: flat.reshape(batch, self.cfg.rank, self.cfg.dim).transpose(1, 2)
        U = as_columns(self.decode_u(tokens[:, :n]))
        V = as_columns(self.decode_v(tokens[:, n:]))
        return unit_frobenius(U), unit_frobenius(V)

    def forward(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, d) L2-normalised → U (B, d, r), V (B, d, r), q' (B, d) L2-normalised."""
        cond, tokens = self.refine(q)
        U, V = self.decode_factors(tokens)
        decoded = F.normalize(self.decode_query(cond), dim=-1)
        q_prime = F.normalize(self.cfg.query_mix * decoded + (1 - self.cfg.query_mix) * q, dim=-1)
        return U, V, q_prime
