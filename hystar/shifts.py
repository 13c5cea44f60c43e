"""ΔS summaries for the views: each dynamic block's per-query shift, and the static MLP offsets, each against the
norm of the singular values it shifts."""

from __future__ import annotations

import numpy as np
import torch

from .ranking import top_k
from .views import Explanation, LayerShift, MlpOffset

TOP_SHIFTS = 5


def top_shifts(delta: np.ndarray, count: int = TOP_SHIFTS) -> tuple[tuple[int, float], ...]:
    """The `count` largest singular-value shifts by magnitude: (index, shift), largest first."""
    order, _ = top_k(np.abs(delta), count)
    return tuple((int(i), float(delta[i])) for i in order)


class ShiftSummary:
    """Summaries of one adapter's shifts; `adapter` None (no adapter) summarises nothing."""

    def __init__(self, adapter):
        self.qkv_norms, self.mlp_norms = adapter.singular_value_norms() if adapter is not None else ({}, {})

    def explanations(self, sources: list[str], deltas: dict[int, torch.Tensor]) -> list[Explanation]:
        out = []
        for position, source in enumerate(sources):
            layers = []
            for block, delta in sorted(deltas.items()):
                values = delta[position].float().cpu().numpy()
                norm = float(np.linalg.norm(values))
                reference = self.qkv_norms.get(block, float("nan"))
                layers.append(LayerShift(block, norm, norm / reference, top_shifts(values)))
            out.append(Explanation(source, tuple(layers)))
        return out

    def offsets(self, static: dict[str, torch.Tensor]) -> list[MlpOffset]:
        out = []
        for name, shift in static.items():
            block, layer = name.split(".", 1)
            norm = float(shift.float().norm())
            out.append(MlpOffset(int(block.removeprefix("block")), layer, norm,
                                 norm / self.mlp_norms.get(name, float("nan"))))
        return out
