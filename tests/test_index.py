"""Specification of gallery indexes: incremental, resumable, strict about encoders, honest about bad files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import types

import numpy as np
import pytest
from conftest import make_gallery, random_image, tiny_encoder, write_bad_files, write_image
from PIL import Image

from hystar.embed import embed_image, embed_images
from hystar.gallery import GalleryNotFoundError, ensure_demo_index, gallery_source
from hystar.index import (
    BuildConfig,
    EncoderIdentity,
    GalleryIndex,
    IndexMismatchError,
    KindConfig,
    RowFile,
    build_faiss,
    build_index,
    check_compatible,
    load_named_reranker,
    scan_folder,
)
from hystar.index import build as index_module

QUIET = BuildConfig(progress=False, chunk_size=8, batch_size=4)


def build(root, out, encoder, **changes):
    config = BuildConfig(**{**QUIET.__dict__, **changes})
    return build_index(root, out, encoder, config=config)


def contents(folder) -> dict[str, np.ndarray]:
    """Relative path -> stored vector: what an index holds, independent of how it got there."""
    index = GalleryIndex.load(folder)
    assert len({e.path for e in index.entries}) == len(index), "duplicate rows"
    return {entry.path: np.asarray(index.vectors[row], np.float32) for row, entry in enumerate(index.entries)}


def assert_same_contents(folder_a, folder_b):
    a, b = contents(folder_a), contents(folder_b)
    assert sorted(a) == sorted(b)
    for path in a:
        np.testing.assert_allclose(a[path], b[path], atol=2e-3)


# --- building -------------------------------------------------------------------------------------

def test_a_first_run_indexes_every_image_in_the_tree(tmp_path, tiny):
    paths = make_gallery(tmp_path / "photos", 12)
    (tmp_path / "photos" / "readme.txt").write_text("not an image suffix: ignored")
    report = build(tmp_path / "photos", tmp_path / "idx", tiny)

    assert report.committed and report.count == report.added == report.embedded == 12 and not report.skipped
    index = GalleryIndex.load(tmp_path / "idx")
    expected = sorted(p.relative_to(tmp_path / "photos").as_posix() for p in paths)
    assert [e.path for e in index.entries] == expected
    for row, entry in enumerate(index.entries):
        source = tmp_path / "photos" / entry.path
        assert entry.size == source.stat().st_size and entry.mtime_ns == source.stat().st_mtime_ns
        assert entry.sha1 == hashlib.sha1(source.read_bytes()).hexdigest()
        np.testing.assert_allclose(index.vectors[row], embed_image(tiny, source), atol=2e-3)


def test_the_raw_vectors_are_memory_mappable_float16(tmp_path, tiny):
    make_gallery(tmp_path / "photos", 5)
    build(tmp_path / "photos", tmp_path / "idx", tiny)
    index = GalleryIndex.load(tmp_path / "idx")
    assert isinstance(index.vectors, np.memmap) and index.vectors.dtype == np.float16
    assert index.vectors.shape == (5, tiny.embed_dim)


def test_rows_read_by_pread_equal_the_memory_map(tmp_path):
    vectors = np.random.default_rng(0).standard_normal((50, 12)).astype(np.float16)
    np.save(tmp_path / "v.npy", vectors)
    rows = np.array([7, 0, 49, 7])
    np.testing.assert_array_equal(RowFile(tmp_path / "v.npy").read(rows), vectors[rows])


def test_meta_records_what_a_reader_needs(tmp_path, tiny):
    make_gallery(tmp_path / "photos", 4)
    build(tmp_path / "photos", tmp_path / "idx", tiny)
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert meta["encoder"]["fingerprint"] == tiny.fingerprint and meta["adapter"] is None
    assert meta["dim"] == 16 and meta["metric"] == "inner_product" and meta["count"] == 4
    assert meta["kind"] == meta["built_kind"] == "flat"
    assert {"hystar", "faiss", "numpy", "torch"} <= set(meta["versions"])
    assert meta["root"] == str(tmp_path / "photos")


def test_the_first_frame_of_an_animated_gif_is_indexed(tmp_path, tiny):
    red, blue = Image.new("RGB", (32, 32), (255, 0, 0)), Image.new("RGB", (32, 32), (0, 0, 255))
    (tmp_path / "photos").mkdir()
    red.save(tmp_path / "photos" / "anim.gif", save_all=True, append_images=[blue], duration=100)
    build(tmp_path / "photos", tmp_path / "idx", tiny)
    stored = GalleryIndex.load(tmp_path / "idx").vectors[0]
    np.testing.assert_allclose(stored, embed_image(tiny, red), atol=2e-3)


def test_hidden_files_and_folders_are_not_indexed(tmp_path):
    write_image(tmp_path / "photos" / "a.jpg", 1)
    write_image(tmp_path / "photos" / ".thumbs" / "b.jpg", 2)
    (tmp_path / "photos" / "._a.jpg").write_bytes(b"AppleDouble junk")
    assert [s.path for s in scan_folder(tmp_path / "photos")] == ["a.jpg"]


def test_an_empty_folder_gives_an_empty_searchable_index(tmp_path, tiny):
    (tmp_path / "photos").mkdir()
    report = build(tmp_path / "photos", tmp_path / "idx", tiny)
    index = GalleryIndex.load(tmp_path / "idx")
    assert report.count == 0 and len(index) == 0
    assert index.hits(index.search(np.ones(16, np.float32), k=5)) == []


def test_an_unrelated_non_empty_out_folder_is_refused(tmp_path, tiny):
    make_gallery(tmp_path / "photos", 2)
    (tmp_path / "documents").mkdir()
    (tmp_path / "documents" / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="not empty and holds no index"):
        build(tmp_path / "photos", tmp_path / "documents", tiny)


def test_two_writers_on_one_index_are_refused(tmp_path, tiny):
    import fcntl

    make_gallery(tmp_path / "photos", 2)
    (tmp_path / "idx").mkdir()
    with open(tmp_path / "idx" / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match="being written by another"):
            build(tmp_path / "photos", tmp_path / "idx", tiny)


# --- incremental ----------------------------------------------------------------------------------

def test_a_rerun_without_changes_embeds_nothing_and_rewrites_nothing(tmp_path, tiny):
    make_gallery(tmp_path / "photos", 6)
    build(tmp_path / "photos", tmp_path / "idx", tiny)
    generation = json.loads((tmp_path / "idx" / "meta.json").read_text())["generation"]
    tiny.visual.images_seen = 0

    report = build(tmp_path / "photos", tmp_path / "idx", tiny)
    assert not report.committed and report.embedded == 0 and tiny.visual.images_seen == 0
    assert json.loads((tmp_path / "idx" / "meta.json").read_text())["generation"] == generation


def test_added_changed_and_deleted_files_are_picked_up_and_nothing_else_is_embedded(tmp_path, tiny):
    paths = make_gallery(tmp_path / "photos", 10)
    build(tmp_path / "photos", tmp_path / "idx", tiny)
    write_image(tmp_path / "photos" / "new" / "one.png", 901)
    write_image(tmp_path / "photos" / "two.jpg", 902)
    write_image(paths[3], 903)  # same path, new content
    os.utime(paths[3], ns=(paths[3].stat().st_atime_ns, paths[3].stat().st_mtime_ns + 10**9))
    paths[5].unlink()
    tiny.visual.images_seen = 0

    report = build(tmp_path / "photos", tmp_path / "idx", tiny)
    assert (report.added, report.changed, report.removed, report.embedded) == (2, 1, 1, 3)
    assert tiny.visual.images_seen == 3 and report.count == 11
    build(tmp_path / "photos", tmp_path / "fresh", tiny_encoder())
    assert_same_contents(tmp_path / "idx", tmp_path / "fresh")


def test_touched_copied_and_moved_files_reuse_their_vectors(tmp_path, tiny):
    paths = make_gallery(tmp_path / "photos", 6)
    build(tmp_path / "photos", tmp_path / "idx", tiny)
    os.utime(paths[0], ns=(paths[0].stat().st_atime_ns, paths[0].stat().st_mtime_ns + 10**9))
    paths[1].rename(tmp_path / "photos" / "moved.png")
    shutil.copy(paths[2], tmp_path / "photos" / f"copy-of-2{paths[2].suffix}")
    tiny.visual.images_seen = 0

    report = build(tmp_path / "photos", tmp_path / "idx", tiny)
    assert report.embedded == 0 and tiny.visual.images_seen == 0 and report.reused == 3
    assert (report.added, report.removed, report.count) == (2, 1, 7)
    build(tmp_path / "photos", tmp_path / "fresh", tiny_encoder())
    assert_same_contents(tmp_path / "idx", tmp_path / "fresh")


def test_a_moved_gallery_folder_is_reindexed_without_embedding(tmp_path, tiny):
    make_gallery(tmp_path / "photos", 5)
    build(tmp_path / "photos", tmp_path / "idx", tiny)
    (tmp_path / "photos").rename(tmp_path / "archive")
    tiny.visual.images_seen = 0
    report = build(tmp_path / "archive", tmp_path / "idx", tiny)
    assert report.count == 5 and tiny.visual.images_seen == 0
    assert GalleryIndex.load(tmp_path / "idx").root == tmp_path / "archive"


# --- bad files ------------------------------------------------------------------------------------

def test_bad_files_are_skipped_counted_and_reported_without_aborting(tmp_path, tiny):
    make_gallery(tmp_path / "photos", 4)
    expected = write_bad_files(tmp_path / "photos" / "bad")
    report = build(tmp_path / "photos", tmp_path / "idx", tiny)

    assert report.count == 4 and len(report.skipped) == 4
    reasons = {item.path.split("/")[-1]: item.reason for item in report.skipped}
    for name, word in expected.items():
        assert word in reasons[name] and "\n" not in reasons[name]
    on_disk = json.loads((tmp_path / "idx" / "report.json").read_text())
    assert sorted(s["path"] for s in on_disk["skipped"]) == sorted(f"bad/{name}" for name in expected)
    assert json.loads((tmp_path / "idx" / "meta.json").read_text())["skipped"] == 4
    assert "4 unreadable files skipped" in report.summary()


def test_bad_files_are_not_retried_until_they_change(tmp_path, tiny):
    make_gallery(tmp_path / "photos", 2)
    write_bad_files(tmp_path / "photos")
    build(tmp_path / "photos", tmp_path / "idx", tiny)
    tiny.visual.images_seen = 0

    again = build(tmp_path / "photos", tmp_path / "idx", tiny)
    assert len(again.skipped) == 4 and tiny.visual.images_seen == 0 and not again.committed

    write_image(tmp_path / "photos" / "notes.jpg", 42)  # repaired
    fixed = build(tmp_path / "photos", tmp_path / "idx", tiny)
    assert fixed.count == 3 and len(fixed.skipped) == 3 and tiny.visual.images_seen == 1


# --- interruptions --------------------------------------------------------------------------------

class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (test_search_cli sends the real one to a subprocess)."""


def test_a_run_killed_before_commit_resumes_from_its_checkpoints(tmp_path, tiny, monkeypatch):
    make_gallery(tmp_path / "photos", 20)
    chunks_written = []
    real_write = index_module._Pending.write

    def write_then_die(self, *args):
        real_write(self, *args)
        chunks_written.append(1)
        if len(chunks_written) == 2:
            raise Killed

    monkeypatch.setattr(index_module._Pending, "write", write_then_die)
    with pytest.raises(Killed):
        build(tmp_path / "photos", tmp_path / "idx", tiny)
    monkeypatch.undo()
    assert not (tmp_path / "idx" / "meta.json").exists()
    tiny.visual.images_seen = 0

    report = build(tmp_path / "photos", tmp_path / "idx", tiny)
    assert report.resumed == 16 and report.embedded == 4 and tiny.visual.images_seen == 4
    assert report.count == 20 and not list((tmp_path / "idx" / "pending").iterdir())
    build(tmp_path / "photos", tmp_path / "fresh", tiny_encoder())
    assert_same_contents(tmp_path / "idx", tmp_path / "fresh")


@pytest.mark.parametrize("die_in", ["_write_vectors", "build_faiss", "_write_meta"])
def test_a_run_killed_while_committing_leaves_the_previous_index_intact(tmp_path, tiny, monkeypatch, die_in):
    paths = make_gallery(tmp_path / "photos", 8)
    build(tmp_path / "photos", tmp_path / "idx", tiny)
    before = contents(tmp_path / "idx")
    paths[0].unlink()
    write_image(tmp_path / "photos" / "extra.png", 77)

    def die(*args, **kwargs):
        raise Killed

    target = index_module if die_in == "build_faiss" else index_module.IndexUpdate
    monkeypatch.setattr(target, die_in, die)
    with pytest.raises(Killed):
        build(tmp_path / "photos", tmp_path / "idx", tiny)
    monkeypatch.undo()
    assert contents(tmp_path / "idx").keys() == before.keys()  # readers still see the old, complete index

    tiny.visual.images_seen = 0
    report = build(tmp_path / "photos", tmp_path / "idx", tiny)
    assert report.count == 8 and tiny.visual.images_seen == 0  # the new image came from the checkpoint
    build(tmp_path / "photos", tmp_path / "fresh", tiny_encoder())
    assert_same_contents(tmp_path / "idx", tmp_path / "fresh")
    assert len(list((tmp_path / "idx").glob("gen-*"))) == 1


def test_a_corrupt_checkpoint_is_dropped_and_its_images_embedded_again(tmp_path, tiny, monkeypatch):
    make_gallery(tmp_path / "photos", 16)

    def die(*args):
        raise Killed

    monkeypatch.setattr(index_module.IndexUpdate, "_commit", die)
    with pytest.raises(Killed):
        build(tmp_path / "photos", tmp_path / "idx", tiny)
    monkeypatch.undo()
    first = sorted((tmp_path / "idx" / "pending").iterdir())[0]
    (first / "vectors.npy").write_bytes(b"garbage")

    report = build(tmp_path / "photos", tmp_path / "idx", tiny)
    assert (report.count, report.resumed, report.embedded) == (16, 8, 8)
    build(tmp_path / "photos", tmp_path / "fresh", tiny_encoder())
    assert_same_contents(tmp_path / "idx", tmp_path / "fresh")


# --- encoders and adapters ------------------------------------------------------------------------

def test_an_index_refuses_another_encoder_with_a_clear_message(tmp_path, tiny):
    make_gallery(tmp_path / "photos", 3)
    build(tmp_path / "photos", tmp_path / "idx", tiny)
    other = tiny_encoder(seed=1)
    with pytest.raises(IndexMismatchError) as error:
        build(tmp_path / "photos", tmp_path / "idx", other)
    message = str(error.value)
    assert tiny.fingerprint in message and other.fingerprint in message and "--rebuild" in message
    assert "\n" not in message

    report = build(tmp_path / "photos", tmp_path / "idx", other, rebuild=True)
    assert report.embedded == 3
    assert GalleryIndex.load(tmp_path / "idx").identity.fingerprint == other.fingerprint


def test_adapter_fingerprints_must_match_except_for_an_unadapted_query(tmp_path, tiny):
    adapter = tmp_path / "style.safetensors"
    adapter.write_bytes(b"adapter weights v1")
    base = EncoderIdentity.of(tiny, "tiny")
    adapted = EncoderIdentity.of(tiny, "tiny", adapter)
    assert adapted.adapter_fingerprint == hashlib.sha256(b"adapter weights v1").hexdigest()[:16]

    check_compatible(tmp_path, adapted, adapted)
    check_compatible(tmp_path, adapted, base, query_only=True)  # search --no-adapt
    with pytest.raises(IndexMismatchError, match="without an adapter"):
        check_compatible(tmp_path, adapted, base)
    with pytest.raises(IndexMismatchError, match="with adapter"):
        check_compatible(tmp_path, base, adapted)
    adapter.write_bytes(b"adapter weights v2")
    with pytest.raises(IndexMismatchError, match="not comparable"):
        check_compatible(tmp_path, adapted, EncoderIdentity.of(tiny, "tiny", adapter))


def test_building_with_an_adapter_records_its_fingerprint(tmp_path, tiny):
    make_gallery(tmp_path / "photos", 2)
    adapter = tmp_path / "style.safetensors"
    adapter.write_bytes(b"weights")
    build_index(tmp_path / "photos", tmp_path / "idx", tiny, EncoderIdentity.of(tiny, "tiny", adapter), QUIET)
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    fingerprint = hashlib.sha256(b"weights").hexdigest()[:16]
    assert meta["adapter"] == {"path": str(adapter), "fingerprint": fingerprint}
    with pytest.raises(IndexMismatchError):
        build(tmp_path / "photos", tmp_path / "idx", tiny)  # the same encoder without the adapter


# --- search ---------------------------------------------------------------------------------------

def test_search_returns_the_best_rows_first_with_paths_and_scores(tmp_path, tiny):
    paths = make_gallery(tmp_path / "photos", 9)
    build(tmp_path / "photos", tmp_path / "idx", tiny)
    index = GalleryIndex.load(tmp_path / "idx")
    hits = index.hits(index.search(embed_image(tiny, paths[4]), k=3))
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].path == paths[4] and hits[0].score == pytest.approx(1.0, abs=2e-3)
    assert hits[0].score >= hits[1].score >= hits[2].score
    assert len(index.hits(index.search(embed_image(tiny, paths[4]), k=50))) == 9


@pytest.mark.parametrize("kind", [KindConfig("hnsw"), KindConfig("ivfpq", nlist=4, nprobe=4, min_count=256)],
                         ids=["hnsw", "ivfpq"])
def test_approximate_kinds_find_what_exact_search_finds(tmp_path, tiny, kind):
    make_gallery(tmp_path / "photos", 300)
    build(tmp_path / "photos", tmp_path / "flat", tiny, chunk_size=256, batch_size=64)
    build(tmp_path / "photos", tmp_path / "approx", tiny, chunk_size=256, batch_size=64, kind=kind)
    flat, approx = GalleryIndex.load(tmp_path / "flat"), GalleryIndex.load(tmp_path / "approx")
    assert approx.meta.kind == approx.meta.built_kind == kind.kind and approx.approximate
    queries = np.stack([embed_image(tiny, random_image(500 + i)) for i in range(5)])
    exact, found = flat.search(queries, 5), approx.search(queries, 5)
    np.testing.assert_array_equal(exact.rows, found.rows)
    np.testing.assert_allclose(exact.scores, found.scores, atol=1e-4)


def test_ivfpq_on_a_small_gallery_is_built_exact_and_says_so(tmp_path, tiny):
    make_gallery(tmp_path / "photos", 5)
    build(tmp_path / "photos", tmp_path / "idx", tiny, kind=KindConfig("ivfpq"))
    meta = GalleryIndex.load(tmp_path / "idx").meta
    assert (meta.kind, meta.built_kind) == ("ivfpq", "flat")


def test_ivfpq_with_exact_refinement_recalls_the_flat_top_10():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((64, 32)).astype(np.float32)
    noise = 0.3 * rng.standard_normal((20_000, 32)).astype(np.float32)
    vectors = centers[rng.integers(0, 64, 20_000)] + noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:50] + 0.05 * rng.standard_normal((50, 32)).astype(np.float32)
    flat = build_faiss(vectors, KindConfig("flat"))
    ivf = build_faiss(vectors, KindConfig("ivfpq", train_size=8192))
    assert ivf.kind == "ivfpq" and ivf.params["pq_m"] == 4 and ivf.trained.ntotal == 0
    _, truth = flat.index.search(queries, 10)
    _, candidates = ivf.index.search(queries, ivf.params["refine"])
    recall = []
    for query, rows, true in zip(queries, candidates, truth, strict=True):
        rows = rows[rows >= 0]
        best = rows[np.argsort(-(vectors[rows] @ query))[:10]]
        recall.append(len(set(best) & set(true)) / 10)
    assert np.mean(recall) >= 0.95


def test_a_trained_ivfpq_is_reused_by_later_builds():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((12_000, 16)).astype(np.float32)
    first = build_faiss(vectors, KindConfig("ivfpq"))
    second = build_faiss(vectors[:11_000], KindConfig("ivfpq", nlist=first.params["nlist"]), first.trained)
    faiss = index_module.faiss
    quantizer = lambda built: faiss.extract_index_ivf(built.index).quantizer.reconstruct_n(0, 256)
    assert second.index.ntotal == 11_000 and second.params["nlist"] == 256
    np.testing.assert_array_equal(quantizer(first), quantizer(second))


class ReverseReranker:
    """Ranks the candidates the other way round: proof that its scores decide the order."""

    def __init__(self):
        self.calls = []

    def rerank(self, query, candidates):
        self.calls.append(len(candidates))
        return -(candidates @ query)


def test_a_reranker_rescores_the_top_candidates(tmp_path, tiny):
    paths = make_gallery(tmp_path / "photos", 12)
    build(tmp_path / "photos", tmp_path / "idx", tiny)
    index = GalleryIndex.load(tmp_path / "idx")
    query = embed_image(tiny, paths[0])
    reranker = ReverseReranker()
    plain = index.search(query, k=12)
    reranked = index.search(query, k=3, reranker=reranker, candidates=6)
    assert reranker.calls == [6]
    np.testing.assert_array_equal(reranked.rows[0], plain.rows[0][:6][::-1][:3])


def test_the_rerank_hook_calls_hystar_rerank(monkeypatch):
    seen = []
    fake = types.ModuleType("hystar.rerank")
    fake.load_default_reranker = lambda fingerprint: seen.append(fingerprint) or ReverseReranker()
    monkeypatch.setitem(sys.modules, "hystar.rerank", fake)
    monkeypatch.setattr(sys.modules["hystar"], "rerank", fake, raising=False)
    assert isinstance(load_named_reranker("quari", "abc123"), ReverseReranker) and seen == ["abc123"]


def test_the_rerank_hook_fails_clearly_without_the_quari_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "hystar.rerank", None)
    monkeypatch.delattr(sys.modules["hystar"], "rerank", raising=False)
    with pytest.raises(RuntimeError, match="QuARI"):
        load_named_reranker("quari", "abc123")


# --- the app's gallery ----------------------------------------------------------------------------

def test_the_app_gallery_is_built_once_then_loaded(tmp_path, mini_spec, monkeypatch):
    make_gallery(tmp_path / "mine", 4)
    index = ensure_demo_index(mini_spec, gallery_dir=tmp_path / "mine", index_root=tmp_path / "gi",
                              progress=False)
    assert len(index) == 4 and index.folder.parent == tmp_path / "gi"

    def must_not_build(*args, **kwargs):
        raise AssertionError("a second start must load the index, not build it")

    monkeypatch.setattr("hystar.gallery.build_sides", must_not_build)
    again = ensure_demo_index(mini_spec, gallery_dir=tmp_path / "mine", index_root=tmp_path / "gi",
                              progress=False)
    assert again.folder == index.folder and len(again) == 4


def test_the_demo_gallery_is_the_merged_photos_of_the_datasets(tmp_path, monkeypatch):
    data = tmp_path / "data"
    manifests = {"pacs": ["photo/dog/1.jpg,photo,dog,,gallery", "sketch/dog/1.png,sketch,dog,,query"],
                 "sketchy": ["photo/cat/2.jpg,photo,cat,n1_2,gallery"]}
    for dataset, rows in manifests.items():
        (data / dataset).mkdir(parents=True)
        manifest = ["path,style,class,instance_id,role", *rows]
        (data / dataset / "manifest.csv").write_text("\n".join(manifest) + "\n")
        for i, row in enumerate(rows):
            write_image(data / dataset / row.split(",")[0], i)
    monkeypatch.setenv("HYSTAR_DATA", str(data))
    source = gallery_source()
    assert source.name == "demo" and source.root == data
    assert sorted(p.relative_to(data).as_posix() for p in source.files) == ["pacs/photo/dog/1.jpg",
                                                                           "sketchy/photo/cat/2.jpg"]


def test_without_data_or_a_gallery_folder_one_line_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HYSTAR_DATA", str(tmp_path / "nothing"))
    with pytest.raises(GalleryNotFoundError) as error:
        ensure_demo_index("hystar-mini", index_root=tmp_path / "gi", progress=False)
    message = str(error.value)
    assert "\n" not in message and "--gallery DIR" in message and "HYSTAR_DATA" in message


def test_embedding_through_the_index_matches_embed_images(tmp_path, tiny):
    paths = make_gallery(tmp_path / "photos", 7)
    build(tmp_path / "photos", tmp_path / "idx", tiny, prefetch=3)
    index = GalleryIndex.load(tmp_path / "idx")
    direct = embed_images(tiny, [tmp_path / "photos" / e.path for e in index.entries], progress=False)
    np.testing.assert_allclose(np.asarray(index.vectors, np.float32), direct.vectors, atol=2e-3)
    assert len(paths) == len(index)
