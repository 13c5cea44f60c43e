"""The goals (issues 12 and 27) against one `hystar eval` run: the shipped search's figures (as the app searches:
the adapter with query expansion and the name prior, "hystar+qe+names", else the newest of "hystar+qe" and the adapter
alone that the run has; the base for zero-shot),
the adapter alone beside them, optionally beside earlier runs of the same command. Where issue 27 asks for no
regression beyond 1 point, the goal is v2.4's shipped figure less 1:

    python bench/goals.py assets/eval/results.json --previous v2.0=RUN.json
    (v2.0's run: `git show 2219499:assets/eval/results.json > RUN.json`)

--headroom adds, for each goal whose queries split into trained and never-trained classes, the figure the trained
classes alone would need for the goal to be met with the never-trained ones where they are now:

    python bench/goals.py assets/eval/results.json --headroom
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# (label, task, metric, goal); the adapted side ("hystar") unless the metric is zero-shot
GOALS = [
    ("Quick, Draw! doodle on canvas→photo (category)", "quickdraw doodle on canvas→photo (category)", "mAP", 40.0),
    ("Quick, Draw! doodle on canvas→photo, right class first", "quickdraw doodle on canvas→photo (category)", "R@1",
     50.0),
    ("Quick, Draw! doodle→text, 345 categories (base)", "all_top1", "doodle-text", 40.0),
    ("Sketchy sketch→photo (category)", "sketchy sketch→photo (category)", "mAP", 40.0),
    ("Sketchy sketch on canvas→photo (category)", "sketchy sketch on canvas→photo (category)", "mAP", 35.0),
    ("Sketchy sketch→photo (instance)", "sketchy sketch→photo (instance)", "R@1", 10.0),
    ("PACS mosaic→photo (instance)", "pacs mosaic→photo (instance)", "R@1", 87.2),
    ("DSR protocol, PACS mosaic (24-way)", "pacs mosaic→photo (instance)", "DSR R@1", 86.0),
    ("DSR protocol, Sketchy sketch (24-way)", "sketchy sketch→photo (instance)", "DSR R@1", 80.0),
    ("PACS art_painting→photo (category)", "pacs art_painting→photo (category)", "mAP", 89.6),
    ("PACS cartoon→photo (category)", "pacs cartoon→photo (category)", "mAP", 89.6),
    ("PACS sketch→photo (category)", "pacs sketch→photo (category)", "mAP", 89.2),
    ("COCO-mini text→photo", "coco_mini text→photo (instance)", "R@5", 31.5),
    ("zero-shot, PACS photos (7-way; base)", "pacs", "zero-shot", 98.4),
]


SEARCHES, ADAPTER = ("hystar+qe+names", "hystar+qe"), "hystar"


def shipped(run: dict) -> str:
    """The run's model that searches as the app does (or comes nearest)."""
    return next((label for label in SEARCHES if label in run["retrieval"]), ADAPTER)


def figure(run: dict, task: str, metric: str, model: str | None = None) -> float | None:
    """`model`'s figure (default: the shipped search, `shipped`)."""
    if metric == "zero-shot":
        return run.get("zero_shot", {}).get("base", {}).get(task, {}).get("seen_accuracy")
    if metric == "doodle-text":
        return run.get("doodle_text", {}).get("base", {}).get(task)
    model = model or shipped(run)
    return run["retrieval"].get(model, {}).get(task, {}).get(metric)


def class_split(run: dict, task: str, metric: str) -> tuple[tuple[float, int], tuple[float, int]] | None:
    """(figure, queries) on trained classes and on never-trained ones, where the run reports them apart."""
    if metric == "doodle-text":
        scores, key = run.get("doodle_text", {}).get("base", {}), task.removeprefix("all_")
        if f"unseen_{key}" not in scores:
            return None
        return ((scores[f"seen_{key}"], scores["seen_doodles"]), (scores[f"unseen_{key}"], scores["unseen_doodles"]))
    groups = run["retrieval"].get(shipped(run), {}).get(task, {}).get("groups", {})
    if "seen classes" not in groups or metric not in groups["seen classes"]:
        return None
    return tuple((groups[g][metric], groups[g]["queries"]) for g in ("seen classes", "unseen classes"))


def trained_classes_need(goal: float, trained: tuple[float, int], never_trained: tuple[float, int]) -> float:
    """The trained-class figure that makes the query-weighted whole reach `goal`, never-trained classes unchanged."""
    (_, n_trained), (never, n_never) = trained, never_trained
    return (goal * (n_trained + n_never) - never * n_never) / n_trained


def headroom_table(run: dict) -> list[str]:
    lines = ["| goal | metric | trained classes (queries) | never-trained classes (queries) | all | goal | "
             "trained classes would need |", "|---|---|---|---|---|---|---|"]
    for label, task, metric, goal in GOALS:
        split = class_split(run, task, metric)
        if split is None:
            continue
        (trained, n_trained), (never, n_never) = split
        lines.append(f"| {label} | {metric} | {trained:.1f} ({n_trained}) | {never:.1f} ({n_never}) | "
                     f"{figure(run, task, metric):.1f} | ≥ {goal:g} | {trained_classes_need(goal, *split):.1f} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="OUT.json of `hystar eval --adapter hystar=... --zero-shot`")
    parser.add_argument("--previous", action="append", default=[], metavar="LABEL=RUN.json")
    parser.add_argument("--headroom", action="store_true",
                        help="also what the trained classes would need for each goal, never-trained ones unchanged")
    args = parser.parse_args()
    current = json.loads(args.run.read_text())
    previous = [(label, json.loads(Path(path).read_text()))
                for label, path in (item.split("=", 1) for item in args.previous)]
    show = lambda value: "–" if value is None else f"{value:.1f}"
    expanded = shipped(current) != ADAPTER
    searched = "+ query expansion" + (" + name prior" if shipped(current) == SEARCHES[0] else "")
    print("| goal | metric | " + "".join(f"{label} | " for label, _ in previous)
          + (f"adapter alone | now ({searched}) | " if expanded else "now | ") + "goal | met |")
    print("|---|---|" + "---|" * (len(previous) + expanded) + "---|---|---|")
    for label, task, metric, goal in GOALS:
        now = figure(current, task, metric)
        earlier = "".join(f"{show(figure(run, task, metric))} | " for _, run in previous)
        alone = f"{show(figure(current, task, metric, ADAPTER))} | " if expanded else ""
        met = "–" if now is None else "yes" if now >= goal else "no"
        print(f"| {label} | {metric} | {earlier}{alone}**{show(now)}** | ≥ {goal:g} | {met} |")
    if args.headroom:
        print("\n" + "\n".join(headroom_table(current)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
