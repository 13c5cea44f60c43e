"""Specification of Quick, Draw! doodles as data: splits by key_id, unseen classes kept out of training, the one
canvas renderer, and the doodle protocol of `hystar eval --data quickdraw`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_image

from hystar.cli import main
from hystar.data import load_dataset, split_of
from hystar.doodles import DoodleCanvas, bitmap_image, draw_strokes, load_doodles, view_seed
from hystar.features import View, _view_id
from hystar.sketch import ink_box, ink_map, stroke_width
from hystar.train.doodle_set import DoodleBatches, DoodleConfig, DoodleSet

SKETCHY_CLASSES = [f"class_{k:02d}" for k in range(24)]


def _keys_in(split: str, count: int, start: int) -> list[str]:
    keys, n = [], start
    while len(keys) < count:
        n += 1
        if split_of(str(n)) == split:
            keys.append(str(n))
    return keys


def _square(offset: int) -> list[list[int]]:
    return [[10 + offset, 200, 200, 10 + offset, 10 + offset], [10, 10, 200, 200, 10]]


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    """A tiny $HYSTAR_DATA: Sketchy (24 classes, one photo each) and Quick, Draw! (three categories depicting a
    Sketchy class, one that does not; test and train doodles of each; a bitmap file)."""
    root = tmp_path / "data"
    sketchy = root / "sketchy"
    (sketchy / "photo").mkdir(parents=True)
    with open(sketchy / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "style", "class", "instance_id", "role", "width", "height", "bytes"])
        for k, label in enumerate(SKETCHY_CLASSES):
            random_image(k).save(sketchy / "photo" / f"{label}.jpg")
            writer.writerow([f"photo/{label}.jpg", "photo", label, f"{label}-p", "gallery", 40, 32, 0])
    monkeypatch.setenv("HYSTAR_DATA", str(root))
    unseen = sorted(load_dataset("sketchy").unseen_classes)
    seen = [c for c in SKETCHY_CLASSES if c not in unseen]
    quickdraw = root / "quickdraw"
    (quickdraw / "strokes").mkdir(parents=True)
    (quickdraw / "bitmaps").mkdir()
    categories = [("seen one", seen[0]), ("seen two", seen[1]), ("hidden", unseen[0]), ("no photos", "")]
    with open(quickdraw / "categories.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["category", "strokes", "bitmaps", "sketchy_class"])
        for n, (category, sketchy_class) in enumerate(categories):
            keys = _keys_in("test", 3, 1000 * n) + _keys_in("train", 3, 1000 * n + 500)
            lines = [json.dumps({"word": category, "key_id": key, "countrycode": "XX", "recognized": True,
                                 "drawing": [_square(k), [[50, 150], [100, 100 + 10 * n]]]})
                     for k, key in enumerate(keys)]
            (quickdraw / "strokes" / f"{category}.ndjson").write_text("\n".join(lines) + "\n")
            bitmaps = 5 if n == 0 else 0
            if bitmaps:
                np.save(quickdraw / "bitmaps" / f"{category}.npy", np.zeros((bitmaps, 28, 28), np.uint8))
            writer.writerow([category, len(keys), bitmaps, sketchy_class])
    return root


def test_doodles_split_by_key_id_and_categories_depicting_unseen_classes_stay_in_test(data_root):
    doodles = load_doodles(bitmaps_per_category=5)
    strokes = [d for d in doodles if d.style == "doodle"]
    assert len(strokes) == 24 and sum(d.style == "bitmap" for d in doodles) == 5
    for doodle in strokes:
        if doodle.category == "hidden":
            assert doodle.unseen and doodle.split == "test"
        else:
            assert not doodle.unseen and doodle.split == split_of(doodle.record)
    assert {d.label for d in strokes if d.category == "no photos"} == {""}
    assert load_doodles(bitmaps_per_category=5) == doodles  # deterministic
    assert len({d.key for d in doodles}) == len(doodles)


def test_each_doodle_of_a_file_is_its_own_view_in_the_feature_cache(data_root):
    doodles = [d for d in load_doodles() if d.category == "seen one"]
    views = [View(d, "doodle+sketchnorm") for d in doodles]
    assert len({v.key for v in views}) == len({_view_id(v) for v in views}) == len(doodles)
    first = np.asarray(views[0].load())
    assert first.shape == (224, 224, 3) and first.min() < 64 and np.asarray(views[0].load()).tolist() == first.tolist()


def test_strokes_are_drawn_as_a_mouse_draws_them_on_the_canvas():
    strokes = [np.array([[0, 0], [255, 0], [255, 120]], np.float32), np.array([[10, 60], [60, 60]], np.float32)]
    cfg = DoodleCanvas(fill=(0.8, 0.8), brush=(9.0, 9.0), jitter=0.0)
    image = draw_strokes(strokes, view_seed("a"), cfg)
    assert image.size == (512, 512)
    ink = ink_map(image)
    top, left, bottom, right = ink_box(ink)
    assert (right - left) == pytest.approx(0.8 * 512, abs=14)       # the longer side fills `fill` of the canvas
    assert stroke_width(ink) == pytest.approx(9, abs=2.5)            # the brush
    again = draw_strokes(strokes, view_seed("a"), cfg)
    elsewhere = draw_strokes(strokes, view_seed("b"), cfg)
    assert np.array_equal(np.asarray(image), np.asarray(again))
    assert not np.array_equal(np.asarray(image), np.asarray(elsewhere))  # placed anywhere on the canvas


def test_training_augmentation_drops_or_shortens_strokes_but_keeps_the_longest():
    longest = np.stack([np.linspace(0, 255, 40), np.full(40, 128.0)], 1).astype(np.float32)
    dots = [np.array([[10 * k, 10], [10 * k + 5, 20]], np.float32) for k in range(20)]
    cfg = DoodleCanvas(fill=(0.9, 0.9), brush=(6.0, 6.0), jitter=0.0, drop_stroke=0.5, shorten_stroke=1.0)
    plain = ink_map(draw_strokes([longest, *dots], view_seed("k"), DoodleCanvas(fill=(0.9, 0.9), jitter=0.0)))
    augmented = ink_map(draw_strokes([longest, *dots], view_seed("k"), cfg))
    assert 0.2 * plain.sum() < augmented.sum() < 0.9 * plain.sum()
    assert np.asarray(draw_strokes([], view_seed("k"))).min() == 255  # nothing drawn: a blank canvas


def test_bitmaps_are_enlarged_as_they_are_dark_ink_on_white():
    bitmap = np.zeros((28, 28), np.uint8)
    bitmap[10:18, 4:24] = 255
    image = np.asarray(bitmap_image(bitmap).convert("L"))
    assert image.shape == (224, 224) and image[0, 0] == 255 and image[112, 112] == 0


def test_eval_doodle_protocol_finds_photos_by_class_and_names_doodles_among_every_category(data_root, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.setenv("HYSTAR_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "doodles"
    assert main(["eval", "--data", "quickdraw", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    task = report["retrieval"]["base"]["quickdraw doodle on canvas→photo (category)"]
    assert set(report["retrieval"]["base"]) == {"quickdraw doodle on canvas→photo (category)"}
    # test doodles with photos to find: 3 of each seen category, all 6 of the hidden one
    assert task["queries"] == 12 and task["gallery"] == len(SKETCHY_CLASSES)
    assert {g: m["queries"] for g, m in task["groups"].items()} == {"seen classes": 6, "unseen classes": 6}
    words = report["doodle_text"]["base"]
    assert words["categories"] == 4 and words["seen_doodles"] == 9 and words["unseen_doodles"] == 6
    assert 0 <= words["seen_top1"] <= words["seen_top5"] == 100.0  # 4 categories: every doodle in the top 5
    assert "Doodle -> text zero-shot" in out.with_suffix(".md").read_text()


def test_each_doodle_batch_pairs_its_doodles_that_depict_a_class_with_a_photo_of_that_class():
    photo_class = torch.tensor([-1, 3, 3, 5, -1, 7, 5, 3])  # class 7 has no photo: never a pair
    doodles = DoodleSet(torch.zeros(8, 1, 1, 1), torch.arange(8), photo_class, [str(k) for k in range(8)],
                        torch.zeros(8, 4))
    photo_label = torch.tensor([3, 5, 5, 9, 3])
    batches = DoodleBatches(doodles, photo_label, DoodleConfig(batch=6, depicting_share=0.5))
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        rows, photos = batches.sample(generator)
        assert len(rows) == 6 and len(photos) == 3
        depicted = photo_class[rows[:3]]
        assert (photo_label[photos] == depicted).all() and set(depicted.tolist()) <= {3, 5}
