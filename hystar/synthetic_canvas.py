"""Sketches re-rendered as a person draws them on the app's canvas, and the named query views built on them.

`on_canvas` redraws a sketch on the 512-px canvas the way a mouse drawing looks: the ink scaled to fill 80-95 % of
the canvas, shifted at random, strokes thickened to a 12-24 px brush, black on white; all seeded by a key.

A *view style* names how a stored query file becomes the image the encoder sees: a synthetic style
(`hystar.synthetic`), `canvas` (this rendering), `sketchnorm` (`hystar.sketch.normalise_sketch`), `query` (an upload
prepared as the app prepares it, `hystar.query.prepare_query`), or a chain of them joined by "+", applied left to
right (`canvas+sketchnorm`: drawn on the canvas, then normalised as the app does; `mosaic+query`: a mosaic upload).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from .query import prepare_query
from .sketch import SketchConfig, ink_box, ink_map, ink_to_image, normalise_sketch, stroke_width
from .synthetic import STYLE_FUNCTIONS, style_rng, synthesize

CANVAS, SKETCH_NORM, QUERY = "canvas", "sketchnorm", "query"
DOODLE, BITMAP = "doodle", "bitmap"  # query styles of Quick, Draw! doodles (`hystar.doodles`), drawn by their view


@dataclass(frozen=True)
class CanvasConfig:
    size: int = 512                          # the app's canvas (`UiConfig.canvas`)
    fill: tuple[float, float] = (0.80, 0.95)  # the ink's longer side over the canvas side
    brush: tuple[float, float] = (12.0, 24.0)  # stroke width in canvas pixels
    soften: float = 0.8                      # Gaussian sigma of the brush's anti-aliased edge


def on_canvas(image: Image.Image, rng: np.random.Generator, cfg: CanvasConfig = CanvasConfig()) -> Image.Image:
    """`image` (a sketch) redrawn on a `cfg.size` canvas with a thick brush, filling most of it, shifted."""
    ink = ink_map(image)
    box = ink_box(ink)
    if box is None:
        return Image.new("RGB", (cfg.size, cfg.size), "white")
    top, left, bottom, right = box
    crop = ink[top:bottom, left:right]
    fill, brush = rng.uniform(*cfg.fill), rng.uniform(*cfg.brush)
    scale = fill * cfg.size / max(crop.shape)
    height, width = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    strokes = (cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR) >= 0.35).astype(np.float32)
    radius = max(0, round((brush - stroke_width(strokes)) / 2.0))
    y, x = int(rng.integers(0, cfg.size - height + 1)), int(rng.integers(0, cfg.size - width + 1))
    canvas = np.zeros((cfg.size, cfg.size), np.float32)
    canvas[y:y + height, x:x + width] = strokes
    if radius:
        canvas = cv2.dilate(canvas, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2))
    if cfg.soften:
        canvas = cv2.GaussianBlur(canvas, (0, 0), cfg.soften)
    return ink_to_image(canvas)


def render_view(image: Image.Image, style: str, key: str, seed: int = 0, file_key: str | None = None,
                sketch_cfg: SketchConfig | None = None) -> Image.Image:
    """`image` in view style `style` (see the module doc); `key` (the instance) fixes the synthetic styles' random
    parameters, `file_key` (default `key`) the canvas rendering's: each sketch of one photo is drawn anew."""
    for step in style.split("+"):
        if step == CANVAS:
            image = on_canvas(image, style_rng(file_key or key, CANVAS, seed))
        elif step == SKETCH_NORM:
            image = normalise_sketch(image, sketch_cfg or SketchConfig())
        elif step == QUERY:
            image = prepare_query(image, cfg=sketch_cfg)
        elif step in STYLE_FUNCTIONS:
            image = synthesize(image, step, key, seed)
        else:
            raise ValueError(f"unknown view style {step!r} in {style!r}; choose from {CANVAS}, {SKETCH_NORM}, {QUERY}, "
                             f"{', '.join(STYLE_FUNCTIONS)}")
    return image


def sketch_view_style(query_style: str, render: str = "", normalise: bool = True) -> str | None:
    """The view style of a stored query of `query_style` (None: the file as it is): sketches are drawn on the
    canvas when `render` is "canvas", and normalised when `normalise` (as the app does); other styles untouched."""
    if query_style in (DOODLE, BITMAP):  # no stored image: always drawn (strokes on the canvas, bitmaps enlarged)
        return "+".join([DOODLE] + ([SKETCH_NORM] if normalise else []))
    if query_style != "sketch":
        return None
    steps = ([CANVAS] if render == CANVAS else []) + ([SKETCH_NORM] if normalise else [])
    return "+".join(steps) or None


def upload_view_style(style: str, prepare: bool = True) -> str:
    """The view style of a photo rendered in synthetic `style` and uploaded as a query: prepared as the app
    prepares uploads when `prepare`."""
    return f"{style}+{QUERY}" if prepare else style
