"""The one registry of adapter kinds: the name saved in an adapter file → its module and config classes.

Every adapter kind implements `Adapter`: the service, online sessions and training use only that protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from ..encoder import Encoder
from .hystar import AdapterConfig, HystarAdapter
from .prompts import GramPromptAdapter, PromptConfig


@runtime_checkable
class Adapter(Protocol):
    kind: str
    cfg: Any
    base_fingerprint: str

    def __call__(self, base: Encoder, features: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]: ...

    def init_for_training(self, base: Encoder, queries: torch.Tensor, photos: torch.Tensor) -> None: ...

    def static_shift_modules(self) -> list[nn.Module]: ...

    def static_shifts(self) -> dict[str, torch.Tensor]: ...

    def singular_value_norms(self) -> tuple[dict[int, float], dict[str, float]]: ...


@runtime_checkable
class CachesDerivedWeights(Protocol):
    """A module that caches weights derived from its parameters (the Hystar adapter's merged MLP weights)."""

    def forget_derived(self) -> None: ...


@dataclass(frozen=True)
class AdapterKind:
    name: str
    module: type[nn.Module]
    config: type


ADAPTER_KINDS = {kind.name: kind for kind in (AdapterKind("hystar", HystarAdapter, AdapterConfig),
                                              AdapterKind("gram-prompts", GramPromptAdapter, PromptConfig))}


def adapter_kind(name: str) -> AdapterKind:
    if name not in ADAPTER_KINDS:
        raise ValueError(f"unknown adapter kind {name!r}; known: {', '.join(ADAPTER_KINDS)}")
    return ADAPTER_KINDS[name]


def kind_of_config(config: Any) -> AdapterKind:
    for kind in ADAPTER_KINDS.values():
        if isinstance(config, kind.config):
            return kind
    raise TypeError(f"{type(config).__name__} is not the config of any adapter kind")


def build_adapter(base: Encoder, config: Any) -> nn.Module:
    """A fresh adapter of the kind `config` configures (at init: the base encoder unchanged)."""
    return kind_of_config(config).module(base, config)
