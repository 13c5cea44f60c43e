"""open_clip models behind the Hystar encoder interface: hub weights, local checkpoints, random init."""

from __future__ import annotations

import os
import pickle
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transformer import VisionTransformer

from .base import Encoder, TextTower, VisionTower

HUB_HOST = "huggingface.co"
HUB_PROBE_SECONDS = 3.0
OFFLINE_ALTERNATIVES = (
    "offline alternatives: 'hystar-mini' (ships with Hystar), 'ARCH:/path/to/checkpoint.safetensors' "
    "(a local open_clip checkpoint, e.g. 'ViT-B-32:/models/vit_b_32.safetensors'), or 'ARCH:random' (untrained)"
)


class HubUnavailableError(RuntimeError):
    """Hub weights were asked for but cannot be fetched from here."""


class OpenClipVisionTower(VisionTower):
    def __init__(self, visual: VisionTransformer):
        super().__init__()
        if not isinstance(visual, VisionTransformer):
            raise TypeError(f"Hystar needs an open_clip ViT vision tower, got {type(visual).__name__}")
        if not visual.transformer.batch_first:
            raise TypeError("Hystar needs a batch-first open_clip transformer")
        self.vit = visual
        self.blocks = visual.transformer.resblocks

    def trunk(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return self.vit._embeds(features)

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        pooled, _ = self.vit._pool(tokens)
        return pooled @ self.vit.proj if self.vit.proj is not None else pooled


class OpenClipTextTower(TextTower):
    def __init__(self, model: open_clip.CLIP, tokenizer: Any):
        super().__init__()
        self.model = model
        self._tokenizer = tokenizer

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self._tokenizer(list(texts))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens.to(self.model.positional_embedding.device), normalize=False)


def _hub_reachable(host: str = HUB_HOST, timeout: float = HUB_PROBE_SECONDS) -> bool:
    """A TCP connect to the hub within `timeout`, DNS included (a thread bounds a hanging resolver)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _cached_on_disk(arch: str, tag: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    repo = (cfg.get("hf_hub") or "").strip("/")
    if not repo:
        return False
    names = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    return any(isinstance(try_to_load_from_cache(repo, name), str) for name in names)


def check_hub_access(arch: str, tag: str) -> None:
    """Fail in seconds, with the way out, when hub weights are neither cached nor downloadable."""
    known = open_clip.list_pretrained_tags_by_model(arch)
    if tag not in known:
        raise ValueError(f"open_clip has no pretrained tag {tag!r} for {arch}; known: {', '.join(known) or 'none'}")
    if _cached_on_disk(arch, tag):
        return
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise HubUnavailableError(f"{arch}:{tag} is not in the local cache and HF_HUB_OFFLINE is set; "
                                  f"{OFFLINE_ALTERNATIVES}")
    if not _hub_reachable():
        raise HubUnavailableError(f"{arch}:{tag} needs a download from {HUB_HOST}, which cannot be reached; "
                                  f"{OFFLINE_ALTERNATIVES}")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:  # a pickle that would run code, or not a checkpoint at all
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"checkpoint {path.name} refused: only tensors may be unpickled ({reason}); "
                             f"use a .safetensors file or a .pt holding a plain state dict") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_openclip(arch: str, weights: str) -> Encoder:
    """`weights`: an open_clip pretrained tag, a local checkpoint path, or 'random'."""
    if arch not in open_clip.list_models():
        raise ValueError(f"unknown open_clip architecture {arch!r}")
    path = Path(weights).expanduser()
    if weights == "random":
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None)
    elif path.suffix in (".safetensors", ".pt", ".pth", ".bin") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None)
        model.load_state_dict(_read_state_dict(path))
    else:
        check_hub_access(arch, weights)
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=weights)
    model.eval()
    embed_dim = model.text_projection.shape[1] if model.text_projection is not None else model.visual.output_dim
    return Encoder(f"{arch}:{weights if weights == 'random' or not path.exists() else path.name}",
                   OpenClipVisionTower(model.visual), OpenClipTextTower(model, open_clip.get_tokenizer(arch)),
                   preprocess, int(embed_dim))
