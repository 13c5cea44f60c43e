"""A house drawn on the canvas as a mouse user draws it, searched in a small PACS gallery through the app's
search path (`SearchService`, shipped hystar-mini + adapter), with and without sketch normalisation.

Gallery: 10 house photos and 5 photos of each other PACS class (30) from the test split. Drawings: the house edge
to edge with an 18-px brush at 512 px; the same at 40 % in the top-left corner; thin (3 px) edge to edge.
Run: `python bench/sketch_house.py` (prints houses among the top 5 per side, and the cosine between the full
and the corner drawing's query vectors, before / after normalisation).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

import hystar.service as service_module
from hystar.data import load_dataset
from hystar.service import DEFAULT_ADAPTER, Query, SearchService, ServiceConfig

OTHERS = ("dog", "elephant", "giraffe", "guitar", "horse", "person")


def draw_house(size: int = 512, brush: int = 18, box: tuple[float, float, float, float] = (0.02, 0.02, 0.98, 0.98),
               transparent: bool = False) -> Image.Image:
    """Square body, triangle roof, door and window, in `box` (fractions of the canvas), black strokes."""
    left, top, right, bottom = (v * size for v in box)
    width, height = right - left, bottom - top
    eave = top + 0.42 * height
    image = Image.new("RGBA" if transparent else "RGB", (size, size), (0, 0, 0, 0) if transparent else "white")
    pen = ImageDraw.Draw(image)
    ink = (0, 0, 0, 255) if transparent else "black"

    def line(*points: tuple[float, float]) -> None:
        pen.line(points, fill=ink, width=brush, joint="curve")

    line((left, eave), (left, bottom), (right, bottom), (right, eave), (left, eave))
    line((left, eave), (left + width / 2, top), (right, eave))
    door_l, door_r = left + 0.4 * width, left + 0.6 * width
    line((door_l, bottom), (door_l, bottom - 0.32 * height), (door_r, bottom - 0.32 * height), (door_r, bottom))
    win = (left + 0.12 * width, eave + 0.12 * height, left + 0.3 * width, eave + 0.28 * height)
    line((win[0], win[1]), (win[2], win[1]), (win[2], win[3]), (win[0], win[3]), (win[0], win[1]))
    return image


def house_gallery(folder: Path, houses: int = 10, per_other: int = 5) -> Path:
    photos = sorted(load_dataset("pacs").photos("test"), key=lambda item: item.path)
    for label, count in [("house", houses)] + [(c, per_other) for c in OTHERS]:
        (folder / label).mkdir(parents=True, exist_ok=True)
        for item in [p for p in photos if p.label == label][:count]:
            (folder / label / item.path.name).symlink_to(item.path)
    return folder


def houses_in_top5(service: SearchService, drawing: Image.Image) -> dict[str, int]:
    response = service.search(Query(sketch=drawing, k=5), place=False)
    return {side: sum(r.path.parent.name == "house" for r in results)
            for side, results in (("base", response.base), ("hystar", response.adapted or []))}


def corner_cosine(service: SearchService, full: Image.Image, corner: Image.Image) -> dict[str, float]:
    """Cosine between the query vectors of the full drawing and of the one small in a corner, per side."""
    a, b = (service.search(Query(sketch=d, k=1), place=False).vectors for d in (full, corner))
    return {side: round(float(a[side] @ b[side]), 3) for side in a}


def measure(service: SearchService, drawings: dict[str, Image.Image]) -> dict:
    out = {name: houses_in_top5(service, d) for name, d in drawings.items()}
    out["cosine full vs corner"] = corner_cosine(service, drawings["edge to edge, 18 px"],
                                                 drawings["small in a corner, 18 px"])
    return out


def main() -> None:
    drawings = {"edge to edge, 18 px": draw_house(),
                "small in a corner, 18 px": draw_house(box=(0.03, 0.03, 0.43, 0.43)),
                "edge to edge, 3 px": draw_house(brush=3)}
    with tempfile.TemporaryDirectory() as tmp:
        gallery = house_gallery(Path(tmp) / "gallery")
        service = SearchService.open(ServiceConfig(gallery=gallery, adapter=DEFAULT_ADAPTER, umap=None, online=None,
                                                   index_root=Path(tmp) / "index", progress=False))
        report = {"after": measure(service, drawings)}
        normalise = service_module.prepare_query
        service_module.prepare_query = lambda image, drawn=False: image  # the query path before normalisation
        try:
            report["before"] = measure(service, drawings)
        finally:
            service_module.prepare_query = normalise
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
