"""Specification of `hystar index` and `hystar search`, end to end with a (random-init) hystar-mini."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import CLI_SCRIPT, PYTHON, make_gallery, write_bad_files

from hystar.embed import embed_images
from hystar.encoder import shared_encoder
from hystar.index import GalleryIndex


@pytest.fixture
def gallery(tmp_path):
    return make_gallery(tmp_path / "photos", 8)


@pytest.fixture
def indexed(tmp_path, gallery, run_cli, mini_spec):
    result = run_cli("index", tmp_path / "photos", "--encoder", mini_spec, "--out", tmp_path / "idx",
                     "--no-progress")
    assert result.code == 0, result.err
    return tmp_path / "idx"


def test_index_prints_a_one_line_summary(tmp_path, indexed, run_cli):
    result = run_cli("index", tmp_path / "photos", "--out", indexed, "--no-progress")
    assert result.code == 0 and result.out.strip().splitlines() == [result.out.strip()]
    assert "up to date, 8 images" in result.out  # the encoder is taken from meta.json


def test_a_rerun_keeps_the_kind_it_was_built_with(tmp_path, indexed, run_cli):
    switched = run_cli("index", tmp_path / "photos", "--out", indexed, "--kind", "hnsw", "--no-progress")
    assert switched.code == 0
    result = run_cli("index", tmp_path / "photos", "--out", indexed, "--no-progress")
    assert "up to date" in result.out and GalleryIndex.load(indexed).meta.built_kind == "hnsw"


def test_search_by_image_finds_that_image_first(indexed, gallery, run_cli):
    result = run_cli("search", indexed, "--image", gallery[2], "-k", "3")
    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()
    assert len(lines) == 3
    rank, score, path = lines[0].split(maxsplit=2)
    assert rank == "1" and float(score) == pytest.approx(1.0, abs=5e-3) and path == str(gallery[2])


def test_search_by_text_prints_k_ranked_paths_with_scores(indexed, gallery, run_cli):
    result = run_cli("search", indexed, "--text", "a red square", "-k", "5")
    assert result.code == 0, result.err
    rows = [line.split(maxsplit=2) for line in result.out.strip().splitlines()]
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4, 5]
    scores = [float(r[1]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert {r[2] for r in rows} <= {str(p) for p in gallery}


def test_search_json_is_machine_readable(tmp_path, indexed, gallery, run_cli):
    result = run_cli("search", indexed, "--image", gallery[0], "-k", "2", "--json")
    payload = json.loads(result.out)
    assert payload["query"] == {"image": str(gallery[0])} and payload["rerank"] is None
    assert payload["expanded"] is True  # query expansion, as in the app
    assert [r["rank"] for r in payload["results"]] == [1, 2]
    assert payload["results"][0]["path"] == str(gallery[0])
    assert payload["results"][0]["relpath"] == gallery[0].relative_to(tmp_path / "photos").as_posix()


def test_search_json_says_what_an_image_query_reads_as_from_the_shipped_vocabulary(indexed, gallery, run_cli):
    from hystar.guesses import SHIPPED, shipped_vocabulary

    payload = json.loads(run_cli("search", indexed, "--image", gallery[0], "--json").out)
    guesses = payload["guesses"]
    assert len(guesses) == 3 and payload["guess_vocabulary"] == SHIPPED  # an index has no class names
    assert {g["name"] for g in guesses} <= set(shipped_vocabulary().names)
    probabilities = [g["probability"] for g in guesses]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001
    text = json.loads(run_cli("search", indexed, "--text", "a red square", "--json").out)
    assert text["guesses"] == []  # guesses read the image part of a query


def test_no_expand_gives_plain_nearest_neighbours_with_the_same_best_match(indexed, run_cli):
    def ranked(*flags):
        result = run_cli("search", indexed, "--text", "a red square", "-k", "6", "--json", *flags)
        assert result.code == 0, result.err
        return json.loads(result.out)

    plain, expanded = ranked("--no-expand"), ranked()
    assert plain["expanded"] is False and expanded["expanded"] is True
    assert plain["results"][0]["path"] == expanded["results"][0]["path"]
    assert {r["path"] for r in plain["results"]} != {r["path"] for r in expanded["results"]} or \
        [r["score"] for r in plain["results"]] != [r["score"] for r in expanded["results"]]


def test_search_refuses_an_index_from_another_encoder(indexed, gallery, run_cli):
    meta = json.loads((indexed / "meta.json").read_text())
    meta["encoder"]["fingerprint"] = "0123456789abcdef"
    del meta["crc32"]  # an index from another encoder, not one whose meta.json was damaged
    (indexed / "meta.json").write_text(json.dumps(meta))
    result = run_cli("search", indexed, "--text", "a dog")
    assert result.code == 2 and result.out == ""
    assert "0123456789abcdef" in result.err and "not comparable" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_index_refuses_to_mix_encoders_in_one_index(tmp_path, indexed, run_cli):
    meta = json.loads((indexed / "meta.json").read_text())
    meta["encoder"]["fingerprint"] = "0123456789abcdef"
    del meta["crc32"]  # an index from another encoder, not one whose meta.json was damaged
    (indexed / "meta.json").write_text(json.dumps(meta))
    result = run_cli("index", tmp_path / "photos", "--out", indexed, "--encoder", meta["encoder"]["spec"])
    assert result.code == 2 and "--rebuild" in result.err


def test_bad_files_are_listed_and_do_not_fail_the_run(tmp_path, gallery, run_cli, mini_spec):
    write_bad_files(tmp_path / "photos" / "junk")
    result = run_cli("index", tmp_path / "photos", "--encoder", mini_spec, "--out", tmp_path / "idx",
                     "--no-progress")
    assert result.code == 0
    assert "8 images indexed" in result.out and "4 unreadable files skipped" in result.out
    assert sum(line.startswith("  skipped ") for line in result.out.splitlines()) == 4


def test_an_unreadable_query_image_is_a_one_line_error(tmp_path, indexed, run_cli):
    (tmp_path / "query.png").write_bytes(b"")
    result = run_cli("search", indexed, "--image", tmp_path / "query.png")
    assert result.code == 2 and "empty file" in result.err


def test_adapters_are_wired_through_one_loader(tmp_path, gallery, run_cli, mini_spec):
    (tmp_path / "style.safetensors").write_bytes(b"not an adapter")
    result = run_cli("index", tmp_path / "photos", "--encoder", mini_spec, "--adapter",
                     tmp_path / "style.safetensors", "--out", tmp_path / "idx", "--no-progress")
    assert result.code == 2 and "adapter" in result.err and len(result.err.strip().splitlines()) == 1
    missing = run_cli("search", tmp_path / "photos", "--text", "x", "--adapter", tmp_path / "missing.bin")
    assert missing.code == 2


def test_no_adapt_and_adapter_together_are_refused(indexed, run_cli, tmp_path):
    result = run_cli("search", indexed, "--text", "x", "--no-adapt", "--adapter", tmp_path / "a.safetensors")
    assert result.code == 2 and "contradict" in result.err


def test_no_adapt_searches_with_the_base_encoder(indexed, gallery, run_cli):
    result = run_cli("search", indexed, "--image", gallery[1], "--no-adapt", "-k", "1", "--json")
    payload = json.loads(result.out)
    assert payload["adapted"] is False and payload["results"][0]["path"] == str(gallery[1])


def test_rerank_uses_the_quari_hook_or_says_why_not(indexed, run_cli):
    result = run_cli("search", indexed, "--text", "a dog", "--rerank", "quari")
    if result.code == 0:  # a QuARI re-ranker is trained for this encoder
        assert len(result.out.strip().splitlines()) == 8
    else:
        assert result.code == 2 and ("QuARI" in result.err or "re-ranker" in result.err)
        assert len(result.err.strip().splitlines()) == 1


def test_a_missing_index_says_how_to_build_one(tmp_path, run_cli):
    result = run_cli("search", tmp_path / "nowhere", "--text", "a dog")
    assert result.code == 2 and "hystar index DIR --out" in result.err


@pytest.mark.slow
def test_kill_9_at_any_moment_then_rerun_gives_a_complete_index_without_duplicates(tmp_path, mini_spec):
    paths = make_gallery(tmp_path / "photos", 48)
    out = tmp_path / "idx"
    command = [PYTHON, "-c", CLI_SCRIPT, "index", str(tmp_path / "photos"), "--encoder", mini_spec,
               "--out", str(out), "--chunk-size", "4", "--batch-size", "2", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def chunks() -> int:
        pending = out / "pending"
        return len(list(pending.glob("chunk-*"))) if pending.is_dir() else 0

    kills = 0
    for wanted_chunks in (2, 5):  # kill twice, mid-run, each time after some checkpoints were written
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while chunks() < wanted_chunks and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        assert process.returncode in (-signal.SIGKILL, 0), process.stderr.read().decode()
    assert kills >= 1 and not (out / "meta.json").exists()

    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert "resumed from an interrupted run" in finished.stdout

    index = GalleryIndex.load(out)
    relpaths = [entry.path for entry in index.entries]
    assert len(relpaths) == len(set(relpaths)) == 48
    assert sorted(relpaths) == sorted(p.relative_to(tmp_path / "photos").as_posix() for p in paths)
    expected = embed_images(shared_encoder(mini_spec), [tmp_path / "photos" / r for r in relpaths],
                            progress=False).vectors
    np.testing.assert_allclose(np.asarray(index.vectors, np.float32), expected, atol=3e-3)
    assert not list((out / "pending").glob("chunk-*"))
