"""`hystar soup`: a weight average of hystar-mini models of one config is itself a hystar-mini model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from hystar import cli
from hystar.encoder import load_encoder
from hystar.encoder.mini import MiniConfig
from hystar.io import load_tensors, save_safetensors
from hystar.train.soup import soup_weights, write_soup


@pytest.fixture()
def two_models(mini_spec, tmp_path) -> tuple[Path, Path]:
    """The seeded model and a copy whose floating tensors are all shifted by +1."""
    first = Path(mini_spec.split(":", 1)[1])
    second = tmp_path / "second"
    shutil.copytree(first, second)
    state = load_tensors(first / "weights.safetensors")
    save_safetensors({k: v + 1 if v.is_floating_point() else v for k, v in state.items()},
                     second / "weights.safetensors")
    return first, second


def test_a_soup_is_the_weighted_mean_of_its_models(two_models, tmp_path):
    first, second = two_models
    a, b = load_tensors(first / "weights.safetensors"), load_tensors(second / "weights.safetensors")
    even = soup_weights([first, second])
    leaning = soup_weights([first, second], [1, 3])  # normalised: 0.25 / 0.75
    floating = [k for k, v in a.items() if v.is_floating_point()]
    assert floating
    for key in floating:
        torch.testing.assert_close(even[key], a[key] + 0.5)
        torch.testing.assert_close(leaning[key], a[key] + 0.75)
    for key in set(a) - set(floating):  # BatchNorm's step counters: the first model's
        assert torch.equal(even[key], a[key])
    assert all(torch.equal(b[k], soup_weights([second])[k]) for k in b)


def test_a_soup_loads_as_a_model_and_names_its_parts(two_models, tmp_path):
    first, second = two_models
    out = write_soup([first, second], tmp_path / "soup", [0.5, 0.5])
    encoder = load_encoder(f"hystar-mini:{out}")
    with torch.no_grad():
        vector = encoder.encode_image(torch.rand(1, 3, 224, 224))
    assert vector.shape == (1, encoder.embed_dim) and torch.isfinite(vector).all()
    parts = json.loads((out / "training.json").read_text())["soup"]
    assert [p["model"] for p in parts] == [str(first), str(second)] and [p["weight"] for p in parts] == [0.5, 0.5]


def test_models_of_different_configs_are_refused(two_models, tmp_path):
    first, second = two_models
    cfg = MiniConfig.from_json(second / "config.json")
    MiniConfig(**{**cfg.__dict__, "embed_dim": cfg.embed_dim * 2}).to_json(second / "config.json")
    with pytest.raises(ValueError, match="configs differ"):
        soup_weights([first, second])
    with pytest.raises(ValueError, match="one non-negative weight a model"):
        soup_weights([first, first], [1.0])


def test_the_command_refuses_to_write_over_the_shipped_model(two_models, capsys):
    first, second = two_models
    assert cli.main(["soup", str(first), str(second), "--out", "assets/hystar-mini"]) == 2
    assert "refusing to write under assets/" in capsys.readouterr().err
