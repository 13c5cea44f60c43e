"""Specification of `bench/goals.py --headroom`: what the trained classes alone would need for a goal to be met,
the never-trained classes staying where they are."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

GOALS_PY = Path(__file__).resolve().parents[1] / "bench" / "goals.py"


@pytest.fixture(scope="module")
def goals():
    spec = importlib.util.spec_from_file_location("bench_goals", GOALS_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def doodle_run(seen: float, unseen: float, n_seen: int, n_unseen: int) -> dict:
    whole = (seen * n_seen + unseen * n_unseen) / (n_seen + n_unseen)
    task = {"R@1": whole, "mAP": whole, "queries": n_seen + n_unseen,
            "groups": {"seen classes": {"R@1": seen, "mAP": seen, "queries": n_seen},
                       "unseen classes": {"R@1": unseen, "mAP": unseen, "queries": n_unseen}}}
    return {"retrieval": {"hystar+qe+names": {"quickdraw doodle on canvas→photo (category)": task}},
            "doodle_text": {"base": {"all_top1": whole, "seen_top1": seen, "seen_doodles": n_seen,
                                     "unseen_top1": unseen, "unseen_doodles": n_unseen}}}


def test_the_trained_classes_need_what_brings_the_query_weighted_whole_to_the_goal(goals):
    need = goals.trained_classes_need(50.0, (55.0, 300), (10.0, 100))
    assert need == pytest.approx((50.0 * 400 - 10.0 * 100) / 300)
    assert (need * 300 + 10.0 * 100) / 400 == pytest.approx(50.0)


def test_the_headroom_table_lists_only_goals_whose_queries_split_by_trained_classes(goals):
    rows = goals.headroom_table(doodle_run(seen=60.0, unseen=20.0, n_seen=3, n_unseen=1))[2:]
    assert [row.split(" | ")[0].lstrip("| ") for row in rows] == [
        "Quick, Draw! doodle on canvas→photo (category)", "Quick, Draw! doodle on canvas→photo, right class first",
        "Quick, Draw! doodle→text, 345 categories (base)"]
    right_class_first = rows[1].split(" | ")
    assert right_class_first[2:5] == ["60.0 (3)", "20.0 (1)", "50.0"]
    assert right_class_first[-1].rstrip(" |") == f"{(50.0 * 4 - 20.0) / 3:.1f}"
