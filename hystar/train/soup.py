"""A weight average of hystar-mini models of one config (a "model soup", Wortsman et al. 2022; two models at
weights 1-a and a are WiSE-FT's interpolation): `hystar soup A B ... --out runs/...`.

Models on one fine-tuning path (v3.3 -> v3.4 ...) share a loss basin, so their average is a model too, one that can
generalise better than each of them (here, on val, it landed between its parts: docs/results.md). Floating tensors
are averaged; integer ones (BatchNorm's step counters) are taken from the first model. The result loads like any
model: `--encoder hystar-mini:OUT`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from ..encoder.mini import MiniConfig
from ..io import atomic_write_json, load_tensors, save_safetensors


def soup_weights(folders: Sequence[Path], weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """The weighted average of the models' trained tensors (`weights` default: uniform; normalised to sum 1)."""
    if not folders:
        raise ValueError("a soup needs at least one model")
    weights = list(weights) if weights is not None else [1.0] * len(folders)
    if len(weights) != len(folders) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"{len(weights)} weights for {len(folders)} models: give one non-negative weight a model")
    configs = [MiniConfig.from_json(Path(f) / "config.json") for f in folders]
    if any(c != configs[0] for c in configs[1:]):
        raise ValueError("the models' configs differ: only models of one architecture can be averaged")
    states = [load_tensors(Path(f) / "weights.safetensors") for f in folders]
    if any(s.keys() != states[0].keys() for s in states[1:]):
        raise ValueError("the models hold different tensors: only models of one architecture can be averaged")
    total = sum(weights)
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = sum(s[key].double() * (w / total) for s, w in zip(states, weights, strict=True)).to(first.dtype)
        else:
            out[key] = first.clone()
    return out


def write_soup(folders: Sequence[Path], out: Path, weights: Sequence[float] | None = None) -> Path:
    """Write the soup as a hystar-mini folder (config.json, weights.safetensors, training.json naming its parts)."""
    folders = [Path(f) for f in folders]
    state = soup_weights(folders, weights)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    MiniConfig.from_json(folders[0] / "config.json").to_json(out / "config.json")
    save_safetensors(state, out / "weights.safetensors")
    weights = list(weights) if weights is not None else [1.0] * len(folders)
    parts = []
    for folder, weight in zip(folders, weights, strict=True):
        training = folder / "training.json"
        parts.append({"model": str(folder), "weight": weight / sum(weights),
                      "training": json.loads(training.read_text()) if training.is_file() else None})
    atomic_write_json(out / "training.json", {"soup": parts})
    return out
