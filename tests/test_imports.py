"""The import graph runs one way: common <- align, common <- eval, both <- pipeline <- the entry points.

Parsed with ast over every module of the repo's packages (function-level imports included), so a lazy import counts
as much as one at the top. What may reach what:

- ``common`` reaches nothing outside itself;
- ``align`` (training) reaches neither ``eval`` nor ``pipeline``; ``eval`` (evaluation) reaches neither ``align`` nor
  ``pipeline``: through any chain of imports, through other packages (e.g. miniature/) included;
- the entry points (``align/run.py``, ``eval/run.py``: scripts Hydra runs) may import ``pipeline``; no module
  imports an entry point.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "align", "eval", "pipeline", "miniature", "toy", "analysis", "bench")
ENTRY_POINTS = {"align.run", "eval.run"}
# May not be reached from the key's modules (entry points aside).
FORBIDDEN = {
    "common": ("align", "eval", "pipeline", "miniature", "toy", "analysis", "bench"),
    "align": ("eval", "pipeline"),
    "eval": ("align", "pipeline"),
}
# Edges allowed for now, each to be removed with its next change (empty: none). Each listed must still exist:
# removing one without removing it here fails, so the list can only shrink.
PENDING: set[tuple[str, str]] = set()


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The repo modules ``name`` imports (``from x import y`` counts as ``x.y`` when that is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a module a.b: the deepest known module
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def top(module: str) -> str:
    return module.split(".")[0]


def reachable(edges: dict[str, set[str]], start: str) -> dict[str, list[str]]:
    """Every module reachable from ``start``, with one import chain to it."""
    chains, todo = {start: [start]}, [start]
    while todo:
        current = todo.pop()
        for nxt in sorted(edges.get(current, ())):
            if nxt not in chains and nxt not in ENTRY_POINTS:
                chains[nxt] = [*chains[current], nxt]
                todo.append(nxt)
    return chains


def violations(edges: dict[str, set[str]]) -> list[str]:
    edges = {m: {t for t in ts if (m, t) not in PENDING} for m, ts in edges.items()}
    found = []
    for module, targets in sorted(edges.items()):
        found += [f"{module} imports the entry point {t}" for t in sorted(targets & ENTRY_POINTS)]
        if module in ENTRY_POINTS or top(module) not in FORBIDDEN:
            continue
        for target, chain in sorted(reachable(edges, module).items()):
            if top(target) in FORBIDDEN[top(module)]:
                found.append(" -> ".join(chain))
    return found


def test_imports_run_one_way():
    assert violations(graph()) == []


def test_pending_edges_still_exist():
    edges = graph()
    assert [edge for edge in sorted(PENDING) if edge[1] not in edges.get(edge[0], set())] == []


def test_the_pipeline_and_the_entry_points_are_where_training_meets_evaluation():
    edges = graph()
    assert {"align.run_folder", "eval.harness"} <= {m for m in reachable(edges, "pipeline.run")}
    assert "pipeline.run" in edges["align.run"]


def test_the_check_finds_a_forbidden_edge_and_its_chain():
    """The checker itself: a planted align -> eval edge through another package is named with its chain."""
    edges = {"align.x": {"miniature.y"}, "miniature.y": {"eval.z"}, "eval.z": set(), "common.a": set()}
    assert violations(edges) == ["align.x -> miniature.y -> eval.z"]
    assert violations({"common.a": {"align.b"}, "align.b": set()}) == ["common.a -> align.b"]
    assert violations(
        {"align.worker": {"align.run"}, "align.run": {"pipeline.run"}, "pipeline.run": set()}
    ) == ["align.worker imports the entry point align.run"]
