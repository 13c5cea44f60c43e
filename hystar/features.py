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
from .doodles import Doodle, doodle_canvas, draw_doodle
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
        return f"{self.item.dataset}/{self.item.file_name}" + (f"@{self.style}" if self.style else "")

    def load(self):
        style = self.style
        if isinstance(self.item, Doodle):  # no image file: the first step draws it (`hystar.doodles`)
            first, _, style = (style or "").partition("+")
            image = draw_doodle(self.item, self.key, doodle_canvas(first))
        else:
            image = open_image(self.item.path)
        return render_view(image, style, self.item.key, file_key=self.key) if style else image


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


def _view_id(view: View) -> str:
    """Unique across sets (`View.key` is not: PACS repeats file names across classes)."""
    return f"{view.item.source_id}@{view.style or ''}"


class _CachedRows:
    """Rows of the completed feature sets of one trunk, by view: a view cached in any set is never recomputed
    (the v2 training set, adapter training and evaluation share most of their views)."""

    def __init__(self, trunk_dir: Path):
        self.where: dict[str, tuple[Path, int]] = {}
        self.arrays: dict[Path, np.ndarray] = {}
        for folder in sorted(trunk_dir.glob("*/")) if trunk_dir.is_dir() else []:
            ids = folder / "views.json"
            if (folder / "features.npy").is_file() and ids.is_file():
                for row, view_id in enumerate(json.loads(ids.read_text())):
                    self.where.setdefault(view_id, (folder, row))

    def get(self, view: View) -> np.ndarray | None:
        found = self.where.get(_view_id(view))
        if found is None:
            return None
        folder, row = found
        if folder not in self.arrays:
            self.arrays[folder] = np.load(folder / "features.npy", mmap_mode="r")
        return np.asarray(self.arrays[folder][row])


@torch.no_grad()
def trunk_features(encoder: Encoder, views: Sequence[View], name: str, batch_size: int = 64,
                   workers: int | None = None) -> torch.Tensor:
    """Float16 trunk features of `views`, from the cache when present (the set, or its views in other sets of the
    same trunk); computation resumes chunk by chunk. `workers` render views (art, canvas: slower than the trunk)
    while the trunk runs; default one a core, at most 4."""
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    folder = _set_dir(encoder, name, views)
    final = folder / "features.npy"
    ids = folder / "views.json"
    if final.is_file():
        if not ids.is_file():  # a set cached before views.json existed: its views become shareable
            ids.write_text(json.dumps([_view_id(v) for v in views]))
        return torch.from_numpy(np.load(final))
    cached = _CachedRows(folder.parent)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "keys.json").write_text(json.dumps([v.key for v in views]))
    chunks = []
    progress = tqdm(total=len(views), desc=f"trunk features: {name}", unit="img")
    for start in range(0, len(views), CHUNK):
        part = folder / f"part{start // CHUNK:05d}.npy"
        subset = views[start:start + CHUNK]
        if not part.is_file():
            rows = [cached.get(v) for v in subset]
            todo = [v for v, row in zip(subset, rows, strict=True) if row is None]
            loader = DataLoader(_ViewImages(todo, encoder.preprocess), batch_size=batch_size, num_workers=workers)
            computed = iter(torch.cat([encoder.visual.trunk(batch.to(encoder.device)).half().cpu()
                                       for batch in loader]).numpy()) if todo else iter(())
            with atomic_open(part) as handle:
                np.save(handle, np.stack([row if row is not None else next(computed) for row in rows]))
        chunks.append(np.load(part))
        progress.update(len(subset))
    progress.close()
    features = np.concatenate(chunks)
    with atomic_open(final) as handle:
        np.save(handle, features)
    ids.write_text(json.dumps([_view_id(v) for v in views]))
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


def item_features(encoder, items: Sequence[Item], name: str) -> torch.Tensor:
    """Trunk features of `items` as stored (no view style), in their order."""
    return trunk_features(encoder, [View(item) for item in items], name)


def dataset_features(encoder, dataset: Dataset) -> torch.Tensor:
    """Trunk features of every item of `dataset`, in manifest order (shared by training and evaluation)."""
    return item_features(encoder, dataset.items, f"{dataset.name}-all")
