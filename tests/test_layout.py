"""The package layout: serving code never imports training or evaluation code, and hystar/ has no import cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVING = ["app", "hystar.service", "hystar.ui", "hystar.index", "hystar.online", "hystar.gallery", "hystar.views"]
OFF_LIMITS = ("hystar.train", "hystar.eval")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {module_name(p): p for p in (ROOT / "hystar").rglob("*.py")}
    found["app"] = ROOT / "app.py"
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The hystar modules `name` imports (at any depth of its code), with the packages that importing them runs."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets.add(base)
            targets |= {f"{base}.{alias.name}" for alias in node.names}
    edges = set()
    for target in targets & known:
        parts = target.split(".")
        edges |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    own = {".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")) + 1)}
    return (edges & known) - own


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_serving_code_imports_no_training_or_evaluation_code():
    g = graph()
    for module in SERVING:
        assert not sorted(m for m in reachable(g, module) if m.startswith(OFF_LIMITS)), module


def test_starting_the_service_loads_no_training_or_evaluation_module():
    code = ("import sys, hystar.service, hystar.ui; "
            f"print(sorted(m for m in sys.modules if m.startswith({OFF_LIMITS!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_hystar_has_no_import_cycle():
    g = {name: edges for name, edges in graph().items() if name != "app"}
    cycles = [(name, other) for name in g for other in reachable(g, name) if name in reachable(g, other)]
    assert not cycles, f"import cycles, e.g. {cycles[0][0]} <-> {cycles[0][1]}"
