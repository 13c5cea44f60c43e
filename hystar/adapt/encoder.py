"""`HystarEncoder`: a base encoder and an adapter behind the `Encoder` interface (the search-encoder protocol)."""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn

from ..encoder import Encoder


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
                "static": self.adapter.static_shifts()}

