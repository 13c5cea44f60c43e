"""The one learning-rate schedule: linear warmup, then cosine decay to zero."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, warmup: int = 0) -> float:
    """The factor on the base learning rate at `step` of `total` (0-based); steps past `total` stay at 0."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
