"""Quick, Draw! doodles (Google, CC BY 4.0) as data: read from `$HYSTAR_DATA/quickdraw`, split by `key_id`, drawn
on the app's canvas.

A doodle is an `Item` whose file holds many drawings: `record` picks one (its `key_id` for strokes, `bitmap-N`
for row N of a bitmap file). Its `label` is the Sketchy class its category depicts (empty for the other
categories, so category-level retrieval judges only doodles that have photos to find); `category` is its Quick,
Draw! word. Doodles of categories that depict one of Sketchy's unseen classes are all in test and flagged `unseen`,
like those classes' sketches: never trained on.

`draw_doodle` is the one renderer: strokes drawn as a mouse draws them on the app's 512-px canvas (a brush of the
app's width, the drawing scaled and placed anywhere on the canvas, a small jitter of every point) and, for
training views, per-stroke augmentation (a stroke dropped or shortened). Bitmaps are enlarged as they are.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .data import (
    QUICKDRAW,
    SPLITS,
    UNSEEN_CLASS_COUNT,
    Dataset,
    Item,
    choose_unseen,
    data_root,
    load_dataset,
    split_of,
)
from .synthetic_canvas import BITMAP, DOODLE

DRAWING_PROMPT = "a drawing of a {}"
BITMAP_RECORD = "bitmap-"


@dataclass(frozen=True)
class Doodle(Item):
    category: str = ""     # the Quick, Draw! word
    record: str = ""       # key_id (strokes) or bitmap-N (row N of the bitmap file)

    @property
    def key(self) -> str:
        return f"{QUICKDRAW}:{self.category}:{self.record}"

    @property
    def file_name(self) -> str:
        return f"{self.path.name}#{self.record}"

    @property
    def source_id(self) -> str:
        return f"{self.path}#{self.record}"

    def strokes(self) -> list[np.ndarray]:
        """Each stroke as an (n, 2) float array of x, y in [0, 255]."""
        return [np.asarray(stroke, np.float32).T for stroke in _drawings(self.path)[self.record]]

    def bitmap(self) -> np.ndarray:
        return np.asarray(_bitmaps(self.path)[int(self.record.removeprefix(BITMAP_RECORD))])


@cache
def _drawings(path: Path) -> dict[str, list]:
    records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {str(r["key_id"]): r["drawing"] for r in records}


@cache
def _bitmaps(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r")


@dataclass(frozen=True)
class Category:
    name: str
    strokes: int
    bitmaps: int
    sketchy_class: str     # the Sketchy class it depicts, or ""


def read_categories(root: Path) -> list[Category]:
    path = root / "categories.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no Quick, Draw! data at {root} (missing categories.csv); set HYSTAR_DATA to the "
                                f"folder holding quickdraw/")
    with open(path, newline="") as handle:
        return [Category(r["category"], int(r["strokes"] or 0), int(r["bitmaps"] or 0), r["sketchy_class"].strip())
                for r in csv.DictReader(handle)]


def unseen_sketchy_classes() -> frozenset[str]:
    """Sketchy's never-trained classes, chosen as `hystar.data` chooses them (from Sketchy's own manifest)."""
    sketchy = load_dataset("sketchy")
    return choose_unseen((item.label for item in sketchy.items), UNSEEN_CLASS_COUNT["sketchy"])


def _doodle(root: Path, category: Category, path: Path, record: str, style: str, unseen: frozenset[str]) -> Doodle:
    hidden = category.sketchy_class in unseen
    split_key = record if style == DOODLE else f"{category.name}:{record}"
    return Doodle(dataset=QUICKDRAW, path=path, style=style, label=category.sketchy_class, instance_id="",
                  role="query", split="test" if hidden else split_of(split_key), unseen=hidden,
                  category=category.name, record=record)


def load_doodles(root: Path | None = None, bitmaps_per_category: int = 0) -> list[Doodle]:
    """Every stroke doodle and, when `bitmaps_per_category` > 0, that many bitmap doodles of each bitmap category
    (the first rows of its file: deterministic)."""
    root = root or data_root() / QUICKDRAW
    unseen = unseen_sketchy_classes()
    doodles = []
    for category in read_categories(root):
        path = root / "strokes" / f"{category.name}.ndjson"
        if category.strokes and path.is_file():
            doodles += [_doodle(root, category, path, key, DOODLE, unseen) for key in _drawings(path)]
        bitmap_path = root / "bitmaps" / f"{category.name}.npy"
        if bitmaps_per_category and category.bitmaps and bitmap_path.is_file():
            rows = min(bitmaps_per_category, len(_bitmaps(bitmap_path)))
            doodles += [_doodle(root, category, bitmap_path, f"{BITMAP_RECORD}{row}", BITMAP, unseen)
                        for row in range(rows)]
    return doodles


def load_quickdraw(root: Path | None = None) -> Dataset:
    """The doodle protocol's dataset: the stroke doodles as queries, Sketchy's photos as the gallery (its
    `words`: every Quick, Draw! category, for doodle -> text)."""
    root = root or data_root() / QUICKDRAW
    gallery = load_dataset("sketchy").photos()
    return Dataset(name=QUICKDRAW, root=root, items=[*gallery, *load_doodles(root)],
                   words=[c.name for c in read_categories(root)])


# ---------------------------------------------------------------------------------------------- drawing

@dataclass(frozen=True)
class DoodleCanvas:
    size: int = 512                            # the app's canvas (`UiConfig.canvas`)
    fill: tuple[float, float] = (0.55, 0.95)   # the drawing's longer side over the canvas side
    brush: tuple[float, float] = (4.0, 10.0)   # stroke width in canvas pixels (the app's brush: 6)
    jitter: float = 1.0                        # Gaussian noise of every point, in the doodle's 256-px units
    drop_stroke: float = 0.0                   # chance that a stroke (not the longest) is left out
    shorten_stroke: float = 0.0                # chance that a stroke loses up to a third of its points at its end


DOODLE_VIEWS = {"doodle": DoodleCanvas(), "doodleaug": DoodleCanvas(drop_stroke=0.15, shorten_stroke=0.25)}


def doodle_canvas(view: str) -> DoodleCanvas:
    """The canvas of a doodle view's first step: `doodle` (as drawn: queries) or `doodleaug` (strokes dropped and
    shortened: training); a numbered variant (`doodleaug2`) is the same canvas with other random draws."""
    name = view.rstrip("0123456789")
    if name not in DOODLE_VIEWS:
        raise ValueError(f"a doodle view starts with one of {sorted(DOODLE_VIEWS)}, not {view!r}")
    return DOODLE_VIEWS[name]


def _augmented(strokes: list[np.ndarray], rng: np.random.Generator, cfg: DoodleCanvas) -> list[np.ndarray]:
    if not strokes:
        return strokes
    longest = int(np.argmax([len(s) for s in strokes]))
    out = []
    for k, stroke in enumerate(strokes):
        if k != longest and rng.random() < cfg.drop_stroke:
            continue
        if len(stroke) > 3 and rng.random() < cfg.shorten_stroke:
            stroke = stroke[:max(2, len(stroke) - int(rng.integers(1, len(stroke) // 3 + 1)))]
        out.append(stroke)
    return out


def draw_strokes(strokes: Sequence[np.ndarray], rng: np.random.Generator, cfg: DoodleCanvas = DoodleCanvas()
                 ) -> Image.Image:
    """Black strokes on a white `cfg.size` canvas, as a mouse draws them there."""
    strokes = _augmented(list(strokes), rng, cfg)
    strokes = [s + rng.normal(0.0, cfg.jitter, s.shape) if cfg.jitter else s for s in strokes]
    canvas = np.full((cfg.size, cfg.size), 255, np.uint8)
    if not strokes:
        return Image.fromarray(canvas, "L").convert("RGB")
    points = np.concatenate(strokes)
    low, high = points.min(0), points.max(0)
    scale = rng.uniform(*cfg.fill) * cfg.size / max(1.0, float((high - low).max()))
    extent = (high - low) * scale
    offset = np.array([rng.uniform(0, max(0.0, cfg.size - extent[0])), rng.uniform(0, max(0.0, cfg.size - extent[1]))])
    brush = max(1, round(rng.uniform(*cfg.brush)))
    lines = [np.round((s - low) * scale + offset).astype(np.int32).reshape(-1, 1, 2) for s in strokes]
    cv2.polylines(canvas, lines, isClosed=False, color=0, thickness=brush, lineType=cv2.LINE_AA)
    return Image.fromarray(canvas, "L").convert("RGB")


def bitmap_image(bitmap: np.ndarray, size: int = 224) -> Image.Image:
    """A 28x28 bitmap (ink bright on 0) enlarged as it is: dark ink on white."""
    grey = Image.fromarray(255 - np.asarray(bitmap, np.uint8), "L").resize((size, size), Image.BILINEAR)
    return grey.convert("RGB")


def view_seed(key: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "little"))


def draw_doodle(doodle: Doodle, key: str, cfg: DoodleCanvas = DoodleCanvas()) -> Image.Image:
    """`doodle` as the encoder's input image before query preparation, seeded by `key` (the view's key): strokes
    drawn on the canvas, bitmaps enlarged."""
    if doodle.style == BITMAP:
        return bitmap_image(doodle.bitmap())
    return draw_strokes(doodle.strokes(), view_seed(key), cfg)


def split_counts(doodles: Sequence[Doodle]) -> dict[str, int]:
    return {split: sum(d.split == split for d in doodles) for split in SPLITS}
