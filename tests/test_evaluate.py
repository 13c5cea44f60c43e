"""Specification of the evaluation harness: the metrics, the DSR protocol, and `hystar eval --data FOLDER`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hystar.cli import main
from hystar.data import Item, split_of
from hystar.eval.compare import report_paths
from hystar.eval.metrics import metrics_by_group, relevance, retrieval_metrics
from hystar.eval.retrieval import class_groups, dsr_protocol, group_table, headline_metric


def test_recall_and_map_follow_the_ranks_of_the_correct_answers():
    scores = np.array([[0.9, 0.8, 0.1, 0.0],    # correct answers at ranks 2 and 4
                       [0.1, 0.9, 0.5, 0.2]])   # correct answer at rank 1
    relevant = np.array([[False, True, False, True],
                         [False, True, False, False]])
    metrics = retrieval_metrics(scores, relevant, ks=(1, 2))
    assert metrics["R@1"] == 50.0 and metrics["R@2"] == 100.0
    assert metrics["mAP"] == pytest.approx(100 * ((1 / 2 + 2 / 4) / 2 + 1) / 2)
    assert (metrics["queries"], metrics["gallery"]) == (2, 4)


def test_relevance_is_equality_of_keys():
    np.testing.assert_array_equal(relevance(np.array(["a", "b"]), np.array(["b", "a", "a"])),
                                  [[False, True, True], [True, False, False]])


def test_dsr_protocol_ranks_each_query_within_its_batch_of_24():
    rng = np.random.default_rng(0)
    photos = rng.standard_normal((48, 64))
    perfect = dsr_protocol(photos, photos)
    assert perfect["DSR R@1"] == 100.0 and perfect["DSR batches"] == 2
    shuffled = dsr_protocol(photos[::-1].copy(), photos)
    assert shuffled["DSR R@1"] < 20.0
    assert dsr_protocol(photos[:23], photos[:23]) == {}  # fewer than one batch: no DSR figures


def sketch(label: str, unseen: bool) -> Item:
    return Item("sketchy", Path(f"{label}.png"), "sketch", label, "", "query", "test", unseen)


def test_queries_of_seen_and_unseen_classes_are_measured_apart_and_add_up():
    queries = [sketch("cat", False), sketch("dog", False), sketch("okapi", True)]
    groups = class_groups(queries)
    assert {name: mask.tolist() for name, mask in groups.items()} == {
        "seen classes": [True, True, False], "unseen classes": [False, False, True]}
    scores = np.array([[0.9, 0.1, 0.2], [0.8, 0.7, 0.1], [0.1, 0.9, 0.5]])  # dog's and okapi's photo come second
    relevant = relevance(np.array(["cat", "dog", "okapi"]), np.array(["cat", "dog", "okapi"]))
    apart = metrics_by_group(scores, relevant, groups)
    assert (apart["seen classes"]["R@1"], apart["unseen classes"]["R@1"]) == (50.0, 0.0)
    assert apart["seen classes"]["queries"] + apart["unseen classes"]["queries"] == len(queries)
    assert retrieval_metrics(scores, relevant)["R@1"] == pytest.approx(100 / 3)


def test_a_task_of_seen_classes_only_has_no_groups_and_no_group_table():
    assert class_groups([sketch("cat", False), sketch("dog", False)]) == {}
    assert group_table({"base": {"pacs sketch→photo (category)": {"mAP": 50.0}}}) == ""


def test_the_group_table_puts_each_models_seen_and_unseen_figures_side_by_side():
    groups = {"seen classes": {"mAP": 33.04, "queries": 2}, "unseen classes": {"mAP": 11.0, "queries": 1}}
    table = group_table({"base": {"sketchy sketch→photo (category)": {"groups": groups}},
                         "hystar": {"sketchy sketch→photo (category)": {"groups": groups}}})
    assert "| sketchy sketch→photo (category) | mAP | 2 | 1 | 33.0 | 11.0 | 33.0 | 11.0 |" in table


def test_headline_metric_is_map_for_categories_r5_for_text_r1_otherwise():
    assert headline_metric("pacs sketch→photo (category)") == "mAP"
    assert headline_metric("coco_mini text→photo (instance)") == "R@5"
    assert headline_metric("sketchy sketch→photo (instance)") == "R@1"


def instance_ids(split: str, count: int) -> list[str]:
    ids, k = [], 0
    while len(ids) < count:
        k += 1
        if split_of(f"obj{k}") == split:
            ids.append(f"obj{k}")
    return ids


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder dataset: photos of coloured shapes, each with a 'sketch' (its edges in grey), paired by instance."""
    root = tmp_path_factory.mktemp("mydata")
    rows = []
    rng = np.random.default_rng(0)
    ids = instance_ids("train", 4) + instance_ids("val", 3) + instance_ids("test", 4)
    for k, instance in enumerate(ids):
        photo = np.zeros((96, 96, 3), np.uint8)
        photo[:] = rng.integers(0, 255, 3)
        y, x = rng.integers(10, 50, 2)
        photo[y:y + 35, x:x + 35] = rng.integers(0, 255, 3)
        Image.fromarray(photo).save(root / f"{instance}.jpg")
        sketch = np.full((96, 96), 255, np.uint8)
        sketch[y, x:x + 35] = sketch[y + 34, x:x + 35] = sketch[y:y + 35, x] = sketch[y:y + 35, x + 34] = 0
        Image.fromarray(sketch).save(root / f"{instance}-1.png")
        label = ("square", "box")[k % 2]
        rows.append({"path": f"{instance}.jpg", "style": "photo", "class": label, "instance_id": instance,
                     "role": "gallery"})
        rows.append({"path": f"{instance}-1.png", "style": "sketch", "class": label, "instance_id": instance,
                     "role": "query"})
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.mark.parametrize("split, queries", [("test", 4), ("val", 3)])
def test_eval_on_any_folder_scores_each_query_style_against_the_full_gallery(folder, split, queries, tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("HYSTAR_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "report"
    assert main(["eval", "--data", str(folder), "--split", split, "--out", str(out)]) == 0
    assert torch.is_grad_enabled()  # in-process callers (the tests, a notebook) keep their autograd state
    report = json.loads(out.with_suffix(".json").read_text())
    tasks = report["retrieval"]["base"]
    name = folder.name
    assert set(tasks) == {f"{name} sketch→photo (instance)", f"{name} sketch→photo (category)",
                          f"{name} mosaic→photo (instance)", f"{name} art→photo (instance)",
                          f"{name} pencil→photo (instance)"}
    for metrics in tasks.values():
        assert metrics["queries"] == queries and metrics["gallery"] == 11
        assert all(0 <= metrics[m] <= 100 for m in ("R@1", "R@5", "R@10", "mAP"))
        assert metrics["R@1"] <= metrics["R@5"] <= metrics["R@10"]
    markdown = out.with_suffix(".md").read_text()
    assert f"Queries of the {split} split, full gallery" in markdown
    assert f"| {name} sketch→photo (instance) | R@1 |" in markdown


def test_eval_canvas_protocol_reports_each_sketch_task_drawn_on_the_canvas_beside_the_original(folder, tmp_path,
                                                                                           monkeypatch):
    monkeypatch.setenv("HYSTAR_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "canvas-v2.4"  # a dot in the name: the report is canvas-v2.4.json, not canvas-v2.json
    assert main(["eval", "--data", str(folder), "--styles", "sketch", "--canvas", "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.glob("canvas*")) == ["canvas-v2.4.json", "canvas-v2.4.md"]
    tasks = json.loads((tmp_path / "canvas-v2.4.json").read_text())["retrieval"]["base"]
    name = folder.name
    assert set(tasks) == {f"{name} sketch→photo (instance)", f"{name} sketch→photo (category)",
                          f"{name} sketch on canvas→photo (instance)", f"{name} sketch on canvas→photo (category)"}
    assert all(metrics["queries"] == 4 for metrics in tasks.values())
    assert "Queries prepared as the app does" in (tmp_path / "canvas-v2.4.md").read_text()


def test_eval_expand_adds_each_model_with_query_expansion_whose_best_match_stays_first(folder, tmp_path,
                                                                                      monkeypatch):
    monkeypatch.setenv("HYSTAR_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "expanded"
    assert main(["eval", "--data", str(folder), "--styles", "sketch", "--expand", "3:1:3", "5:1.5:3:10:1",
                 "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["models"] == ["base", "base+qe(3:1:3)", "base+qe"]  # 5:1.5:3:10:1 is the app's setting
    assert main(["eval", "--data", str(folder), "--styles", "sketch", "--expand", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["models"] == ["base", "base+qe"]
    plain, expanded = report["retrieval"]["base"], report["retrieval"]["base+qe"]
    assert set(plain) == set(expanded)
    for task, metrics in plain.items():
        assert expanded[task]["R@1"] == metrics["R@1"] and expanded[task]["queries"] == metrics["queries"]
    assert "base+qe R@1" in out.with_suffix(".md").read_text()


def test_models_that_only_rescore_reuse_their_models_embeddings(folder, tmp_path, monkeypatch):
    import hystar.eval.retrieval as retrieval

    monkeypatch.setenv("HYSTAR_CACHE", str(tmp_path / "cache"))
    calls = []
    embed = retrieval.embed_features
    monkeypatch.setattr(retrieval, "embed_features", lambda *a, **k: calls.append(1) or embed(*a, **k))
    assert main(["eval", "--data", str(folder), "--styles", "sketch", "--out", str(tmp_path / "plain")]) == 0
    plain = len(calls)
    assert main(["eval", "--data", str(folder), "--styles", "sketch", "--expand", "3:1:3", "5:1.5:3",
                 "--out", str(tmp_path / "expanded")]) == 0
    assert len(calls) - plain == plain > 0  # two more models, not one embedding more


def test_eval_expand_refuses_a_malformed_setting(folder, capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--data", str(folder), "--expand", "5:1.5"])
    assert "expected NEIGHBORS:WEIGHT:POWER" in capsys.readouterr().err


def test_a_report_is_written_beside_its_out_name_whatever_dots_or_ending_it_has(tmp_path):
    for out in ("results-v2.4", "results-v2.4.json", "results-v2.4.md"):
        assert report_paths(tmp_path / out) == (tmp_path / "results-v2.4.json", tmp_path / "results-v2.4.md")


def test_eval_of_a_folder_without_a_manifest_says_so(tmp_path, capsys):
    assert main(["eval", "--data", str(tmp_path)]) == 2
    assert "missing manifest.csv" in capsys.readouterr().err


def test_guess_metrics_count_the_true_class_first_and_among_three():
    from hystar.eval.guesses import guess_metrics

    probabilities = np.array([[0.6, 0.3, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.4, 0.1]])
    metrics = guess_metrics(probabilities, np.array([0, 0, -1]))  # first right; fourth of four; not in the names
    assert metrics["queries"] == 3
    assert metrics["top1"] == pytest.approx(100 / 3) and metrics["top3"] == pytest.approx(100 / 3)
    assert metrics["confidence"] == pytest.approx(100 * (0.6 + 0.4 + 0.4) / 3)
    assert metrics["nll"] == pytest.approx(-(np.log(0.6) + np.log(0.1)) / 2)


def test_eval_guesses_reports_first_and_three_guess_accuracy_of_the_sketches(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("HYSTAR_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "guesses"
    assert main(["eval", "--guesses", "--data", str(folder), "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())[folder.name]
    classes, shipped = report["base"]["classes"], report["base"]["shipped"]
    assert classes["queries"] == 4 and classes["vocabulary"] == 2 and classes["covered"] == 2  # square, box
    assert 0 <= classes["top1"] <= classes["top3"] <= 100 and classes["top3"] == 100  # three guesses of two names
    assert shipped["vocabulary"] > 345 and shipped["covered"] == 1  # "square" is a Quick, Draw! category
    assert "first guess right" in out.with_suffix(".md").read_text()
