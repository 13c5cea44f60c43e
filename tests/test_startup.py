"""Specification of the first start: the service answers at once and indexes in the background (one pass per
photo for both sides), searches say "indexing: N %" until the gallery is ready, and the app, the API, `hystar
search --json` and the service give one query the same top-12.

Needs the demo data and the shipped hystar-mini (the app's fixtures in test_app).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from conftest import make_gallery
from test_app import app_dir, app_gallery, app_url, ask, client, needs_data, service, test_adapter  # noqa: F401

from hystar.encoder.search import open_search_encoder
from hystar.gallery import ensure_gallery_indexes
from hystar.index import BuildConfig, GalleryIndex, build_index
from hystar.service import GalleryIndexingError, Query, SearchService, ServiceConfig


def vectors_by_path(index: GalleryIndex) -> dict[str, np.ndarray]:
    return {entry.path: np.asarray(index.vectors[row], np.float32) for row, entry in enumerate(index.entries)}


@needs_data
def test_one_pass_per_photo_writes_both_indexes_as_two_separate_builds_would(tmp_path, test_adapter,  # noqa: F811
                                                                             monkeypatch):
    photos = tmp_path / "photos"
    make_gallery(photos, 20)
    adapted, identity = open_search_encoder("hystar-mini", test_adapter)
    seen = []
    trunk = adapted.base.visual.trunk
    monkeypatch.setattr(adapted.base.visual, "trunk", lambda pixels: seen.append(len(pixels)) or trunk(pixels))
    indexes = ensure_gallery_indexes("hystar-mini", photos, test_adapter, tmp_path / "index", progress=False)
    assert sum(seen) == 20  # each photo through the trunk once, for both sides
    monkeypatch.undo()
    base, base_identity = open_search_encoder("hystar-mini")
    build_index(photos, tmp_path / "alone-base", base, base_identity, BuildConfig(progress=False))
    build_index(photos, tmp_path / "alone-adapted", adapted, identity, BuildConfig(progress=False))
    for side, alone in (("base", "alone-base"), ("adapted", "alone-adapted")):
        got, want = vectors_by_path(indexes[side]), vectors_by_path(GalleryIndex.load(tmp_path / alone))
        assert sorted(got) == sorted(want)
        for path in want:
            np.testing.assert_allclose(got[path], want[path], atol=2e-3)
    again = ensure_gallery_indexes("hystar-mini", photos, test_adapter, tmp_path / "index", progress=False)
    assert [i.meta.generation for i in again.values()] == [i.meta.generation for i in indexes.values()]


@needs_data
def test_the_service_opens_at_once_and_says_indexing_until_the_gallery_is_ready(tmp_path, test_adapter):  # noqa: F811
    photos = tmp_path / "photos"
    make_gallery(photos, 120)
    config = ServiceConfig(gallery=photos, adapter=test_adapter, index_root=tmp_path / "index", umap=None,
                           progress=False)
    started = time.perf_counter()
    opened = SearchService.open(config, background=True)
    assert time.perf_counter() - started < 30
    with pytest.raises(GalleryIndexingError, match=r"^indexing: \d+ %"):
        opened.search(Query(text="a photo of a dog"))
    seen = set()
    deadline = time.monotonic() + 600
    while not opened.indexing_status().ready:
        status = opened.indexing_status()
        assert not status.error and time.monotonic() < deadline
        seen.add((status.done, status.total))
        time.sleep(0.2)
    assert any(0 < done < total for done, total in seen)  # progress was reported on the way
    status = opened.indexing_status()
    assert (status.done, status.total, status.percent) == (120, 120, 100)
    response = opened.search(Query(text="a photo of a dog"))
    assert len(response.base) == len(response.adapted) == 12


@needs_data
def test_one_query_gives_the_same_top_12_in_the_app_api_the_cli_and_the_service(service, client, run_cli):  # noqa: F811
    text = "a photo of a giraffe"
    from_service = service.search(Query(text=text, k=12), place=False)
    info = ask(client, text=text, k=12)[5]
    for side, space in (("base", service.base), ("adapted", service.adapted)):
        result = run_cli("search", space.index.folder, "--text", text, "-k", "12", "--json")
        assert result.code == 0, result.err
        from_cli = [row["relpath"] for row in json.loads(result.out)["results"]]
        from_api = [row["name"] for row in info[side]]
        expected = [r.name for r in getattr(from_service, side)]
        assert len(expected) == 12 and from_cli == from_api == expected, side



@needs_data
def test_hystar_index_with_base_out_writes_both_sides_in_one_local_pass(tmp_path, test_adapter, run_cli):  # noqa: F811
    photos = tmp_path / "photos"
    make_gallery(photos, 12)
    result = run_cli("index", photos, "--out", tmp_path / "adapted", "--encoder", "hystar-mini", "--adapter",
                     test_adapter, "--base-out", tmp_path / "base", "--no-progress", "--json")
    assert result.code == 0, result.err
    assert [report["embedded"] for report in json.loads(result.out)] == [12, 12]
    base, identity = open_search_encoder("hystar-mini")
    build_index(photos, tmp_path / "alone", base, identity, BuildConfig(progress=False))
    got = vectors_by_path(GalleryIndex.load(tmp_path / "base"))
    want = vectors_by_path(GalleryIndex.load(tmp_path / "alone"))
    assert sorted(got) == sorted(want) and all(np.allclose(got[p], want[p], atol=2e-3) for p in want)
    assert GalleryIndex.load(tmp_path / "adapted").meta.adapter is not None
