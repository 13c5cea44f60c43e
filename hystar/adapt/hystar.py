"""The Hystar adapter: per-input singular-value shifts of attention, static gated shifts of every MLP.

For a chosen block, the packed QKV in-projection is decomposed once, W = U diag(S) Vᵀ. A hypernetwork maps the image's
style code c_b to ΔS_b and the block computes x·(U diag(S + ΔS_b) Vᵀ)ᵀ = ((x·V) ⊙ (S + ΔS_b))·Uᵀ: one extra d×d
product per token and never a B×3d×d tensor. Every block's MLP `c_fc` and `c_proj` gets W' = U diag(S + δs·σ(g)) Vᵀ
with δs = 0 at init, which is static and merged into one weight at inference.

With ΔS = 0 and δs = 0 the adapted encoder is the base encoder. Works on any vision tower whose blocks are open_clip
`ResidualAttentionBlock`s (hystar-mini, open_clip ViTs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

from ..encoder import Encoder
from .codes import STYLE_CODES, gram_code, gram_projection


@dataclass(frozen=True)
class AdapterConfig:
    dynamic_blocks: tuple[int, ...] | None = None  # None: spread over the depth (see `default_dynamic_blocks`)
    style_code: str = "gram"
    gram_rank: int = 32
    hyper_hidden: int = 256
    static_mlp: bool = True

    def __post_init__(self) -> None:
        if self.style_code not in STYLE_CODES:
            raise ValueError(f"style_code must be one of {STYLE_CODES}, got {self.style_code!r}")

    @classmethod
    def from_json(cls, data: dict) -> AdapterConfig:
        data = dict(data)
        if data.get("dynamic_blocks") is not None:
            data["dynamic_blocks"] = tuple(data["dynamic_blocks"])
        return cls(**data)


def default_dynamic_blocks(depth: int) -> tuple[int, ...]:
    """Every block but the first for shallow towers; about every second block of the upper part for deep ones."""
    if depth <= 4:
        return tuple(range(1, depth))
    return tuple(range(depth // 4, depth, 2)) + ((depth - 1,) if (depth - 1 - depth // 4) % 2 else ())


class SVDFactors(nn.Module):
    """Frozen W = U diag(S) Vᵀ of one weight (out × in), as buffers."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
        self.register_buffer("u", u.float(), persistent=False)
        self.register_buffer("s", s.float(), persistent=False)
        self.register_buffer("v", vh.T.contiguous().float(), persistent=False)

    def apply(self, x: torch.Tensor, singular_values: torch.Tensor) -> torch.Tensor:
        """x·(U diag(σ) Vᵀ)ᵀ for σ of shape (r,) or per sample (B, r)."""
        if singular_values.dim() == 2:
            singular_values = singular_values.unsqueeze(1)
        return ((x @ self.v) * singular_values) @ self.u.T

    def offset(self, delta: torch.Tensor) -> torch.Tensor:
        """U diag(δ) Vᵀ, the weight change of a static singular-value offset."""
        return (self.u * delta) @ self.v.T


class StaticShift(nn.Module):
    """Learned δs (init 0) gated by sigmoid(g) (g init 0) on the singular values of a frozen linear layer."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.factors = SVDFactors(linear.weight)
        self.delta = nn.Parameter(torch.zeros_like(self.factors.s))
        self.gate = nn.Parameter(torch.zeros(()))

    def shift(self) -> torch.Tensor:
        return self.delta * torch.sigmoid(self.gate)

    def weight(self, base: torch.Tensor) -> torch.Tensor:
        return base + self.factors.offset(self.shift())


class HyperNetwork(nn.Module):
    """Style code -> ΔS for one attention layer; the output layer starts at zero, so ΔS starts at zero."""

    def __init__(self, code_dim: int, hidden: int, rank: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(code_dim), nn.Linear(code_dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, rank))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.net(code)


def attention(block: ResidualAttentionBlock, x: torch.Tensor, qkv_factors: SVDFactors | None,
              delta_s: torch.Tensor | None) -> torch.Tensor:
    """The block's self-attention with an optional per-sample ΔS on its QKV in-projection."""
    mha = block.attn
    if delta_s is None:
        qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias)
    else:
        qkv = qkv_factors.apply(x, qkv_factors.s + delta_s) + mha.in_proj_bias
    batch, tokens, width = x.shape
    heads = mha.num_heads
    q, k, v = (t.view(batch, tokens, heads, width // heads).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, width)
    return mha.out_proj(out)


def adapted_block(block: ResidualAttentionBlock, x: torch.Tensor, qkv_factors: SVDFactors | None,
                  delta_s: torch.Tensor | None, fc_weight: torch.Tensor, proj_weight: torch.Tensor) -> torch.Tensor:
    """ResidualAttentionBlock.forward with the adapters' weights (self-attention, no mask)."""
    x = x + block.ls_1(attention(block, block.ln_1(x), qkv_factors, delta_s))
    mlp = block.mlp
    hidden = mlp.gelu(F.linear(block.ln_2(x), fc_weight, mlp.c_fc.bias))
    return x + block.ls_2(F.linear(hidden, proj_weight, mlp.c_proj.bias))


class HystarAdapter(nn.Module):
    kind = "hystar"

    def __init__(self, base: Encoder, cfg: AdapterConfig | None = None):
        super().__init__()
        self.cfg = cfg or AdapterConfig()
        blocks = base.visual.blocks
        for block in blocks:
            if not isinstance(block, ResidualAttentionBlock) or hasattr(block, "ln_1_kv"):
                raise TypeError("Hystar adapters need open_clip ResidualAttentionBlock self-attention blocks")
        depth, width = len(blocks), blocks[0].ln_1.normalized_shape[0]
        self.base_fingerprint = base.fingerprint
        self.dynamic = tuple(self.cfg.dynamic_blocks if self.cfg.dynamic_blocks is not None
                             else default_dynamic_blocks(depth))
        if any(not 0 <= i < depth for i in self.dynamic):
            raise ValueError(f"dynamic_blocks {self.dynamic} outside 0..{depth - 1}")
        self.register_buffer("gram_projection", gram_projection(width, self.cfg.gram_rank))
        code_dim = {"gram": self.cfg.gram_rank * (self.cfg.gram_rank + 1) // 2, "embedding": base.embed_dim,
                    "tokens": 2 * width}[self.cfg.style_code]
        self.qkv = nn.ModuleDict({str(i): SVDFactors(blocks[i].attn.in_proj_weight) for i in self.dynamic})
        self.hyper = nn.ModuleDict({str(i): HyperNetwork(code_dim, self.cfg.hyper_hidden, width)
                                    for i in self.dynamic})
        self.fc = nn.ModuleList(StaticShift(b.mlp.c_fc) for b in blocks) if self.cfg.static_mlp else None
        self.proj = nn.ModuleList(StaticShift(b.mlp.c_proj) for b in blocks) if self.cfg.static_mlp else None
        self._merged: tuple[tuple[int, ...], list] | None = None

    def style_code(self, base: Encoder, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.cfg.style_code == "gram":
                return gram_code(tokens, self.gram_projection)
            if self.cfg.style_code == "tokens":
                return torch.cat([tokens[:, 1:].mean(1), tokens[:, 1:].std(1)], dim=-1)
            return base.visual.head(base.visual.run_blocks(tokens))

    def mlp_weights(self, blocks: nn.ModuleList) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Static MLP weights; merged once and reused at inference until a parameter changes."""
        if self.fc is None:
            return [(b.mlp.c_fc.weight, b.mlp.c_proj.weight) for b in blocks]
        inference = not self.training and not torch.is_grad_enabled()
        version = tuple(p._version for p in self.parameters()) + tuple(p._version for p in blocks.parameters())
        if inference and self._merged is not None and self._merged[0] == version:
            return self._merged[1]
        weights = [(fc.weight(b.mlp.c_fc.weight), proj.weight(b.mlp.c_proj.weight))
                   for b, fc, proj in zip(blocks, self.fc, self.proj, strict=True)]
        if inference:
            self._merged = (version, weights)
        return weights

    def forward(self, base: Encoder, features: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Unnormalised adapted embedding and the ΔS of each dynamic block (for the views)."""
        return self.forward_tokens(base, features, base.visual.embed(features))

    def forward_tokens(self, base: Encoder, features: torch.Tensor, x: torch.Tensor
                       ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """`forward` from the base's input tokens `x` = `base.visual.embed(features)` (shared with the base side)."""
        visual = base.visual
        code = self.style_code(base, features, x)
        deltas = {i: self.hyper[str(i)](code) for i in self.dynamic}
        for i, (block, (fc, proj)) in enumerate(zip(visual.blocks, self.mlp_weights(visual.blocks), strict=True)):
            x = adapted_block(block, x, self.qkv[str(i)] if i in deltas else None, deltas.get(i), fc, proj)
        return visual.head(x), deltas

    def forget_derived(self) -> None:
        """Drop the merged MLP weights (a private copy must not share them with its original)."""
        self._merged = None

    def init_for_training(self, base: Encoder, queries: torch.Tensor, photos: torch.Tensor) -> None:
        """Nothing to prepare: ΔS and δs start at zero, the base encoder."""

    def static_shift_modules(self) -> list[StaticShift]:
        """The static singular-value offsets (what online adaptation may adapt)."""
        return [*self.fc, *self.proj] if self.fc is not None else []

    def singular_value_norms(self) -> tuple[dict[int, float], dict[str, float]]:
        """‖S‖ of each adapted QKV projection and of each MLP projection: the scale ΔS is shown against."""
        qkv = {int(i): float(f.s.norm()) for i, f in self.qkv.items()}
        mlp = {}
        for layer, shifts in (("fc", self.fc), ("proj", self.proj)):
            for block, shift in enumerate(shifts or []):
                mlp[f"block{block}.c_{layer}"] = float(shift.factors.s.norm())
        return qkv, mlp

    def static_shifts(self) -> dict[str, torch.Tensor]:
        if self.fc is None:
            return {}
        out = {}
        for i, (fc, proj) in enumerate(zip(self.fc, self.proj, strict=True)):
            out[f"block{i}.c_fc"] = fc.shift().detach()
            out[f"block{i}.c_proj"] = proj.shift().detach()
        return out

