"""Specification of hystar-mini v2: the stride-32 stages of the trunk are trained, each token also reads the
image's 14x14-pixel colour thumbnail and the class token reads it whole; v2.2 starts as v2.0 (which started from v1's
head), saves and loads through the one factory, keeps BatchNorm statistics fixed, and trains resumably from per-epoch
checkpoints."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from test_foundation import needs_data

from hystar.encoder import load_encoder
from hystar.encoder.mini import FINE_CHANNELS, FINE_STAGE, save_mini, trainable_state
from hystar.paths import MINI_V1_DIR, MINI_V2_0_DIR, REPO_ROOT, WEIGHTS_IN_HISTORY
from hystar.synthetic import synthesize
from hystar.train.mini_v2 import V2TrainConfig, build_mini_v2, train_mini_v2, v2_config


def restore_earlier_mini(folder: Path, into: Path) -> Path:
    """The hystar-mini folder `folder` (v1, v2.0) with its weights: those left the working tree and are taken from
    git history (a full clone, as CI's, has them) into a copy under `into`; skips, saying why, where git cannot give
    them (a shallow clone, no git). A folder whose weights were put back by hand (docs/training.md) is used as is."""
    if (folder / "weights.safetensors").is_file():
        return folder
    commit = WEIGHTS_IN_HISTORY[folder]
    name = f"{folder.relative_to(REPO_ROOT).as_posix()}/weights.safetensors"
    try:
        blob = subprocess.run(["git", "-C", str(REPO_ROOT), "show", f"{commit}:{name}"], capture_output=True,
                              check=True, timeout=300).stdout
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", b"") or str(error).encode()
        pytest.skip(f"{name} is kept in git history only (commit {commit[:7]}) and git could not give it here "
                    f"({detail.decode(errors='replace').strip()[:200]}); a full clone has it")
    copy = into / folder.name
    shutil.copytree(folder, copy)
    (copy / "weights.safetensors").write_bytes(blob)
    return copy


@pytest.fixture(scope="module")
def v1_dir(tmp_path_factory) -> Path:
    """hystar-mini v1 (frozen trunk; where v2.0 training started)."""
    return restore_earlier_mini(MINI_V1_DIR, tmp_path_factory.mktemp("mini-v1"))


@pytest.fixture(scope="module")
def v2_0_dir(tmp_path_factory) -> Path:
    """hystar-mini v2.0 (no thumbnail; where v2.2 training started)."""
    return restore_earlier_mini(MINI_V2_0_DIR, tmp_path_factory.mktemp("mini-v2.0"))


def load_mini(folder: Path) -> object:
    return load_encoder(f"hystar-mini:{folder}")


def pixels(seed: int = 0) -> torch.Tensor:
    return torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def test_v2_starts_as_v2_0_and_caches_the_stride16_map_with_the_colour_thumbnail(v1_dir, v2_0_dir):
    v2_0, v2 = load_mini(v2_0_dir), build_mini_v2(v2_0_dir)
    with torch.no_grad():
        features = v2.visual.trunk(pixels())
        assert features.shape == (3, FINE_CHANNELS + 3, 14, 14)
        thumbnail = torch.nn.functional.interpolate(pixels(), size=14, mode="area")  # each pixel: a 16x16 mean
        torch.testing.assert_close(features[:, FINE_CHANNELS:], thumbnail)
        torch.testing.assert_close(v2.encode_features(features), v2_0.encode_image(pixels()), atol=1e-5, rtol=0)
    assert len({v2.visual.trunk_id, v2_0.visual.trunk_id, load_mini(v1_dir).visual.trunk_id}) == 3  # caches never mix


def test_v2_tokens_read_the_colour_layout_once_trained(v2_0_dir):
    v2 = build_mini_v2(v2_0_dir)
    with torch.no_grad():
        features = v2.visual.trunk(pixels())
        recoloured = features.clone()
        recoloured[:, FINE_CHANNELS:] = recoloured[:, FINE_CHANNELS:].flip(-1)  # same structure, colours moved
        same = v2.encode_features(features), v2.encode_features(recoloured)
        torch.testing.assert_close(*same)  # at the start the thumbnail columns are zero: v2.0 exactly
        v2.visual.thumbnail_proj.weight.normal_(std=0.01)  # the class token's view of the whole thumbnail
        assert not torch.allclose(v2.encode_features(features), v2.encode_features(recoloured), atol=1e-3)
        v2.visual.thumbnail_proj.weight.zero_()
        v2.visual.token_proj.weight[:, -3:].normal_()  # the tokens' view of the 2x2 pixels beneath them
        assert not torch.allclose(v2.encode_features(features), v2.encode_features(recoloured), atol=1e-3)


def test_v2_starts_from_v1_head_when_asked(v1_dir):
    v1, v2 = load_mini(v1_dir), build_mini_v2(v1_dir)
    torch.testing.assert_close(v2.visual.proj, v1.visual.proj)
    torch.testing.assert_close(v2.visual.token_proj.weight[:, :-12], v1.visual.token_proj.weight)


def test_v2_trains_the_stride32_stages_and_head_with_batchnorm_statistics_fixed():
    v2 = build_mini_v2().train()
    trained = {name for name, p in v2.named_parameters() if p.requires_grad}
    assert any(name.startswith(f"visual.effnet.blocks.{FINE_STAGE}.") for name in trained)
    assert not any(name.startswith(("visual.effnet.conv_stem", "visual.effnet.blocks.4.", "text.minilm."))
                   for name in trained)
    batchnorms = [m for m in v2.visual.later_stages.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batchnorms and not any(m.training for m in batchnorms)
    before = batchnorms[0].running_mean.clone()
    v2.visual.forward_features(v2.visual.trunk(pixels()))
    torch.testing.assert_close(batchnorms[0].running_mean, before)
    assert any(k.endswith("running_mean") for k in trainable_state(v2))  # shipped with the weights


def test_v2_saves_and_loads_through_the_one_factory(tmp_path, v1_dir, v2_0_dir):
    v2 = build_mini_v2(v2_0_dir)
    with torch.no_grad():
        v2.visual.later_stages[0][0].conv_pw.weight.mul_(1.5)
    save_mini(v2, tmp_path / "v2", v2_config())
    assert json.loads((tmp_path / "v2" / "config.json").read_text())["trained_from_stage"] == FINE_STAGE
    loaded = load_encoder(f"hystar-mini:{tmp_path / 'v2'}")
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(pixels(1)), v2.eval().encode_image(pixels(1)))
        assert not torch.allclose(loaded.encode_image(pixels(1)), load_mini(v1_dir).encode_image(pixels(1)), atol=1e-3)
        start = build_mini_v2(v2_0_dir).eval()  # the change made before saving came back
        assert not torch.allclose(loaded.encode_image(pixels(1)), start.encode_image(pixels(1)), atol=1e-3)


def test_the_lowres_rendering_is_a_blurry_thumbnail_fixed_by_its_key():
    from PIL import Image

    image = Image.effect_noise((96, 96), 60).convert("RGB")
    a, b = synthesize(image, "lowres", "k1"), synthesize(image, "lowres", "k1")
    assert a.size == image.size and a.tobytes() == b.tobytes()
    assert synthesize(image, "lowres", "k2").tobytes() != a.tobytes()


@needs_data
@pytest.mark.slow
def test_a_short_v2_training_resumes_from_its_last_epoch_and_saves_a_loadable_model(tmp_path, monkeypatch, v2_0_dir):
    monkeypatch.setenv("HYSTAR_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    first = train_mini_v2(V2TrainConfig(epochs=1, limit=6, batch_size=8, category_batch=4), out, start_from=v2_0_dir)
    assert [e["epoch"] for e in first["log"]] == [1] and (out / "epoch-01.pt").is_file()
    second = train_mini_v2(V2TrainConfig(epochs=2, limit=6, batch_size=8, category_batch=4), out, tmp_path / "m",
                           start_from=v2_0_dir)
    assert [e["epoch"] for e in second["log"]] == [1, 2]  # epoch 1 came from its checkpoint, not a rerun
    assert second["log"][0] == first["log"][0]
    model = load_encoder(f"hystar-mini:{tmp_path / 'm'}")
    assert model.visual.split == FINE_STAGE


def test_a_frozen_text_projection_keeps_every_text_embedding_while_the_image_side_trains(tmp_path, monkeypatch,
                                                                                          v2_0_dir):
    monkeypatch.setenv("HYSTAR_CACHE", str(tmp_path / "cache"))
    start = build_mini_v2(v2_0_dir).state_dict()
    train_mini_v2(V2TrainConfig(epochs=1, limit=6, batch_size=8, category_batch=4, lr_text=0.0), tmp_path / "run",
                  tmp_path / "m", start_from=v2_0_dir)
    trained = load_mini(tmp_path / "m").state_dict()
    assert torch.equal(trained["text.proj.weight"], start["text.proj.weight"])
    assert not torch.equal(trained["visual.proj"], start["visual.proj"])


def test_the_effnet_baseline_stays_the_imagenet_trunk_whatever_v2_trained(v1_dir):
    from hystar.eval.retrieval import EffNetPooled

    v1, v2 = load_mini(v1_dir), build_mini_v2(v1_dir)
    with torch.no_grad():
        v2.visual.later_stages[0][0].conv_pw.weight.mul_(1.5)  # as if trained
        torch.testing.assert_close(EffNetPooled(v2).encode_features(v2.visual.trunk(pixels(2))),
                                   EffNetPooled(v1).encode_features(v1.visual.trunk(pixels(2))), atol=1e-5, rtol=0)


def test_batches_hold_runs_of_same_class_photos_each_photo_once():
    from hystar.train.mini_v2 import class_grouped_order

    labels = torch.tensor([k % 5 for k in range(40)] + [-1] * 8)
    rows = torch.arange(48)
    order = class_grouped_order(rows, labels, 4, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == rows.tolist()
    runs = order.view(-1, 4)
    assert all(len(set(labels[run].tolist())) == 1 for run in runs)  # 8 per class: every run is one class
    assert len({tuple(labels[run[:1]].tolist()) for run in runs[:6]}) > 1  # runs of different classes interleave
    plain = class_grouped_order(rows, labels, 1, torch.Generator().manual_seed(0))
    assert sorted(plain.tolist()) == rows.tolist() and not all(
        len(set(labels[run].tolist())) == 1 for run in plain.view(-1, 4))


def test_each_photo_knows_its_renderings_and_among_them_its_real_sketches():
    from hystar.train.mini_v2 import rows_by_photo

    owners = torch.tensor([0, 1, 0, 2, 0, 1])
    drawn = torch.tensor([False, False, True, False, True, False])
    assert rows_by_photo(owners) == {0: [0, 2, 4], 1: [1, 5], 2: [3]}
    assert rows_by_photo(owners, drawn) == {0: [2, 4]}  # photos without sketches are left out of the sketch batch


def test_an_earlier_version_without_its_weights_says_how_to_get_them_back(tmp_path):
    if (MINI_V2_0_DIR / "weights.safetensors").is_file():
        pytest.skip("v2.0's weights were put back by hand")
    with pytest.raises(FileNotFoundError, match=r"git show 4b3caa9:assets/hystar-mini-v2.0/weights.safetensors > "):
        load_encoder(f"hystar-mini:{MINI_V2_0_DIR}")
