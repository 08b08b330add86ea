"""The tree keeps its shape: imports flow one way, and each shared rule has one home.

Every import counts, also one written inside a function: moving an import into a
function hides a cycle from Python, not from the reader.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("config", "accounts", "models_catalog", "generation")
# The rooms of `generation` (packages) and its core modules are each a unit of their
# own; the other apps are one unit each.
GENERATION_ROOMS = ("api", "openai_api", "comfy", "demo_engine", "fleet", "gallery", "ops", "volcengine", "web",
                    "webhooks", "management")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    found = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" not in path.parts:
                found[_module_name(path)] = path
    return found


def _imports(module: str, path: Path) -> set[str]:
    """Every module this one imports (absolute names), wherever the import is written."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            # `from package import module` imports that module.
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def unit_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] not in APPS:
        return None
    if parts[0] != "generation" or len(parts) == 1:
        return parts[0]
    return f"generation.{parts[1]}"


def _unit_graph() -> dict[str, set[str]]:
    sources = _sources()
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in sources.items():
        here = unit_of(module)
        for name in _imports(module, path):
            if name not in sources:
                continue  # a name inside a module, or a third-party module
            there = unit_of(name)
            if there and there != here:
                graph[here].add(there)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_apps_or_rooms():
    graph = _unit_graph()
    assert graph["generation.fleet"], "the graph is built (sanity)"
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_config_imports_no_app():
    assert graph_edges("config") <= {"config"}


def graph_edges(unit: str) -> set[str]:
    return _unit_graph().get(unit, set()) | {unit}


@pytest.mark.parametrize("leaf", ["generation.comfy", "generation.demo_engine", "generation.limits"])
def test_libraries_import_nothing_of_the_studio(leaf):
    # The ComfyUI client and the demo engine are plain Python; the limits only read settings.
    assert graph_edges(leaf) == {leaf}


def test_the_volcengine_client_is_plain_python_too():
    # It shares only the translatable Message of the ComfyUI client.
    assert graph_edges("generation.volcengine") <= {"generation.volcengine", "generation.comfy"}


def test_webhooks_build_their_payload_without_the_api_layer():
    assert "generation.api" not in graph_edges("generation.webhooks")


def test_lower_layers_never_import_pages_or_the_api():
    graph = _unit_graph()
    for unit, targets in graph.items():
        # The doors; the OpenAI-compatible door shares the REST API's create wait.
        if unit in ("generation.api", "generation.openai_api", "generation.web", "generation.jobs"):
            continue
        assert not targets & {"generation.api", "generation.web"}, unit


def test_other_apps_use_only_public_names_of_generation():
    for module, path in _sources().items():
        if module.startswith("generation"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("generation"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{module} imports {private} from {node.module}"
                assert not any(part.startswith("_") for part in node.module.split(".")), module
