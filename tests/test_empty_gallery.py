"""Specification of the app without data (a fresh Hugging Face Space): `python app.py` with no $HYSTAR_DATA photos
and no --gallery starts on an empty gallery of its own, says so, and grows it from uploaded photos and zips.

The launched app runs the seeded hystar-mini of conftest, with $HYSTAR_DATA pointing to an empty folder.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from conftest import random_image, write_image
from test_app import ask, free_port, wait_for_server

from hystar.data import DATA_ENV
from hystar.gallery import UploadLimitError, UploadLimits, copy_uploads, upload_gallery_dir
from hystar.service import QueryError, SearchService, ServiceConfig
from hystar.ui import NO_GALLERY

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def space(tmp_path_factory, mini_spec):
    """app.py as Spaces runs it: no data, no --gallery, a fresh index root; yields (url, index root, the temp folder
    of it all, seconds from start to listening)."""
    base = tmp_path_factory.mktemp("space")
    (base / "no-data").mkdir()
    port = free_port()
    env = {**os.environ, DATA_ENV: str(base / "no-data"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, str(ROOT / "app.py"), "--encoder", mini_spec, "--index-root", str(base / "index"),
               "--port", str(port)]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = wait_for_server(process, port)
        yield url, base / "index", base, time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def client(space):
    from gradio_client import Client

    return Client(space[0], verbose=False)


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    random_image(seed, (64, 48)).save(buffer, "PNG")
    return buffer.getvalue()


def test_app_py_starts_without_data_or_gallery_and_says_how_to_add_photos(space, client):
    with urllib.request.urlopen(f"{space[0]}config", timeout=30) as answer:
        config = json.load(answer)
    shown = json.dumps(config)
    assert NO_GALLERY in shown and "Add photos to the gallery" in shown
    assert upload_gallery_dir(space[1]).is_dir()


def test_a_search_on_the_empty_gallery_is_one_warning_line(client):
    status = ask(client, text="a photo of a dog")[0]
    assert status == "⚠ the gallery is empty: add photos first"


def test_uploaded_photos_and_a_zip_are_indexed_skipping_bad_and_unsafe_files(space, client, tmp_path):
    from gradio_client import handle_file

    photos = [write_image(tmp_path / f"photo{i}.png", 100 + i) for i in range(3)]
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("holiday/photo3.png", png(103))
        zipped.writestr("../evil.png", png(104))
        zipped.writestr("broken.jpg", b"not a picture at all")
    status = client.predict([handle_file(str(p)) for p in [*photos, archive]], api_name="/add_photos")[0]
    assert status.startswith("4 photos added; the gallery has 4; 2 skipped")
    assert "evil.png (unsafe path" in status and "broken.jpg (" in status and "Traceback" not in status

    info = ask(client, image=handle_file(str(tmp_path / "photo1.png")), adapt=False, k=4)[5]
    assert info["base"][0]["name"].endswith("-photo1.png") and info["base"][0]["score"] > 0.99
    assert len(info["base"]) == 4

    zipped_photo = tmp_path / "photo3.png"
    zipped_photo.write_bytes(png(103))
    assert ask(client, image=handle_file(str(zipped_photo)), adapt=False, k=4)[5]["base"][0]["name"].endswith(
        "-photo3.png")
    gallery = upload_gallery_dir(space[1])
    assert sorted(p.name.split("-", 1)[1] for p in gallery.iterdir()) == [f"photo{i}.png" for i in range(4)]
    assert not list(space[2].rglob("evil.png"))  # the zip-slip member is written nowhere


def test_the_page_is_up_in_seconds_and_a_zip_of_50_photos_becomes_searchable(space, client, tmp_path):
    from gradio_client import handle_file

    assert space[3] < 60  # goal 15 s on an idle machine (bench/bench_startup.py); margin for a loaded one
    archive = tmp_path / "fifty.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for i in range(50):
            zipped.writestr(f"trip/photo{i:02d}.png", png(500 + i))
    status = client.predict([handle_file(str(archive))], api_name="/add_photos")[0]
    assert status.startswith("50 photos added; the gallery has ")
    probe = tmp_path / "photo17.png"
    probe.write_bytes(png(517))
    found = ask(client, image=handle_file(str(probe)), adapt=False, k=3)[5]["base"][0]
    assert found["name"].endswith("-photo17.png") and found["score"] > 0.99


def test_adding_photos_reports_indexing_progress_up_to_the_number_added(tmp_path, mini_spec, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "no-data"))
    service = SearchService.open(ServiceConfig(encoder=mini_spec, index_root=tmp_path / "index", umap=None,
                                               progress=False))
    seen: list[tuple[int, int]] = []
    service.add_photos([write_image(tmp_path / f"p{i}.png", i) for i in range(5)], lambda *done: seen.append(done))
    assert seen and seen[-1] == (5, 5) and all(total == 5 for _, total in seen)
    assert service.gallery_size == 5


def test_an_upload_over_the_caps_is_refused_whole_with_a_clear_message(tmp_path):
    photos = [write_image(tmp_path / f"p{i}.png", i) for i in range(3)]
    with pytest.raises(UploadLimitError, match="at most 2 images"):
        copy_uploads(photos, tmp_path / "gallery", UploadLimits(max_files=2))
    with pytest.raises(UploadLimitError, match="MB"):
        copy_uploads(photos, tmp_path / "gallery", UploadLimits(max_bytes=10))
    assert not (tmp_path / "gallery").exists()


def test_a_user_given_gallery_folder_is_never_written_to(tmp_path, mini_spec):
    folder = tmp_path / "mine"
    write_image(folder / "a.png", 1)
    service = SearchService.open(ServiceConfig(encoder=mini_spec, gallery=folder, index_root=tmp_path / "index",
                                               umap=None, progress=False))
    assert not service.can_add
    with pytest.raises(QueryError, match="only to the app's own upload gallery"):
        service.add_photos([write_image(tmp_path / "b.png", 2)])
    assert [p.name for p in folder.iterdir()] == ["a.png"]


def load_app_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("hystar_app_main", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_upload_caps_are_set_from_the_command_line():
    app = load_app_module()
    config = app.service_config(app.parse_args(["--max-upload-files", "20", "--max-upload-mb", "1.5"]))
    assert config.upload_limits == UploadLimits(max_files=20, max_bytes=int(1.5 * 2**20))
    assert app.service_config(app.parse_args([])).upload_limits == UploadLimits()
    with pytest.raises(ValueError, match="must be positive"):
        app.service_config(app.parse_args(["--max-upload-files", "0"]))
    with pytest.raises(ValueError, match="must be positive"):
        UploadLimits(max_bytes=0)
