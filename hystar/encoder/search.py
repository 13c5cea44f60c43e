"""The search encoder: the base encoder, adapted when an adapter file is given; its protocol, identity and the one
constructor every caller uses (service, CLI, evaluation, benches)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from ..adapt import HystarEncoder, load_adapter
from ..io import file_fingerprint
from . import Encoder, load_encoder, shared_encoder


@runtime_checkable
class SearchEncoder(Protocol):
    """What embeds galleries and queries: an `Encoder`, or a base encoder with an adapter (`HystarEncoder`)."""

    name: str
    embed_dim: int
    preprocess: Any
    visual: Any
    text: Any

    @property
    def base(self) -> Encoder: ...           # the base encoder (an `Encoder` is its own base)

    @property
    def adapter(self) -> Any: ...            # the adapter module, None for a base encoder

    @property
    def fingerprint(self) -> str: ...

    @property
    def device(self) -> torch.device: ...

    def tokenize(self, texts: Any) -> Any: ...

    def encode_text(self, tokens: Any, normalize: bool = True) -> torch.Tensor: ...

    def encode_features(self, features: torch.Tensor, normalize: bool = True) -> torch.Tensor: ...

    def encode_image(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor: ...


@dataclass(frozen=True)
class EncoderIdentity:
    """What made the vectors: the base encoder's weights and, when adapted, the adapter file."""

    spec: str
    name: str
    fingerprint: str
    adapter_path: str | None = None
    adapter_fingerprint: str | None = None

    @classmethod
    def of(cls, base: Encoder, spec: str | None = None,
           adapter_path: str | os.PathLike | None = None) -> EncoderIdentity:
        adapter = Path(adapter_path).absolute() if adapter_path is not None else None
        return cls(spec or base.name, base.name, base.fingerprint, str(adapter) if adapter else None,
                   file_fingerprint(adapter) if adapter else None)

    def describe(self) -> str:
        text = f"encoder {self.spec!r} (fingerprint {self.fingerprint})"
        if self.adapter_fingerprint:
            text += f" with adapter {self.adapter_path} (fingerprint {self.adapter_fingerprint})"
        return text + ("" if self.adapter_fingerprint else " without an adapter")


def load_search_encoder(encoder_spec: str, adapter_path: str | os.PathLike | None = None, *, shared: bool = True,
                        base: Encoder | None = None) -> SearchEncoder:
    """The one constructor of search encoders: the base encoder, adapted when an adapter file is given (refused,
    `AdapterMismatchError`, when trained on another base).

    `shared` (default): one read-only instance per (spec, adapter file) for the process, on the shared base
    encoder. Else a fresh one, on `base` when given (several adapters compared on one base).
    """
    if adapter_path is not None and not Path(adapter_path).is_file():
        raise FileNotFoundError(f"adapter file {adapter_path} does not exist")
    if shared and base is None:
        if adapter_path is None:
            return shared_encoder(encoder_spec)
        return _shared_adapted(encoder_spec, str(Path(adapter_path).resolve()))
    base = base if base is not None else load_encoder(encoder_spec)
    return base if adapter_path is None else _adapted(base, adapter_path)


def open_search_encoder(encoder_spec: str,
                        adapter_path: str | os.PathLike | None = None) -> tuple[SearchEncoder, EncoderIdentity]:
    """The shared search encoder and its identity (indexes record the base encoder's and the adapter file's)."""
    encoder = load_search_encoder(encoder_spec, adapter_path)
    return encoder, EncoderIdentity.of(encoder.base, encoder_spec, adapter_path)


def _adapted(base: Encoder, adapter_path: str | os.PathLike) -> SearchEncoder:
    adapter = load_adapter(base, adapter_path)
    return HystarEncoder(base, adapter, file_fingerprint(adapter_path)).eval()


@lru_cache(maxsize=4)
def _shared_adapted(encoder_spec: str, adapter_path: str) -> SearchEncoder:
    base = shared_encoder(encoder_spec)
    encoder = _adapted(base, adapter_path)
    encoder.adapter.requires_grad_(False)
    return encoder
