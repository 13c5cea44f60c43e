"""Specification of the Hystar adapters and the training losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hystar.adapt import (
    STYLE_CODES,
    AdapterConfig,
    AdapterMismatchError,
    HystarAdapter,
    HystarEncoder,
    load_adapter,
    save_adapter,
)
from hystar.encoder import load_encoder
from hystar.encoder.mini import build_mini, save_mini
from hystar.encoder.search import load_search_encoder
from hystar.train.losses import StyleNCEConfig, info_nce, negative_weights, sinkhorn, style_nce, symmetric_triplet


@pytest.fixture(scope="module")
def mini():
    torch.manual_seed(0)
    return build_mini().eval()


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return load_encoder("ViT-B-32:random")


def perturb(adapter: HystarAdapter, scale: float = 0.05) -> HystarAdapter:
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in adapter.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return adapter


@pytest.mark.parametrize("style_code", STYLE_CODES)
def test_zero_shifts_leave_hystar_mini_unchanged(mini, style_code):
    adapted = HystarEncoder(mini, HystarAdapter(mini, AdapterConfig(style_code=style_code))).eval()
    pixels = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        assert (adapted.encode_image(pixels) - mini.encode_image(pixels)).abs().max() <= 1e-5


def test_zero_shifts_leave_a_vit_unchanged(vit):
    adapted = HystarEncoder(vit, HystarAdapter(vit)).eval()
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert (adapted.encode_image(pixels) - vit.encode_image(pixels)).abs().max() <= 1e-5


def test_adaptation_is_per_input(mini):
    adapter = perturb(HystarAdapter(mini)).eval()
    features = mini.visual.trunk(torch.randn(2, 3, 224, 224))
    _, deltas = adapter(mini, features)
    assert set(deltas) == set(adapter.dynamic) and deltas[adapter.dynamic[0]].shape == (2, 256)
    assert not torch.allclose(deltas[adapter.dynamic[0]][0], deltas[adapter.dynamic[0]][1])
    # each sample's output depends only on its own style code: batch of two == two batches of one
    both, _ = adapter(mini, features)
    one, _ = adapter(mini, features[:1])
    assert torch.allclose(both[:1], one, atol=1e-5)


def test_low_rank_path_equals_the_explicit_weight(mini):
    adapter = perturb(HystarAdapter(mini))
    block_index = adapter.dynamic[0]
    factors = adapter.qkv[str(block_index)]
    x = torch.randn(2, 5, 256)
    delta = torch.randn(2, 256)
    explicit = torch.stack([x[b] @ (factors.u @ torch.diag(factors.s + delta[b]) @ factors.v.T).T for b in range(2)])
    assert torch.allclose(factors.apply(x, factors.s + delta), explicit, atol=1e-4)


def test_default_dynamic_blocks_spread_over_the_depth(mini, vit):
    assert HystarAdapter(mini).dynamic == (1, 2, 3)
    deep = HystarAdapter(vit).dynamic
    assert len(deep) >= 3 and deep[-1] == 11 and deep[0] > 0


def test_save_load_round_trip(tmp_path, mini):
    adapter = perturb(HystarAdapter(mini, AdapterConfig(style_code="tokens"))).eval()
    path = save_adapter(adapter, tmp_path / "a.safetensors", "hystar-mini", {"note": "test"})
    loaded = load_adapter(mini, path)
    features = mini.visual.trunk(torch.randn(2, 3, 224, 224))
    assert loaded.cfg == adapter.cfg
    assert torch.equal(loaded(mini, features)[0], adapter(mini, features)[0])


def test_loading_onto_another_base_is_refused(tmp_path, mini):
    path = save_adapter(HystarAdapter(mini), tmp_path / "a.safetensors", "hystar-mini")
    torch.manual_seed(123)
    other = build_mini().eval()
    with pytest.raises(AdapterMismatchError, match="trained on hystar-mini"):
        load_adapter(other, path)


def test_load_adapted_gives_a_search_encoder_with_its_own_fingerprint(tmp_path, mini):
    folder = save_mini(mini, tmp_path / "mini")
    spec = f"hystar-mini:{folder}"
    base = load_encoder(spec)
    path = save_adapter(perturb(HystarAdapter(base)), tmp_path / "a.safetensors", spec)
    adapted = load_search_encoder(spec, path, shared=False)
    assert adapted.fingerprint != base.fingerprint and adapted.embed_dim == base.embed_dim
    text = adapted.encode_text(adapted.tokenize(["a sketch of a cat"]))
    assert torch.allclose(text, base.encode_text(base.tokenize(["a sketch of a cat"])))


# --- losses -------------------------------------------------------------------------------------------------

def unit(n: int, d: int = 16, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_sinkhorn_plan_is_doubly_stochastic():
    kernel = torch.rand(12, 12, generator=torch.Generator().manual_seed(0)) * (1 - torch.eye(12))
    plan = sinkhorn(kernel, 50)
    assert torch.allclose(plan.sum(0), torch.ones(12), atol=1e-3)
    assert torch.allclose(plan.sum(1), torch.ones(12), atol=1e-3)
    assert torch.all(plan.diagonal() == 0)


def test_stylence_with_uniform_weights_is_infonce(monkeypatch):
    q, p = unit(10, seed=1), unit(10, seed=2)
    monkeypatch.setattr("hystar.train.losses.negative_weights", lambda s, negatives, cfg: torch.ones_like(s))
    assert torch.allclose(style_nce(q, p), info_nce(q, p))


def test_stylence_weights_follow_the_kernel_sign():
    q = unit(8, seed=3)
    similarity = q @ q.T
    negatives = ~torch.eye(8, dtype=torch.bool)
    easy_up = negative_weights(similarity, negatives, StyleNCEConfig(kernel_sign=1.0))
    hard_up = negative_weights(similarity, negatives, StyleNCEConfig(kernel_sign=-1.0))
    most_similar = (similarity - 2 * torch.eye(8)).argmax(1)
    rows = torch.arange(8)
    assert (hard_up[rows, most_similar] > easy_up[rows, most_similar]).float().mean() > 0.7


def test_same_class_photos_are_not_negatives():
    q, p = unit(6, seed=4), unit(6, seed=5)
    not_negative = torch.zeros(6, 6, dtype=torch.bool)
    not_negative[0, 1] = True
    moved = p.clone()
    moved[1] = q[0]  # photo 1 looks exactly like query 0 — fine, it is of query 0's class
    for loss in (info_nce, style_nce, symmetric_triplet):
        assert loss(q, moved, not_negative)[()] <= loss(q, moved)[()] + 1e-6


def test_losses_reward_matching_pairs():
    q = unit(16, seed=6)
    for loss in (info_nce, style_nce, symmetric_triplet):
        assert loss(q, q) < loss(q, unit(16, seed=7))


def test_gram_prompt_baseline_really_uses_its_prompts(tmp_path, mini):
    from hystar.adapt import GramPromptAdapter, PromptConfig

    adapter = GramPromptAdapter(mini, PromptConfig(styles=2))
    features = mini.visual.trunk(torch.randn(4, 3, 224, 224))
    adapter.init_from_codes(adapter.codes(mini, features))
    before, _ = adapter(mini, features)
    with torch.no_grad():
        adapter.prompts.mul_(3.0)
    after, _ = adapter(mini, features)
    assert not torch.allclose(before, after)
    path = save_adapter(adapter, tmp_path / "prompts.safetensors", "hystar-mini")
    assert torch.equal(load_adapter(mini, path)(mini, features)[0], after)
