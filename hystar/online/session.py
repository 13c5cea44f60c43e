"""An online session: test-time adaptation of the query encoder to one user's stream, our reading of REST.

REST ("Robust adaptation with quEry ShifT", Li, Yang, Peng; the journal extension of TCR, ICLR 2025) adapts a
retrieval model to a shifted stream of queries without labels. No REST code is public; TCR's is. What we take:

- only the query side moves, and only a few parameters: the LayerNorm affine of the vision tower (TCR/REST's
  choice) and/or the adapter's static singular-value offsets δs. The gallery index is never re-embedded;
- query predictions come from the retrieval results, refined. Reliability: p over a query's top-K gallery items
  only (the rest of the gallery is noise), averaged with p propagated over those candidates' mutual similarity, so
  a candidate its neighbours agree with gains mass. Loss: as TCR, p of each queued query over the set of the
  queued queries' nearest gallery items; collapsing every query onto one hub photo makes that p uniform, so
  minimising its entropy cannot collapse (entropy over per-query top-K did: later-stream R@1 75.6 → 49.3);
- a bounded FIFO queue of *reliable* queries, those whose refined prediction has low entropy relative to the
  recent stream; the adaptation loss is computed on the queue, never on a single noisy query;
- the loss: entropy of the refined predictions, uniformity of the query embeddings (query shift collapses them),
  and the modality gap: the query mean is pulled towards the mean of the gallery items the queries retrieve;
- gradient decoupling: a knowledge-preserving gradient g_k (session embeddings of a few anchor photos must stay
  where the shared model puts them) is computed apart, the component of the adaptation gradient g_a that conflicts
  with it (⟨g_a, g_k⟩ < 0) is projected out, and the step follows g_a' + g_k.

These losses are instance-level (each query has its own gallery item). On category-level streams (PACS sketches:
any photo of the class is right) spreading the queries apart works against retrieval; with the trained adapter the
default settings lose R@1 there (`hystar eval --online` reports it), with the base encoder they gain a little.

The shared encoder is never written: the session runs a private *shell* of it (new module objects only on the path
to the adapted parameters, every tensor shared) and substitutes its parameters with `torch.func.functional_call`.
`functional_call` on the shared modules themselves would swap their tensors for the call's duration, which a
concurrent search on another thread would see.
"""

from __future__ import annotations

import copy
import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from ..adapt import CachesDerivedWeights

PARAMETER_SETS = ("ln", "static", "ln+static")


@dataclass(frozen=True)
class OnlineConfig:
    params: str = "ln"               # "ln": vision LayerNorm affine; "static": adapter δs; or both
    lr: float = 1e-2
    momentum: float = 0.9
    top_k: int = 32                  # candidates of the refined prediction
    temperature: float = 0.05        # τ of p = softmax(sim / τ) over the candidates
    agreement_temperature: float = 0.05
    queue_size: int = 64             # reliable queries kept (trunk features)
    history_size: int = 256          # recent entropies that set the reliability threshold
    reliable_fraction: float = 0.5   # reliable: entropy within the lowest fraction of the recent stream
    min_history: int = 16            # no adaptation before this many queries
    entropy_weight: float = 1.0
    uniformity_weight: float = 0.1
    uniformity_t: float = 2.0
    gap_weight: float = 1.0
    keep_weight: float = 1.0
    decouple: bool = True

    def __post_init__(self) -> None:
        if self.params not in PARAMETER_SETS:
            raise ValueError(f"params must be one of {PARAMETER_SETS}, got {self.params!r}")


# --- which parameters, and a private shell to run them in ----------------------------------------------------------

def session_parameter_names(encoder: nn.Module, which: str = "ln") -> list[str]:
    """Names (as `encoder.named_parameters()` gives them) of the parameters a session adapts."""
    chosen: set[int] = set()
    if "ln" in which.split("+"):
        chosen |= {id(m) for m in encoder.visual.modules() if isinstance(m, nn.LayerNorm) and m.weight is not None}
    adapter = encoder.adapter
    static = adapter.static_shift_modules() if "static" in which.split("+") and adapter is not None else []
    names = []
    for name, module in encoder.named_modules():
        if id(module) in chosen:
            names += [f"{name}.weight"] + ([f"{name}.bias"] if module.bias is not None else [])
        elif any(module is shift for shift in static):
            names.append(f"{name}.delta")
    if not names:
        raise ValueError(f"{encoder.name} has no {which!r} parameters to adapt online "
                         f"(static offsets need a Hystar adapter with static_mlp)")
    return names


def private_shell(module: nn.Module, names: Sequence[str]) -> nn.Module:
    """A copy of `module` sharing every tensor, whose modules on the path to `names` are new objects.

    Swapping a parameter of the shell (what `functional_call` does) leaves the original module untouched. Modules
    that cache weights derived from their parameters (the adapter's merged MLP weights) are private too.
    """
    owners = {id(module.get_submodule(name.rpartition(".")[0])) for name in names}
    owners |= {id(m) for m in module.modules() if isinstance(m, CachesDerivedWeights)}
    needs: dict[int, bool] = {}

    def on_path(m: nn.Module) -> bool:
        if id(m) not in needs:
            needs[id(m)] = id(m) in owners or any(on_path(c) for c in m.children())
        return needs[id(m)]

    clones: dict[int, nn.Module] = {}

    def clone(m: nn.Module) -> nn.Module:
        if not on_path(m):
            return m
        if id(m) not in clones:
            c = copy.copy(m)
            c._parameters, c._buffers = dict(m._parameters), dict(m._buffers)
            if isinstance(c, CachesDerivedWeights):
                c.forget_derived()
            clones[id(m)] = c
            c._modules = {k: None if v is None else clone(v) for k, v in m._modules.items()}
        return clones[id(m)]

    return clone(module)


class _Embedder(nn.Module):
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode_features(features)


# --- predictions, losses, decoupling --------------------------------------------------------------------------------

def refined_prediction(z: torch.Tensor, gallery: torch.Tensor, top_k: int, temperature: float,
                       agreement_temperature: float) -> torch.Tensor:
    """p over each query's top-K gallery items, averaged with p propagated by the candidates' agreement."""
    k = min(top_k, gallery.shape[0])
    with torch.no_grad():
        candidates = (z @ gallery.T).topk(k, dim=1).indices
    items = gallery[candidates]                                   # (B, K, D)
    p = torch.softmax(torch.einsum("bd,bkd->bk", z, items) / temperature, dim=-1)
    agreement = torch.softmax(items @ items.transpose(1, 2) / agreement_temperature, dim=-1)
    return 0.5 * (p + torch.einsum("bk,bkj->bj", p, agreement))


def candidate_prediction(z: torch.Tensor, gallery: torch.Tensor,
                         temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """p of each query over the nearest gallery items of all the queries, and those items (TCR's refinement)."""
    with torch.no_grad():
        nearest = gallery[(z @ gallery.T).argmax(1)]
    return torch.softmax(z @ nearest.T / temperature, dim=-1), nearest


def entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


def uniformity(z: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Wang & Isola's uniformity: log E exp(-t‖zᵢ - zⱼ‖²) over distinct pairs (lower is more spread)."""
    distances = torch.pdist(z).pow(2)
    return torch.logsumexp(-t * distances, dim=0) - math.log(distances.numel())


def decouple(g_adapt: torch.Tensor, g_keep: torch.Tensor) -> torch.Tensor:
    """g_adapt without its component against g_keep (PCGrad): unchanged when they do not conflict."""
    dot = torch.dot(g_adapt, g_keep)
    if dot >= 0:
        return g_adapt
    return g_adapt - dot / g_keep.dot(g_keep).clamp_min(1e-20) * g_keep


# --- the session ----------------------------------------------------------------------------------------------------

@dataclass
class StepReport:
    queries: int
    reliable: int
    queue: int
    adapted: bool
    losses: dict[str, float]
    conflict: bool   # the adaptation gradient pointed against the knowledge-preserving one


class OnlineSession:
    """A user's private, resettable adaptation of a shared encoder to the stream of their queries."""

    def __init__(self, encoder: nn.Module, gallery_vectors: np.ndarray | torch.Tensor, cfg: OnlineConfig | None = None,
                 anchor_features: torch.Tensor | None = None):
        self.cfg = cfg or OnlineConfig()
        self.encoder = encoder
        self._lock = threading.RLock()
        names = session_parameter_names(encoder, self.cfg.params)
        shared = dict(encoder.named_parameters())
        self._initial = {n: shared[n].detach().clone() for n in names}
        self.params = {f"encoder.{n}": v.clone().requires_grad_(True) for n, v in self._initial.items()}
        self._velocity = {n: torch.zeros_like(v) for n, v in self.params.items()}
        self._embedder = _Embedder(private_shell(encoder, names))
        self.device = next(encoder.parameters()).device
        # a float32 tensor already on the device is used as is: sessions of one app share their gallery
        gallery = gallery_vectors if torch.is_tensor(gallery_vectors) else torch.as_tensor(np.asarray(gallery_vectors))
        self.gallery = gallery.to(self.device, torch.float32)
        self.anchors = None if anchor_features is None else anchor_features.float().to(self.device)
        self._anchor_targets = None if self.anchors is None else self.embed(self.anchors)
        self.queue: deque[torch.Tensor] = deque(maxlen=self.cfg.queue_size)
        self.history: deque[float] = deque(maxlen=self.cfg.history_size)
        self.steps = 0

    # embeddings with the session's parameters
    def _forward(self, features: torch.Tensor) -> torch.Tensor:
        return functional_call(self._embedder, self.params, (features.to(self.device, torch.float32),))

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        with self._lock, torch.no_grad():
            return self._forward(features)

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.embed(self.encoder.visual.trunk(pixels))

    def encode_features(self, features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """The `Encoder` call evaluation uses; session embeddings are always normalised."""
        return self.embed(features)

    def observe_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.observe(self.encoder.visual.trunk(pixels))

    def observe(self, features: torch.Tensor) -> torch.Tensor:
        """Embed a batch of queries (what their search uses), then adapt on the reliable ones."""
        with self._lock:
            z, _ = self._step(features)
            return z

    def observe_with_report(self, features: torch.Tensor) -> tuple[torch.Tensor, StepReport]:
        with self._lock:
            return self._step(features)

    def reset(self) -> None:
        """Back to the shared model's parameters; queue, history and momentum emptied."""
        with self._lock, torch.no_grad():
            for name, value in self._initial.items():
                self.params[f"encoder.{name}"].copy_(value)  # in place: caches keyed on tensor versions go stale
            for v in self._velocity.values():
                v.zero_()
            self.queue.clear()
            self.history.clear()
            self.steps = 0

    def _step(self, features: torch.Tensor) -> tuple[torch.Tensor, StepReport]:
        cfg = self.cfg
        z = self._forward(features)
        p = refined_prediction(z, self.gallery, cfg.top_k, cfg.temperature, cfg.agreement_temperature)
        scores = (entropy(p) / math.log(p.shape[1])).detach().tolist() if p.shape[1] > 1 else [0.0] * len(z)
        reliable = self._reliable(scores)
        self.history.extend(scores)
        previous = list(self.queue)
        self.queue.extend(features[i].detach().clone() for i in reliable)
        report = StepReport(len(z), len(reliable), len(self.queue), False, {}, False)
        if reliable and len(reliable) + len(previous) >= 2:
            report = self._update(z[reliable], previous, report)
        return z.detach(), report

    def _reliable(self, scores: list[float]) -> list[int]:
        if len(self.history) + len(scores) < self.cfg.min_history:
            return []
        threshold = float(np.quantile(np.fromiter(list(self.history) + scores, float), self.cfg.reliable_fraction))
        return [i for i, s in enumerate(scores) if s <= threshold]

    def _adaptation_loss(self, z: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        p, nearest = candidate_prediction(z, self.gallery, cfg.temperature)
        terms = {"entropy": entropy(p).mean(),
                 "uniformity": uniformity(z, cfg.uniformity_t),
                 "gap": (z.mean(0) - nearest.mean(0)).pow(2).sum()}
        loss = (cfg.entropy_weight * terms["entropy"] + cfg.uniformity_weight * terms["uniformity"]
                + cfg.gap_weight * terms["gap"])
        return loss, {k: float(v.detach()) for k, v in terms.items()}

    def _update(self, z_new: torch.Tensor, previous: list[torch.Tensor], report: StepReport) -> StepReport:
        cfg = self.cfg
        tensors = list(self.params.values())
        z = torch.cat([z_new, self._forward(torch.stack(previous))]) if previous else z_new
        loss, terms = self._adaptation_loss(z)
        g_adapt = _flat_grad(loss, tensors)
        g_keep = torch.zeros_like(g_adapt)
        if self.anchors is not None and cfg.keep_weight:
            keep = (1 - (self._forward(self.anchors) * self._anchor_targets).sum(-1)).mean()
            terms["keep"] = float(keep.detach())
            g_keep = _flat_grad(keep, tensors)
        conflict = bool(torch.dot(g_adapt, g_keep) < 0)
        direction = (decouple(g_adapt, g_keep) if cfg.decouple else g_adapt) + cfg.keep_weight * g_keep
        with torch.no_grad():
            offset = 0
            for name, tensor in self.params.items():
                step = direction[offset:offset + tensor.numel()].view_as(tensor)
                offset += tensor.numel()
                velocity = self._velocity[name].mul_(cfg.momentum).add_(step)
                tensor.sub_(cfg.lr * velocity)
        self.steps += 1
        return StepReport(report.queries, report.reliable, report.queue, True, terms, conflict)


def _flat_grad(loss: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
    """One flat gradient; `autograd.grad` never accumulates into `.grad`, so shared parameters stay untouched."""
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, tensors, materialize_grads=True)])
