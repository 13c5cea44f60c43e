"""Specification of `hystar index --engine ray`: the local engine's index, on Ray Data, resumable and incremental.

Ray runs locally inside the tests (`ray.init(num_cpus=2)`), never on an outside cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_gallery, seeded_adapter_file, write_bad_files, write_image

from hystar.index import Entry, FileStat
from hystar.index.shards import EMBEDDED, ShardCollector, ShardRow, plan_shards

RAY_INIT = dict(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False)
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(**RAY_INIT)
    yield ray
    ray.shutdown()


def index_cli(run_cli, photos, out, spec, *extra):
    result = run_cli("index", photos, "--out", out, "--encoder", spec, "--no-progress", "--json", *extra)
    assert result.code == 0, result.err
    return json.loads(result.out)


def contents(folder) -> dict[str, np.ndarray]:
    from hystar.index import GalleryIndex

    index = GalleryIndex.load(folder)
    paths = [e.path for e in index.entries]
    assert len(set(paths)) == len(paths), "an image indexed twice"
    return {entry.path: np.asarray(index.vectors[row], np.float32) for row, entry in enumerate(index.entries)}


def assert_same_index(a, b):
    from hystar.index import GalleryIndex

    left, right = contents(a), contents(b)
    assert list(left) == list(right)
    for path in left:
        np.testing.assert_allclose(left[path], right[path], atol=2e-3)  # float16 storage
    index_a, index_b = GalleryIndex.load(a), GalleryIndex.load(b)
    assert [(s.path, s.reason) for s in index_a.skipped] == [(s.path, s.reason) for s in index_b.skipped]
    assert index_a.identity == index_b.identity


# --- without Ray ----------------------------------------------------------------------------------

def test_without_the_extra_the_ray_engine_fails_in_one_line_naming_the_install(tmp_path, run_cli, monkeypatch):
    make_gallery(tmp_path / "photos", 3)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if `ray` were not installed
    result = run_cli("index", tmp_path / "photos", "--out", tmp_path / "idx", "--engine", "ray")
    assert result.code == 2
    assert result.err.strip().count("\n") == 0
    assert 'pip install -e ".[ray]"' in result.err
    assert not (tmp_path / "idx" / "meta.json").exists()


def test_ray_options_are_refused_by_the_local_engine(tmp_path, run_cli):
    make_gallery(tmp_path / "photos", 2)
    result = run_cli("index", tmp_path / "photos", "--out", tmp_path / "idx", "--workers", "2")
    assert result.code == 2 and "--workers is an option of --engine ray" in result.err


def test_shards_are_path_ordered_blocks_handed_out_once_complete():
    stats = [FileStat(f"img{i:02d}.jpg", 10, i) for i in (5, 3, 1, 4, 2, 0)]
    shards = plan_shards(stats, 4)
    assert [[s.path for s in shard] for shard in shards] == [
        ["img00.jpg", "img01.jpg", "img02.jpg", "img03.jpg"], ["img04.jpg", "img05.jpg"]]
    assert plan_shards(list(reversed(stats)), 4) == shards
    collector = ShardCollector(shards)
    row = lambda stat: ShardRow(stat, EMBEDDED, "sha", vectors={"base": np.zeros(2)})
    assert collector.add(1, row(shards[1][1])) is None
    assert collector.add(1, row(shards[1][1])) is None  # a repeat never completes a shard
    done = collector.add(1, row(shards[1][0]))
    assert [r.stat.path for r in done] == ["img04.jpg", "img05.jpg"]
    assert collector.unfinished() == 1 and collector.written == 1
    with pytest.raises(ValueError, match="does not belong"):
        collector.add(0, row(shards[1][0]))


# --- on a local Ray -------------------------------------------------------------------------------

@pytest.mark.slow
def test_ray_and_local_engines_build_the_same_index(tmp_path, mini_spec, run_cli, local_ray):
    photos = tmp_path / "photos"
    make_gallery(photos, 196)
    bad = write_bad_files(photos / "bad")
    local = index_cli(run_cli, photos, tmp_path / "local", mini_spec, "--chunk-size", "64")
    ray = index_cli(run_cli, photos, tmp_path / "ray", mini_spec, "--chunk-size", "64", "--engine", "ray",
                    "--workers", "2")
    assert ray["count"] == local["count"] == 196 and ray["embedded"] == 196
    assert sorted(s["path"] for s in ray["skipped"]) == sorted(f"bad/{name}" for name in bad)
    assert_same_index(tmp_path / "ray", tmp_path / "local")
    again = index_cli(run_cli, photos, tmp_path / "ray", mini_spec, "--engine", "ray")
    assert again["embedded"] == 0 and not again["committed"]


@pytest.mark.slow
def test_added_changed_and_deleted_files_are_the_only_ones_embedded(tmp_path, mini_spec, run_cli, local_ray):
    photos = tmp_path / "photos"
    paths = make_gallery(photos, 40)
    index_cli(run_cli, photos, tmp_path / "ray", mini_spec, "--engine", "ray", "--chunk-size", "16")
    for i in range(10):
        write_image(photos / "new" / f"added{i}.png", 5000 + i)
    for i, path in enumerate(paths[:5]):
        write_image(path, 6000 + i)
    for path in paths[5:10]:
        path.unlink()
    report = index_cli(run_cli, photos, tmp_path / "ray", mini_spec, "--engine", "ray", "--chunk-size", "16")
    assert (report["embedded"], report["added"], report["changed"], report["removed"]) == (15, 10, 5, 5)
    index_cli(run_cli, photos, tmp_path / "fresh", mini_spec)
    assert_same_index(tmp_path / "ray", tmp_path / "fresh")


@pytest.fixture
def adapter_file(tmp_path, mini_spec) -> Path:
    return seeded_adapter_file(mini_spec, tmp_path / "style.safetensors")


@pytest.mark.slow
def test_one_pass_writes_the_adapted_and_the_base_index(tmp_path, mini_spec, run_cli, local_ray, adapter_file):
    photos = tmp_path / "photos"
    make_gallery(photos, 12)
    reports = index_cli(run_cli, photos, tmp_path / "adapted", mini_spec, "--adapter", adapter_file,
                        "--engine", "ray", "--base-out", tmp_path / "base")
    assert [r["embedded"] for r in reports] == [12, 12]
    index_cli(run_cli, photos, tmp_path / "local-adapted", mini_spec, "--adapter", adapter_file)
    index_cli(run_cli, photos, tmp_path / "local-base", mini_spec)
    assert_same_index(tmp_path / "adapted", tmp_path / "local-adapted")
    assert_same_index(tmp_path / "base", tmp_path / "local-base")
    adapted, base = contents(tmp_path / "adapted"), contents(tmp_path / "base")
    assert not np.allclose(adapted["set0/deep/img000.jpg"], base["set0/deep/img000.jpg"], atol=1e-3)


DRIVER = textwrap.dedent("""
    import sys
    import ray
    ray.init(**{init})
    from hystar import cli
    sys.exit(cli.main(sys.argv[1:]))
""")


def pending_rows(out: Path) -> set[str]:
    rows = set()
    for manifest in (out / "pending").glob("chunk-*/manifest.jsonl"):
        rows |= {Entry(**json.loads(line)).path for line in manifest.read_text().splitlines() if line.strip()}
    return rows


@pytest.mark.slow
def test_a_driver_killed_mid_run_resumes_without_re_embedding_finished_shards(tmp_path, mini_spec, run_cli,
                                                                               local_ray):
    photos, out = tmp_path / "photos", tmp_path / "ray"
    make_gallery(photos, 96)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    argv = ["index", str(photos), "--out", str(out), "--encoder", mini_spec, "--engine", "ray", "--no-progress",
            "--chunk-size", "8", "--batch-size", "4"]
    driver = subprocess.Popen([sys.executable, "-c", DRIVER.format(init=RAY_INIT), *argv], env=env,
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while len(list((out / "pending").glob("chunk-*"))) < 2:
            assert driver.poll() is None, "the driver ended before it could be killed"
            assert time.monotonic() < deadline, "no shard written in time"
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)  # what is left of the local Ray it had started
        except ProcessLookupError:
            pass
    assert not (out / "meta.json").exists()
    finished = pending_rows(out)
    assert 16 <= len(finished) < 96
    report = index_cli(run_cli, photos, out, mini_spec, "--engine", "ray", "--chunk-size", "8")
    assert report["resumed"] == len(finished)
    assert report["embedded"] == 96 - len(finished)
    assert report["count"] == 96 and len(contents(out)) == 96
    index_cli(run_cli, photos, tmp_path / "fresh", mini_spec)
    assert_same_index(out, tmp_path / "fresh")
