"""Query expansion: a query's best matches widen it for category search, the gallery's candidates are averaged with
their own neighbours, the query's best match stays first, and the index ranks as the full-gallery scores that
evaluation uses."""

from __future__ import annotations

import numpy as np
import pytest

from hystar.eval.metrics import relevance, retrieval_metrics
from hystar.index.kinds import KindConfig, build_faiss
from hystar.index.search import VectorSearch
from hystar.ranking import QueryExpansion, keep_first, rows_top_k, top_k


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(seed: int = 0, classes: int = 12, per_class: int = 25, dim: int = 48, queries_per_class: int = 5):
    """Photos tight around their class centre; queries (say sketches) far noisier around it, so plain search
    finds only some of their class first."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((classes, dim)))
    labels = np.repeat(np.arange(classes), per_class)
    gallery = unit(centres[labels] + 0.12 * rng.standard_normal((len(labels), dim)))
    query_labels = np.repeat(np.arange(classes), queries_per_class)
    queries = unit(centres[query_labels] + 0.35 * rng.standard_normal((len(query_labels), dim)))
    return queries, query_labels, gallery, labels


def flat_search(gallery: np.ndarray) -> VectorSearch:
    return VectorSearch.of(gallery, build_faiss(gallery, KindConfig("flat")))


def test_expansion_finds_more_of_the_query_class_than_plain_search():
    queries, query_labels, gallery, labels = clustered()
    relevant = relevance(query_labels, labels)
    plain = retrieval_metrics(queries @ gallery.T, relevant)
    expanded = retrieval_metrics(QueryExpansion().scores(queries, gallery), relevant)
    assert expanded["mAP"] > plain["mAP"] + 5
    assert expanded["R@1"] == plain["R@1"]  # the best match stays first


def test_candidates_averaged_with_their_neighbours_find_more_of_the_class_than_expansion_alone():
    queries, query_labels, gallery, labels = clustered()
    relevant = relevance(query_labels, labels)
    alone = retrieval_metrics(QueryExpansion(gallery_neighbors=0).scores(queries, gallery), relevant)
    augmented = retrieval_metrics(QueryExpansion().scores(queries, gallery), relevant)
    assert augmented["mAP"] > alone["mAP"] + 1
    assert augmented["R@1"] == alone["R@1"]


def test_a_look_alike_among_another_class_falls_behind_the_query_class():
    rng = np.random.default_rng(0)
    centre, other_centre, off = unit(rng.standard_normal((3, 32)))
    query = unit(centre + 0.6 * off)
    query_class = unit(centre + 0.2 * rng.standard_normal((8, 32)))
    other_class = unit(other_centre + 0.2 * rng.standard_normal((8, 32)))
    look_alike = unit(1.25 * other_centre + query)  # second-best match, whose neighbours are the other class
    gallery = np.concatenate([query_class, other_class, look_alike[None]])
    rank = lambda scores: np.argsort(-scores, kind="stable").tolist().index(len(gallery) - 1)
    assert rank(query @ gallery.T) == 1
    for expansion in (QueryExpansion(), QueryExpansion(weight=0.0)):  # with or without the query's own expansion
        assert rank(expansion.scores(query[None], gallery)[0]) == len(query_class)
    assert rank(QueryExpansion(weight=0.0, gallery_neighbors=0).scores(query[None], gallery)[0]) == 1


def test_the_best_match_of_every_query_stays_first():
    queries, _, gallery, _ = clustered(seed=1)
    plain_first = np.argmax(queries @ gallery.T, axis=1)
    for expansion in (QueryExpansion(), QueryExpansion(neighbors=10, weight=3.0, power=1.0)):
        np.testing.assert_array_equal(np.argmax(expansion.scores(queries, gallery), axis=1), plain_first)


def test_no_weight_leaves_the_ranking_as_it_was():
    queries, _, gallery, _ = clustered(seed=2)
    plain_order = np.argsort(-(queries @ gallery.T), axis=1, kind="stable")
    unweighted = QueryExpansion(weight=0.0, gallery_weight=0.0)
    order = np.argsort(-unweighted.scores(queries, gallery), axis=1, kind="stable")
    np.testing.assert_array_equal(order[:, :20], plain_order[:, :20])


def test_neighbours_that_are_absent_or_dissimilar_weigh_nothing():
    query = unit(np.array([[1.0, 0.0, 0.0]]))
    neighbors = unit(np.array([[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]]))
    alone = QueryExpansion().expand(query, neighbors, np.array([[-np.inf, -0.3]]))
    np.testing.assert_allclose(alone, query)


def test_rows_top_k_keeps_each_rows_best_scores_best_first_as_top_k_does():
    rng = np.random.default_rng(8)
    for _ in range(100):
        scores = rng.integers(0, 5, (int(rng.integers(1, 12)), int(rng.integers(1, 30)))).astype(np.float32)  # ties
        k = int(rng.integers(1, 35))
        rows = rows_top_k(scores, k)
        expected = np.stack([top_k(row, k)[1] for row in scores])
        np.testing.assert_array_equal(np.take_along_axis(scores, rows, 1), expected)
        kept = np.take_along_axis(scores, rows, 1)
        assert ((np.diff(kept, axis=1) < 0) | (np.diff(rows, axis=1) > 0)).all()  # equal scores in index order


def test_keep_first_lifts_the_given_entries_just_above_the_top_or_to_their_floor():
    scores = np.array([[0.1, 0.9, 0.5], [0.7, 0.2, 0.3]], np.float32)
    keep_first(scores, np.array([[False, False, True], [True, False, True]]))
    assert np.argmax(scores[0]) == 2 and 0.9 < scores[0, 2] < 0.9 + 1e-6
    assert scores[1, 0] == scores[1, 2] > 0.7 and scores[1, 1] == np.float32(0.2)
    floored = np.array([[0.1, 0.9, 0.5]], np.float32)
    keep_first(floored, np.array([[False, False, True]]), np.array([[0.2, 0.3, 0.99]]))
    assert floored[0, 2] == np.float32(0.99)


def test_a_gallery_photo_searched_with_itself_is_first_with_similarity_one():
    _, _, gallery, _ = clustered(seed=6)
    result = flat_search(gallery).search(gallery[7], k=5, expansion=QueryExpansion())
    assert result.rows[0, 0] == 7 and result.scores[0, 0] == pytest.approx(1.0, abs=1e-3)
    assert (np.diff(result.scores[0]) <= 0).all()
    full = QueryExpansion().scores(gallery[7:8], gallery)[0]
    assert np.argmax(full) == 7 and full[7] == pytest.approx(1.0, abs=1e-5)


def test_a_duplicate_of_the_best_match_stays_first_beside_it():
    queries, _, gallery, _ = clustered(seed=5)
    best = int(np.argmax(queries[0] @ gallery.T))
    doubled = np.concatenate([gallery, gallery[best:best + 1]])  # the same photo twice
    scores = QueryExpansion().scores(queries[:1], doubled)[0]
    assert set(np.argsort(-scores, kind="stable")[:2]) == {best, len(gallery)}
    result = flat_search(doubled).search(queries[0], k=5, expansion=QueryExpansion())
    assert set(result.rows[0, :2]) == {best, len(gallery)}


@pytest.mark.parametrize("expansion", [QueryExpansion(), QueryExpansion(gallery_neighbors=0)])
def test_the_index_search_ranks_as_the_full_gallery_scores(expansion):
    queries, _, gallery, _ = clustered(seed=3)
    gallery = gallery.astype(np.float16).astype(np.float32)  # as the index holds it: near-ties break alike
    full = expansion.scores(queries, gallery)
    result = flat_search(gallery).search(queries, k=15, expansion=expansion)
    np.testing.assert_array_equal(result.rows, np.argsort(-full, axis=1, kind="stable")[:, :15])
    np.testing.assert_allclose(result.scores[:, 1:], np.take_along_axis(full, result.rows, 1)[:, 1:], atol=1e-5)
    assert (np.diff(result.scores, axis=1) <= 0).all()  # best first, the kept match included


def test_expansion_on_a_gallery_smaller_than_its_neighbours_or_k():
    gallery = unit(np.random.default_rng(4).standard_normal((3, 8)))
    query = gallery[1] + 0.01
    result = flat_search(gallery).search(query, k=10, expansion=QueryExpansion(neighbors=5))
    assert result.rows.shape == (1, 3) and result.rows[0, 0] == 1
    assert sorted(result.rows[0]) == [0, 1, 2]


@pytest.mark.parametrize("setting", [dict(neighbors=0), dict(weight=-1.0), dict(power=-2.0),
                                     dict(gallery_neighbors=-1), dict(gallery_weight=-0.5), dict(candidates=0)])
def test_settings_out_of_range_are_refused(setting):
    with pytest.raises(ValueError, match="query expansion needs"):
        QueryExpansion(**setting)
