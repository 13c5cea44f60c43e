"""Frozen-trunk features computed once and cached on disk, so training runs on the CPU in minutes.

A *view* is one image as the encoder sees it: a file, optionally re-rendered in a view style (a
synthetic style, drawn on the canvas, normalised as a sketch query: `hystar.synthetic_canvas`). A *feature set*
is a named list of views; its trunk features are stored as one float16 array, written in resumable chunks.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm import tqdm

from .data import Dataset, Item
from .encoder import Encoder
from .images import open_image
from .io import atomic_open
from .paths import DEFAULT_CACHE
from .synthetic_canvas import render_view

CACHE_ENV = "HYSTAR_CACHE"
CHUNK = 512


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


@dataclass(frozen=True)
class View:
    item: Item
    style: str | None = None  # None: the file as it is; else a view style of it (`hystar.synthetic_canvas`)

    @property
    def key(self) -> str:
        return f"{self.item.dataset}/{self.item.path.name}" + (f"@{self.style}" if self.style else "")

    def load(self):
        image = open_image(self.item.path)
        return render_view(image, self.style, self.item.key, file_key=self.key) if self.style else image


class _ViewImages(TorchDataset):
    def __init__(self, views: Sequence[View], preprocess):
        self.views, self.preprocess = views, preprocess

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.preprocess(self.views[index].load())


def _set_dir(encoder: Encoder, name: str, views: Sequence[View]) -> Path:
    digest = hashlib.sha1("\n".join(v.key for v in views).encode()).hexdigest()[:10]
    trunk_id = getattr(encoder.visual, "trunk_id", None) or encoder.name.split(":")[0]
    return cache_root() / "trunk" / trunk_id / f"{name}-{digest}"


@torch.no_grad()
def trunk_features(encoder: Encoder, views: Sequence[View], name: str, batch_size: int = 64,
                   workers: int = 1) -> torch.Tensor:
    """Float16 trunk features of `views`, from the cache when present; computation resumes chunk by chunk."""
    folder = _set_dir(encoder, name, views)
    final = folder / "features.npy"
    if final.is_file():
        return torch.from_numpy(np.load(final))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "keys.json").write_text(json.dumps([v.key for v in views]))
    chunks = []
    progress = tqdm(total=len(views), desc=f"trunk features: {name}", unit="img")
    for start in range(0, len(views), CHUNK):
        part = folder / f"part{start // CHUNK:05d}.npy"
        subset = views[start:start + CHUNK]
        if not part.is_file():
            loader = DataLoader(_ViewImages(subset, encoder.preprocess), batch_size=batch_size,
                                num_workers=workers)
            outputs = [encoder.visual.trunk(batch.to(encoder.device)).half().cpu() for batch in loader]
            with atomic_open(part) as handle:
                np.save(handle, torch.cat(outputs).numpy())
        chunks.append(np.load(part))
        progress.update(len(subset))
    progress.close()
    features = np.concatenate(chunks)
    with atomic_open(final) as handle:
        np.save(handle, features)
    for part in folder.glob("part*.npy"):
        part.unlink()
    return torch.from_numpy(features)


@torch.no_grad()
def text_features(encoder: Encoder, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """Frozen text-encoder features (before the trainable projection) for hystar-mini's MiniLM tower."""
    out = []
    for start in range(0, len(texts), batch_size):
        out.append(encoder.text.features(encoder.tokenize(texts[start:start + batch_size])))
    return torch.cat(out) if out else torch.empty(0, encoder.text.proj.in_features)


def dataset_features(encoder, dataset: Dataset) -> torch.Tensor:
    """Trunk features of every item of `dataset`, in manifest order (shared by training and evaluation)."""
    return trunk_features(encoder, [View(item) for item in dataset.items], f"{dataset.name}-all")
