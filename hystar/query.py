"""The image a query is embedded from, in one place (app, API, CLI, eval and training alike): drawings and
uploaded line drawings normalised (`hystar.sketch`), pixelated images de-blocked (`hystar.deblock`), photos and
paintings as they are."""

from __future__ import annotations

from PIL import Image

from .deblock import deblock
from .sketch import SketchConfig, is_line_drawing, normalise_sketch


def prepare_query(image: Image.Image, drawn: bool | None = None, cfg: SketchConfig | None = None) -> Image.Image:
    """A drawing (`drawn`: from the canvas) or an uploaded line drawing normalised; a nearest-neighbour enlargement
    smoothed from its native pixels; photos, paintings and blank canvases back unchanged (the same object).
    `drawn` None: tested (`is_line_drawing`); False: known not to be a drawing, not tested again."""
    if drawn or (drawn is None and is_line_drawing(image)):
        return normalise_sketch(image, cfg or SketchConfig())
    return deblock(image)
