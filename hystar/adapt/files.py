"""Adapter files: safetensors weights with the kind, config and base-encoder fingerprint in their metadata."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from ..encoder import Encoder
from ..io import load_tensors, read_metadata, save_with_metadata
from .kinds import adapter_kind, build_adapter

METADATA_KEY = "hystar"


@dataclass
class AdapterFile:
    kind: str
    config: object
    base_fingerprint: str
    base_spec: str
    training: dict = field(default_factory=dict)


class AdapterMismatchError(ValueError):
    """An adapter trained on another base encoder."""


def save_adapter(adapter: nn.Module, path: Path | str, base_spec: str, training: dict | None = None) -> Path:
    meta = {"kind": adapter.kind, "config": asdict(adapter.cfg), "base_fingerprint": adapter.base_fingerprint,
            "base_spec": base_spec, "training": training or {}}
    return save_with_metadata(adapter.state_dict(), path, METADATA_KEY, meta)


def read_adapter_meta(path: Path | str) -> AdapterFile:
    meta = read_metadata(path, METADATA_KEY, "adapter")
    if meta is None:
        raise ValueError(f"{path} is not a Hystar adapter (no 'hystar' metadata)")
    kind = meta.get("kind", "hystar")
    try:
        config = adapter_kind(kind).config.from_json(meta["config"])
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return AdapterFile(kind, config, meta["base_fingerprint"], meta.get("base_spec", "?"), meta.get("training", {}))


def load_adapter(base: Encoder, path: Path | str) -> nn.Module:
    meta = read_adapter_meta(path)
    if meta.base_fingerprint != base.fingerprint:
        raise AdapterMismatchError(
            f"adapter {Path(path).name} was trained on {meta.base_spec} (fingerprint {meta.base_fingerprint}); "
            f"it cannot run on {base.name} (fingerprint {base.fingerprint})")
    adapter = build_adapter(base, meta.config)
    adapter.load_state_dict(load_tensors(path))
    return adapter.eval()
