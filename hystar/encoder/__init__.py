"""One factory for every encoder: `load_encoder(spec)`.

The search encoder (base + adapter), its protocol and its one constructor: `hystar.encoder.search`.

Specs:
- `hystar-mini`                      the offline model shipped in assets/hystar-mini/
- `hystar-mini:/path/to/folder`      a hystar-mini trained elsewhere (config.json + weights.safetensors)
- `ViT-B-32:laion2b_s34b_b79k`       open_clip architecture with hub weights (needs the network or a cache)
- `ViT-B-32:/path/ckpt.safetensors`  open_clip architecture with a local checkpoint (.safetensors/.pt/.bin)
- `ViT-B-32:random`                  open_clip architecture, untrained
"""

from __future__ import annotations

from functools import lru_cache

from ..defaults import DEFAULT_ENCODER
from .base import Encoder, TextTower, VisionTower
from .mini import load_mini
from .openclip import HubUnavailableError, load_openclip

__all__ = ["DEFAULT_ENCODER", "Encoder", "HubUnavailableError", "TextTower", "VisionTower", "load_encoder",
           "shared_encoder"]


def load_encoder(spec: str = DEFAULT_ENCODER) -> Encoder:
    """A fresh encoder in eval mode on the CPU; see the module doc for the spec forms."""
    spec = spec.strip()
    if spec == "hystar-mini":
        return load_mini()
    if spec.startswith("hystar-mini:"):
        return load_mini(spec.split(":", 1)[1])
    if ":" not in spec:
        raise ValueError(f"encoder spec {spec!r} must be 'hystar-mini' or 'ARCH:WEIGHTS' "
                         f"(e.g. 'ViT-B-32:laion2b_s34b_b79k', 'ViT-B-32:/path/ckpt.safetensors', 'ViT-B-32:random')")
    arch, weights = spec.split(":", 1)
    return load_openclip(arch, weights)


@lru_cache(maxsize=4)
def shared_encoder(spec: str = DEFAULT_ENCODER) -> Encoder:
    """One read-only instance per spec for a process (app, CLI); never train or mutate it."""
    return load_encoder(spec).requires_grad_(False)
