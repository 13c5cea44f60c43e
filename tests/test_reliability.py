"""Specification of reliability and security: load, bad input, faults, and what the app serves.

- load: `bench/load_test.py`, shortened (4 clients x 40 queries), against app.py serving the test gallery;
- bad input: the generated corpus of `fuzz_corpus.py` (over 300 malformed and odd inputs) through the launched app's
  API and through `hystar index`;
- faults: every file of an index damaged in every way (silent damage, a flipped bit or a zeroed page, caught by the
  checksums), index / encoder / adapter mismatches, how weights and caches are loaded. `kill -9` during indexing,
  then resume: tests/test_search_cli.py::test_kill_9_at_any_moment_...;
- security: gradio's file routes serve the results the app has shown and the example images, nothing else; the
  search API opens uploads only.

The app is the one of test_app.py (the small PACS gallery, hystar-mini, a seeded test adapter), launched once.
"""

# The fixtures imported from test_app are parameters of the tests below:
# ruff: noqa: F811

from __future__ import annotations

import ast
import hashlib
import http.client
import json
import os
import pickle
import re
import shutil
import subprocess
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import numpy as np
import pytest
import torch
from conftest import PYTHON, make_gallery, write_bad_files
from fuzz_corpus import ANSWERED, EITHER, REFUSED, Case, corpus, write_files
from test_app import (  # noqa: F401 - fixtures
    EXAMPLES,
    ROOT,
    app_dir,
    app_gallery,
    app_url,
    needs_data,
    service,
    test_adapter,
)

from hystar.adapt import HystarAdapter, save_adapter
from hystar.data import data_root
from hystar.encoder import shared_encoder
from hystar.gallery import ensure_demo_index, gallery_index_dir, gallery_source
from hystar.index import (
    FAISS_INDEX,
    MANIFEST,
    META,
    SKIPPED,
    VECTORS,
    BuildConfig,
    CorruptIndexError,
    GalleryIndex,
    IndexNotFoundError,
    build_index,
    checksums,
    open_search_encoder,
)
from hystar.service import GalleryDamagedError, Query, QueryError, SearchService, ServiceConfig
from hystar.ui import QueryFiles, ResultFiles, make_search
from hystar.views import UMAP_MAGIC, UmapMap, cache_secret, umap_cache_path

SERVER_FAILED = "the search failed on the server"  # the app's catch-all: an exception nobody foresaw


@pytest.fixture(scope="module")
def api(app_url):
    """A client that leaves result files on the server (download_files=False): answers carry server paths."""
    from gradio_client import Client

    return Client(app_url, verbose=False, download_files=False)


def search(api, sketch=None, image=None, text="", k=3, adapt=True) -> tuple[str, dict | None, list]:
    """(status line, details, base gallery) of one search through the app's API."""
    status, base, _, _, _, info = api.predict(sketch, image, text, "", 1.0, 1.0, 1.0, 0.5, adapt, False, k,
                                              False, api_name="/search")[:6]
    gallery = base.get("value", []) if isinstance(base, dict) else []
    return status, info if isinstance(info, dict) else None, gallery


# ==================================================================================================== load

@needs_data
def test_the_shortened_load_test_answers_every_query_right_with_bounded_memory(service, app_gallery, test_adapter,
                                                                               app_dir):
    command = [PYTHON, str(ROOT / "bench" / "load_test.py"), "--clients", "4", "--queries", "160", "--pool", "12",
               "--json", "--", "--gallery", str(app_gallery), "--adapter", str(test_adapter), "--index-root",
               str(app_dir / "index"), "--no-umap"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert finished.stdout.strip(), finished.stderr[-3000:]
    report = json.loads(finished.stdout)
    assert report["errors"] == 0 and finished.returncode == 0, report["examples_of_errors"]
    assert report["queries"] == 160 and report["clients"] == 4 and report["adapted"]
    assert min(report["by_kind"].values()) >= 53  # text, upload and sketch, a third each
    rss = report["rss_mib"]
    assert 0 < rss["peak"] < 3 * 1024, rss         # the server: hystar-mini, two indexes, gradio
    assert rss["growth"] < 300, rss                # what stays after 160 queries


# ==================================================================================================== bad input

@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return corpus()


def test_the_fuzz_corpus_holds_every_kind_of_bad_input_the_app_must_survive(cases):
    assert len(cases) >= 300
    names = {case.name for case in cases}
    kinds = {case.kind for case in cases}
    assert {"zero-byte", "truncated", "decompression bomb", "not an image", "odd but valid", "odd text"} <= kinds
    assert any(n.startswith("truncated-base") and n.endswith(".jpg") for n in names)       # truncated JPEG
    assert any(n.startswith("truncated-rgb") and n.endswith(".png") for n in names)        # truncated PNG
    assert any(n.startswith("bomb-header-") for n in names) and any(n.startswith("bomb-real-") for n in names)
    assert {"cmyk.jpg", "grey16.png", "rgb16.png", "palette-trns.png", "animated.gif"} <= names
    assert {"foreign-html.png", "foreign-svg.png"} <= names
    texts = {case.name: case.text for case in cases if case.text is not None}
    assert len(texts["text-10k-chars"]) == 10_000 and texts["text-emoji"].startswith("🦒")
    # The same bytes on every run: a failing case can be regenerated by its name.
    assert [(c.name, c.data, c.text) for c in corpus()[:40]] == [(c.name, c.data, c.text) for c in cases[:40]]


def judge(case: Case, status: str) -> str:
    """"" when the app's status line is what the case expects, else what is wrong."""
    if not isinstance(status, str) or "\n" in status.strip() or "Traceback" in status or SERVER_FAILED in status:
        return f"not a clear one-line answer: {status!r}"
    answered, refused = status.startswith("**"), status.startswith("⚠ ")
    if case.expect == ANSWERED and not answered:
        return f"should be searched: {status!r}"
    if case.expect == REFUSED and not (refused and re.search(case.reason, status)):
        return f"should be refused for /{case.reason}/: {status!r}"
    if case.expect == EITHER and not (answered or (refused and re.search(case.reason, status))):
        return f"neither searched nor refused for /{case.reason}/: {status!r}"
    return ""


@needs_data
def test_every_malformed_input_through_the_app_gets_a_clear_line_and_the_app_keeps_answering(api, app_url, cases,
                                                                                           tmp_path, app_gallery):
    from gradio_client import Client, handle_file

    files = write_files(cases, tmp_path / "corpus")
    requests: list[tuple[str, Case, dict]] = []
    for number, case in enumerate(cases):
        if case.text is not None:
            requests.append(("text", case, {"text": case.text}))
            continue
        requests.append(("upload", case, {"image": handle_file(str(files[case.name]))}))
        if case.expect != ANSWERED and number % 3 == 0:  # a third of the bad files on the canvas too
            canvas = {"background": handle_file(str(files[case.name])), "layers": [],
                      "composite": handle_file(str(files[case.name]))}
            requests.append(("canvas", case, {"sketch": canvas}))

    local = threading.local()

    def send(request: tuple[str, Case, dict]) -> tuple[str, Case, str]:
        how, case, inputs = request
        if not hasattr(local, "client"):  # a client per sender, as each user has: one session each
            local.client = Client(app_url, verbose=False, download_files=False)
        try:
            return how, case, judge(case, search(local.client, **inputs)[0])
        except Exception as error:  # noqa: BLE001 - a gradio error instead of the app's line: reported below
            return how, case, f"{type(error).__name__}: {str(error)[:300]}"

    with ThreadPoolExecutor(6) as pool:  # the app searches 2 at a time and queues up to 32
        outcomes = list(pool.map(send, requests))
    failures = [f"{how} {case.name}: {problem}" for how, case, problem in outcomes if problem]
    assert not failures, f"{len(failures)} of {len(outcomes)} inputs went wrong:\n" + "\n".join(failures[:40])
    assert len(outcomes) >= 300

    photo = sorted((app_gallery / "giraffe").iterdir())[2]
    status, info, _ = search(api, image=handle_file(str(photo)), k=5)
    assert status.startswith("**5** results")
    assert info["base"][0]["name"] == f"giraffe/{photo.name}" and info["base"][0]["score"] > 0.99


NAMED = re.compile(r"[^:]*\.(png|jpe?g|gif|webp|bmp|tiff?): ", re.IGNORECASE)  # a reason naming a (other) file


def test_every_malformed_file_through_hystar_index_is_skipped_with_its_reason(cases, tmp_path, run_cli, mini_spec):
    files = [case for case in cases if case.is_file]
    write_files(files, tmp_path / "corpus")
    built = run_cli("index", tmp_path / "corpus", "--encoder", mini_spec, "--out", tmp_path / "idx",
                    "--no-progress", "--json")
    assert built.code == 0, built.err
    skipped = {item["path"]: item["reason"] for item in json.loads(built.out)["skipped"]}
    indexed = [entry.path for entry in GalleryIndex.load(tmp_path / "idx").entries]
    assert len(indexed) == len(set(indexed)) and set(indexed).isdisjoint(skipped)
    assert len(indexed) + len(skipped) == len(files)
    wrong = []
    for case in files:
        reason = skipped.get(case.name)
        if case.expect == ANSWERED and case.name not in indexed:
            wrong.append(f"{case.name}: should be indexed, skipped for {reason!r}")
        elif case.expect in (REFUSED, EITHER) and reason is not None and (
                not re.search(case.reason, reason) or "\n" in reason or NAMED.match(reason)):
            wrong.append(f"{case.name}: reason {reason!r} does not match /{case.reason}/ or names a file")
        elif case.expect == REFUSED and reason is None:
            wrong.append(f"{case.name}: should be skipped, was indexed")
    assert not wrong, "\n".join(wrong)

    good = tmp_path / "corpus" / "progressive.jpg"
    found = run_cli("search", tmp_path / "idx", "--image", good, "-k", "1", "--json")
    assert found.code == 0 and json.loads(found.out)["results"][0]["relpath"] == "progressive.jpg"
    again = run_cli("index", tmp_path / "corpus", "--out", tmp_path / "idx", "--no-progress", "--json")
    assert again.code == 0 and json.loads(again.out)["embedded"] == 0  # bad files are not retried unchanged


# ==================================================================================================== faults

@pytest.fixture(scope="module")
def built_index(tmp_path_factory, mini_spec) -> tuple[Path, Path]:
    """(photos, index) of 6 images and 4 unreadable files, built once with a random-init hystar-mini."""
    folder = tmp_path_factory.mktemp("damage")
    make_gallery(folder / "photos", 6)
    write_bad_files(folder / "photos" / "bad")
    encoder, identity = open_search_encoder(mini_spec)
    build_index(folder / "photos", folder / "idx", encoder, identity, BuildConfig(progress=False))
    return folder / "photos", folder / "idx"


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "deleted":
        path.unlink()
    elif how == "emptied":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":  # random bytes of the same length
        path.write_bytes(np.random.default_rng(len(data)).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    elif how == "bit-flipped":  # the lowest bit of its middle byte: still parses, silently wrong
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 1
        path.write_bytes(bytes(flipped))
    elif how == "page-zeroed":  # the 4 KiB page holding its last byte, as a lost write leaves it
        start = (len(data) - 1) // 4096 * 4096
        path.write_bytes(data[:start] + bytes(len(data) - start))
    else:
        raise ValueError(how)


INDEX_FILES = [META, f"gen-000000/{MANIFEST}", f"gen-000000/{SKIPPED}", f"gen-000000/{VECTORS}",
               f"gen-000000/{FAISS_INDEX}"]
DAMAGES = ["deleted", "emptied", "truncated", "garbage"]


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("name", INDEX_FILES)
def test_a_damaged_index_file_is_detected_with_one_line_and_rebuilt_by_the_command_it_names(
        built_index, tmp_path, run_cli, mini_spec, name, how):
    photos, original = built_index
    index = tmp_path / "idx"
    shutil.copytree(original, index)
    damage(index / name, how)

    if name == META and how == "deleted":
        with pytest.raises(IndexNotFoundError, match="no index here"):
            GalleryIndex.load(index)
        return  # no commit record: the folder holds no index, and `hystar index` builds one
    with pytest.raises(CorruptIndexError) as error:
        GalleryIndex.load(index)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{index}: the index is damaged")
    assert message.endswith(f"rebuild it with `hystar index DIR --out {index} --rebuild`")

    searched = run_cli("search", index, "--text", "a dog")
    assert searched.code == 2 and searched.err.strip() == f"hystar search: error: {message}"
    rebuilt = run_cli("index", photos, "--out", index, "--rebuild", "--encoder", mini_spec, "--no-progress")
    assert rebuilt.code == 0, rebuilt.err
    again = GalleryIndex.load(index)
    assert sorted(e.path for e in again.entries) == sorted(e.path for e in GalleryIndex.load(original).entries)
    assert len(again.skipped) == 4


@pytest.mark.parametrize("how", DAMAGES)
def test_a_plain_rerun_of_hystar_index_heals_a_damaged_faiss_file_from_the_raw_vectors(
        built_index, tmp_path, run_cli, mini_spec, how):
    photos, original = built_index
    index = tmp_path / "idx"
    shutil.copytree(original, index)
    damage(index / f"gen-000000/{FAISS_INDEX}", how)

    rerun = run_cli("index", photos, "--out", index, "--encoder", mini_spec, "--no-progress")
    assert rerun.code == 0, rerun.err
    healed = GalleryIndex.load(index)
    assert healed.meta.generation != "gen-000000"
    assert sorted(e.path for e in healed.entries) == sorted(e.path for e in GalleryIndex.load(original).entries)
    assert healed.index.ntotal == len(healed.entries)


def test_the_app_rebuilds_its_damaged_gallery_index_instead_of_failing(tmp_path, mini_spec, capsys):
    make_gallery(tmp_path / "photos", 5)
    write_bad_files(tmp_path / "photos" / "bad")
    root = tmp_path / "indexes"
    first = ensure_demo_index(mini_spec, tmp_path / "photos", index_root=root, progress=False)
    folder = gallery_index_dir(gallery_source(tmp_path / "photos"), open_search_encoder(mini_spec)[1], root)
    assert first.folder == folder and len(first) == 5
    for name in INDEX_FILES[1:]:
        damage(folder / first.meta.generation / Path(name).name, "truncated")
        capsys.readouterr()
        again = ensure_demo_index(mini_spec, tmp_path / "photos", index_root=root, progress=False)
        assert len(again) == 5 and sorted(e.path for e in again.entries) == sorted(e.path for e in first.entries)
        assert "the index is damaged" in capsys.readouterr().err
        first = again


# --- silent damage: checksums ----------------------------------------------------------------------

SILENT = ["bit-flipped", "page-zeroed", "truncated"]


def assert_damage_line(message: str, index: Path, name: str) -> None:
    """The one-line "damaged" message, naming the damaged file and the command that rebuilds the index."""
    assert "\n" not in message and message.startswith(f"{index}: the index is damaged (")
    assert Path(name).name in message, message
    assert message.endswith(f"rebuild it with `hystar index DIR --out {index} --rebuild`")


@pytest.mark.parametrize("how", SILENT)
@pytest.mark.parametrize("name", INDEX_FILES)
def test_silent_damage_is_found_by_verify_and_at_open_and_nothing_is_served(built_index, tmp_path, run_cli, name,
                                                                           how):
    _, original = built_index
    index = tmp_path / "idx"
    shutil.copytree(original, index)
    damage(index / name, how)

    verified = run_cli("index", "--verify", index)
    assert verified.code == 2 and verified.out == "", verified.out
    message = verified.err.strip().removeprefix("hystar index: error: ")
    assert_damage_line(message, index, name)
    if name.endswith(VECTORS) and how != "truncated":  # the first damaged block of rows, all 6 rows here
        assert "vectors.npy: rows 0-5 (block 0) do not match their checksum" in message
    with pytest.raises(CorruptIndexError) as opened:
        GalleryIndex.load(index)
    assert str(opened.value) == message
    searched = run_cli("search", index, "--text", "a dog", "--json")
    assert searched.code == 2 and searched.out == "" and searched.err.strip() == f"hystar search: error: {message}"


def test_an_intact_index_passes_verify_and_every_file_of_it_is_checksummed(built_index, run_cli):
    _, index = built_index
    verified = run_cli("index", "--verify", index, "--json")
    assert verified.code == 0, verified.err
    report = json.loads(verified.out)
    assert (report["generation"], report["files"], report["rows"], report["written"]) == ("gen-000000", 4, 6, False)
    meta = json.loads((index / META).read_text())
    assert set(meta["checksums"]["files"]) == {MANIFEST, SKIPPED, FAISS_INDEX}  # the vectors: per block of rows
    assert meta["checksums"]["vectors"]["blocks"] and re.fullmatch("[0-9a-f]{8}", meta["crc32"])


def test_a_big_gallerys_vectors_are_checked_after_opening_and_a_damaged_one_is_then_refused(built_index, tmp_path,
                                                                                          monkeypatch):
    _, original = built_index
    index = tmp_path / "idx"
    shutil.copytree(original, index)
    damage(index / f"gen-000000/{VECTORS}", "bit-flipped")
    monkeypatch.setattr(checksums, "OPEN_CHECK_BYTES", 0)  # as if every file were too big to read at opening

    opened = GalleryIndex.load(index)  # the manifests checked: fine
    assert not opened.verified and opened.damage is None
    assert opened.wait_verified(timeout=60) and "rows 0-5 (block 0)" in str(opened.damage)
    with pytest.raises(CorruptIndexError, match="the index is damaged"):
        opened.search(np.ones(opened.dim, np.float32), 3)


def test_the_app_refuses_a_gallery_found_damaged_after_it_is_up_then_mends_it_when_restarted(tmp_path, mini_spec,
                                                                                            monkeypatch, capsys):
    make_gallery(tmp_path / "photos", 5)
    config = ServiceConfig(encoder=mini_spec, gallery=tmp_path / "photos", index_root=tmp_path / "indexes",
                           umap=None, online=None, progress=False)
    first = SearchService.open(config)
    query = Query(text="a dog", k=3, expand=False)
    before = [r.name for r in first.search(query, place=False).base]
    folder = first.base.index.folder
    damage(folder / f"gen-000000/{VECTORS}", "bit-flipped")

    with monkeypatch.context() as big:  # a big gallery: its vectors are checked once the app is up
        big.setattr(checksums, "OPEN_CHECK_BYTES", 0)
        app = SearchService.open(config)
        assert app.base.index.wait_verified(timeout=60)
    with pytest.raises(GalleryDamagedError) as refused:
        app.search(query, place=False)
    message = str(refused.value)
    assert_damage_line(message, folder, VECTORS)
    search = make_search(app, ResultFiles(tmp_path / "served"))
    status = search(None, None, "a dog", "", 1.0, 1.0, 1.0, 0.5, False, False, 3)[0]
    assert status == f"⚠ {message}"  # what the page shows: one line, no traceback

    capsys.readouterr()
    again = SearchService.open(config)  # a small gallery's vectors are checked at opening: its rows embedded again
    assert "the index is damaged" in capsys.readouterr().err
    assert [r.name for r in again.search(query, place=False).base] == before
    assert again.base.index.meta.generation != "gen-000000"


def test_hystar_index_embeds_again_only_the_rows_of_damaged_blocks_and_keeps_the_good_ones(tmp_path, tiny):
    paths = make_gallery(tmp_path / "photos", 9)
    config = BuildConfig(progress=False, block_rows=2)
    build_index(tmp_path / "photos", tmp_path / "idx", tiny, config=config)
    built = GalleryIndex.load(tmp_path / "idx")
    row_bytes = built.meta.checksums["vectors"]["row_bytes"]
    vectors = tmp_path / "idx" / "gen-000000" / VECTORS
    data = bytearray(vectors.read_bytes())
    data[built.meta.checksums["vectors"]["offset"] + 5 * row_bytes + 1] ^= 1  # row 5: block 2, rows 4 and 5
    vectors.write_bytes(bytes(data))
    gone = tmp_path / "photos" / built.entries[4].path  # the other row of that block: its image deleted since
    gone.unlink()

    tiny.visual.images_seen = 0
    report = build_index(tmp_path / "photos", tmp_path / "idx", tiny, config=config)
    assert (report.repaired, report.embedded, tiny.visual.images_seen) == (1, 1, 1)  # row 5 only
    assert (report.count, report.removed) == (8, 1)
    mended = GalleryIndex.load(tmp_path / "idx")
    mended.verify()
    build_index(tmp_path / "photos", tmp_path / "fresh", tiny, config=config)
    fresh = GalleryIndex.load(tmp_path / "fresh")
    assert [e.path for e in mended.entries] == [e.path for e in fresh.entries] == sorted(
        p.relative_to(tmp_path / "photos").as_posix() for p in paths if p != gone)
    assert np.array_equal(np.asarray(mended.vectors), np.asarray(fresh.vectors))


@pytest.mark.parametrize(("name", "mended"), [(VECTORS, "6 damaged rows embedded again"), (FAISS_INDEX, "0 embedded"),
                                              (SKIPPED, "4 unreadable files skipped"), (MANIFEST, None)])
def test_a_plain_rerun_of_hystar_index_mends_silent_damage_unless_the_manifest_is_damaged(
        built_index, tmp_path, run_cli, mini_spec, name, mended):
    photos, original = built_index
    index = tmp_path / "idx"
    shutil.copytree(original, index)
    damage(index / "gen-000000" / name, "bit-flipped")

    rerun = run_cli("index", photos, "--out", index, "--encoder", mini_spec, "--no-progress")
    if mended is None:  # which image is which row is lost: only --rebuild can help, and the line says so
        assert rerun.code == 2 and "manifest.jsonl does not match its checksum" in rerun.err
        assert rerun.err.strip().endswith("--rebuild`")
        return
    assert rerun.code == 0 and mended in rerun.out, rerun.out + rerun.err
    assert run_cli("index", "--verify", index).code == 0
    healed = GalleryIndex.load(index)
    assert healed.meta.generation != "gen-000000" and len(healed.skipped) == 4
    assert sorted(e.path for e in healed.entries) == sorted(e.path for e in GalleryIndex.load(original).entries)


def without_checksums(original: Path, index: Path) -> Path:
    """A copy of the index in `original` as hystar wrote it before checksums."""
    shutil.copytree(original, index)
    meta = json.loads((index / META).read_text())
    del meta["checksums"], meta["crc32"]
    (index / META).write_text(json.dumps(meta))
    return index


def test_an_index_without_checksums_opens_with_one_warning_and_verify_writes_them(built_index, tmp_path, run_cli,
                                                                                 mini_spec):
    photos, original = built_index
    index = without_checksums(original, tmp_path / "idx")

    with pytest.warns(UserWarning, match="has no checksums .* `hystar index --verify"):
        GalleryIndex.load(index)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(GalleryIndex.load(index)) == 6
    assert not [w for w in caught if "no checksums" in str(w.message)]  # once per folder
    written = run_cli("index", "--verify", index)
    assert written.code == 0 and "it had no checksums" in written.out and "written" in written.out
    assert "intact" in run_cli("index", "--verify", index).out
    damage(index / f"gen-000000/{VECTORS}", "bit-flipped")
    assert run_cli("index", "--verify", index).code == 2

    plain = without_checksums(original, tmp_path / "plain")  # a plain re-run of `hystar index` adds them too
    assert run_cli("index", photos, "--out", plain, "--encoder", mini_spec, "--no-progress").code == 0
    assert GalleryIndex.load(plain).meta.checksums is not None


def test_an_index_is_searched_and_extended_only_with_its_own_encoder_and_adapter(tmp_path, run_cli, mini_spec):
    make_gallery(tmp_path / "photos", 4)
    adapter = HystarAdapter(shared_encoder(mini_spec))
    adapters = [save_adapter(adapter, tmp_path / f"adapter{run}.safetensors", mini_spec, {"run": run})
                for run in (0, 1)]  # the same weights from two runs: two files, two fingerprints
    built = run_cli("index", tmp_path / "photos", "--encoder", mini_spec, "--adapter", adapters[0], "--out",
                    tmp_path / "idx", "--no-progress")
    assert built.code == 0, built.err

    refusals = {  # command -> what its one-line error says
        ("search", "--adapter", adapters[1]): "not comparable",                         # another adapter
        ("search", "--no-adapt", "--encoder", "hystar-mini"): "not comparable",         # another encoder
        ("search", "--encoder", "hystar-mini"): "cannot run on hystar-mini",            # its adapter, elsewhere
        ("index", "--encoder", mini_spec, "--adapter", adapters[1]): "not comparable",  # mixing in one index
    }
    for (command, *options), says in refusals.items():
        where = [tmp_path / "photos", "--out", tmp_path / "idx", "--no-progress"] if command == "index" else [
            tmp_path / "idx", "--text", "a dog"]
        result = run_cli(command, *where, *options)
        last = result.err.strip().splitlines()[-1]  # above it, at most the progress of loading weights
        assert result.code == 2 and last.startswith(f"hystar {command}: error: ") and says in last, result.err
        assert "Traceback" not in result.err
    assert run_cli("search", tmp_path / "idx", "--text", "a dog").code == 0  # its own: fine


# --- weights and caches: never unpickled unless signed ----------------------------------------------

ALLOWED_PICKLE_LOADS = {("hystar/views.py", "pickle.loads")}  # the UMAP cache, after its HMAC check
UNPICKLERS = {"pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads", "dill.load",
              "dill.loads", "cloudpickle.load", "cloudpickle.loads", "joblib.load", "pandas.read_pickle",
              "shelve.open", "marshal.load", "marshal.loads", "torch.jit.load", "yaml.unsafe_load",
              "numpy.lib.format.read_array"}


def unsafe_loads(source: str) -> list[tuple[int, str]]:
    """(line, call) of every call in `source` that may unpickle: torch.load without weights_only=True, np.load
    with allow_pickle, yaml.load without a safe loader, and the unpicklers themselves, through any import alias."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases.update({a.asname or a.name.split(".")[0]: a.name if a.asname else a.name.split(".")[0]
                            for a in node.names})
        elif isinstance(node, ast.ImportFrom) and node.module:
            aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})

    def dotted(expr: ast.expr) -> str:
        if isinstance(expr, ast.Name):
            return aliases.get(expr.id, expr.id)
        if isinstance(expr, ast.Attribute):
            return f"{dotted(expr.value)}.{expr.attr}"
        return "?"

    def keyword_is(call: ast.Call, name: str, value: object) -> bool:
        return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value
                   for k in call.keywords)

    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        unsafe = (name in UNPICKLERS
                  or (name == "torch.load" and not keyword_is(node, "weights_only", True))
                  or (name == "numpy.load" and any(k.arg == "allow_pickle" and not keyword_is(node, "allow_pickle",
                                                                                               False)
                                                   for k in node.keywords))
                  or (name == "yaml.load" and not any(k.arg == "Loader" and "Safe" in dotted(k.value)
                                                      for k in node.keywords)))
        if unsafe:
            found.append((node.lineno, name))
    return found


@pytest.mark.parametrize(("snippet", "flagged"), [
    ("import torch\ntorch.load(path)", True),
    ("import torch\ntorch.load(path, map_location='cpu', weights_only=False)", True),
    ("from torch import load\nload(path)", True),
    ("import pickle as p\np.loads(data)", True),
    ("from pickle import loads as thaw\nthaw(data)", True),
    ("import numpy as np\nnp.load(path, allow_pickle=True)", True),
    ("import joblib\njoblib.load(path)", True),
    ("import yaml\nyaml.load(text)", True),
    ("import torch\ntorch.load(path, map_location='cpu', weights_only=True)", False),
    ("import numpy as np\nnp.load(path, mmap_mode='r')", False),
    ("from safetensors.torch import load_file\nload_file(path)", False),
    ("import yaml\nyaml.load(text, Loader=yaml.SafeLoader)", False),
])
def test_the_unpickling_scan_finds_what_it_must(snippet, flagged):
    assert bool(unsafe_loads(snippet)) == flagged


def test_weights_load_only_through_safetensors_or_weights_only_and_one_signed_cache_is_unpickled():
    found = set()
    for path in sorted([*(ROOT / "hystar").rglob("*.py"), ROOT / "app.py", *(ROOT / "bench").glob("*.py")]):
        relative = path.relative_to(ROOT).as_posix()
        found |= {(relative, name, line) for line, name in unsafe_loads(path.read_text())}
    assert {(relative, name) for relative, name, _ in found} == ALLOWED_PICKLE_LOADS, sorted(found)
    [(_, _, line)] = found
    views = (ROOT / "hystar" / "views.py").read_text().splitlines()
    assert "compare_digest" in "\n".join(views[line - 6:line - 1])  # right after the signature check


class _Planted:
    """Unpickling this makes the folder `marker`: proof that a file was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_a_planted_umap_cache_is_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    payload = pickle.dumps({"model": _Planted(marker), "coords": None, "rows": None, "classes": [], "key": {}})
    cache = tmp_path / "gallery.umap.pkl"
    foreign_signature = hashlib.sha256(b"another installation's secret" + payload).digest()
    plants = {
        "a bare pickle": payload,
        "our header, no signature": UMAP_MAGIC + payload,
        "our header, zeroed signature": UMAP_MAGIC + bytes(32) + payload,
        "signed elsewhere": UMAP_MAGIC + foreign_signature + payload,
        "signed, then changed": UMAP_MAGIC + _sign(payload) + payload.replace(b"coords", b"coordz"),
    }
    for what, data in plants.items():
        cache.write_bytes(data)
        assert UmapMap.load(cache, {}) is None, what
        assert not marker.exists(), f"{what} was unpickled"
    cache.write_bytes(UMAP_MAGIC + _sign(payload) + payload)  # what `save` writes: signed on this installation
    UmapMap.load(cache, {})
    assert marker.exists()  # the plants above were refused for their signature, not for their payload


def _sign(body: bytes) -> bytes:
    import hmac

    return hmac.new(cache_secret(), body, hashlib.sha256).digest()


def test_a_pickled_checkpoint_that_runs_code_is_refused_by_the_weights_loader(tmp_path):
    from hystar.encoder.openclip import _read_state_dict

    marker = tmp_path / "unpickled"
    checkpoint = tmp_path / "evil.pt"
    torch.save({"state_dict": _Planted(marker)}, checkpoint)
    with pytest.raises(ValueError, match="evil.pt refused: only tensors may be unpickled") as refused:
        _read_state_dict(checkpoint)
    assert "\n" not in str(refused.value)
    assert not marker.exists()


# ==================================================================================================== security

def http_get(url: str, target: str) -> tuple[int, bytes]:
    """GET `target` exactly as written (no normalisation of `..` or of %-escapes by the client)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.putrequest("GET", target, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def shown(api, app_gallery) -> tuple[str, Path]:
    """(server path, gallery file) of a result the app has just shown."""
    from gradio_client import handle_file

    photo = sorted((app_gallery / "house").iterdir())[0]
    status, _, gallery = search(api, image=handle_file(str(photo)), k=2)
    assert status.startswith("**2** results")
    return gallery[0]["image"]["path"], photo


def secrets_on_disk(app_gallery: Path, service) -> dict[str, Path]:
    """Files the app must never serve, each of which exists."""
    photo = sorted((app_gallery / "dog").iterdir())[0]
    index = service.base.index.folder
    files = {
        "passwd": Path("/etc/passwd"),
        "data manifest": data_root() / "pacs" / "manifest.csv",
        "pyproject": ROOT / "pyproject.toml",
        "app.py": ROOT / "app.py",
        "example script": EXAMPLES / "make_examples.py",
        "gallery link": photo,
        "gallery photo": photo.resolve(),
        "index meta": index / META,
        "umap cache": umap_cache_path(index),
        "cache secret": Path(os.environ.get("HYSTAR_CACHE_SECRET") or Path.home() / ".cache/hystar/cache.secret"),
        "environment": Path("/proc/self/environ"),
    }
    cache_secret()
    return {name: path for name, path in files.items() if os.access(path, os.R_OK)}


def attacks(target: Path, allowed: Path, depth: int) -> list[str]:
    """Request targets that try to reach `target` through every file route of gradio 6."""
    up = "../" * depth
    relative = str(target).lstrip("/")
    encoded = quote(str(target), safe="")
    return [
        f"/gradio_api/file={target}",
        f"/gradio_api/file={encoded}",
        f"/gradio_api/file/{target}",                                    # the deprecated route
        f"/gradio_api/file={allowed}/{up}{relative}",                      # out of a served folder
        f"/gradio_api/file={allowed}/{quote(up, safe='')}{quote(relative)}",
        f"/gradio_api/file={allowed}/{up.replace('.', '%2e')}{relative}",
        f"/gradio_api/file={allowed}/{up.replace('../', '%252e%252e%252f')}{relative}",   # double-encoded
        f"/gradio_api/file={allowed}/{up.replace('/', '%5c')}{relative}",                  # backslashes
        f"/gradio_api/file={allowed}/./{up}{relative}%00.png",
        f"/gradio_api/file=//{relative}",
        f"/gradio_api/file=file://{target}",
        f"/gradio_api/file=file:{encoded}",
        f"/gradio_api/proxy=file://{target}",
        f"/gradio_api/proxy=http://127.0.0.1/gradio_api/file={target}",
        f"/file={target}",
        f"/static/{up}{up}{relative}",
        f"/static/{quote(up + up + relative, safe='')}",
        f"/assets/{quote(up + up + relative, safe='')}",
        f"/svelte/{quote(up + up + relative, safe='')}",
        f"/gradio_api/custom_component/x/client/{quote(up + up, safe='')}/{quote(relative, safe='')}",
        f"/gradio_api/stream/x/0/0/playlist-file?path={encoded}",
        f"/{up}{up}{relative}",
    ]


@needs_data
def test_a_shown_result_and_the_examples_are_served_as_the_app_links_them(app_url, shown):
    served, photo = shown
    for target in (f"/gradio_api/file={served}", f"/gradio_api/file={quote(served, safe='')}"):
        status, body = http_get(app_url, target)
        assert status == 200 and body == photo.read_bytes(), target
    status, body = http_get(app_url, f"/gradio_api/file={EXAMPLES / 'sketch_house.png'}")
    assert status == 200 and body == (EXAMPLES / "sketch_house.png").read_bytes()


@needs_data
def test_no_file_route_serves_anything_beyond_the_results_and_the_examples(app_url, shown, app_gallery, service):
    served = Path(shown[0]).parent
    depth = len(served.parts)
    leaks, checked = [], 0
    for name, target in secrets_on_disk(app_gallery, service).items():
        content = target.read_bytes()
        middle = len(content) // 2
        marker = content[max(0, middle - 32):middle + 32]  # past the headers that files of a format share
        requests = {request for allowed in (served, EXAMPLES)
                    for request in attacks(target, allowed, max(depth, len(EXAMPLES.parts)))}
        for request in sorted(requests):
            status, body = http_get(app_url, request)
            checked += 1
            if status < 400 or (marker and marker in body):
                leaks.append(f"{name}: {request} -> {status}, {len(body)} bytes")
    assert checked >= 300 and not leaks, "\n".join(leaks)


@needs_data
def test_a_link_planted_in_the_served_folder_does_not_lead_out_of_it(app_url, shown):
    planted = Path(shown[0]).parent / "planted-link.png"
    planted.symlink_to("/etc/passwd")
    try:
        status, body = http_get(app_url, f"/gradio_api/file={planted}")
        assert status in (403, 404) and b"root:" not in body
    finally:
        planted.unlink()


def search_inputs(url: str, sketch, image) -> list:
    """The search endpoint's inputs, as many as the app has: the app's defaults after sketch and image."""
    config = httpx.get(f"{url}config", timeout=30).json()
    [dependency] = [d for d in config["dependencies"] if d.get("api_name") == "search"]
    values = [sketch, image, "", "", 1.0, 1.0, 1.0, 0.5, True, False, 3]
    return values + [False] * (len(dependency["inputs"]) - len(values))  # later inputs: switches, off


def test_a_query_image_is_read_only_from_the_uploads_the_results_and_the_examples(tmp_path):
    uploads, results, elsewhere = tmp_path / "uploads", tmp_path / "results", tmp_path / "elsewhere"
    for folder in (uploads, results, elsewhere):
        folder.mkdir()
    example = tmp_path / "sketch_cat.png"
    readable = QueryFiles([uploads, results], [example])
    for path in (uploads / "a" / "x.png", results / "y.jpg", example, None, ""):
        assert readable(path) == (str(path) if path else None)
    (uploads / "link.png").symlink_to(elsewhere / "private.png")
    for path in (elsewhere / "private.png", uploads / ".." / "elsewhere" / "private.png", uploads / "link.png",
                 tmp_path / "sketch_dog.png", "/etc/passwd", "relative.png"):
        with pytest.raises(QueryError, match="^images are taken from uploads only, never from a path on the server$"):
            readable(path)


def call_search(url: str, sketch, image) -> str:
    """The search endpoint over raw HTTP, with payloads no gradio client would send; the streamed outcome."""
    answer = httpx.post(f"{url}gradio_api/call/search", json={"data": search_inputs(url, sketch, image)},
                        timeout=60)
    try:
        event = answer.json()["event_id"]
    except (ValueError, KeyError):
        return f"refused at the call: {answer.status_code} {answer.text[:200]}"
    _, stream = http_get(url, f"/gradio_api/call/search/{event}")
    return stream.decode(errors="replace")


def uploaded(url: str, path: Path) -> dict:
    """`path` uploaded as a browser does it: the FileData of the server's copy."""
    with open(path, "rb") as handle:
        [server_path] = httpx.post(f"{url}gradio_api/upload", files={"files": (path.name, handle)},
                                   timeout=60).json()
    return {"path": server_path, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


@needs_data
def test_the_search_api_opens_uploads_only_never_a_path_on_the_server(app_url, app_gallery, tmp_path):
    private = tmp_path / "private.jpg"  # a gallery photo outside every folder the app may read from
    shutil.copyfile(sorted((app_gallery / "horse").iterdir())[0], private)
    upload = uploaded(app_url, private)
    for answer in (call_search(app_url, None, upload),
                   call_search(app_url, {"background": upload, "layers": [], "composite": upload}, None)):
        assert "event: complete" in answer and "**3** results" in answer  # the way in works, for an upload

    files = [str(private), "/etc/passwd", str(data_root() / "pacs" / "manifest.csv")]
    payloads = []
    for path in files:
        payloads += [{"path": path, "meta": {"_type": "gradio.FileData"}},
                     {"path": path, "url": f"{app_url}gradio_api/file={path}", "meta": {"_type": "gradio.FileData"}},
                     {**upload, "path": f"{Path(upload['path']).parent}/{'../' * 12}{path.lstrip('/')}"},
                     {"path": path}, path]
    refused = []
    for payload in payloads:
        for sketch, image in ((None, payload), ({"background": payload, "layers": [], "composite": payload}, None)):
            answer = call_search(app_url, sketch, image)
            refused.append(answer)
            opened = "results" in answer or "not an image" in answer or "no such file" in answer
            said_no = "event: error" in answer or "images are taken from uploads only" in answer  # gradio, the app
            assert said_no and not opened, (payload, answer[:300])
    assert len(refused) == 30
