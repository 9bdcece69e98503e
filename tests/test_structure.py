"""The structure CI keeps (issue 21): no bare built-in raises, small modules, no fuzzer in the
library, and the import layers of pyproject.toml's import-linter contracts."""

from __future__ import annotations

import ast
import builtins
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("edgeguard", "converters")
MAX_LINES = 700
BUILTIN_EXCEPTIONS = frozenset(
    name for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, BaseException)
)


def _library_modules() -> list[Path]:
    return sorted(path for package in LIBRARY for path in (ROOT / package).rglob("*.py"))


def bare_builtin_raises(source: str) -> list[tuple[int, str]]:
    """(line, exception name) of every ``raise <built-in exception>`` in ``source``.

    One exception to the rule: ``AttributeError`` from a module's ``__getattr__`` (the
    protocol Python's attribute lookup expects).
    """
    found = []

    def visit(node: ast.AST, function: str | None) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(target, ast.Name) and target.id in BUILTIN_EXCEPTIONS:
                if not (target.id == "AttributeError" and function == "__getattr__"):
                    found.append((node.lineno, target.id))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(source), None)
    return found


def test_the_scan_sees_a_bare_raise():  # the scan below cannot pass by seeing nothing
    source = (
        "def f(x):\n    if x:\n        raise ValueError('no')\n    raise TypeError\n"
        "def __getattr__(name):\n    raise AttributeError(name)\n"
        "def g():\n    raise AttributeError('not the module protocol')\n"
        "def h():\n    raise ConfigError('fine')\n"
    )
    assert bare_builtin_raises(source) == [(3, "ValueError"), (4, "TypeError"), (8, "AttributeError")]


def test_library_code_raises_no_bare_builtin_exception():
    modules = _library_modules()
    assert len(modules) > 50
    bare = [
        f"{path.relative_to(ROOT)}:{line}: raise {name}"
        for path in modules
        for line, name in bare_builtin_raises(path.read_text(encoding="utf-8"))
    ]
    assert not bare, "raise an EdgeguardError subclass (edgeguard/errors.py) instead:\n" + "\n".join(bare)


def public_classes(sources: dict[str, str]) -> dict[str, list[str]]:
    """Public class name -> the modules (of ``sources``: name -> source) that define it at top level."""
    found: dict[str, list[str]] = {}
    for module, source in sorted(sources.items()):
        for node in ast.parse(source).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                found.setdefault(node.name, []).append(module)
    return found


def test_the_class_scan_sees_a_name_defined_twice():
    found = public_classes({"a": "class Spec:\n    pass\nclass _Hidden: ...", "b": "class Spec: ...\nclass Other: ..."})
    assert found == {"Spec": ["a", "b"], "Other": ["b"]}


def test_each_public_class_name_of_edgeguard_has_one_meaning():
    sources = {
        str(path.relative_to(ROOT)): path.read_text(encoding="utf-8") for path in (ROOT / "edgeguard").rglob("*.py")
    }
    twice = {name: modules for name, modules in public_classes(sources).items() if len(modules) > 1}
    assert not twice, f"one name, one meaning: rename one of each pair {twice}"


def test_no_library_module_is_over_700_lines():
    sizes = {path: len(path.read_text(encoding="utf-8").splitlines()) for path in _library_modules()}
    too_long = [f"{path.relative_to(ROOT)}: {count} lines" for path, count in sizes.items() if count > MAX_LINES]
    assert not too_long, f"split these into modules of at most {MAX_LINES} lines:\n" + "\n".join(too_long)


def test_the_fuzzer_is_not_in_the_library():
    assert not (ROOT / "edgeguard" / "fuzz.py").exists()
    fuzz_modules = [p for p in (ROOT / "edgeguard").rglob("*.py") if "fuzz" in p.stem]
    assert fuzz_modules == []
    assert (ROOT / "tools" / "fuzz" / "campaign.py").is_file()


@pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter is not installed (the test extra)")
def test_import_layers_hold():
    done = subprocess.run(
        [shutil.which("lint-imports"), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "broken" not in done.stdout.lower() or "0 broken" in done.stdout.lower()


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_the_cycle_finder_sees_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycle_between_library_modules():
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (the test extra)")
    built = grimp.build_graph(*LIBRARY, include_external_packages=False)
    graph = {module: set(built.find_modules_directly_imported_by(module)) for module in built.modules}
    assert len(graph) > 50
    assert import_cycles(graph) == [], "break these import cycles (move the shared code down a layer)"
