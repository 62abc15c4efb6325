"""The shape of the code, checked: every module of app/ imports on its own in a fresh interpreter (an import
cycle hidden by a function-level import, or a module that only works after another was imported, fails here),
and none of them pulls torch or the training libraries into the web process."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "trl", "accelerate", "peft", "datasets", "ray")  # ray: only a Ray job's worker

# Runs in one fresh interpreter that has imported no module of ours: for each module it forks a child that imports
# that module first thing, and reports errors and heavy libraries loaded. To make the forks cheap the parent first
# preloads every third-party module our modules pull in (found by a throwaway child that imports them all): a
# third-party module cannot hide an order problem among our own modules, which are never preloaded.
CHECK = """
import importlib, json, os, sys
OURS, HEAVY = ("app", "trainer", "rankforge", "tests"), set(%r)

def child(work):
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            payload = work()
        except BaseException as exc:  # noqa: BLE001
            payload = f"{type(exc).__name__}: {exc}"
        os.write(write_end, json.dumps(payload).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(data) if data else "child died"

LOCAL = {name.split(".")[0] for name in sys.argv[1:]}  # the packages under test (app, or a test's own)

def survey():
    for name in sys.argv[1:]:
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - reported by the real check below
            pass
    return sorted(m for m in sys.modules if m.split(".")[0] not in LOCAL | set(OURS) | HEAVY)

external = child(survey)
for lib in external if isinstance(external, list) else []:
    try:
        importlib.import_module(lib)
    except BaseException:  # noqa: BLE001
        pass
assert not any(m.split(".")[0] in LOCAL | set(OURS) for m in sys.modules), "preloaded a module of ours"

def probe(name):
    def work():
        try:
            importlib.import_module(name)
            error = None
        except BaseException as exc:  # noqa: BLE001
            error = f"{type(exc).__name__}: {exc}"
        return [error, sorted({m.split(".")[0] for m in sys.modules} & HEAVY)]
    return work

print(json.dumps({name: child(probe(name)) for name in sys.argv[1:]}))
"""


def import_each_alone(modules: list[str], cwd: Path = ROOT) -> dict[str, tuple[str | None, list[str]]]:
    """{module: (import error or None, heavy libraries it loaded)}, each module imported first in its process."""
    out = subprocess.run([sys.executable, "-c", CHECK % (HEAVY,), *modules], cwd=cwd, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def app_modules() -> list[str]:
    names = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_app_module_imports_alone_without_the_training_libraries():
    modules = app_modules()
    assert len(modules) > 50 and "app.worker" in modules and "app.training.handlers" in modules
    problems = []
    for name, (error, heavy) in import_each_alone(modules).items():
        problems += ([f"{name}: {error}"] if error else []) + [f"{name} imports {lib}" for lib in heavy]
    assert problems == []


def test_the_check_catches_a_cycle_hidden_behind_an_import_order(tmp_path):
    """The probe itself: a pair of modules that import each other's names at module level fails when the
    second is imported first, which is what a lazy import elsewhere can hide."""
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cyclic.b import B\nA = 1\n")
    (package / "b.py").write_text("from cyclic.a import A\nB = 2\n")
    results = import_each_alone(["cyclic.a", "cyclic.b"], cwd=tmp_path)
    assert results["cyclic.a"][0].startswith("ImportError") and results["cyclic.b"][0].startswith("ImportError")


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """module -> modules of the same root package it imports, module-level and function-level imports alike."""
    root = package_dir.parent
    modules = {}
    for path in package_dir.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for target in targets:
                found = owner(target) if target.split(".")[0] == package_dir.name else None
                if found and found != name:
                    graph[name].add(found)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_in_app_or_trainer_even_through_function_level_imports():
    for package in ("app", "trainer"):
        graph = import_graph(ROOT / package)
        assert len(graph) > 10
        assert cycles(graph) == [], package


def test_the_cycle_finder_sees_a_cycle_closed_by_a_lazy_import(tmp_path):
    package = tmp_path / "lazy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("import lazy.b\n")
    (package / "b.py").write_text("def f():\n    from lazy.a import x\n")
    (package / "c.py").write_text("import lazy.a\n")
    assert cycles(import_graph(package)) == [["lazy.a", "lazy.b"]]
