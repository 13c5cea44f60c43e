"""Query-style synthesis with fixed seeds: the same image and key always give the same styled image."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image

SYNTHETIC_STYLES = ("mosaic", "art", "pencil")
MOSAIC_FACTOR = 16  # FreestyleRet: shrink 16x, nearest-neighbour back up


def style_rng(key: str, style: str, seed: int = 0) -> np.random.Generator:
    digest = hashlib.sha1(f"{seed}:{style}:{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def mosaic(image: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
    width, height = image.size
    small = image.resize((max(1, width // MOSAIC_FACTOR), max(1, height // MOSAIC_FACTOR)), Image.BILINEAR)
    return small.resize((width, height), Image.NEAREST)


def art(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Painterly rendering: OpenCV edge-preserving stylization with seeded strength."""
    bgr = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)
    out = cv2.stylization(bgr, sigma_s=float(rng.uniform(40, 90)), sigma_r=float(rng.uniform(0.3, 0.6)))
    return Image.fromarray(cv2.cvtColor(out, cv2.COLOR_BGR2RGB))


def pencil(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Grey pencil drawing: OpenCV pencilSketch with seeded stroke parameters."""
    bgr = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)
    grey, _ = cv2.pencilSketch(bgr, sigma_s=float(rng.uniform(30, 70)), sigma_r=float(rng.uniform(0.05, 0.1)),
                               shade_factor=float(rng.uniform(0.02, 0.05)))
    return Image.fromarray(grey).convert("RGB")


def lowres(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A blurry thumbnail as people upload it: shrunk 4-12x, smoothly enlarged, JPEG-damaged (training only)."""
    width, height = image.size
    factor = float(rng.uniform(4, 12))
    small = image.resize((max(1, round(width / factor)), max(1, round(height / factor))), Image.BILINEAR)
    out = io.BytesIO()
    small.save(out, "JPEG", quality=int(rng.integers(15, 45)))
    return Image.open(io.BytesIO(out.getvalue())).convert("RGB").resize((width, height), Image.BICUBIC)


STYLE_FUNCTIONS: dict[str, Callable[..., Image.Image]] = {"mosaic": mosaic, "art": art, "pencil": pencil,
                                                          "lowres": lowres}


def synthesize(image: Image.Image, style: str, key: str, seed: int = 0) -> Image.Image:
    """`image` rendered in a synthetic `style`; `key` (e.g. the file's instance) fixes the random parameters."""
    if style not in STYLE_FUNCTIONS:
        raise ValueError(f"unknown synthetic style {style!r}; choose from {', '.join(STYLE_FUNCTIONS)}")
    return STYLE_FUNCTIONS[style](image.convert("RGB"), style_rng(key, style, seed))
