"""Specification of the ZeroGPU wiring (`hystar.zerogpu`): where the `spaces` package is importable, the service's GPU
work (embedding a query, the guesses' vocabulary, indexing photos) runs inside `spaces.GPU`-decorated functions,
with plain data across (ZeroGPU pickles the arguments into a worker process); without it nothing changes.

A stand-in `spaces` module (put in `sys.modules`) records what it decorates and each call through it.
"""

from __future__ import annotations

import importlib
import pickle
import sys
import types

import pytest
from conftest import make_gallery, tiny_encoder

from hystar import zerogpu
from hystar.index import GalleryIndex
from hystar.online.users import OnlineServiceConfig
from hystar.service import Query, SearchService, ServiceConfig
from hystar.spaces import Space


class StandInSpaces(types.ModuleType):
    """`spaces` as Hugging Face ships it, as far as the app uses it: `spaces.GPU(duration=...)(fn)`."""

    def __init__(self):
        super().__init__("spaces")
        self.decorated: list[tuple[str, int]] = []
        self.calls: list[tuple[str, tuple]] = []

    def GPU(self, fn=None, *, duration=None):  # noqa: N802 - the package's own name
        def decorate(task):
            self.decorated.append((task.__name__, duration))

            def on_gpu(*args, **kwargs):
                self.calls.append((task.__name__, args))
                pickle.dumps((args, kwargs))  # what ZeroGPU sends to its worker process must pickle
                return task(*args, **kwargs)

            return on_gpu

        return decorate(fn) if fn is not None else decorate


@pytest.fixture
def spaces(monkeypatch):
    stand_in = StandInSpaces()
    monkeypatch.setitem(sys.modules, "spaces", stand_in)
    importlib.reload(zerogpu)
    yield stand_in
    monkeypatch.delitem(sys.modules, "spaces")
    importlib.reload(zerogpu)


def tiny_service(tmp_path, gallery_size: int = 6) -> SearchService:
    from hystar.index import BuildConfig, build_index

    make_gallery(tmp_path / "photos", gallery_size)
    build_index(tmp_path / "photos", tmp_path / "idx", tiny_encoder(), config=BuildConfig(progress=False))
    index = GalleryIndex.load(tmp_path / "idx")
    space = Space("base", index, ["cat", "dog", "cat", "tree", "dog", "cat"][:gallery_size])
    return SearchService(tiny_encoder(), space, umap=None, online=OnlineServiceConfig())


def test_without_the_spaces_package_nothing_is_decorated():
    assert "spaces" not in sys.modules
    assert not zerogpu.DECORATED and not zerogpu.on_zerogpu()
    assert zerogpu._gpu_query is zerogpu._query and zerogpu._gpu_index is zerogpu._index


def test_with_spaces_a_query_is_embedded_inside_a_gpu_function_with_plain_data(spaces, tmp_path):
    assert [name for name, _ in spaces.decorated] == ["_query", "_index"]  # at import, as ZeroGPU wants
    assert all(duration and duration <= 120 for _, duration in spaces.decorated)
    service = tiny_service(tmp_path)
    response = service.search(Query(image=tmp_path / "photos" / "set0" / "deep" / "img000.jpg", text="a cat", k=3))
    assert len(response.base) == 3 and len(response.guesses) == 3
    methods = [args[1] for _, args in spaces.calls]
    assert methods.count("_encode") == 1  # one GPU call for the query's images and texts
    assert "_embed_texts" in methods       # the guesses' vocabulary, once
    for _, args in spaces.calls:
        assert len(pickle.dumps(args)) < 200_000  # pixels and texts, never a model
    spaces.calls.clear()
    service.search(Query(text="a dog", k=3))
    assert [args[1] for _, args in spaces.calls] == ["_encode"]


def test_with_spaces_indexing_runs_inside_the_indexing_gpu_function(spaces, tmp_path, monkeypatch):
    make_gallery(tmp_path / "photos", 5)
    config = ServiceConfig(encoder="tiny", gallery=tmp_path / "photos", index_root=tmp_path / "index", umap=None,
                           progress=False, online=None)
    service = SearchService(tiny_encoder(), None, config=config)
    calls = []
    service._build_indexes = lambda gallery, refresh: calls.append((gallery, refresh))  # the GPU side
    loaded = []
    monkeypatch.setattr("hystar.service.load_spaces", lambda *args, **kwargs: loaded.append(kwargs))
    service._load_spaces(tmp_path / "photos", refresh=True, on_progress=None)
    assert [args[1] for name, args in spaces.calls if name == "_index"] == ["_build_indexes"]
    assert calls == [(tmp_path / "photos", True)]
    assert loaded == [{"refresh": False, "on_progress": None}]  # then only loaded, outside the GPU function


def test_on_zerogpu_online_adaptation_is_off_and_says_why(spaces, tmp_path, monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert zerogpu.on_zerogpu()
    service = tiny_service(tmp_path)
    assert not service.can_online and "ZeroGPU" in service.online_note
