"""Sketch queries normalised the way SBIR systems do it, in one place (app, API, CLI, eval and training alike).

A drawing reaches the model as the training sketches look: ink found on any background (white canvas, transparent
layer, coloured or light-on-dark strokes) and turned black on white, cropped to its bounding box, centred on a
square canvas with a margin, and its strokes brought to the training width. A drawing that fills the canvas and
the same drawing small in a corner so give (almost) the same pixels. `is_line_drawing` tells uploaded line drawings
(normalised too) from photos and paintings (left as they are); `hystar.query.prepare_query` chooses.

The defaults are measured on the train sketches of Sketchy and PACS (`python bench/sketch_stats.py`): after
cropping and centring at 224 px their median stroke width is `SketchConfig.stroke_width`, their ink fills
`SketchConfig.fill` of the canvas' side.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class SketchConfig:
    size: int = 224                 # output side: the model's input resolution
    fill: float = 0.78              # the ink's longer side over the canvas side (PACS train sketches: 0.78)
    stroke_width: float = 3.0       # target stroke width in output pixels (measured on the train sketches)
    width_tolerance: float = 1.4    # strokes within [target / tol, target * tol] are left as they are
    noise: float = 12.0             # colour distance to the background below which a pixel is not ink (0-255)
    ink_threshold: float = 0.35     # ink strength that counts as a stroke pixel (bounding box, stroke width)
    trim: float = 0.002             # ink mass ignored at each end of the bounding box: a stray dot does not count
    min_ink_pixels: int = 12        # fewer stroke pixels than this: no drawing to normalise


@dataclass(frozen=True)
class LineDrawingTest:
    """An image is a line drawing when its background is light and uniform and its ink is sparse and thin."""
    min_background_luma: float = 170.0
    max_background_chroma: float = 40.0
    min_background_share: float = 0.7   # pixels within `background_distance` of the background colour
    background_distance: float = 24.0
    max_ink_share: float = 0.3      # stroke pixels over all pixels
    max_stroke_width: float = 0.05  # median stroke width over the shorter side
    max_ink_chroma: float = 25.0    # mean colourfulness of the ink: line drawings are drawn, not painted
    max_midtone_share: float = 0.6  # faint-ink pixels over all inked ones: strokes, not shading


def _rgba(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGBA"), dtype=np.float32)


def background_colour(rgb: np.ndarray) -> np.ndarray:
    """The dominant colour (the most frequent 16-level bin, averaged): a drawing's background is most of it, even
    when the strokes run along the edges."""
    pixels = rgb.reshape(-1, 3)
    bins = (pixels // 16).astype(np.int32)
    codes = bins[:, 0] * 256 + bins[:, 1] * 16 + bins[:, 2]
    dominant = np.bincount(codes, minlength=4096).argmax()
    return pixels[codes == dominant].mean(axis=0)


def _is_layer(alpha: np.ndarray) -> bool:
    """A transparent layer with strokes on it (mostly transparent), not an opaque image that happens to be RGBA."""
    return float(alpha.min()) < 250 and float((alpha < 128).mean()) > 0.5


def ink_map(image: Image.Image, cfg: SketchConfig = SketchConfig()) -> np.ndarray:
    """Ink strength in [0, 1] per pixel (H, W float32). On a transparent layer the ink is the opacity, whatever the
    strokes' colour; otherwise the colour distance to the background (any background colour), stretched so that
    the strokes' typical contrast counts as full ink (a grey pencil and a black pen give the same map)."""
    rgba = _rgba(image)
    alpha = rgba[..., 3]
    if _is_layer(alpha):
        return alpha / 255.0
    opacity = alpha[..., None] / 255.0
    rgb = rgba[..., :3] * opacity + 255.0 * (1.0 - opacity)  # composited on white
    distance = np.abs(rgb - background_colour(rgb)).max(axis=-1)
    strokes = distance[distance > cfg.noise]
    if strokes.size == 0:
        return np.zeros(distance.shape, np.float32)
    contrast = max(float(np.percentile(strokes, 90)), 4.0 * cfg.noise)
    return np.clip((distance - cfg.noise) / (contrast - cfg.noise), 0.0, 1.0).astype(np.float32)


def stroke_width(ink: np.ndarray, threshold: float = 0.35) -> float:
    """Median stroke width in pixels: twice the distance-transform value on the strokes' ridge, less one
    (a 1-px line gives 1, an 18-px brush ~18). 0 when there is no ink."""
    mask = (ink >= threshold).astype(np.uint8)
    if not mask.any():
        return 0.0
    distance = cv2.distanceTransform(np.pad(mask, 1), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    ridge = (distance >= cv2.dilate(distance, np.ones((3, 3), np.uint8))) & (mask > 0)
    return float(max(1.0, 2.0 * np.median(distance[ridge]) - 1.0))


def ink_box(ink: np.ndarray, cfg: SketchConfig = SketchConfig()) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of the strokes, `cfg.trim` of the ink mass ignored at each end; None: no ink."""
    mask = ink >= cfg.ink_threshold
    if int(mask.sum()) < cfg.min_ink_pixels:
        return None
    weights = ink * mask

    def span(profile: np.ndarray) -> tuple[int, int]:
        cumulative = np.cumsum(profile) / profile.sum()
        low = int(np.searchsorted(cumulative, cfg.trim))
        high = int(np.searchsorted(cumulative, 1.0 - cfg.trim))
        return low, min(len(profile), high + 1)

    top, bottom = span(weights.sum(axis=1))
    left, right = span(weights.sum(axis=0))
    return top, left, bottom, right


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _to_width(ink: np.ndarray, cfg: SketchConfig) -> np.ndarray:
    """Erode thick strokes / dilate thin ones towards `cfg.stroke_width`; an erosion never removes a stroke."""
    width = stroke_width(ink, cfg.ink_threshold)
    target = cfg.stroke_width
    if width == 0.0 or target / cfg.width_tolerance <= width <= target * cfg.width_tolerance:
        return ink
    radius = int(round(abs(width - target) / 2.0))
    if width > target:
        radius = min(radius, int((width - 1.0) // 2))
        return cv2.erode(ink, _disk(radius)) if radius > 0 else ink
    return cv2.dilate(ink, _disk(radius)) if radius > 0 else ink


def centred_ink(ink: np.ndarray, cfg: SketchConfig = SketchConfig()) -> np.ndarray | None:
    """The ink cropped to its box and centred on a `cfg.size` square, its longer side `cfg.fill` of it."""
    box = ink_box(ink, cfg)
    if box is None:
        return None
    top, left, bottom, right = box
    crop = ink[top:bottom, left:right]
    height, width = crop.shape
    scale = cfg.fill * cfg.size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(crop, (new_w, new_h), interpolation=interpolation)
    canvas = np.zeros((cfg.size, cfg.size), np.float32)
    y, x = (cfg.size - new_h) // 2, (cfg.size - new_w) // 2
    canvas[y:y + new_h, x:x + new_w] = resized
    return canvas


def ink_to_image(ink: np.ndarray) -> Image.Image:
    grey = np.clip(255.0 * (1.0 - ink), 0, 255).round().astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


def normalise_sketch(image: Image.Image, cfg: SketchConfig = SketchConfig()) -> Image.Image:
    """Black strokes on a white `cfg.size` square, cropped, centred, at the training stroke width. An image with
    no ink comes back unchanged (the caller decides whether a blank canvas is an error)."""
    ink = centred_ink(ink_map(image, cfg), cfg)
    return image if ink is None else ink_to_image(_to_width(ink, cfg))


def is_line_drawing(image: Image.Image, test: LineDrawingTest = LineDrawingTest(),
                    cfg: SketchConfig = SketchConfig()) -> bool:
    """A sketch or line drawing (light uniform background, sparse thin ink of little colour), not a photo or a
    painting. Works on a copy at most 256 px on the longer side."""
    small = image.copy()
    small.thumbnail((256, 256))
    rgba = _rgba(small)
    if _is_layer(rgba[..., 3]):
        return True
    rgb = rgba[..., :3]
    background = background_colour(rgb)
    if float(background.mean()) < test.min_background_luma or \
            float(background.max() - background.min()) > test.max_background_chroma:
        return False
    distance = np.abs(rgb - background).max(axis=-1)
    if float((distance <= test.background_distance).mean()) < test.min_background_share:
        return False
    ink = ink_map(small, cfg)
    strokes = ink >= cfg.ink_threshold
    share = float(strokes.mean())
    if int(strokes.sum()) < cfg.min_ink_pixels or share > test.max_ink_share:
        return False
    if stroke_width(ink, cfg.ink_threshold) > test.max_stroke_width * min(ink.shape):
        return False
    inked = ink > 0.05
    if float(((ink < 0.5) & inked).sum()) > test.max_midtone_share * float(inked.sum()):
        return False
    chroma = rgb.max(axis=-1) - rgb.min(axis=-1)
    return float(chroma[strokes].mean()) <= test.max_ink_chroma

