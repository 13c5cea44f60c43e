"""Specification of the app: fused queries, base vs adapted search, the views, bad input, online adaptation, and
the launched app.

Everything runs on a small demo gallery: 15 PACS photos of each of its 7 classes, linked (never copied) from
$HYSTAR_DATA, searched with the shipped hystar-mini and a seeded test adapter.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import seeded_adapter_file, tiny_encoder, write_image
from PIL import Image

from hystar.data import DATA_ENV, data_root, load_dataset
from hystar.embed import embed_image, embed_texts
from hystar.images import ImageError
from hystar.index import BuildConfig, GalleryIndex, build_index
from hystar.rerank import QuARI, QuARIConfig, Reranker
from hystar.service import (
    OnlineServiceConfig,
    Query,
    QueryError,
    SearchService,
    ServiceConfig,
    Space,
    fuse,
    gallery_classes,
)
from hystar.ui import build_app, launch, status_line
from hystar.views import (
    DELTA_TITLES,
    UMAP_ADAPTED,
    UMAP_BASE,
    MlpOffset,
    Placement,
    UmapMap,
    delta_figure,
    umap_cache_path,
    umap_figure,
    umap_key,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "assets" / "examples"
CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
PER_CLASS = 15
HAS_DATA = (data_root() / "pacs" / "manifest.csv").is_file()
needs_data = pytest.mark.skipif(not HAS_DATA, reason=f"datasets not found; set {DATA_ENV}")


# --- fixtures: one small gallery, one service and one launched app per session --------------------------
# Their files live at fixed places under the session's temp folder, so that a second module importing these
# fixtures (test_browser) finds the indexes and the UMAP already built.

@pytest.fixture(scope="session")
def app_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.getbasetemp() / "app"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def app_gallery(app_dir) -> Path:
    """class/photo.jpg symbolic links to the first PACS photos of each class."""
    folder = app_dir / "gallery"
    if not folder.is_dir():
        photos = sorted(load_dataset("pacs").photos(), key=lambda item: item.path)
        for label in CLASSES:
            (folder / label).mkdir(parents=True)
            for item in [p for p in photos if p.label == label][:PER_CLASS]:
                (folder / label / item.path.name).symlink_to(item.path)
    return folder


@pytest.fixture(scope="session")
def test_adapter(app_dir) -> Path:
    """A Hystar adapter of the shipped hystar-mini with small seeded weights: ΔS ≠ 0, results near the base."""
    path = app_dir / "adapter.safetensors"
    return path if path.is_file() else seeded_adapter_file("hystar-mini", path)


@pytest.fixture(scope="session")
def service(app_dir, app_gallery, test_adapter) -> SearchService:
    opened = SearchService.open(ServiceConfig(gallery=app_gallery, adapter=test_adapter,
                                              index_root=app_dir / "index", progress=False))
    assert opened.umap_map(timeout=240) is not None
    return opened


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def app_url(service) -> str:
    demo = build_app(service)
    url = launch(demo, port=free_port(), block=False, quiet=True)
    yield url
    demo.close()


@pytest.fixture(scope="session")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


def labels(results) -> list[str]:
    return [r.label for r in results]


def assert_ranked(results, k: int) -> None:
    assert [r.rank for r in results] == list(range(1, k + 1))
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)


# --- searching ---------------------------------------------------------------------------------------------

@needs_data
def test_a_text_query_ranks_photos_of_its_class_first(service):
    response = service.search(Query(text="a photo of a giraffe", k=8))
    assert_ranked(response.base, 8)
    assert labels(response.base[:5]).count("giraffe") >= 4
    assert response.parts == ["text"]


@needs_data
def test_a_gallery_photo_finds_itself_first_on_both_sides(service, app_gallery):
    photo = sorted((app_gallery / "horse").iterdir())[3]
    response = service.search(Query(image=photo, k=5))
    for side in (response.base, response.adapted):
        assert side[0].path == photo and side[0].score == pytest.approx(1.0, abs=5e-3)
        assert side[0].label == "horse" and side[0].name == f"horse/{photo.name}"


@needs_data
def test_a_low_res_shot_finds_its_class(service):
    response = service.search(Query(image=EXAMPLES / "lowres_giraffe.png", k=5))
    assert labels(response.base).count("giraffe") >= 3


@needs_data
def test_a_sketch_on_the_canvas_is_searched_in_both_spaces_and_explained(service):
    response = service.search(Query(sketch=Image.open(EXAMPLES / "sketch_house.png"), k=6))
    assert response.parts == ["sketch"]
    assert_ranked(response.base, 6)
    assert_ranked(response.adapted, 6)
    [explanation] = response.explanations
    assert explanation.source == "sketch" and [layer.block for layer in explanation.layers] == [1, 2, 3]
    assert all(layer.norm > 0 and 0 < layer.relative < 1 and len(layer.top) == 5 for layer in explanation.layers)
    assert {(o.block, o.layer) for o in response.offsets} == {(b, f) for b in range(4) for f in ("c_fc", "c_proj")}
    assert not np.allclose(response.vectors["base"], response.vectors["adapted"])


@needs_data
def test_a_search_keeps_one_generation_of_both_galleries_while_they_are_swapped(service, monkeypatch):
    """Adding photos swaps the base and adapted galleries as one; a search already under way sees the old pair."""
    old = service._galleries
    monkeypatch.setattr(service, "_galleries", old)  # restored after the test
    embed, search, searched = service._embed, service._search, []

    def embed_then_swap(*args):
        service._galleries = (object(), object())  # what a concurrent add_photos would put in place
        return embed(*args)

    monkeypatch.setattr(service, "_embed", embed_then_swap)
    monkeypatch.setattr(service, "_search", lambda space, *args: searched.append(space) or search(space, *args))
    service.search(Query(text="a dog"), place=False)
    assert searched == [old[0], old[1]]


@needs_data
def test_the_adapted_side_searches_the_gallery_embedded_by_the_adapter(service, test_adapter):
    base, adapted = service.base.index, service.adapted.index
    assert base.identity.adapter_fingerprint is None
    assert adapted.identity.adapter_fingerprint is not None and adapted.folder != base.folder
    assert len(adapted) == len(base) == len(CLASSES) * PER_CLASS


@needs_data
def test_with_adaptation_off_only_the_base_side_answers(service):
    response = service.search(Query(sketch=EXAMPLES / "sketch_guitar.png", adapt=False, k=4))
    assert response.adapted is None and not response.explanations and set(response.vectors) == {"base"}
    assert response.placement.adapted is None


# --- fusion ------------------------------------------------------------------------------------------------

def test_fusion_is_the_normalised_weighted_sum_of_normalised_parts():
    a, b, c = np.eye(3, dtype=np.float32) * [2.0, 1.0, 5.0]
    fused = fuse([(a, 1.0), (b, 3.0), (c, -0.5)])
    expected = np.array([1.0, 3.0, -0.5]) / np.linalg.norm([1.0, 3.0, -0.5])
    np.testing.assert_allclose(fused, expected, rtol=1e-6)
    with pytest.raises(QueryError, match="cancel out"):
        fuse([(a, 1.0), (a, -1.0)])


@needs_data
def test_a_combined_query_is_one_fused_vector(service):
    painting = EXAMPLES / "painting_giraffe.jpg"
    query = Query(image=painting, text="a giraffe", negative="a drawing", image_weight=0.7, text_weight=1.3,
                  negative_weight=0.5, adapt=False)
    response = service.search(query)
    image = embed_image(service.encoder, painting)
    text, negative = embed_texts(service.encoder, ["a giraffe", "a drawing"])
    expected = fuse([(image, 0.7), (text, 1.3), (negative, -0.5)])
    np.testing.assert_allclose(response.vectors["base"], expected, atol=1e-5)
    assert response.parts == ["image", "text", "negative text"]


@needs_data
def test_a_part_weighted_zero_and_a_blank_canvas_are_left_out(service):
    blank = Image.new("RGB", (512, 512), "white")
    alone = service.search(Query(text="a dog", adapt=False)).vectors["base"]
    mixed = service.search(Query(text="a dog", sketch=blank, image=EXAMPLES / "lowres_house.png",
                                 image_weight=0.0, adapt=False))
    assert mixed.parts == ["text"]
    np.testing.assert_allclose(mixed.vectors["base"], alone, atol=1e-6)


# --- bad input: one line, never a crash ------------------------------------------------------------------

@needs_data
@pytest.mark.parametrize(("query", "message"), [
    (Query(), "empty query"),
    (Query(text="   "), "empty query"),
    (Query(sketch=Image.new("RGB", (512, 512), "white")), "canvas is blank"),
    (Query(negative="a drawing"), "negative text alone"),
    (Query(text="a dog", text_weight=0.0), "empty query"),
])
def test_an_empty_query_is_refused_with_one_line(service, query, message):
    with pytest.raises(QueryError, match=message) as error:
        service.search(query)
    assert "\n" not in str(error.value)


def bad_files(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.jpg").write_text("not a picture")
    (folder / "empty.png").write_bytes(b"")
    buffer = io.BytesIO()
    Image.new("RGB", (300, 300), "red").save(buffer, "PNG")
    (folder / "truncated.png").write_bytes(buffer.getvalue()[:200])
    Image.new("1", (9000, 6000)).save(folder / "huge.png")
    return {"notes.jpg": "not an image", "empty.png": "empty", "truncated.png": "truncated", "huge.png": "MP"}


@needs_data
def test_an_unreadable_upload_is_refused_with_one_line(service, tmp_path):
    for name, reason in bad_files(tmp_path).items():
        with pytest.raises(ImageError, match=reason) as error:
            service.search(Query(image=tmp_path / name, text="a dog"))
        assert "\n" not in str(error.value), name


@needs_data
@pytest.mark.parametrize("mode", ["CMYK", "I;16", "P", "LA", "L", "RGBA"])
def test_odd_image_modes_are_searched(service, tmp_path, mode):
    image = Image.open(EXAMPLES / "painting_house.jpg").convert("RGB")
    image = image.convert("L").convert("I;16") if mode == "I;16" else image.convert(mode)
    path = tmp_path / ("odd.jpg" if mode == "CMYK" else "odd.png")
    image.save(path)
    assert len(service.search(Query(image=path, k=3)).base) == 3


# --- query expansion and re-ranking --------------------------------------------------------------------------

@needs_data
def test_searches_are_expanded_by_default_and_keep_the_plain_best_match_first(service, app_gallery):
    photo = next(p for p in sorted(app_gallery.rglob("*.jpg")))
    for query in (Query(text="a photo of a giraffe", k=8), Query(image=photo, k=8)):
        expanded = service.search(query)
        plain = service.search(Query(text=query.text, image=query.image, k=8, expand=False))
        assert expanded.expanded and not plain.expanded
        for side in ("base", "adapted"):
            ours, theirs = getattr(expanded, side), getattr(plain, side)
            assert_ranked(ours, 8)
            assert ours[0].row == theirs[0].row
    assert "query expanded" in status_line(expanded) and "query expanded" not in status_line(plain)



@needs_data
def test_without_a_trained_re_ranker_asking_for_one_is_a_note(service):
    response = service.search(Query(text="a horse", rerank=True, k=3))
    assert not response.reranked and len(response.base) == 3
    assert response.processing == {"base": "query expanded", "adapted": "query expanded"}
    assert any(note.startswith("the base side is not re-ranked (no QuARI re-ranker is trained for it): its results "
                               "are query-expanded") for note in response.notes)
    assert not any("hystar train-quari" in note for note in response.notes)  # a command for operators, not visitors


@needs_data
def test_re_ranking_orders_the_candidates_by_the_re_ranker(service):
    torch.manual_seed(0)
    config = QuARIConfig(dim=service.encoder.embed_dim, rank=8, n_tokens=4, layers=1, heads=2, steps=1, width=16)
    reranker = Reranker(QuARI(config), service.encoder.fingerprint)
    base = service.base
    reranking = SearchService(service.encoder, Space("base", base.index, base.classes, reranker), candidates=30,
                              umap=None)
    response = reranking.search(Query(text="a photo of an elephant", rerank=True, k=10))
    assert response.reranked and not response.expanded  # re-ranking replaces expansion
    assert response.notes == ["re-ranked scores are QuARI's own (a blend with the cosine), lower than cosines: "
                              "compare ranks, not the numbers, across the two sides"]
    assert_ranked(response.base, 10)
    rows = np.array([r.row for r in response.base])
    expected = reranker.rerank(response.vectors["base"], np.asarray(base.index.vectors[rows], np.float32))
    np.testing.assert_allclose([r.score for r in response.base], expected, atol=1e-4)


# --- views -------------------------------------------------------------------------------------------------

@needs_data
def test_the_umap_is_cached_beside_the_index_and_places_both_embeddings(service):
    index = service.base.index
    cache = umap_cache_path(index.folder)
    assert cache.is_file() and cache.parent == index.folder.parent
    key = umap_key(index.meta.generation, len(index), service_umap_config())
    assert UmapMap.load(cache, key) is not None
    assert UmapMap.load(cache, {**key, "generation": "gen-999999"}) is None  # another gallery version: refit
    response = service.search(Query(sketch=EXAMPLES / "sketch_giraffe.png"))
    assert np.isfinite(response.placement.base).all() and np.isfinite(response.placement.adapted).all()
    assert "umap" in response.timings


def service_umap_config():
    from hystar.views import UmapConfig

    return UmapConfig()


@needs_data
def test_the_delta_chart_has_a_bar_per_layer_and_query_image_and_the_static_offsets(service):
    response = service.search(Query(sketch=EXAMPLES / "sketch_house.png", image=EXAMPLES / "lowres_house.png"))
    figure = delta_figure(response.explanations, response.offsets)
    bars = {trace.name: list(trace.x) for trace in figure.data}
    assert bars["this sketch"] == bars["this image"] == ["block 1", "block 2", "block 3"]
    assert bars["fixed · MLP c_fc"] == bars["fixed · MLP c_proj"] == [f"block {b}" for b in range(4)]
    titles = [a.text for a in figure.layout.annotations]
    assert titles[:2] == list(DELTA_TITLES)  # one title per panel, each over its own half
    left, right = figure.layout.xaxis.domain, figure.layout.xaxis2.domain
    assert right[0] - left[1] >= 0.15
    assert "‖S‖" in figure.layout.yaxis.title.text and "%" in figure.layout.yaxis.title.text
    # both panels on the same blocks and the same scale; the block the left one does not adapt says so
    blocks = [f"block {b}" for b in range(4)]
    assert list(figure.layout.xaxis.categoryarray) == list(figure.layout.xaxis2.categoryarray) == blocks
    assert figure.layout.yaxis2.matches == "y"
    assert any(a.text == "not<br>adapted" and a.x == "block 0" for a in figure.layout.annotations)


def test_a_text_query_has_no_delta_panels_only_a_sentence_saying_why():
    offsets = [MlpOffset(b, layer, 0.1, 0.04) for b in range(4) for layer in ("c_fc", "c_proj")]
    figure = delta_figure([], offsets)
    assert not figure.data  # no empty panels, no static bars alone
    assert "text tower is left as it is" in figure.layout.annotations[0].text


@needs_data
def test_the_umap_view_joins_base_and_adapted_query_by_an_arrow(service):
    projection = service.umap_map()
    response = service.search(Query(image=EXAMPLES / "painting_guitar.jpg"))
    (x0, y0), (x1, y1) = projection.coords.min(axis=0), projection.coords.max(axis=0)
    apart = Placement((x0 + 0.3 * (x1 - x0), y0 + 0.5 * (y1 - y0)), (x0 + 0.6 * (x1 - x0), y0 + 0.5 * (y1 - y0)))
    for placement in (response.placement, apart):
        figure = umap_figure(projection, placement)
        names = [trace.name for trace in figure.data]
        assert UMAP_BASE in names and UMAP_ADAPTED in names and "guitar" in names
        assert "base encoder" in UMAP_BASE and "adapted" in UMAP_ADAPTED
    [arrow] = [a for a in figure.layout.annotations if a.showarrow]
    assert (arrow.ax, arrow.ay) == apart.base and (arrow.x, arrow.y) == apart.adapted
    labels = {a.text: a for a in figure.layout.annotations if not a.showarrow}
    assert labels["base"].xanchor == "right" and labels["Hystar"].xanchor == "left"  # each on its own side


def test_the_umap_view_fills_its_panel_and_says_when_base_and_adapted_coincide():
    rng = np.random.default_rng(0)
    classes = [f"class_{i % 130}" for i in range(2000)]
    projection = UmapMap(None, rng.uniform(-5, 5, (2000, 2)), np.arange(2000), classes, {})
    same = Placement((1.0, 1.0), (1.02, 1.01))
    figure = umap_figure(projection, same)
    assert not [a for a in figure.layout.annotations if a.showarrow]
    assert any("no visible shift" in a.text for a in figure.layout.annotations)
    assert figure.layout.showlegend is False  # 130 classes: no legend pushing the map aside
    assert figure.layout.yaxis.scaleanchor is None  # no fixed aspect: the map fills the panel
    assert figure.layout.xaxis.range[0] <= -5 and figure.layout.xaxis.range[1] >= 5
    named = [a.text for a in figure.layout.annotations if a.text.startswith("class ")]
    assert 0 < len(named) <= 8 and all("_" not in name for name in named)  # the classes near the query, named
    assert "130 classes" in figure.layout.title.text and "query · " not in str(figure.layout.legend)


def test_gallery_classes_come_from_the_manifests_else_from_folders(tmp_path):
    data = tmp_path / "data"
    (data / "pacs").mkdir(parents=True)
    rows = ["path,style,class,instance_id,role", "photo/dog/1.jpg,photo,dog,,gallery", "photo/x/2.jpg,photo,,,gallery"]
    (data / "pacs" / "manifest.csv").write_text("\n".join(rows) + "\n")
    for i, rel in enumerate(["pacs/photo/dog/1.jpg", "pacs/photo/x/2.jpg", "mine/cat/3.jpg", "top.jpg"]):
        write_image(data / rel, i)
    build_index(data, tmp_path / "idx", tiny_encoder(), config=BuildConfig(progress=False))
    index = GalleryIndex.load(tmp_path / "idx")
    classes = dict(zip([e.path for e in index.entries], gallery_classes(index), strict=True))
    assert classes == {"pacs/photo/dog/1.jpg": "dog", "pacs/photo/x/2.jpg": "", "mine/cat/3.jpg": "cat",
                       "top.jpg": ""}


# --- the launched app, through gradio_client ----------------------------------------------------------------

def ask(client, sketch=None, image=None, text="", negative="", adapt=True, rerank=False, k=6, online=False):
    return client.predict(sketch, image, text, negative, 1.0, 1.0, 1.0, 0.5, adapt, rerank, k, online,
                          api_name="/search")


def gallery_labels(gallery) -> list[str]:
    return [item["caption"].split(" · ")[0] for item in gallery]


@needs_data
def test_the_app_answers_a_text_query_with_ranked_results_and_both_plots(client):
    status, base, adapted, delta, umap, info = ask(client, text="a photo of a giraffe")[:6]
    assert status.startswith("**6** results")
    assert gallery_labels(base["value"]).count("giraffe") >= 4  # galleries come as updates: value, columns...
    assert adapted["visible"] and len(adapted["value"]) == 6  # shown, side by side
    scores = [row["score"] for row in info["base"]]
    assert scores == sorted(scores, reverse=True) and info["parts"] == ["text"]
    assert delta["type"] == umap["type"] == "plotly"


@needs_data
def test_the_app_answers_an_uploaded_image(client, app_gallery):
    from gradio_client import handle_file

    photo = sorted((app_gallery / "elephant").iterdir())[0]
    info = ask(client, image=handle_file(str(photo)), k=3)[5]
    assert info["base"][0]["name"] == f"elephant/{photo.name}" and info["base"][0]["score"] > 0.99
    assert info["parts"] == ["image"] and info["umap"]["adapted"] is not None


@needs_data
def test_the_app_answers_a_sketch_as_an_uploaded_image_and_on_the_canvas(client):
    from gradio_client import handle_file

    sketch = str(EXAMPLES / "sketch_giraffe.png")
    uploaded = ask(client, image=handle_file(sketch))[5]
    canvas = {"background": handle_file(sketch), "layers": [], "composite": handle_file(sketch)}
    drawn = ask(client, sketch=canvas)[5]
    assert uploaded["parts"] == ["image"] and drawn["parts"] == ["sketch"]
    assert [r["name"] for r in uploaded["base"]] == [r["name"] for r in drawn["base"]]
    assert [layer["block"] for layer in drawn["delta_s"][0]["layers"]] == [1, 2, 3]


@needs_data
def test_the_app_turns_bad_input_into_a_one_line_warning(client, tmp_path):
    from gradio_client import handle_file

    bad = bad_files(tmp_path)
    status = ask(client, image=handle_file(str(tmp_path / "notes.jpg")), text="a dog")[0]
    assert status.startswith("⚠") and bad["notes.jpg"] in status and "Traceback" not in status
    assert ask(client)[0].startswith("⚠ empty query")


@needs_data
@pytest.mark.slow
def test_app_py_serves_a_gallery_from_the_command_line(app_dir, app_gallery, test_adapter, service):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, str(ROOT / "app.py"), "--gallery", str(app_gallery), "--adapter", str(test_adapter),
               "--index-root", str(app_dir / "index"), "--port", str(port), "--no-umap"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = wait_for_server(process, port)
        from gradio_client import Client

        info = ask(Client(url, verbose=False), text="a photo of a guitar", k=5)[5]
        assert [row["label"] for row in info["base"]].count("guitar") >= 4
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_for_server(process: subprocess.Popen, port: int, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"app.py exited with {process.returncode}: {process.stdout.read()[-2000:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return f"http://127.0.0.1:{port}/"
        time.sleep(0.5)
    raise AssertionError("app.py did not start listening in time")


# --- online adaptation: each app session's own query encoder, through the launched app ----------------------

# A user's stream: the 9 examples (sketches, paintings, low-res shots) class by class, twice. The session adapts on
# the queries it finds reliable (low entropy against the recent ones), from the 4th on: a few updates.
STREAM = 2 * sorted((p for p in EXAMPLES.iterdir() if p.suffix in {".png", ".jpg"}),
                    key=lambda p: p.stem.split("_")[::-1])
PROBE = EXAMPLES / "sketch_house.png"


def new_client(app_url: str):
    """A new app session (its own Gradio session hash), as a second browser tab would be."""
    from gradio_client import Client

    return Client(app_url, verbose=False)


def ask_online(client, path: Path, adapt: bool = True, k: int = 6):
    from gradio_client import handle_file

    return ask(client, image=handle_file(str(path)), adapt=adapt, k=k, online=True)


def adapt_on_stream(client, adapt: bool = True) -> None:
    for path in STREAM:
        ask_online(client, path, adapt=adapt)


def ranked(side: list[dict]) -> list[tuple[str, float]]:
    return [(row["name"], row["score"]) for row in side]


def probe_features(service: SearchService) -> torch.Tensor:
    pixels = service.encoder.preprocess(Image.open(PROBE).convert("RGB"))[None]
    with torch.no_grad():
        return service.encoder.visual.trunk(pixels.to(service.encoder.device))


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


@needs_data
def test_online_adaptation_adapts_only_this_sessions_query_encoder(app_url, service):
    alice, bob = new_client(app_url), new_client(app_url)
    shared = snapshot(service.adapter)  # the base encoder, the adapter and the text tower
    first = ask_online(alice, PROBE)[5]
    adapt_on_stream(alice)
    status, *_, info = ask_online(alice, PROBE)[:6]

    assert info["online"]["updates"] > 0 and info["online"]["images"] == len(STREAM) + 2
    assert "online adaptation on (Hystar encoder, this session only)" in status
    assert ranked(info["adapted"]) != ranked(first["adapted"])  # the adapted side follows the session
    assert info["base"] == first["base"]                         # the base side stays the shared base encoder
    session = service.online.find(alice.session_hash, "adapted").session
    probe = probe_features(service)
    with torch.no_grad():
        assert not torch.allclose(session.embed(probe), service.adapter.encode_features(probe), atol=1e-5)

    after = service.adapter.state_dict()
    assert shared.keys() == after.keys() and all(torch.equal(shared[name], after[name]) for name in shared)
    assert all(parameter.grad is None for parameter in service.adapter.parameters())
    other = ask_online(bob, PROBE)[5]  # another user: a fresh session, the shared model's results
    assert other["adapted"] == first["adapted"] and other["online"]["updates"] == 0


@needs_data
def test_reset_gives_back_the_shared_models_results_exactly(app_url):
    client = new_client(app_url)
    first = ask_online(client, PROBE, adapt=False)[5]  # style adaptation off: the base side is the one adapted
    adapt_on_stream(client, adapt=False)
    adapted = ask_online(client, PROBE, adapt=False)[5]
    assert ranked(adapted["base"]) != ranked(first["base"]) and adapted["online"]["side"] == "base"

    assert client.predict(api_name="/reset_online").startswith("online adaptation reset")
    again = ask_online(client, PROBE, adapt=False)[5]
    assert again["base"] == first["base"] and again["online"] == first["online"]
    assert first["online"] == {"on": True, "side": "base", "images": 1, "adapted_on": 0, "updates": 0,
                               "observed": True, "starts_after": 4}


@needs_data
def test_text_queries_are_unchanged_by_online_adaptation(app_url):
    client = new_client(app_url)
    adapt_on_stream(client)
    plain = ask(client, text="a photo of a guitar")[5]
    status, *_, online = ask(client, text="a photo of a guitar", online=True)[:6]
    assert online["online"]["updates"] > 0 and not online["online"]["observed"]
    assert "text is not adapted" in status
    assert online["base"] == plain["base"] and online["adapted"] == plain["adapted"]


@needs_data
def test_the_online_control_and_its_reset_are_shown_and_in_the_api(client):
    props = {c["props"].get("elem_id"): c["props"] for c in client.config["components"]}
    for control in ("online", "reset-online"):
        assert props[control].get("visible") is not False and props[control].get("interactive") is not False
    assert props["online"]["value"] is False  # off until the user turns it on
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert [p["parameter_name"] for p in api["/search"]["parameters"]][-3:] == ["online", "expand", "name_prior"]
    assert "/reset_online" in api


@needs_data
def test_query_expansion_is_a_control_on_by_default_and_the_api_can_turn_it_off(client):
    props = {c["props"].get("elem_id"): c["props"] for c in client.config["components"]}
    assert props["expand"]["value"] is True and props["expand"].get("interactive") is not False
    expanded = ask(client, text="a photo of a giraffe")
    plain = client.predict(None, None, "a photo of a giraffe", "", 1.0, 1.0, 1.0, 0.5, True, False, 6, False, False,
                           api_name="/search")
    assert expanded[5]["expanded"] is True and plain[5]["expanded"] is False
    assert expanded[5]["base"][0]["name"] == plain[5]["base"][0]["name"]


@needs_data
def test_online_sessions_are_kept_for_a_bounded_number_of_users(service):
    capped = SearchService(service.encoder, service.base, service.adapter, service.adapted, umap=None,
                           online=OnlineServiceConfig(max_users=2))
    for user in ("ann", "ben", "cat"):
        capped.search(Query(image=PROBE, online=True, k=3), user=user)
    assert len(capped.online) == 2 and "ann" not in capped.online and "cat" in capped.online
    anonymous = capped.search(Query(image=PROBE, online=True, k=3))
    assert anonymous.online is None and any("needs a user session" in note for note in anonymous.notes)


@needs_data
def test_closing_an_app_session_drops_its_online_sessions(app_url, service, monkeypatch):
    monkeypatch.setenv("GRADIO_HEARTBEAT_INTERVAL", "0.5")  # the server notices a closed session within 0.5 s
    client = new_client(app_url)
    ask_online(client, PROBE)
    assert client.session_hash in service.online
    client.close()
    deadline = time.monotonic() + 30
    while client.session_hash in service.online and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.session_hash not in service.online
