"""The package structure of ``src/pgha`` (DESIGN.md section 2), checked from the source:

* no import circle between modules, counting imports inside functions and under
  ``TYPE_CHECKING`` (a circle hidden there is still a circle in the design);
* no upward import between layers: ``core`` imports nothing outside it, ``config`` only
  ``core``, ``dcs`` and ``pg`` never ``agent``, ``api`` or ``cli``, ``api`` never ``agent``
  or ``cli``, ``agent`` never ``cli``;
* only shared modules at the top of the package; no module over 500 lines; no class of the
  agent inherits behaviour from a mixin of its own.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import pgha

ROOT = Path(pgha.__file__).parent

# layer -> the layers (top-level packages or shared modules) it may import
ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "errors": frozenset(),
    "config": frozenset({"config", "core"}),
    "dcs": frozenset({"dcs", "core", "config", "errors"}),
    "pg": frozenset({"pg", "core", "config", "errors"}),
    "api": frozenset({"api", "core", "config", "errors"}),
    "agent": frozenset({"agent", "core", "config", "errors", "dcs", "pg", "api"}),
    "cli": frozenset({"cli", "core", "config", "errors", "dcs", "pg", "api", "agent"}),
}
SHARED_TOP_LEVEL = {"__init__", "errors"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> Iterator[str]:
    """Every pgha module ``path`` imports (``from pgha.x import y`` counts ``pgha.x.y`` when
    that is a module, else ``pgha.x``)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pgha"):
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            if not base.startswith("pgha"):
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if candidate in known else base


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: {m for m in imported(path, name, known) if m != name and m != "pgha"}
            for name, path in mods.items()}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_no_import_circle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_circle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_upward_import() -> None:
    problems = []
    for module, targets in sorted(import_graph().items()):
        layer = layer_of(module)
        if layer == "__init__":
            continue
        allowed = ALLOWED[layer]
        for target in sorted(targets):
            if layer_of(target) not in allowed:
                problems.append(f"{module} imports {target}")
    assert problems == []


def test_every_module_belongs_to_a_layer() -> None:
    top = {p.stem for p in ROOT.glob("*.py")}
    assert top <= SHARED_TOP_LEVEL, f"loose modules at the top of pgha: {top - SHARED_TOP_LEVEL}"
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert packages <= set(ALLOWED)


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: module_name(p))
def test_module_size(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= 500, f"{module_name(path)} has {lines} lines"


def test_no_agent_mixins() -> None:
    """Classes in ``agent`` inherit from nothing defined in ``agent`` (components, not
    mixins); Protocols, exceptions and the standard library's logging classes (handlers,
    formatters, filters: :mod:`pgha.agent.logsetup`) are the only bases allowed besides
    ``object``."""
    for path in sorted((ROOT / "agent").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for base in node.bases:
                    text = ast.unparse(base)
                    assert text in {"Protocol", "Exception", "RuntimeError", "AgentFatal"} \
                        or text.startswith(("Protocol[", "logging.")), \
                        f"{module_name(path)}.{node.name} inherits from {text}"
