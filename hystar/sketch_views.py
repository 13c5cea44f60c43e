"""Trunk features of stored sketch queries as the app would see them: normalised, optionally drawn on the canvas
first (the canvas protocol). Shared by evaluation and training, cached like every other view."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .data import Item
from .features import View, trunk_features
from .synthetic_canvas import sketch_view_style


def query_view_features(encoder, items: Sequence[Item], name: str, render: str = "",
                        normalise: bool = True) -> torch.Tensor | None:
    """Features of `items` (one query style) in their query view; None when that view is the file as it is
    (not a sketch, or a sketch neither rendered nor normalised): then the caller's cached originals apply."""
    if not items:
        return None
    styles = {sketch_view_style(item.style, render, normalise) for item in items}
    if styles == {None}:
        return None
    if len(styles) != 1:
        raise ValueError(f"{name}: query views mix styles {sorted(map(str, styles))}; pass one query style")
    style = styles.pop()
    return trunk_features(encoder, [View(item, style) for item in items], f"{name}-{style}")
