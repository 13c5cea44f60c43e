"""QuARI re-ranking: low-rank algebra, the re-ranker's scores, its files, semi-positives, a short training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hystar.rerank import (
    NoRerankerError,
    QuARI,
    QuARIConfig,
    QuARIMismatchError,
    Reranker,
    default_path,
    effective_query,
    explicit_matrix,
    load_default_reranker,
    load_reranker,
    save_reranker,
    transform,
)
from hystar.rerank.model import transformed_norms
from hystar.train.quari import TrainConfig, mine_semi_positives, soft_contrastive_loss, soft_targets, train_quari

TINY = QuARIConfig(dim=16, rank=8, n_tokens=4, layers=1, heads=2, steps=2, width=16)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def reranker() -> Reranker:
    torch.manual_seed(0)
    return Reranker(QuARI(TINY), "fp-tiny", "tiny")


def test_the_low_rank_transform_equals_the_explicit_matrix(rng):
    d, r, b, n = 12, 3, 2, 5
    x, U, V = rng.standard_normal((b, n, d)), rng.standard_normal((b, d, r)), rng.standard_normal((b, d, r))
    np.testing.assert_allclose(transform(x, U, V, 0.8), x @ explicit_matrix(U, V, 0.8), atol=1e-10)
    xt, Ut, Vt = map(torch.from_numpy, (x, U, V))
    torch.testing.assert_close(transform(xt, Ut, Vt, 0.8), xt @ explicit_matrix(Ut, Vt, 0.8))


def test_zero_factors_give_the_identity(rng):
    x, zeros = rng.standard_normal((4, 6)), np.zeros((6, 3))
    np.testing.assert_array_equal(explicit_matrix(zeros, zeros, 0.8), np.eye(6))
    np.testing.assert_array_equal(transform(x, zeros, zeros, 0.8), x)


def test_zero_tokens_decode_to_zero_factors_so_T_is_the_identity():
    U, V = QuARI(TINY).decode_factors(torch.zeros(3, 2 * TINY.n_tokens, TINY.width))
    assert U.abs().max() == 0 and V.abs().max() == 0
    torch.testing.assert_close(explicit_matrix(U, V, TINY.alpha), torch.eye(TINY.dim).expand(3, -1, -1))


def test_scoring_the_transformed_gallery_is_one_product_with_the_effective_query(rng):
    q, gallery = unit(rng.standard_normal(10)), unit(rng.standard_normal((7, 10)))
    U, V = rng.standard_normal((10, 4)), rng.standard_normal((10, 4))
    np.testing.assert_allclose(gallery @ effective_query(q, U, V, 0.8),
                               transform(gallery, U, V, 0.8) @ q, rtol=1e-5)


def test_transformed_norms_need_only_the_projections(rng):
    rows, U, V = (rng.standard_normal(shape) for shape in [(2, 7, 10), (2, 10, 4), (2, 10, 4)])
    np.testing.assert_allclose(transformed_norms(rows, U, V, 0.8),
                               np.linalg.norm(transform(rows, U, V, 0.8), axis=-1), rtol=1e-10)


def test_quari_gives_unit_frobenius_factors_of_the_configured_rank_and_a_unit_adapted_query(rng):
    q = torch.from_numpy(unit(rng.standard_normal((3, TINY.dim))))
    U, V, q_prime = QuARI(TINY)(q)
    assert U.shape == V.shape == (3, TINY.dim, TINY.rank) and q_prime.shape == (3, TINY.dim)
    torch.testing.assert_close(U.flatten(1).norm(dim=1), torch.ones(3))
    torch.testing.assert_close(V.flatten(1).norm(dim=1), torch.ones(3))
    torch.testing.assert_close(q_prime.norm(dim=1), torch.ones(3))


def test_a_rank_that_is_not_a_multiple_of_the_tokens_is_refused():
    with pytest.raises(ValueError, match="multiple of n_tokens"):
        QuARIConfig(dim=16, rank=10, n_tokens=4)


def test_rerank_scores_candidates_as_q_prime_against_the_transformed_candidates(reranker, rng):
    q, candidates = unit(rng.standard_normal(TINY.dim)), unit(rng.standard_normal((9, TINY.dim)))
    a = reranker.adapt(q)
    explicit = transform(candidates, a.U[0], a.V[0], TINY.alpha) @ a.q_prime[0]
    scores = reranker.rerank(q, candidates)
    assert scores.shape == (9,) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, explicit, rtol=1e-5, atol=1e-6)


def test_rerank_batch_scores_each_query_against_its_own_candidates(reranker, rng):
    queries = unit(rng.standard_normal((3, TINY.dim)))
    candidates = unit(rng.standard_normal((3, 5, TINY.dim)))
    batch = reranker.rerank_batch(queries, candidates)
    for i in range(3):
        np.testing.assert_allclose(batch[i], reranker.rerank(queries[i], candidates[i]), rtol=1e-5, atol=1e-6)


def test_cosine_similarity_divides_by_the_norm_of_the_transformed_candidate(rng):
    torch.manual_seed(0)
    cosine = Reranker(QuARI(QuARIConfig(**{**TINY.__dict__, "similarity": "cosine"})), "fp")
    q, candidates = unit(rng.standard_normal(TINY.dim)), unit(rng.standard_normal((9, TINY.dim)))
    a = cosine.adapt(q)
    moved = transform(candidates, a.U[0], a.V[0], TINY.alpha)
    explicit = moved @ a.q_prime[0] / np.linalg.norm(moved, axis=1)
    np.testing.assert_allclose(cosine.rerank(q, candidates), explicit, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cosine.score_gallery(q, candidates, block_rows=4), explicit,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_a_blend_mixes_quari_score_with_the_first_stage_cosine(similarity, rng):
    torch.manual_seed(0)
    model = QuARI(QuARIConfig(**{**TINY.__dict__, "similarity": similarity}))
    pure, half, plain = (Reranker(model, "fp", blend=b) for b in (1.0, 0.5, 0.0))
    q, candidates = unit(rng.standard_normal(TINY.dim)), unit(rng.standard_normal((9, TINY.dim)))
    np.testing.assert_allclose(plain.rerank(q, candidates), candidates @ q, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(half.rerank(q, candidates), 0.5 * pure.rerank(q, candidates) + 0.5 * candidates @ q,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(half.score_gallery(q, candidates, block_rows=4), half.rerank(q, candidates),
                               rtol=1e-5, atol=1e-6)


def test_a_blended_full_search_of_a_float16_gallery_returns_its_exact_top_k(rng):
    torch.manual_seed(0)
    blended = Reranker(QuARI(TINY), "fp", blend=0.3)
    gallery = unit(rng.standard_normal((200, TINY.dim))).astype(np.float16)
    q = unit(rng.standard_normal(TINY.dim))
    exact = blended.score_gallery(q, gallery)
    indices, _ = blended.search(q, gallery, k=10)
    np.testing.assert_array_equal(indices, np.argsort(-exact, kind="stable")[:10])


def test_the_blend_is_saved_with_the_checkpoint_and_must_lie_in_0_1(reranker, tmp_path):
    path = save_reranker(reranker.model, tmp_path / "quari.safetensors", "fp-tiny", "tiny", blend=0.4)
    assert load_reranker(path).blend == 0.4
    assert load_reranker(save_reranker(reranker.model, tmp_path / "paper.safetensors", "fp-tiny")).blend == 1.0
    with pytest.raises(ValueError, match="blend must lie in"):
        Reranker(reranker.model, "fp", blend=1.5)
    reblended = reranker.with_blend(0.3)
    assert reblended.blend == 0.3 and reblended.model is reranker.model and reranker.blend == 1.0


def test_score_gallery_streams_a_float16_memmap_in_blocks(reranker, rng, tmp_path):
    np.save(tmp_path / "g.npy", unit(rng.standard_normal((50, TINY.dim))).astype(np.float16))
    gallery = np.load(tmp_path / "g.npy", mmap_mode="r")
    queries = unit(rng.standard_normal((2, TINY.dim)))
    scores = reranker.score_gallery(queries, gallery, block_rows=16)
    assert scores.shape == (2, 50)
    expected = reranker.rerank_batch(queries, np.broadcast_to(gallery.astype(np.float32), (2, 50, TINY.dim)))
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reranker.score_gallery(queries[0], gallery), scores[0], rtol=1e-5, atol=1e-6)


def test_search_of_a_float16_gallery_returns_the_exact_top_k(reranker, rng, tmp_path):
    # Clusters of near-duplicates, which float16 arithmetic alone orders wrongly.
    base = np.repeat(unit(rng.standard_normal((4, TINY.dim))), 20, axis=0)
    gallery = unit(base + 1e-3 * rng.standard_normal(base.shape)).astype(np.float16)
    q = unit(rng.standard_normal(TINY.dim))
    exact = reranker.score_gallery(q, gallery)
    indices, scores = reranker.search(q, gallery, k=10)
    np.testing.assert_array_equal(indices, np.argsort(-exact, kind="stable")[:10])
    np.testing.assert_allclose(scores, exact[indices], rtol=1e-5)


def test_a_saved_reranker_loads_with_the_same_scores_and_refuses_another_encoder(reranker, rng, tmp_path):
    path = save_reranker(reranker.model, tmp_path / "quari.safetensors", "fp-tiny", "tiny", {"epochs": 1})
    assert path.with_suffix(".json").is_file()
    q, candidates = unit(rng.standard_normal(TINY.dim)), unit(rng.standard_normal((5, TINY.dim)))
    loaded = load_reranker(path, "fp-tiny")
    assert loaded.cfg == TINY and loaded.encoder_fingerprint == "fp-tiny"
    np.testing.assert_array_equal(loaded.rerank(q, candidates), reranker.rerank(q, candidates))
    with pytest.raises(QuARIMismatchError, match="trained for tiny .fingerprint fp-tiny.*fp-other"):
        load_reranker(path, "fp-other")


def test_the_default_reranker_is_the_one_trained_for_the_encoder(reranker, tmp_path):
    save_reranker(reranker.model, default_path("tiny", "fp-tiny", tmp_path), "fp-tiny", "tiny")
    assert load_default_reranker("fp-tiny", tmp_path).encoder_fingerprint == "fp-tiny"
    with pytest.raises(NoRerankerError, match="no QuARI re-ranker is trained for encoder fingerprint fp-x"):
        load_default_reranker("fp-x", tmp_path)
    with pytest.raises(NoRerankerError, match="holds none"):
        load_default_reranker("fp-tiny", tmp_path / "empty")


def test_semi_positives_are_the_nearest_other_items_weighted_by_similarity():
    gallery = unit(np.array([[1, 0, 0], [0.9, 0.1, 0], [0.8, 0.3, 0], [0, 1, 0], [0, 0, 1]], np.float32))
    semi = mine_semi_positives(gallery, k=2, pool=3, tau=0.07)
    np.testing.assert_array_equal(semi.indices[0], [0, 1, 2])
    np.testing.assert_allclose(semi.weights.sum(1), 1.0, rtol=1e-6)
    assert semi.weights[0, 0] > semi.weights[0, 1] > semi.weights[0, 2]
    labels = np.array([0, 1, 0, 0, 0])
    assert mine_semi_positives(gallery, k=1, labels=labels).indices[0, 1] == 2     # same label first


def test_a_gallery_too_small_for_k_semi_positives_lets_the_item_stand_in():
    semi = mine_semi_positives(unit(np.eye(2, 4, dtype=np.float32)), k=2)
    np.testing.assert_array_equal(semi.indices, [[0, 1, 0], [1, 0, 1]])


def test_queries_sharing_a_target_are_all_positives_and_same_label_items_are_not_negatives():
    groups = torch.tensor([[5, 6], [5, 6], [7, 8]])
    weights = torch.tensor([[0.75, 0.25]] * 3)
    candidates, targets, keep = soft_targets(groups, weights, torch.tensor([[0, 0], [0, 0], [0, 1]]))
    assert candidates.tolist() == [5, 6, 7, 8]
    torch.testing.assert_close(targets, torch.tensor([[0.75, 0.25, 0, 0], [0.75, 0.25, 0, 0],
                                                      [0, 0, 0.75, 0.25]]))
    assert keep.tolist() == [[True, True, False, True], [True, True, False, True], [False, False, True, True]]
    loss = soft_contrastive_loss(torch.randn(3, 4), targets, keep, tau=0.07)
    assert torch.isfinite(loss)


def two_aspect_problem(rng: np.random.Generator, n_items: int = 300, half: int = 16):
    """Gallery items have two independent aspects; a query shows one of them (and says which) and noise in
    place of the other, so its nearest neighbour is often not its target: a query-specific map helps."""
    a, b = unit(rng.standard_normal((n_items, half))), unit(rng.standard_normal((n_items, half)))
    gallery = unit(np.concatenate([a, b, np.zeros((n_items, 2))], axis=1))

    def queries(targets: np.ndarray, aspect: np.ndarray) -> np.ndarray:
        noise = unit(rng.standard_normal((len(targets), half)))
        shown = np.where(aspect[:, None] == 0, a[targets], b[targets])
        first = aspect[:, None, None] == 0
        halves = np.where(first, np.stack([shown, noise], 1), np.stack([noise, shown], 1))
        return unit(np.concatenate([halves.reshape(len(targets), -1), 0.5 * np.eye(2)[aspect]], axis=1))

    return gallery, queries


def test_a_short_training_improves_recall_at_1_over_no_rerank(rng):
    torch.manual_seed(0)
    gallery, queries = two_aspect_problem(rng)
    n = len(gallery)
    train_targets, train_aspects = np.tile(np.arange(n), 4), np.repeat([0, 1], 2 * n)
    test_targets, test_aspects = np.tile(np.arange(n), 2), np.repeat([0, 1], n)
    test_queries = queries(test_targets, test_aspects)
    cfg = QuARIConfig(dim=gallery.shape[1], rank=8, n_tokens=8, layers=1, heads=4, steps=2, width=32)
    train = TrainConfig(epochs=25, batch_size=128, lr=3e-3, warmup_steps=20, noise=0.5)
    train_queries = queries(train_targets, train_aspects)
    result = train_quari(train_queries, train_targets, gallery, cfg, train, progress=False)

    recall_at_1 = lambda scores: float((scores.argmax(1) == test_targets).mean())
    before = recall_at_1(test_queries @ gallery.T)
    after = recall_at_1(Reranker(result.model, "synthetic").score_gallery(test_queries, gallery))
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    assert before < 0.6 and after > before + 0.2, (before, after)
