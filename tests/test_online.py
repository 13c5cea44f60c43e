"""Specification of online test-time adaptation sessions (`hystar.online`)."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_encoder

from hystar.adapt import AdapterConfig, HystarAdapter, HystarEncoder
from hystar.encoder.mini import MiniConfig, build_mini
from hystar.online import OnlineConfig, OnlineSession, decouple, private_shell, session_parameter_names

# Adapt from the first batch, on every query, with steps large enough to see.
EAGER = OnlineConfig(lr=0.5, min_history=1, reliable_fraction=1.0, queue_size=8)


@pytest.fixture(scope="module")
def mini():
    torch.manual_seed(0)
    return build_mini().eval()


@pytest.fixture(scope="module")
def adapted(mini):
    torch.manual_seed(1)
    adapter = HystarAdapter(mini, AdapterConfig(style_code="tokens"))
    with torch.no_grad():
        for shift in [*adapter.fc, *adapter.proj]:
            shift.delta.normal_(0, 0.05)
    return HystarEncoder(mini, adapter).eval()


def features(seed: int, count: int = 6) -> torch.Tensor:
    """Trunk-shaped inputs (hystar-mini: trunk_channels x 7 x 7)."""
    shape = (count, MiniConfig().trunk_channels, MiniConfig().grid, MiniConfig().grid)
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).abs()


def gallery_of(encoder, count: int = 40) -> torch.Tensor:
    with torch.no_grad():
        return encoder.encode_features(features(100, count))


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def stream(session: OnlineSession, batches: int, start: int = 0) -> None:
    for i in range(batches):
        session.observe(features(start + i))


@pytest.mark.parametrize("which", ["ln", "static", "ln+static"])
def test_observing_leaves_the_shared_model_bit_identical(adapted, which):
    before = snapshot(adapted)
    session = OnlineSession(adapted, gallery_of(adapted), OnlineConfig(**{**EAGER.__dict__, "params": which}),
                            anchor_features=features(200, 4))
    stream(session, 12)
    assert session.steps > 0
    after = adapted.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in adapted.parameters())


def test_the_session_starts_as_the_shared_model_and_reset_returns_to_it_exactly(mini):
    probe = features(300)
    with torch.no_grad():
        shared = mini.encode_features(probe)
    session = OnlineSession(mini, gallery_of(mini), EAGER, anchor_features=features(200, 4))
    assert torch.equal(session.embed(probe), shared)
    stream(session, 6)
    assert not torch.allclose(session.embed(probe), shared, atol=1e-4)
    session.reset()
    assert torch.equal(session.embed(probe), shared)
    assert len(session.queue) == 0 and len(session.history) == 0 and session.steps == 0


def test_reliable_queries_change_the_session_embeddings(mini):
    session = OnlineSession(mini, gallery_of(mini), EAGER)
    probe = features(300)
    first = session.embed(probe)
    _, report = session.observe_with_report(features(1))
    assert report.reliable == 6 and report.adapted
    assert (session.embed(probe) - first).abs().max() > 1e-4


def test_nothing_adapts_until_the_stream_has_a_history(mini):
    session = OnlineSession(mini, gallery_of(mini), OnlineConfig(min_history=100, lr=0.5))
    probe = features(300)
    first = session.embed(probe)
    stream(session, 5)
    assert session.steps == 0 and len(session.queue) == 0
    assert torch.equal(session.embed(probe), first)


def test_observe_returns_the_embedding_the_query_was_searched_with(mini):
    session = OnlineSession(mini, gallery_of(mini), EAGER)
    stream(session, 3)
    batch = features(50)
    expected = session.embed(batch)
    assert torch.allclose(session.observe(batch), expected, atol=1e-6)  # before its own update


def test_memory_is_bounded(mini):
    cfg = OnlineConfig(**{**EAGER.__dict__, "queue_size": 5, "history_size": 20})
    session = OnlineSession(mini, gallery_of(mini), cfg)
    stream(session, 15)
    assert len(session.queue) == 5
    assert len(session.history) == 20
    assert session.queue.maxlen == 5 and session.history.maxlen == 20


def test_sessions_are_independent(mini):
    gallery = gallery_of(mini)
    first, second = OnlineSession(mini, gallery, EAGER), OnlineSession(mini, gallery, EAGER)
    probe = features(300)
    untouched = second.embed(probe)
    stream(first, 4)
    assert torch.equal(second.embed(probe), untouched)


def test_the_shared_model_answers_unchanged_while_a_session_adapts_on_another_thread(mini):
    probe = features(300)
    with torch.no_grad():
        reference = mini.encode_features(probe)
    session = OnlineSession(mini, gallery_of(mini), EAGER)
    worker = threading.Thread(target=stream, args=(session, 8))
    worker.start()
    seen = []
    while worker.is_alive():
        with torch.no_grad():
            seen.append(torch.equal(mini.encode_features(probe), reference))
    worker.join()
    assert seen and all(seen)
    assert session.steps > 0


def test_the_shell_shares_every_tensor_but_owns_the_path_to_the_adapted_ones(adapted):
    names = session_parameter_names(adapted, "ln+static")
    shell = private_shell(adapted, names)
    shared, private = dict(adapted.named_parameters()), dict(shell.named_parameters())
    assert shared.keys() == private.keys()
    assert all(shared[k] is private[k] for k in shared)
    owner = names[0].rpartition(".")[0]
    assert shell.get_submodule(owner) is not adapted.get_submodule(owner)
    assert shell.base.visual.effnet is adapted.base.visual.effnet  # off the path: the very same module
    assert shell.visual is shell.base.visual                         # aliases stay aliases


def test_parameter_sets():
    mini = build_mini()
    ln = session_parameter_names(mini, "ln")
    assert ln and all(".ln_" in n for n in ln)
    assert all(n.endswith((".weight", ".bias")) for n in ln)
    with pytest.raises(ValueError, match="static"):
        session_parameter_names(mini, "static")
    with pytest.raises(ValueError, match="no 'ln' parameters"):
        session_parameter_names(tiny_encoder(), "ln")
    with pytest.raises(ValueError, match="params must be one of"):
        OnlineConfig(params="everything")


def test_decoupling_removes_exactly_the_conflicting_component():
    keep = torch.tensor([-1.0, 1.0])
    assert torch.allclose(decouple(torch.tensor([1.0, 0.0]), keep), torch.tensor([0.5, 0.5]))
    agreeing = torch.tensor([0.0, 2.0])
    assert torch.equal(decouple(agreeing, keep), agreeing)
    assert torch.equal(decouple(agreeing, torch.zeros(2)), agreeing)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        g_adapt, g_keep = torch.randn(50, generator=generator), torch.randn(50, generator=generator)
        projected = decouple(g_adapt, g_keep)
        assert projected.dot(g_keep) >= -1e-5
        orthogonal = g_adapt - g_adapt.dot(g_keep) / g_keep.dot(g_keep) * g_keep
        assert torch.allclose(projected - (orthogonal if g_adapt.dot(g_keep) < 0 else g_adapt), torch.zeros(50))


def test_anchors_pull_the_session_back_towards_the_shared_photos(mini):
    anchors = features(200, 8)
    with torch.no_grad():
        target = mini.encode_features(anchors)
    drift = {}
    for keep in (0.0, 5.0):
        session = OnlineSession(mini, gallery_of(mini), OnlineConfig(**{**EAGER.__dict__, "keep_weight": keep}),
                                anchor_features=anchors)
        stream(session, 8)
        drift[keep] = float(1 - F.cosine_similarity(session.embed(anchors), target).mean())
    assert drift[5.0] < drift[0.0]
