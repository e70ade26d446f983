"""The shape of the package: auditor's import graph, read from the source with :mod:`ast`.

The graph
---------
Every ``auditor/**/*.py`` file is a node named by its dotted module name (a package's
``__init__.py`` is the package, e.g. ``auditor.lm``). Every ``import`` statement in a
module is an edge, wherever it stands: at module level, inside a function or method (a
lazy import), and under ``if TYPE_CHECKING:``. Targets are resolved like this:

- ``import auditor.a.b`` (``as x`` or not) is an edge to ``auditor.a.b``;
- ``from auditor.a import n`` is an edge to ``auditor.a.n`` when that is a module (a
  submodule read through its package) and otherwise to ``auditor.a`` itself (a name the
  package ``__init__`` defines or re-exports);
- relative imports are resolved against the importing module's package first;
- a target that names no file resolves to its longest prefix that does (``auditor.x.y``
  with no ``x/y.py`` is ``auditor.x``).

The implicit import of parent packages (Python runs ``auditor/lm/__init__.py`` before
``auditor/lm/loading.py``) is *not* an edge: otherwise every package ``__init__`` that
re-exports its submodules would be in a cycle with each of them.

Rule (a), no cycles
-------------------
No strongly connected component of more than one module, and no module that imports itself.
Lazy and type-only imports count. A lazy import defers the moment two modules need each
other, but they still need each other: neither can be read, tested, layered or moved
without the other, and whether the program starts depends on which one is imported first.
That is the ``lm/gguf.py`` ↔ ``lm/loading.py`` cycle the issue names (``gguf`` imported
``loading`` at module level, ``loading`` imported ``gguf`` in a function). So a package
``__init__`` that re-exports its submodules is fine, but a submodule that imports a name
from its own package ``__init__`` (``from auditor.corpora import SOURCES`` inside
``auditor/corpora/``) closes a cycle and fails.

Rule (b), jobs are the top layer
--------------------------------
Only ``auditor.jobs.*`` and the faces (``auditor.cli.*``, and ``auditor.queue.*``, the
queued-job layer the ``auditor jobs`` commands and the Celery ``workers`` package outside
``auditor/`` share) import ``auditor.jobs``. And only ``auditor.cli.*`` and
``auditor.__main__`` import ``auditor.cli``.

Rule (c), the CLI is cheap to import
------------------------------------
Every ``auditor/cli/*`` module, imported in a fresh interpreter, leaves none of
:data:`HEAVY` in ``sys.modules``; and no import statement in ``auditor/cli/`` (not even in a
function) names a heavy library directly: a command calls a job instead.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "auditor"

#: Libraries that the CLI must not load just to parse a command line.
HEAVY = ("torch", "sklearn", "lightgbm", "polars", "numpy", "transformers", "scipy", "pyarrow",
         "matplotlib")

@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    lazy: bool  # inside a function
    type_only: bool  # under ``if TYPE_CHECKING:``

    def __str__(self) -> str:
        how = " (lazy)" if self.lazy else " (type-only)" if self.type_only else ""
        return f"{self.source} -> {self.target} at line {self.line}{how}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    found = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    assert "auditor.lm.loading" in found and "auditor.lm" in found
    return found


def resolve(name: str) -> str:
    """The longest prefix of ``name`` that is an auditor module."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules():
            return candidate
        parts.pop()
    raise AssertionError(f"{name} resolves to no auditor module")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, lazy: bool = False, type_only: bool = False
          ) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, lazy, type_only
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk(child, True, type_only)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), lazy, True)
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), lazy, type_only)
        else:
            yield from _walk(child, lazy, type_only)


def imported_names(module: str, path: Path) -> Iterator[tuple[str, int, bool, bool]]:
    """``(dotted name, line, lazy, type_only)`` for every import in the module, any
    library; ``from a.b import c`` gives ``a.b.c`` when that is an auditor module, else
    ``a.b``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node, lazy, type_only in _walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, lazy, type_only
            continue
        if node.level:
            base_parts = package.split(".")
            if node.level > 1:
                base_parts = base_parts[: -(node.level - 1)]
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            yield (sub if sub in modules() else base), node.lineno, lazy, type_only


@cache
def graph() -> tuple[Edge, ...]:
    edges = []
    for module, path in modules().items():
        for name, line, lazy, type_only in imported_names(module, path):
            if name == "auditor" or name.startswith("auditor."):
                edges.append(Edge(module, resolve(name), line, lazy, type_only))
    return tuple(edges)


def strongly_connected(edges: tuple[Edge, ...]) -> list[frozenset[str]]:
    """Tarjan's components of more than one module, plus modules that import themselves."""
    succ: dict[str, set[str]] = {m: set() for m in modules()}
    for e in edges:
        succ[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(succ[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in succ[v]:
                found.append(frozenset(component))

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return found


def _describe(component: frozenset[str]) -> str:
    inside = {str(e) for e in graph() if e.source in component and e.target in component}
    return "{" + ", ".join(sorted(component)) + "}:\n    " + "\n    ".join(sorted(inside))


def _is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


# --- the graph itself --------------------------------------------------------------------


def test_graph_resolution() -> None:
    """The resolution rules, on edges known to exist."""
    edges = {(e.source, e.target): e for e in graph()}
    # from auditor.lm import HookPoint: a name from the package __init__
    assert ("auditor.extract", "auditor.lm") in edges
    # from auditor.lm.loading import ...: a submodule, from the package __init__
    assert ("auditor.lm", "auditor.lm.loading") in edges
    # lazy (in a function) and type-only imports are edges too
    assert edges[("auditor.defaults", "auditor.lm.gguf")].lazy
    assert edges[("auditor.testing", "auditor.sae")].type_only or edges[
        ("auditor.testing", "auditor.sae")].lazy
    # from auditor import __version__: the root package
    assert ("auditor.extract", "auditor") in edges
    # no edge from a submodule to its parent package only for being its submodule
    assert ("auditor.lm.batching", "auditor.lm") not in edges


def test_cycle_finder_sees_a_planted_cycle() -> None:
    """A cycle through a lazy import is found; so is one through a package ``__init__``."""
    planted = (*graph(),
               Edge("auditor.lm.batching", "auditor.lm", 1, lazy=True, type_only=False),
               Edge("auditor.io", "auditor.pooling", 1, lazy=False, type_only=False),
               Edge("auditor.pooling", "auditor.io", 1, lazy=True, type_only=False))
    components = set(strongly_connected(planted)) - set(strongly_connected(graph()))
    assert any({"auditor.io", "auditor.pooling"} <= c for c in components)
    assert any({"auditor.lm", "auditor.lm.batching"} <= c for c in components)


# --- rule (a) ----------------------------------------------------------------------------


def test_no_import_cycles() -> None:
    components = set(strongly_connected(graph()))
    assert not components, "import cycles in auditor/:\n" + "\n".join(
        map(_describe, components))


# --- rule (b) ----------------------------------------------------------------------------


def test_only_jobs_and_faces_import_jobs() -> None:
    allowed = ("auditor.jobs", "auditor.cli", "auditor.queue")
    offenders = {e.source for e in graph() if _is_under(e.target, "auditor.jobs")
                 and not any(_is_under(e.source, p) for p in allowed)}
    assert not offenders, f"modules below auditor.jobs that import it: {sorted(offenders)}"


def test_only_the_cli_imports_the_cli() -> None:
    offenders = {e.source for e in graph() if _is_under(e.target, "auditor.cli")
                 and not _is_under(e.source, "auditor.cli") and e.source != "auditor.__main__"}
    assert not offenders, f"modules that import auditor.cli: {sorted(offenders)}"


# --- rule (c) ----------------------------------------------------------------------------

CLI_MODULES = sorted(m for m in modules() if _is_under(m, "auditor.cli"))


def test_cli_names_no_heavy_library() -> None:
    offenders = set()
    for module in CLI_MODULES:
        for name, _line, _lazy, _type_only in imported_names(module, modules()[module]):
            if name.split(".")[0] in HEAVY:
                offenders.add(module)
    assert not offenders, f"auditor/cli modules importing heavy libraries: {sorted(offenders)}"


_PROBE = (
    "import importlib, json, sys\n"
    "importlib.import_module(sys.argv[1])\n"
    "print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))\n"
)


def test_cli_modules_import_no_heavy_library() -> None:
    """Each CLI module in its own fresh interpreter (run from the repo root, so this
    checkout's ``auditor`` is the one imported)."""
    code = _PROBE.format(heavy=HEAVY)
    offenders: dict[str, str] = {}
    for module in CLI_MODULES:
        done = subprocess.run([sys.executable, "-c", code, module], cwd=ROOT, check=True,
                              capture_output=True, text=True, timeout=120)
        loaded = done.stdout.strip().splitlines()[-1]
        if loaded != "[]":
            offenders[module] = loaded
    assert not offenders, f"auditor/cli modules that load heavy libraries: {offenders}"


def test_subprocess_imports_this_checkout() -> None:
    """The fresh interpreters above import this checkout's auditor, not an installed one."""
    done = subprocess.run([sys.executable, "-c", "import auditor; print(auditor.__file__)"],
                          cwd=ROOT, check=True, capture_output=True, text=True, timeout=60)
    assert Path(done.stdout.strip()).resolve().parent == PACKAGE.resolve()
