"""The code that trains a run, fingerprinted: part of the run's identity, so that a result is reused (skipped as
completed, resumed from a checkpoint, pooled on a board) only if the code that produced it is the same.

The rule (docs/running.md, "Which code a run id covers"):
- the modules a run uses: the module of every class in the built model (backbone, mixers, norms, feed-forwards,
  positions), the task's class, and the trainer (`harness.run.train`); then, transitively, every module of PACKAGES
  (models, tasks, harness.run) that those import. A change to a mixer changes the id of the runs that use it and of
  no other run; a change to the backbone or the trainer changes every run's.
- each module counts by its syntax tree with docstrings removed (`ast.dump`): a comment, a docstring, blank lines or
  formatting change nothing; any change to what the code computes (a sign, a constant, a default) changes the id.
- the fingerprint hashes (module name, tree) pairs, never file paths or git state, so an editable install, a wheel
  and an sdist of the same code give the same fingerprint.
"""

import ast
import hashlib
import importlib.util
import os
import sys
import weakref
from collections.abc import Iterable

# archbench's code that computes a result: the models, the tasks and the running half's trainer (harness.run.train and
# what it imports of harness.run). Not the record or report code, which changes no number a run produces; not other
# packages (torch, fla), whose versions the record's env holds.
PACKAGES = ("models", "tasks", "harness.run")
TRAINER = "harness.run.train"  # every run uses it

_cache: dict[tuple[str, int, int], tuple[str, frozenset[str]]] = {}  # (file, mtime, size) -> (hash, imports)
_loaded: dict[str, tuple[weakref.ref, tuple[int, int]]] = {}  # module -> (the module loaded, its file's stat then)


class StaleCode(RuntimeError):
    """A module this process already loaded was changed on disk since: the code on disk (what a fingerprint reads)
    is not the code that would train (a long-lived sweep worker after an edit)."""


def fingerprint(modules: Iterable[str]) -> dict:
    """{"fingerprint": hex, "modules": {module: hex}} over `modules` and what they import of PACKAGES."""
    hashes = {name: digest for name, digest in _closure(modules)}
    total = hashlib.sha256()
    for name in sorted(hashes):
        total.update(f"{name}:{hashes[name]}\n".encode())
    return {"fingerprint": total.hexdigest()[:16], "modules": dict(sorted(hashes.items()))}


def modules_of(*objects: object) -> set[str]:
    """The modules defining the classes of `objects` and of every submodule of those that are nn.Modules."""
    found = set()
    for obj in objects:
        parts = obj.modules() if hasattr(obj, "modules") else [obj]
        found.update(type(p).__module__ for p in parts)
    return {m for m in found if _own(m)}


def _own(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in PACKAGES)


def _closure(modules: Iterable[str]) -> list[tuple[str, str]]:
    todo, seen, out = [m for m in modules if _own(m)], set(), []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _source(name)
        if path is None:
            continue
        _check_loaded(name, path)
        digest, imports = _parse(path, name)
        out.append((name, digest))
        todo.extend(i for i in imports if i not in seen)
    return out


def _source(name: str) -> str | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None) if spec is not None else None
    return origin if origin and origin.endswith(".py") else None


def _check_loaded(name: str, path: str) -> None:
    """StaleCode if the module object this process runs was loaded from a file that changed since it was first
    fingerprinted here (a module imported anew, as a new process or a test does, is checked afresh)."""
    module = sys.modules.get(name)
    if module is None:
        return
    stat = os.stat(path)
    now = (stat.st_mtime_ns, stat.st_size)
    seen = _loaded.get(name)
    if seen is None or seen[0]() is not module:
        _loaded[name] = (weakref.ref(module), now)
    elif seen[1] != now:
        raise StaleCode(
            f"{path} changed on disk after this process loaded {name}: the code that would train is not the code "
            "on disk; this run is not started (run the command again: a new process loads the new code)"
        )


def _parse(path: str, name: str) -> tuple[str, frozenset[str]]:
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _cache:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
        _strip_docstrings(tree)
        digest = hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()[:16]
        _cache[key] = (digest, frozenset(_imports(tree, name, path.endswith("__init__.py"))))
    return _cache[key]


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                if isinstance(body[0].value.value, str):
                    node.body = body[1:] or [ast.Pass()]


def _imports(tree: ast.AST, name: str, is_package: bool) -> set[str]:
    """The modules of PACKAGES that `tree` imports (absolute or relative; `from a import b` may name a module b)."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    out = set()
    for m in found:
        if not _own(m):
            continue
        parts = m.split(".")  # a module's parent packages run their __init__ too
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {m for m in out if _own(m) and _source(m) is not None}
