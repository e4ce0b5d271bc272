"""The layout as a test: which part of archbench may import which (docs/layout.md). `python tests/test_layout.py`
prints the import graph between the parts and the lines of code in each.

Parts: models/ and tasks/ (no harness, except the task cache's one declaration in harness/record/keys.py),
harness/record/ (the result record: imports neither half), harness/run/ (`archbench`) and harness/report/
(`archbench-board`), which never import each other but for the CROSSINGS named below (the race sweeper runs jobs and
decides on the board). Every import counts, also one inside a function. No two modules import each other, directly
or through others.
"""

import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = (
    "harness.record",
    "harness.run",
    "harness.report",
    "harness",
    "models",
    "tasks",
    "conf",
    "hydra_plugins.archbench_race",
)
# (other hydra_plugins.* are Hydra's plugin packages, e.g. the Optuna sweeper: third-party code)
ALLOWED = {  # part -> the parts it may import
    "models": {"models"},
    "tasks": {"tasks", "harness.record.keys"},  # the data cache's key leaves out what harness/record/keys.py says
    "harness.record": {"harness.record", "harness"},
    "harness.run": {"harness.run", "harness.record", "harness", "models", "tasks"},
    "harness.report": {"harness.report", "harness.record", "harness", "tasks"},
    "harness": {"harness", "tasks"},  # harness/__init__.py (resolvers) and grammar.py
    "hydra_plugins.archbench_race": {"harness.run"},
}
CROSSINGS = {  # module -> the parts beyond its own part's walls it may import, and why
    "harness.run.race": {"harness.report"},  # the race sweeper runs jobs and decides on the board's cells
}
CLIS = {
    "harness/run/cli.py",
    "harness/run/evaluate.py",  # archbench-eval
    "harness/run/prepare.py",  # archbench-prepare
    "harness/report/cli.py",
    "harness/report/reproduce/cli.py",
}


def modules() -> dict[str, Path]:
    out = {}
    for top in ("harness", "models", "tasks", "hydra_plugins"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            out[".".join(p for p in rel.parts if p != "__init__")] = path
    return out


def part(module: str) -> str | None:
    return next((p for p in PARTS if module == p or module.startswith(p + ".")), None)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in it (`from a import b` counts as a.b when a.b is a module)."""
    known, out = modules(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in known else node.module)
    return out


def graph(crossings: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    """part -> the parts its modules import (harness.record.keys named on its own: tasks may import it alone), leaving
    out the `crossings` a module is allowed (module -> parts)."""
    edges = defaultdict(set)
    for name, path in modules().items():
        for target in imports(path):
            if part(target) is None or part(target) in (crossings or {}).get(name, ()):
                continue
            edges[part(name)].add(target if target == "harness.record.keys" and part(name) == "tasks" else part(target))
    return edges


def test_every_part_imports_only_what_it_may():
    bad = {p: sorted(targets - ALLOWED[p]) for p, targets in graph(CROSSINGS).items() if targets - ALLOWED[p]}
    assert bad == {}, f"imports across the layout's walls: {bad} (allowed: {ALLOWED})"


def test_the_walls_are_real():
    """The check above sees an import inside a function, and names what run may not import."""
    (scratch := ROOT / "harness" / "run" / "_scratch_layout_check.py").write_text(
        "def f():\n    from harness.report import board\n"
    )
    try:
        assert "harness.report" in graph()["harness.run"]
    finally:
        scratch.unlink()


@pytest.mark.parametrize("name", sorted(n for n, p in modules().items() if p.relative_to(ROOT).as_posix() not in CLIS))
def test_library_code_raises_and_only_the_clis_exit(name):
    path = modules()[name]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "exit":
            assert not (isinstance(node.func.value, ast.Name) and node.func.value.id == "sys"), f"{path}: sys.exit"
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            assert not (isinstance(exc, ast.Name) and exc.id == "SystemExit"), f"{path}:{node.lineno}: SystemExit"


def test_nothing_imports_hydra_internals():
    """Hydra's public API (override parser, callbacks, plugins) covers what archbench needs (harness/grammar.py)."""
    assert [n for n, p in modules().items() if any(i.startswith("hydra._internal") for i in imports(p))] == []


def circles() -> list[list[str]]:
    """The import circles between modules (strongly connected components of the module import graph, Tarjan)."""
    known = modules()
    edges = {m: sorted(i for i in imports(p) if i in known and i != m) for m, p in known.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v) :]
            del stack[stack.index(v) :]
            if len(component) > 1:
                out.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return sorted(out)


def test_no_import_circles():
    """A module never imports, through others, a module that imports it: each can be read after what it imports."""
    assert circles() == []


def test_circles_are_seen():
    """Two modules that import each other (one inside a function) are a circle."""
    a, b = (ROOT / "harness" / "report" / f"_scratch_circle_{x}.py" for x in "ab")
    a.write_text("from harness.report import _scratch_circle_b\n")
    b.write_text("def f():\n    from harness.report import _scratch_circle_a\n")
    try:
        assert ["harness.report._scratch_circle_a", "harness.report._scratch_circle_b"] in circles()
    finally:
        a.unlink()
        b.unlink()


def lines_per_part() -> dict[str, int]:
    counts = defaultdict(int)
    for name, path in modules().items():
        counts[part(name)] += len(path.read_text().splitlines())
    return dict(counts)


def test_docs_layout_names_every_module_of_the_harness_and_no_other():
    """docs/layout.md's map of harness/record, run and report is tested against the tree: a module added, renamed or
    removed fails here until the map says so."""
    text = (ROOT / "docs" / "layout.md").read_text()
    block = text[text.index("  record/") : text.index("tests/      ")]
    parts = re.split(r"\n  (record|run|report)/", "\n" + block)[1:]
    for name, body in zip(parts[::2], parts[1::2], strict=True):
        named = set(re.findall(r"\b([a-z_]+)\.py\b", body))
        on_disk = {p.stem for p in (ROOT / "harness" / name).glob("*.py") if p.stem != "__init__"}
        assert named == on_disk, (
            f"docs/layout.md, {name}/: named but missing {named - on_disk}, missing {on_disk - named}"
        )


if __name__ == "__main__":
    print("import graph (part -> parts it imports):")
    for p, targets in sorted(graph().items()):
        print(f"  {p:28} -> {', '.join(sorted(targets - {p})) or '(nothing outside itself)'}")
    print("import circles between modules:", circles() or "none")
    print("lines per part:", ", ".join(f"{p} {n:,}" for p, n in sorted(lines_per_part().items())))
    sys.exit(0)
