"""The one encoder interface every part of Hystar talks to.

A vision tower is split where the adapters need it:

    pixels --trunk--> features --embed--> tokens --blocks (open_clip ResidualAttentionBlocks)--> tokens --head--> z

`trunk` is frozen and its output can be cached (hystar-mini: the EfficientNet trunk; a ViT: the identity), so
training never re-runs it. Adapters run the blocks themselves (see `hystar.adapt`), so nothing here is stateful.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn


class VisionTower(nn.Module):
    blocks: nn.ModuleList

    def trunk(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def run_blocks(self, tokens: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            tokens = block(tokens)
        return tokens

    def forward_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.run_blocks(self.embed(features)))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.forward_features(self.trunk(pixels))


class TextTower(nn.Module):
    def tokenize(self, texts: Sequence[str]) -> Any:
        raise NotImplementedError

    def forward(self, tokens: Any) -> torch.Tensor:
        raise NotImplementedError


def tensor_fingerprint(module: nn.Module, name: str) -> str:
    digest = hashlib.sha256(name.encode())
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class Encoder(nn.Module):
    """An image-text encoder in a shared, L2-normalised embedding space."""

    def __init__(self, name: str, visual: VisionTower, text: TextTower,
                 preprocess: Callable[[Image.Image], torch.Tensor], embed_dim: int):
        super().__init__()
        self.name = name
        self.visual = visual
        self.text = text
        self.preprocess = preprocess
        self.embed_dim = embed_dim
        self._fingerprint: str | None = None

    adapter = None  # the search-encoder protocol (`hystar.encoder.search`): a base encoder is not adapted

    @property
    def base(self) -> Encoder:
        """The search-encoder protocol: the encoder whose fingerprint identifies an index (itself)."""
        return self

    @property
    def fingerprint(self) -> str:
        """Hash of the architecture name and every weight, as loaded; identical weights give the same value."""
        if self._fingerprint is None:
            self._fingerprint = tensor_fingerprint(self, self.name)
        return self._fingerprint

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def tokenize(self, texts: Sequence[str]) -> Any:
        return self.text.tokenize(list(texts))

    def encode_features(self, features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Embedding from frozen trunk features (cached or fresh); `encode_image` is trunk + this."""
        z = self.visual.forward_features(features)
        return F.normalize(z, dim=-1) if normalize else z

    def encode_image(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.encode_features(self.visual.trunk(pixels), normalize)

    def encode_text(self, tokens: Any, normalize: bool = True) -> torch.Tensor:
        z = self.text(tokens)
        return F.normalize(z, dim=-1) if normalize else z
