"""Specification of what the page says, as a newcomer meets it: nothing wrong for a while, nothing unexplained.

- while the gallery is indexed, re-ranking and the UMAP view are "offered once it is done", never "unavailable";
  a UMAP loaded from its cache says so, not "being fitted";
- with QuARI on, the status says per side how results were found, and why scores drop;
- online adaptation says when it starts adapting;
- labels read as words ("alarm clock"), photos without a class by their data set's caption; no emoji;
- a non-image upload is taken off at once, with why; `python app.py --help` loads neither torch nor gradio.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_encoder, write_image
from PIL import Image
from test_app import EXAMPLES, app_dir, app_gallery, needs_data, service, test_adapter  # noqa: F401

from hystar.index import BuildConfig, GalleryIndex, build_index
from hystar.online.users import OnlineStatus
from hystar.service import Query, Result, SearchResponse, SearchService, ServiceConfig
from hystar.spaces import gallery_labels
from hystar.ui import QueryFiles, make_check_upload, umap_view
from hystar.ui_text import header, indexing_line, online_line, rerank_info, status_line
from hystar.umap_job import UmapJob
from hystar.views import UmapConfig, umap_cache_path, umap_key

ROOT = Path(__file__).resolve().parent.parent


def indexing_service(tmp_path) -> SearchService:
    """A service whose gallery is still being indexed (as app.py's, the first minutes of a first start)."""
    return SearchService(tiny_encoder(), None, config=ServiceConfig(encoder="tiny", gallery=tmp_path))


def test_while_indexing_rerank_and_the_umap_view_are_offered_later_not_unavailable(tmp_path):
    indexing = indexing_service(tmp_path)
    indexing.indexing.update(10, 100)
    assert rerank_info(indexing) == "offered once the gallery is indexed"
    assert "offered once it is done" in header(indexing)
    figure = umap_view(indexing, None)
    assert figure.layout.annotations[0].text == "the UMAP view appears once the gallery is indexed"
    for text in (rerank_info(indexing), header(indexing), figure.layout.annotations[0].text):
        assert "unavailable" not in text and "is off" not in text
    line = indexing_line(indexing)
    assert "indexing: 10 %" in line and "⏳" not in line  # no emoji: an empty box without an emoji font


@needs_data
def test_a_umap_with_a_cache_says_it_is_loading_not_being_fitted(service):  # noqa: F811
    index = service.base.index
    assert umap_cache_path(index.folder).is_file()
    job = UmapJob(index.vectors, service.base.classes, umap_cache_path(index.folder),
                  umap_key(index.meta.generation, len(index), UmapConfig()), UmapConfig())
    assert job.state == "loading"
    waiting = SearchService(service.encoder, service.base, service.adapter, service.adapted, umap=job, online=None)
    assert "loaded from its cache" in waiting.umap_waiting_note and "fitted" not in waiting.umap_waiting_note
    assert job.ready(timeout=240)[0] is not None and job.state == "ready"


def response_with(processing: dict[str, str], notes: list[str] | None = None) -> SearchResponse:
    return SearchResponse([], [], ["sketch"], [], [], {}, notes=notes or [], timings={"total": 80.0},
                          processing=processing)


def test_the_status_says_per_side_how_results_were_found():
    mixed = status_line(response_with({"base": "query expanded", "adapted": "re-ranked by QuARI"}))
    assert "base: query expanded, Hystar: re-ranked by QuARI" in mixed
    assert "query expanded · re-ranked" not in mixed
    both = status_line(response_with({"base": "query expanded", "adapted": "query expanded"}))
    assert both.endswith("80 ms · query expanded")


@needs_data
def test_with_quari_on_the_notes_say_why_scores_drop_and_give_visitors_no_command(service):  # noqa: F811
    response = service.search(Query(sketch=Image.open(EXAMPLES / "sketch_house.png"), rerank=True, k=4))
    text = status_line(response)
    assert "train-quari" not in text and "`" not in text
    if response.reranked:  # a trained QuARI for this side: its scores are not cosines, and the page says so
        assert "compare ranks, not the numbers" in text


def test_online_adaptation_says_when_it_starts_adapting():
    warming = online_line(OnlineStatus("adapted", 2, 0, 0, True, starts_after=4))
    assert "2 query images" in warming and "once it has seen 4 (2 more)" in warming
    going = online_line(OnlineStatus("adapted", 9, 4, 2, True, starts_after=4))
    assert "adapted on 4 of 9 query images" in going and "2 updates" in going and "reliable" in going


@needs_data
def test_two_online_sketch_searches_are_counted_and_explained(service):  # noqa: F811
    sketch = Image.open(EXAMPLES / "sketch_house.png")
    for _ in range(2):
        response = service.search(Query(sketch=sketch, online=True, k=3), user="newcomer")
    assert (response.online.images, response.online.updates) == (2, 0)  # not a fault: it has not started yet
    assert "once it has seen 4 (2 more)" in status_line(response)
    service.reset_online("newcomer")


def test_labels_read_as_words_and_coco_photos_by_their_caption(tmp_path):
    data = tmp_path / "data"
    (data / "coco_mini").mkdir(parents=True)
    rows = ["path,style,class,instance_id,role", "train2017/0001.jpg,photo,,1,gallery",
            "train2017/0002.jpg,photo,,2,gallery"]
    (data / "coco_mini" / "manifest.csv").write_text("\n".join(rows) + "\n")
    captions = [{"image_id": 1, "caption": "A plane sitting on a tarmac with a lot of buses around it."},
                {"image_id": 1, "caption": "Planes at the gate."}]
    (data / "coco_mini" / "text_queries.jsonl").write_text("\n".join(json.dumps(c) for c in captions) + "\n")
    for i, rel in enumerate(["coco_mini/train2017/0001.jpg", "coco_mini/train2017/0002.jpg",
                             "mine/alarm_clock/3.jpg"]):
        write_image(data / rel, i)
    build_index(data, tmp_path / "idx", tiny_encoder(), config=BuildConfig(progress=False))
    index = GalleryIndex.load(tmp_path / "idx")
    classes, captions_by_row = gallery_labels(index)
    rows = {entry.path: row for row, entry in enumerate(index.entries)}
    assert captions_by_row == {rows["coco_mini/train2017/0001.jpg"]: "Planes at the gate"}  # the shortest
    labelled = Result(1, 0.9, 0, Path("x"), "coco_mini/train2017/0001.jpg", "", "Planes at the gate")
    assert labelled.label == "Planes at the gate"
    assert Result(1, 0.9, 0, Path("x"), "mine/alarm_clock/3.jpg", "alarm_clock").label == "alarm clock"
    assert classes[rows["mine/alarm_clock/3.jpg"]] == "alarm_clock"


def test_a_non_image_upload_is_taken_off_at_once(tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), "red").save(photo)
    check = make_check_upload(QueryFiles([tmp_path], []))
    with pytest.warns(UserWarning, match="not a usable image"):
        assert check({"path": str(notes), "meta": {"_type": "gradio.FileData"}}) is None
    assert check({"path": str(photo)}) is not None  # left as it is (gr.skip)
    with pytest.warns(UserWarning, match="from uploads only"):
        assert check({"path": "/etc/hostname"}) is None  # never opens a file of the server by its name


def test_app_help_loads_neither_torch_nor_gradio():
    code = ("import runpy, sys; sys.argv = ['app.py', '--help']\n"
            "try:\n    runpy.run_path('app.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in ('torch', 'gradio', 'faiss') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert "--gallery" in out and "LOADED []" in out


def test_the_page_text_has_no_emoji():
    for module in ("ui.py", "ui_text.py", "ui_canvas.py", "views.py"):
        text = (ROOT / "hystar" / module).read_text()
        emoji = [c for c in text if 0x1F000 <= ord(c) <= 0x1FAFF or 0x2300 <= ord(c) <= 0x23FF]
        assert not emoji, (module, emoji)
