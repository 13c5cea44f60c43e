"""Hystar adapters: per-input singular-value shifts of attention, static gated shifts of every MLP.

For a chosen block, the packed QKV in-projection is decomposed once, W = U diag(S) Vᵀ. A hypernetwork maps the image's
style code c_b to ΔS_b and the block computes x·(U diag(S + ΔS_b) Vᵀ)ᵀ = ((x·V) ⊙ (S + ΔS_b))·Uᵀ: one extra d×d
product per token and never a B×3d×d tensor. Every block's MLP `c_fc` and `c_proj` gets W' = U diag(S + δs·σ(g)) Vᵀ
with δs = 0 at init, which is static and merged into one weight at inference.

With ΔS = 0 and δs = 0 the adapted encoder is the base encoder. Works on any vision tower whose blocks are open_clip
`ResidualAttentionBlock`s (hystar-mini, open_clip ViTs).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

from .encoder import Encoder, load_encoder

STYLE_CODES = ("gram", "embedding", "tokens")


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


def gram_code(tokens: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """FreestyleRet-like style statistics: upper triangle of the Gram matrix of projected early tokens."""
    z = tokens[:, 1:] @ projection
    gram = z.transpose(1, 2) @ z / z.shape[1]
    rows, cols = torch.triu_indices(gram.shape[1], gram.shape[2], device=gram.device)
    return gram[:, rows, cols]


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
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("gram_projection",
                             torch.randn(width, self.cfg.gram_rank, generator=generator) / width ** 0.5)
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
        visual = base.visual
        x = visual.embed(features)
        code = self.style_code(base, features, x)
        deltas = {i: self.hyper[str(i)](code) for i in self.dynamic}
        for i, (block, (fc, proj)) in enumerate(zip(visual.blocks, self.mlp_weights(visual.blocks), strict=True)):
            x = adapted_block(block, x, self.qkv[str(i)] if i in deltas else None, deltas.get(i), fc, proj)
        return visual.head(x), deltas

    def static_shifts(self) -> dict[str, torch.Tensor]:
        if self.fc is None:
            return {}
        out = {}
        for i, (fc, proj) in enumerate(zip(self.fc, self.proj, strict=True)):
            out[f"block{i}.c_fc"] = fc.shift().detach()
            out[f"block{i}.c_proj"] = proj.shift().detach()
        return out


def file_fingerprint(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


@dataclass
class AdapterFile:
    kind: str
    config: object
    base_fingerprint: str
    base_spec: str
    training: dict = field(default_factory=dict)


class AdapterMismatchError(ValueError):
    """An adapter trained on another base encoder."""


def save_adapter(adapter: HystarAdapter, path: Path | str, base_spec: str, training: dict | None = None) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in adapter.state_dict().items()}
    meta = {"kind": adapter.kind, "config": asdict(adapter.cfg), "base_fingerprint": adapter.base_fingerprint,
            "base_spec": base_spec, "training": training or {}}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"hystar": json.dumps(meta)})
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def read_adapter_meta(path: Path | str) -> AdapterFile:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"adapter file {path} does not exist")
    try:
        with safe_open(str(path), "pt") as handle:
            raw = (handle.metadata() or {}).get("hystar")
    except Exception as error:  # safetensors raises its own error types for damaged headers
        raise ValueError(f"{path.name} is not a readable adapter file (safetensors: {error})") from None
    if raw is None:
        raise ValueError(f"{path} is not a Hystar adapter (no 'hystar' metadata)")
    meta = json.loads(raw)
    kind = meta.get("kind", "hystar")
    cfg = meta["config"]
    if kind == "hystar":
        if cfg.get("dynamic_blocks") is not None:
            cfg["dynamic_blocks"] = tuple(cfg["dynamic_blocks"])
        config = AdapterConfig(**cfg)
    elif kind == "gram-prompts":
        from .baselines import PromptConfig

        config = PromptConfig(**cfg)
    else:
        raise ValueError(f"{path}: unknown adapter kind {kind!r}")
    return AdapterFile(kind, config, meta["base_fingerprint"], meta.get("base_spec", "?"), meta.get("training", {}))


def build_adapter(base: Encoder, kind: str, config) -> nn.Module:
    if kind == "gram-prompts":
        from .baselines import GramPromptAdapter

        return GramPromptAdapter(base, config)
    return HystarAdapter(base, config)


def load_adapter(base: Encoder, path: Path | str) -> nn.Module:
    from safetensors.torch import load_file

    meta = read_adapter_meta(path)
    if meta.base_fingerprint != base.fingerprint:
        raise AdapterMismatchError(
            f"adapter {Path(path).name} was trained on {meta.base_spec} (fingerprint {meta.base_fingerprint}); "
            f"it cannot run on {base.name} (fingerprint {base.fingerprint})")
    adapter = build_adapter(base, meta.kind, meta.config)
    adapter.load_state_dict(load_file(str(path)))
    return adapter.eval()


class HystarEncoder(nn.Module):
    """Base encoder + adapter behind the same interface as `Encoder`; texts use the untouched text tower."""

    def __init__(self, base: Encoder, adapter: nn.Module, adapter_fingerprint: str = "trained-in-memory"):
        super().__init__()
        self.base, self.adapter = base, adapter
        self.name = f"{base.name}+hystar"
        self.preprocess, self.embed_dim, self.visual, self.text = base.preprocess, base.embed_dim, base.visual, \
            base.text
        self.adapter_fingerprint = adapter_fingerprint

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.base.fingerprint}:{self.adapter_fingerprint}".encode()).hexdigest()[:16]

    @property
    def device(self) -> torch.device:
        return self.base.device

    def tokenize(self, texts):
        return self.base.tokenize(texts)

    def encode_text(self, tokens, normalize: bool = True) -> torch.Tensor:
        return self.base.encode_text(tokens, normalize)

    def encode_features(self, features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        z, _ = self.adapter(self.base, features)
        return F.normalize(z, dim=-1) if normalize else z

    def encode_image(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.encode_features(self.base.visual.trunk(pixels), normalize)

    @torch.no_grad()
    def explain(self, pixels: torch.Tensor) -> dict:
        """Embedding, base embedding and the adaptation itself, for the views."""
        features = self.base.visual.trunk(pixels)
        adapted, deltas = self.adapter(self.base, features)
        return {"adapted": F.normalize(adapted, dim=-1), "base": self.base.encode_features(features),
                "delta_s": dict(deltas),
                "static": self.adapter.static_shifts() if hasattr(self.adapter, "static_shifts") else {}}


@lru_cache(maxsize=4)
def shared_adapted(encoder_spec: str, adapter_path: str) -> HystarEncoder:
    """One read-only adapted encoder per (spec, adapter file) for a process, on the shared base encoder."""
    from .encoder import shared_encoder

    base = shared_encoder(encoder_spec)
    adapter = load_adapter(base, adapter_path).requires_grad_(False)
    return HystarEncoder(base, adapter, file_fingerprint(Path(adapter_path))).eval()


def load_adapted(encoder_spec: str, adapter_path: Path | str | None) -> Encoder | HystarEncoder:
    """The search encoder: base alone, or base + adapter file (refused if trained on another base)."""
    base = load_encoder(encoder_spec)
    if adapter_path is None:
        return base
    adapter = load_adapter(base, adapter_path)
    return HystarEncoder(base, adapter, file_fingerprint(Path(adapter_path))).eval()
