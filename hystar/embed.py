"""The one way to embed: images (paths, bytes, PIL, arrays) and texts to L2-normalised float32 vectors."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
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
