"""Specification of low-res queries through the app's search path (shipped hystar-mini + adapter): a small, blurry
JPEG thumbnail of a gallery photo, uploaded as people upload one, finds that photo first; so does a 16x mosaic of it
(14x14 pixels left)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from hystar.data import DATA_ENV, data_root, load_dataset
from hystar.images import open_image
from hystar.synthetic import mosaic

needs_data = pytest.mark.skipif(not (data_root() / "pacs" / "manifest.csv").is_file(),
                                reason=f"datasets not found; set {DATA_ENV}")
PER_CLASS, QUERIES = 12, 14


def thumbnail(path, side: int = 48, quality: int = 70) -> bytes:
    """The photo shrunk to `side` pixels and saved as a JPEG, as a thumbnail reaches an upload box."""
    image = open_image(path).resize((side, side), Image.BICUBIC)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


@pytest.fixture(scope="module")
def photo_service(tmp_path_factory):
    from hystar.service import DEFAULT_ADAPTER, SearchService, ServiceConfig

    folder = tmp_path_factory.mktemp("lowres")
    photos = sorted(load_dataset("pacs").photos("test"), key=lambda item: item.path)
    chosen = []
    for label in sorted({p.label for p in photos}):
        chosen += [p for p in photos if p.label == label][:PER_CLASS]  # same-class photos: the hard distractors
    for item in chosen:
        (folder / "gallery" / item.label).mkdir(parents=True, exist_ok=True)
        (folder / "gallery" / item.label / item.path.name).symlink_to(item.path)
    service = SearchService.open(ServiceConfig(gallery=folder / "gallery", adapter=DEFAULT_ADAPTER, umap=None,
                                               online=None, index_root=folder / "index", progress=False))
    return service, chosen[::len(chosen) // QUERIES][:QUERIES]


def found_within(service, queries, make_query, k: int) -> dict[str, int]:
    """How many queries have their own photo among the first `k` results, per side."""
    from hystar.service import Query

    found = {"base": 0, "adapted": 0}
    for item in queries:
        response = service.search(Query(image=make_query(item), k=k), place=False)
        for side in found:
            found[side] += any(r.path.name == item.path.name for r in getattr(response, side))
    return found


@needs_data
def test_a_48px_jpeg_thumbnail_finds_its_own_photo(photo_service):
    service, queries = photo_service
    found = found_within(service, queries, lambda item: thumbnail(item.path), k=1)
    assert found["adapted"] >= 0.8 * len(queries), found  # v2.3 and v2.4: 14 of 14


@needs_data
def test_a_16x_mosaic_finds_its_own_photo_first(photo_service):
    service, queries = photo_service
    found = found_within(service, queries, lambda item: mosaic(open_image(item.path)), k=1)
    assert found["adapted"] >= 0.8 * len(queries), found  # v2.3, v2.4: 12 of 14 (v2.2: 14; v2.1: 12 in the top 5)
