"""Import rules of the package, checked on the source with ``ast``.

- The pure core (``sip/``, ``transaction/``, ``proxy/``, ``dispatch/``, ``control/``)
  imports no I/O or concurrency module and no adapter or CLI module: bytes, messages
  and the time go in, effects come out (STYLE.md, "The shape").
- No runtime import cycle among sipfleet's modules.
- The modules mypyc compiles (``sipfleet._accel.MODULES``) never reach pydantic:
  they run on plain settings objects; the typed config lives in ``sipfleet.config``.
- Only ``sipfleet.config`` imports pydantic, and the pure core does not import it.
- ``import sipfleet.config`` loads no event loop or HTTP client (asyncio, aiohttp).

An import counts when it runs: at module level or inside a function, but not under
``if TYPE_CHECKING:``. Known breaches are listed below so that any NEW one fails;
an entry that no longer happens fails too, so the lists only shrink.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipfleet._accel import MODULES as COMPILED

ROOT = Path(__file__).resolve().parent.parent / "sipfleet"

PURE_PACKAGES = (
    "sipfleet.sip",
    "sipfleet.transaction",
    "sipfleet.proxy",
    "sipfleet.dispatch",
    "sipfleet.control",
    "sipfleet.core",
)
FORBIDDEN_TOP = frozenset({"asyncio", "socket", "threading", "selectors", "subprocess"})
FORBIDDEN_PACKAGES = ("sipfleet.aio", "sipfleet.cli")

# (importing module, imported module)
KNOWN_VIOLATIONS: frozenset[tuple[str, str]] = frozenset()

# Each known cycle as the set of modules in one strongly connected component.
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements under ``node`` that run, skipping ``if TYPE_CHECKING:`` bodies."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for sub in child.orelse:
                yield from _runtime_imports_of(sub)
        else:
            yield from _runtime_imports(child)


def _runtime_imports_of(node: ast.stmt) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    else:
        yield from _runtime_imports(node)


def _resolve(name: str) -> str:
    """The deepest sipfleet module ``name`` names (a module, or a package for a symbol)."""
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


def imports_of(module: str) -> set[str]:
    """Every module ``module`` imports at run time (sipfleet modules resolved to files)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in _runtime_imports(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] if base else []
            if base and not base.startswith("sipfleet"):
                targets = [base]
        for target in targets:
            out.add(_resolve(target) if target.startswith("sipfleet") else target)
    out.discard(module)
    return out


def _graph() -> dict[str, set[str]]:
    return {m: {t for t in imports_of(m) if t in MODULES} for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: set[frozenset[str]] = set()
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
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        component.add(m)
                        if m == node:
                            break
                    if len(component) > 1:
                        out.add(frozenset(component))
    return out


def _violations() -> set[tuple[str, str]]:
    out = set()
    for module in MODULES:
        if not module.startswith(PURE_PACKAGES):
            continue
        for target in imports_of(module):
            if target.split(".")[0] in FORBIDDEN_TOP or target.startswith(FORBIDDEN_PACKAGES):
                out.add((module, target))
    return out


def test_scanner_sees_the_package() -> None:
    assert "sipfleet.sip.message" in MODULES
    assert "sipfleet.sip.via" in imports_of("sipfleet.sip.message")
    # TYPE_CHECKING-only imports are not run: client.py imports Timers only for typing.
    assert "sipfleet.transaction.timers" not in imports_of("sipfleet.transaction.client")
    assert "sipfleet.transaction.server" in imports_of("sipfleet.transaction.client")


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == {frozenset({"a", "b", "c"})}


def test_pure_core_imports_no_io_adapter_or_cli_module() -> None:
    found = _violations()
    new = sorted(found - KNOWN_VIOLATIONS)
    assert not new, f"the pure core imports I/O, adapter or CLI modules: {new}"
    gone = sorted(KNOWN_VIOLATIONS - found)
    assert not gone, f"fixed: remove these from KNOWN_VIOLATIONS: {gone}"


def test_no_new_import_cycle() -> None:
    found = _cycles(_graph())
    new = [sorted(c) for c in found - KNOWN_CYCLES]
    assert not new, f"import cycles among sipfleet's modules: {new}"
    gone = [sorted(c) for c in KNOWN_CYCLES - found]
    assert not gone, f"fixed or changed: update KNOWN_CYCLES: {gone}"


def _parents(module: str) -> list[str]:
    """The packages Python runs before ``module``: a.b.c needs a and a.b."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in MODULES]


def reached_from(module: str) -> dict[str, str]:
    """Every module importing ``module`` runs, transitively (parent packages
    included), mapped to the sipfleet module that imports it."""
    seen: dict[str, str] = {module: ""}
    todo = [module]
    while todo:
        current = todo.pop()
        if current not in MODULES:
            continue
        for target in sorted(imports_of(current) | set(_parents(current))):
            if target not in seen:
                seen[target] = current
                todo.append(target)
    return seen


def test_walk_follows_parents_and_imports() -> None:
    reached = reached_from("sipfleet.config.routes")
    assert "sipfleet.config" in reached  # the package runs first
    assert reached["pydantic"].startswith("sipfleet.config")
    assert "sipfleet.dispatch.settings" in reached


@pytest.mark.parametrize("module", COMPILED)
def test_compiled_module_does_not_reach_pydantic(module: str) -> None:
    reached = reached_from(module)
    hits = sorted((m, by) for m, by in reached.items() if m.split(".")[0] == "pydantic")
    assert not hits, f"{module} reaches pydantic at run time through: {hits}"
    assert not [m for m in reached if m.startswith("sipfleet.config")], (
        f"{module} imports the typed config; give it plain settings"
    )


def test_only_the_config_package_imports_pydantic() -> None:
    found = sorted(
        (m, t)
        for m in MODULES
        if not m.startswith("sipfleet.config")
        for t in imports_of(m)
        if t.split(".")[0] == "pydantic"
    )
    assert not found, f"pydantic outside sipfleet.config: {found}"


def test_pure_core_does_not_import_the_typed_config() -> None:
    found = sorted(
        (m, t)
        for m in MODULES
        if m.startswith(PURE_PACKAGES)
        for t in imports_of(m)
        if t.startswith("sipfleet.config")
    )
    assert not found, f"the pure core imports sipfleet.config (give it plain settings): {found}"


def test_importing_the_config_loads_no_event_loop_or_http_client() -> None:
    code = (
        "import sys, sipfleet.config; "
        "print(','.join(m for m in ('asyncio', 'aiohttp') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "", f"import sipfleet.config loads {out.stdout.strip()}"
