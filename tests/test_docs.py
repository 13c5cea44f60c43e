"""The README is for users and stays short; its figures are the eval run's own; every relative link of the README,
docs/ and the model cards leads somewhere; assets/ stays small."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "assets").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def test_the_readme_is_short_and_keeps_the_spaces_front_matter():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250
    front = lines[:lines.index("---", 1) + 1]
    assert front[0] == "---" and "sdk: gradio" in front and "app_file: app.py" in front


def test_the_readme_test_command_is_the_one_ci_runs():
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == "python -m pytest -q"
    assert "python -m pytest -q" in README.read_text()


def test_the_readme_results_are_the_eval_runs_own_figures():
    """Each row of the README's results table whose first cell names a task of assets/eval/results.md carries that
    task's figures (the change in brackets left out) for base, hystar, base+qe, hystar+qe and, where the run has it,
    hystar+qe+names (the app's default search)."""
    results = (ROOT / "assets" / "eval" / "results.md").read_text()
    header = next(line for line in results.splitlines() if line.startswith("| task | metric |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    rows = {}
    for line in results.splitlines()[results.splitlines().index(header) + 2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(columns):
            break
        rows[cells[0]] = {name: cell.split(" (")[0] for name, cell in zip(columns, cells, strict=True)}
    readme = README.read_text()
    assert results.splitlines()[0].removeprefix("Command: ").strip("`") in readme  # the command that printed them
    shown = 0
    for line in readme.splitlines():
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] in rows:
            row = rows[cells[0]]
            models = ("metric", "base", "hystar", "base+qe", "hystar+qe", "hystar+qe+names")
            assert cells[1:] == [row[k] for k in models if k in row], cells[0]
            shown += 1
    assert shown >= 8


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_somewhere(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.relative_to(ROOT)}: {target} leads nowhere"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{page.relative_to(ROOT)}: no heading #{anchor} in {path or 'it'}"


def test_the_screenshot_is_small():
    shot = ROOT / "assets" / "screenshot.png"
    assert shot.is_file() and shot.stat().st_size <= 300_000
    assert "](assets/screenshot.png)" in README.read_text()


def test_assets_stay_under_40_mb():
    try:
        listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "assets"], capture_output=True, text=True,
                                check=True, timeout=60).stdout.split()
        files = [ROOT / name for name in listed if (ROOT / name).is_file()]
    except (OSError, subprocess.SubprocessError):  # no git: what is there, less weights restored by hand
        files = [p for p in (ROOT / "assets").rglob("*") if p.is_file() and p.parent.name not in
                 ("hystar-mini-v1", "hystar-mini-v2.0")]
    assert sum(p.stat().st_size for p in files) <= 40 * 2**20
