"""The one way to embed: images (paths, bytes, PIL, arrays) and texts to L2-normalised float32 vectors."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from .encoder import Encoder
from .images import ImageError, open_image


@dataclass
class ImageBatchResult:
    vectors: np.ndarray          # (n_ok, dim) float32, rows in the order of `ok`
    ok: list[int]                # indices of the inputs that embedded
    errors: dict[int, str]       # index -> one-line reason for inputs that could not be read


def _batches(items: Sequence[Any], size: int) -> Iterator[tuple[int, Sequence[Any]]]:
    for start in range(0, len(items), size):
        yield start, items[start:start + size]


@torch.no_grad()
def embed_pixels(encoder: Encoder, pixels: torch.Tensor) -> np.ndarray:
    return encoder.encode_image(pixels.to(encoder.device)).float().cpu().numpy()


@torch.no_grad()
def embed_images(encoder: Encoder, sources: Sequence[Any], batch_size: int = 32, progress: bool = True,
                 desc: str = "embedding images", loader: Callable[[Any], Image.Image] = open_image,
                 on_batch: Callable[[ImageBatchResult], None] | None = None) -> ImageBatchResult:
    """Embed every readable image; unreadable ones are reported in `errors`, never raised."""
    vectors, ok, errors = [], [], {}
    bar = tqdm(total=len(sources), desc=desc, unit="img", disable=not progress)
    for start, chunk in _batches(sources, batch_size):
        tensors, indices = [], []
        for offset, source in enumerate(chunk):
            try:
                tensors.append(encoder.preprocess(loader(source)))
                indices.append(start + offset)
            except ImageError as error:
                errors[start + offset] = str(error)
        if tensors:
            batch = ImageBatchResult(embed_pixels(encoder, torch.stack(tensors)), indices, {})
            vectors.append(batch.vectors)
            ok.extend(indices)
            if on_batch is not None:
                on_batch(batch)
        bar.update(len(chunk))
    bar.close()
    dim = encoder.embed_dim
    return ImageBatchResult(np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32), ok, errors)


def embed_image(encoder: Encoder, source: Any) -> np.ndarray:
    """One image to one vector; raises `ImageError` with a clear message if it cannot be read."""
    return embed_pixels(encoder, encoder.preprocess(open_image(source)).unsqueeze(0))[0]


@torch.no_grad()
def embed_texts(encoder: Encoder, texts: Iterable[str], batch_size: int = 256) -> np.ndarray:
    texts = list(texts)
    if any(not t.strip() for t in texts):
        raise ValueError("empty text query")
    out = [encoder.encode_text(encoder.tokenize(chunk)).float().cpu().numpy()
           for _, chunk in _batches(texts, batch_size)]
    return np.concatenate(out) if out else np.zeros((0, encoder.embed_dim), np.float32)


@torch.no_grad()
def embed_features(encoder: Any, features: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Cached trunk features (N, ...) to normalised vectors, through `encoder.encode_features`."""
    return torch.cat([encoder.encode_features(features[i:i + batch_size].float())
                      for i in range(0, len(features), batch_size)]).float().numpy()


class _Prefetcher:
    """Decodes and preprocesses the images of a list, in order, in a background thread, so that this work
    overlaps the encoder's forward pass."""

    def __init__(self, paths: Sequence[Path], preprocess: Callable[[Image.Image], Any], ahead: int):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, ahead))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(list(paths), preprocess), daemon=True)
        self._thread.start()

    def _run(self, paths: list[Path], preprocess: Callable[[Image.Image], Any]) -> None:
        for path in paths:
            try:
                item = preprocess(open_image(path))
            except Exception as error:  # handed over in order; embed_images reports or raises it
                item = error
            while not self._stop.is_set():
                try:
                    self._queue.put((path, item), timeout=0.1)
                    break
                except queue.Full:
                    continue
            if self._stop.is_set():
                return

    def __call__(self, path: Path) -> Any:
        expected, item = self._queue.get()
        if expected != path:
            raise RuntimeError(f"prefetcher out of order: asked for {path}, decoded {expected}")
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class _Preprocessed:
    """The encoder as `embed_images` sees it when the prefetcher has already run its preprocessing."""

    def __init__(self, encoder: Encoder):
        self._encoder = encoder

    @staticmethod
    def preprocess(pixels: Any) -> Any:
        return pixels

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)


def embed_files(encoder: Encoder, paths: Sequence[Path], batch_size: int, prefetch: int,
                on_batch: Callable[[ImageBatchResult], None] | None = None) -> ImageBatchResult:
    """`embed_images` over files; with `prefetch` > 0, images are decoded and preprocessed in a thread."""
    if prefetch <= 0:
        return embed_images(encoder, paths, batch_size, progress=False, on_batch=on_batch)
    loader = _Prefetcher(paths, encoder.preprocess, prefetch)
    try:
        return embed_images(_Preprocessed(encoder), paths, batch_size, progress=False,  # type: ignore[arg-type]
                            loader=loader, on_batch=on_batch)
    finally:
        loader.close()


@torch.no_grad()
def embed_pixel_sides(encoder: Encoder, pixels: torch.Tensor, sides: Sequence[str]) -> dict[str, np.ndarray]:
    """Base and/or adapted embeddings of preprocessed pixels from one trunk pass. "adapted" needs an adapted
    encoder (`HystarEncoder`, whose `.base` is the base encoder); each equals `embed_pixels` of that encoder."""
    base = getattr(encoder, "base", encoder)
    features = base.visual.trunk(pixels.to(base.device))
    adapter = getattr(encoder, "adapter", None)
    if set(sides) == {"base", "adapted"} and hasattr(adapter, "forward_tokens"):
        tokens = base.visual.embed(features)  # (hystar-mini v2: the trained stride-32 stages) run once for both
        vectors = {"base": base.visual.head(base.visual.run_blocks(tokens)),
                   "adapted": adapter.forward_tokens(base, features, tokens)[0]}
        return {side: F.normalize(vectors[side], dim=-1).float().cpu().numpy() for side in sides}
    towers = {"base": base, "adapted": encoder}
    return {side: towers[side].encode_features(features).float().cpu().numpy() for side in sides}
