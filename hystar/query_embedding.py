"""A query's parts to vectors, in three steps:

1. `query_parts`: the parts that count (a blank canvas or a part weighted 0 does not), images opened and checked;
   `texts_to_encode`: what the text tower reads of them (a bare name as the model's class prompt);
2. `encode`: the GPU work, in one call (`hystar.zerogpu` runs it inside `spaces.GPU` where there is ZeroGPU):
   pixel tensors and texts in, plain arrays out (`Encoded`). With an adapter, the image parts go through the trunk
   once and come out twice (`HystarEncoder.explain`); an online session, when there is one, embeds the side it
   adapts (and takes one step);
3. `lean_drawings`: each drawing's vectors leaned toward the names it reads as (`hystar.guesses.NamePrior`);
4. `fuse`: each side's normalised weighted sum, the negative text subtracted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from .data import PROMPT
from .embed import embed_pixels, embed_texts
from .images import is_blank, open_image
from .query import prepare_query
from .sketch import is_line_drawing


class QueryError(ValueError):
    """A query with nothing to search for; the message is one line for the user."""


@dataclass
class Parts:
    images: list[tuple[str, float, Any]]       # (name, weight, opened image): "sketch", "image"
    texts: list[tuple[str, float, str]]        # (name, signed weight, text): "text", "negative text"
    drawings: list[bool] = field(default_factory=list)   # per image part: drawn on the canvas or a line drawing

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.images] + [name for name, _, _ in self.texts]


@dataclass
class Encoded:
    """What one GPU call gives back (pickled across ZeroGPU's worker process: arrays and CPU tensors only)."""
    base: np.ndarray | None                    # (images, d), None without images
    adapted: np.ndarray | None                 # (images, d), None without images or without adaptation
    texts: np.ndarray | None                   # (texts, d)
    delta_s: dict[int, torch.Tensor] = field(default_factory=dict)   # block -> (images, r), adapted only
    static: dict[str, torch.Tensor] = field(default_factory=dict)
    observed: bool = False                     # the images went through an online session


def query_parts(query) -> Parts:
    """The parts of a `hystar.service.Query` that count, images opened (`ImageError` for one that cannot be)."""
    images = []
    if query.sketch is not None and query.sketch_weight > 0:
        sketch = open_image(query.sketch)
        if not is_blank(sketch):
            images.append(("sketch", float(query.sketch_weight), sketch))
    if query.image is not None and query.image_weight > 0:
        images.append(("image", float(query.image_weight), open_image(query.image)))
    texts = []
    if query.text.strip() and query.text_weight > 0:
        texts.append(("text", float(query.text_weight), query.text.strip()))
    if query.negative.strip() and query.negative_weight > 0:
        texts.append(("negative text", -float(query.negative_weight), query.negative.strip()))
    if not images and not any(weight > 0 for _, weight, _ in texts):
        raise QueryError(empty_message(query))
    return Parts(images, texts, [name == "sketch" or is_line_drawing(image) for name, _, image in images])


NAME_WORDS = 3  # a text of at most this many words, no sentence, is read as a name


def text_prompt(text: str) -> str:
    """What the text tower reads for the query's text: a bare name ("person", "red car", a clicked guess) as
    "a photo of a {name}", the prompt the model learnt class names in (a bare word lands far from its photos);
    anything longer, a sentence or a text that starts with an article as typed."""
    if len(text.split()) > NAME_WORDS or any(mark in text for mark in ".!?") \
            or text.lower().startswith(("a ", "an ", "the ", "photo")):
        return text
    return PROMPT.format(text)


def texts_to_encode(parts: Parts) -> list[str]:
    """The text parts as the text tower reads them: the search text through `text_prompt`; the negative text as
    typed (it names what to push away: "blurry", "a drawing")."""
    return [text_prompt(text) if name == "text" else text for name, _, text in parts.texts]


def pixels_of(encoder, parts: Parts) -> torch.Tensor | None:
    """The image parts as the encoder's input, prepared on the CPU (drawings normalised, mosaics de-blocked)."""
    if not parts.images:
        return None
    return torch.stack([encoder.preprocess(prepare_query(image, drawn=drawn))
                        for (_, _, image), drawn in zip(parts.images, parts.drawings, strict=True)])


@torch.no_grad()
def _explain(adapter, pixels: torch.Tensor) -> dict:
    return adapter.explain(pixels)


def encode(encoder, adapter, pixels: torch.Tensor | None, texts: Sequence[str], adapt: bool,
           session=None) -> Encoded:
    """The GPU work of one query. `session` (a `TrackedSession`): it embeds the side it adapts (the adapted one
    with `adapt`, else the base one) and takes its step; ΔS and the offsets stay those of the shared adapter."""
    out = Encoded(None, None, embed_texts(encoder, texts) if texts else None)
    if pixels is None:
        return out
    pixels = pixels.to(encoder.device)
    observed = None
    if session is not None:
        with torch.no_grad():
            features = encoder.visual.trunk(pixels)
        observed, out.observed = session.observe(features), True
    if not adapt:
        out.base = observed if observed is not None else embed_pixels(encoder, pixels)
        return out
    explained = _explain(adapter, pixels)
    out.base = explained["base"].float().cpu().numpy()
    out.adapted = observed if observed is not None else explained["adapted"].float().cpu().numpy()
    out.delta_s = {block: delta.detach().float().cpu() for block, delta in explained["delta_s"].items()}
    out.static = {name: shift.detach().float().cpu() for name, shift in explained["static"].items()}
    return out


def lean_drawings(parts: Parts, encoded: Encoded, lean: Callable[[np.ndarray], np.ndarray]) -> Encoded:
    """`encoded` with each drawing's image vectors (both sides) passed through `lean` (`hystar.guesses.NamePrior`);
    photos, paintings and texts as they were."""
    rows = [row for row, drawn in enumerate(parts.drawings) if drawn]
    if not rows:
        return encoded
    sides = {}
    for side in ("base", "adapted"):
        vectors = getattr(encoded, side)
        if vectors is not None:
            vectors = vectors.copy()
            vectors[rows] = lean(vectors[rows])
        sides[side] = vectors
    return replace(encoded, **sides)


def fuse(parts: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
    """Normalised weighted sum of normalised embeddings; a negative weight subtracts."""
    total = sum(weight * vector / max(float(np.linalg.norm(vector)), 1e-12) for vector, weight in parts)
    norm = float(np.linalg.norm(total))
    if norm < 1e-6:
        raise QueryError("the query's parts cancel out: change the weights")
    return (total / norm).astype(np.float32)


def fused(parts: Parts, encoded: Encoded, side: str, images_only: bool = False) -> np.ndarray | None:
    """One side's query vector ("base" or "adapted"); `images_only`: the image parts alone (None without them)."""
    images = encoded.adapted if side == "adapted" else encoded.base
    weighted = [] if images is None else [(v, w) for (_, w, _), v in zip(parts.images, images, strict=True)]
    if not images_only and encoded.texts is not None:
        weighted += [(v, w) for (_, w, _), v in zip(parts.texts, encoded.texts, strict=True)]
    return fuse(weighted) if weighted else None


def empty_message(query) -> str:
    if query.negative.strip() and query.negative_weight > 0:
        return "a negative text alone is not a query: add a sketch, an image or a text to search for"
    if query.sketch is not None:
        return "the canvas is blank and there is nothing else to search for: draw, upload an image or type a text"
    return "empty query: draw on the canvas, upload an image or type a text"
