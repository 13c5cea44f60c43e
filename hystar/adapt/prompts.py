"""The Gram-prompt baseline (FreestyleRet-style): Gram-initialised deep style prompts on a frozen encoder.

Style space: Gram statistics of the early tokens of training queries, clustered by k-means into `styles` centres.
Each block gets, per centre, `tokens` prompt tokens initialised from that centre's Gram matrix. A query's prompts are
the softmax(−distance)-weighted mix of the centres' prompts, appended to the tokens before every block and dropped
after it (deep prompt tuning). Unlike the published code, the computed prompts are what the encoder uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .codes import gram_code, gram_projection


@dataclass(frozen=True)
class PromptConfig:
    styles: int = 4
    tokens: int = 4
    gram_rank: int = 32
    temperature: float = 1.0

    @classmethod
    def from_json(cls, data: dict) -> PromptConfig:
        return cls(**data)


def kmeans(x: torch.Tensor, k: int, iterations: int = 30, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centres = x[torch.randperm(len(x), generator=generator)[:k]].clone()
    for _ in range(iterations):
        assign = torch.cdist(x, centres).argmin(1)
        for j in range(k):
            members = x[assign == j]
            if len(members):
                centres[j] = members.mean(0)
    return centres


class GramPromptAdapter(nn.Module):
    kind = "gram-prompts"

    def __init__(self, base, cfg: PromptConfig | None = None):
        super().__init__()
        self.cfg = cfg or PromptConfig()
        blocks = base.visual.blocks
        width = blocks[0].ln_1.normalized_shape[0]
        self.base_fingerprint = base.fingerprint
        self.register_buffer("gram_projection", gram_projection(width, self.cfg.gram_rank))
        code_dim = self.cfg.gram_rank * (self.cfg.gram_rank + 1) // 2
        self.register_buffer("centres", torch.zeros(self.cfg.styles, code_dim))
        self.register_buffer("code_scale", torch.ones(()))
        self.prompts = nn.Parameter(torch.zeros(len(blocks), self.cfg.styles, self.cfg.tokens, width))

    def codes(self, base, features: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return gram_code(base.visual.embed(features), self.gram_projection)

    @torch.no_grad()
    def init_from_codes(self, codes: torch.Tensor) -> None:
        """k-means style centres, and prompts initialised from each centre's Gram matrix (rows → token space)."""
        self.code_scale.fill_(float(torch.cdist(codes, codes.mean(0, keepdim=True)).mean()))
        self.centres.copy_(kmeans(codes, self.cfg.styles))
        rank = self.cfg.gram_rank
        rows, cols = torch.triu_indices(rank, rank)
        for k, centre in enumerate(self.centres):
            gram = torch.zeros(rank, rank)
            gram[rows, cols] = centre
            gram = gram + gram.T - torch.diag(gram.diagonal())
            eigenvalues, eigenvectors = torch.linalg.eigh(gram)
            top = eigenvectors[:, -self.cfg.tokens:].T * eigenvalues[-self.cfg.tokens:].clamp_min(0).sqrt()[:, None]
            token = F.normalize(top @ self.gram_projection.T, dim=-1)
            self.prompts[:, k] = token.unsqueeze(0).expand(len(self.prompts), -1, -1)

    def init_for_training(self, base, queries: torch.Tensor, photos: torch.Tensor) -> None:
        """Style centres and prompts from the codes of up to 4000 training queries and a quarter as many photos."""
        sample = torch.randperm(len(queries), generator=torch.Generator().manual_seed(0))[:4000]
        features = torch.cat([queries[sample], photos[: len(sample) // 4]]).float()
        self.init_from_codes(torch.cat([self.codes(base, features[i:i + 256]) for i in range(0, len(features), 256)]))

    def static_shift_modules(self) -> list:
        return []

    def singular_value_norms(self) -> tuple[dict[int, float], dict[str, float]]:
        return {}, {}

    def static_shifts(self) -> dict[str, torch.Tensor]:
        return {}

    def style_weights(self, code: torch.Tensor) -> torch.Tensor:
        distance = torch.cdist(code, self.centres) / self.code_scale
        return torch.softmax(-distance / self.cfg.temperature, dim=-1)

    def forward(self, base, features: torch.Tensor) -> tuple[torch.Tensor, dict]:
        visual = base.visual
        x = visual.embed(features)
        with torch.no_grad():
            weights = self.style_weights(gram_code(x, self.gram_projection))
        n = x.shape[1]
        for block, prompts in zip(visual.blocks, self.prompts, strict=True):
            mixed = torch.einsum("bk,ktd->btd", weights, prompts)
            x = block(torch.cat([x, mixed], dim=1))[:, :n]
        return visual.head(x), {}
