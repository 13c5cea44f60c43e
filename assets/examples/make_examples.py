"""Regenerate the app's example queries: sketches, paintings and low-res shots drawn by this script.

Nothing here comes from a dataset. Each subject (a house, a guitar, a giraffe) is a list of shapes in unit
coordinates, rendered two ways: a black line drawing on white (the sketch) and a flat-colour scene. Paintings are
the scene through `hystar.synthetic` ("art"); low-res shots are the scene shrunk to a thumbnail.

    python assets/examples/make_examples.py
"""

from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hystar.synthetic import synthesize  # noqa: E402

HERE = Path(__file__).resolve().parent
SIZE = 512
LOWRES = 40
STROKE = 7


@dataclass(frozen=True)
class Shape:
    kind: str                     # "ellipse", "polygon" or "line"
    points: tuple[float, ...]     # unit coordinates: ellipse x0 y0 x1 y1, polygon / line x y pairs
    colour: str
    outline: bool = True          # False: merged into the silhouette, its own edges are not drawn


@dataclass(frozen=True)
class Subject:
    name: str
    sky: str
    ground: str
    horizon: float
    shapes: tuple[Shape, ...]


def rect(x0: float, y0: float, x1: float, y1: float) -> tuple[float, ...]:
    return (x0, y0, x1, y0, x1, y1, x0, y1)


HOUSE = Subject("house", "#9cc9ef", "#6fae4f", 0.8, (
    Shape("polygon", rect(0.64, 0.2, 0.73, 0.4), "#8a4b32"),
    Shape("polygon", rect(0.2, 0.45, 0.8, 0.84), "#e8d3a8"),
    Shape("polygon", (0.12, 0.47, 0.5, 0.16, 0.88, 0.47), "#b8322a"),
    Shape("polygon", rect(0.44, 0.62, 0.56, 0.84), "#6b3e1f"),
    Shape("polygon", rect(0.26, 0.54, 0.38, 0.66), "#cfe8ff"),
    Shape("polygon", rect(0.62, 0.54, 0.74, 0.66), "#cfe8ff"),
    Shape("line", (0.32, 0.54, 0.32, 0.66), "#555555"),
    Shape("line", (0.68, 0.54, 0.68, 0.66), "#555555"),
    Shape("ellipse", (0.52, 0.72, 0.54, 0.74), "#222222"),
))

GUITAR = Subject("guitar", "#d9c7a3", "#a07a4c", 0.9, (
    Shape("polygon", rect(0.47, 0.08, 0.53, 0.5), "#5a3a1a", outline=False),
    Shape("polygon", (0.45, 0.02, 0.55, 0.02, 0.56, 0.12, 0.44, 0.12), "#3b2410", outline=False),
    Shape("ellipse", (0.33, 0.38, 0.67, 0.64), "#c8782c", outline=False),
    Shape("ellipse", (0.28, 0.56, 0.72, 0.94), "#c8782c", outline=False),
    Shape("ellipse", (0.44, 0.55, 0.56, 0.67), "#2a1a0a"),
    Shape("polygon", rect(0.42, 0.8, 0.58, 0.83), "#3b2410"),
    *(Shape("line", (x, 0.1, x, 0.81), "#eeeeee") for x in (0.485, 0.495, 0.505, 0.515)),
))

GIRAFFE = Subject("giraffe", "#bfe0f5", "#d8c27a", 0.78, (
    *(Shape("polygon", rect(x, 0.5, x + 0.045, 0.9), "#e0a840", outline=False) for x in (0.27, 0.35, 0.58, 0.66)),
    Shape("ellipse", (0.22, 0.36, 0.74, 0.6), "#e0a840", outline=False),
    Shape("polygon", (0.6, 0.44, 0.7, 0.12, 0.77, 0.14, 0.72, 0.46), "#e0a840", outline=False),
    Shape("ellipse", (0.67, 0.05, 0.86, 0.15), "#e0a840", outline=False),
    Shape("polygon", (0.22, 0.42, 0.13, 0.62, 0.15, 0.63, 0.24, 0.45), "#e0a840", outline=False),
    Shape("line", (0.7, 0.07, 0.69, 0.01), "#7a4a1a"),
    Shape("line", (0.74, 0.07, 0.74, 0.01), "#7a4a1a"),
    *(Shape("ellipse", (x, y, x + 0.07, y + 0.05), "#9a5a1f")
      for x, y in ((0.3, 0.42), (0.42, 0.47), (0.55, 0.41), (0.38, 0.38), (0.66, 0.3), (0.69, 0.2))),
    Shape("ellipse", (0.79, 0.08, 0.81, 0.1), "#111111"),
))

SUBJECTS = (HOUSE, GUITAR, GIRAFFE)


def _pixels(points: tuple[float, ...], size: int) -> list[float]:
    return [p * size for p in points]


def _draw(draw: ImageDraw.ImageDraw, shape: Shape, size: int, fill: str | int | None, outline: str | int | None,
          width: int) -> None:
    xy = _pixels(shape.points, size)
    if shape.kind == "ellipse":
        draw.ellipse(xy, fill=fill, outline=outline, width=width)
    elif shape.kind == "polygon":
        draw.polygon(xy, fill=fill, outline=outline, width=width)
    else:
        draw.line(xy, fill=outline if outline is not None else fill, width=width, joint="curve")


def sketch(subject: Subject, size: int = SIZE) -> Image.Image:
    """Black strokes on white: the outline of the silhouette, then the outlined details in drawing order."""
    silhouette = Image.new("L", (size, size), 0)
    mask_draw = ImageDraw.Draw(silhouette)
    for shape in subject.shapes:
        if not shape.outline:
            _draw(mask_draw, shape, size, 255, None, 1)
    edges = silhouette.filter(ImageFilter.FIND_EDGES).filter(ImageFilter.MaxFilter(STROKE - (STROKE + 1) % 2))
    image = Image.new("L", (size, size), 255)
    image.paste(0, mask=edges.point(lambda v: 255 if v else 0))
    draw = ImageDraw.Draw(image)
    for shape in subject.shapes:
        if shape.outline:
            fill = None if shape.kind == "line" else 255
            _draw(draw, shape, size, fill, 0, STROKE // 2 + 1)
    return image.convert("RGB")


def scene(subject: Subject, size: int = SIZE) -> Image.Image:
    """Flat colours: sky, ground, then every shape filled with its colour."""
    image = Image.new("RGB", (size, size), subject.sky)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, subject.horizon * size, size, size], fill=subject.ground)
    for shape in subject.shapes:
        _draw(draw, shape, size, shape.colour, shape.colour, max(2, size // 120))
    return image


def brushwork(image: Image.Image, strokes: int = 2500, seed: int = 0) -> Image.Image:
    """Short strokes in the colour under them, jittered: visible paint before the stylisation."""
    rng = random.Random(seed)
    out = image.copy()
    draw = ImageDraw.Draw(out)
    size = image.width
    for _ in range(strokes):
        x, y = rng.uniform(0, size - 1), rng.uniform(0, size - 1)
        colour = tuple(min(255, max(0, c + rng.randint(-28, 28))) for c in image.getpixel((int(x), int(y))))
        angle, length = rng.uniform(0, math.pi), rng.uniform(6, 18)
        dx, dy = length * math.cos(angle), length * math.sin(angle)
        draw.line([x - dx, y - dy, x + dx, y + dy], fill=colour, width=rng.randint(4, 8))
    return out


def painting(subject: Subject) -> Image.Image:
    return synthesize(brushwork(scene(subject)), "art", key=f"example-{subject.name}")


def lowres(subject: Subject) -> Image.Image:
    return scene(subject).filter(ImageFilter.GaussianBlur(3)).resize((LOWRES, LOWRES), Image.BILINEAR)


def main(out: Path = HERE) -> list[Path]:
    written = []
    for subject in SUBJECTS:
        for kind, image in (("sketch", sketch(subject)), ("painting", painting(subject)),
                            ("lowres", lowres(subject))):
            suffix = ".jpg" if kind == "painting" else ".png"   # a painting is a photo of paint
            path = out / f"{kind}_{subject.name}{suffix}"
            image.save(path, quality=85, optimize=True)
            written.append(path)
    return written


if __name__ == "__main__":
    for path in main():
        print(path.relative_to(HERE.parents[1]))
