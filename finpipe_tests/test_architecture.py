"""The package's shape: no import cycles, stages that depend only downwards, no Dagster in
domain code, and PyTorch imported only by the modules that train or run networks."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from finpipe.models.registry import FAMILIES, model_class
from finpipe.models.sequence import SequenceForecaster

PACKAGE = Path(__file__).resolve().parents[1] / "finpipe"

# Which stages each stage may import (the Dagster layer, `defs` with `definitions`, may
# import every stage; nothing imports it).
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "features": {"core"},
    "models": {"core"},
    "forecasting": {"core", "models"},
    "portfolio": {"core", "features"},
    "evaluation": {"core", "features", "models", "forecasting", "portfolio"},
    "monitoring": {"core", "models"},
    "serving": {"core", "forecasting", "models"},
}

# Modules whose import may bring in torch: the networks, their training loop and windows.
TORCH_MODULES = {"finpipe.models.sequence", "finpipe.models.torch_loop", "finpipe.models.windows"}


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        names[name] = path
    return names


def import_graph() -> dict[str, set[str]]:
    """module -> finpipe modules it imports anywhere in its body (function-level too)."""
    modules = module_names()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("finpipe"):
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("finpipe")]
            for target in targets:
                found = resolve(target)
                if found is not None and found != module:
                    graph[module].add(found)
    return graph


def stage(module: str) -> str:
    name = module.split(".")[1] if "." in module else "finpipe"
    return "defs" if name == "definitions" else name


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_reports_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_stages_import_only_the_stages_below_them() -> None:
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if stage(module) in ALLOWED
        and stage(target) != stage(module)
        and stage(target) not in ALLOWED[stage(module)]
    )
    assert not wrong, "imports against the stage order:\n" + "\n".join(wrong)


def test_domain_modules_do_not_import_dagster() -> None:
    leaks = []
    for module, path in module_names().items():
        if stage(module) in ("defs", "finpipe"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            leaks += [module for name in names if name.split(".")[0] == "dagster"]
    assert not leaks, f"domain modules importing dagster: {sorted(set(leaks))}"


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_each_stage_imports_on_its_own_without_torch(name: str) -> None:
    """Every module of a stage imports in a fresh interpreter; only the network modules
    bring in torch."""
    modules = sorted(
        m
        for m in module_names()
        if stage(m) == name and m not in TORCH_MODULES and not m.endswith("__main__")
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False", f"importing stage {name} imported torch"


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_registry_entries_match_their_classes(name: str) -> None:
    entry, family = FAMILIES[name], model_class(name)
    assert family.name == name
    assert entry.pytorch == issubclass(family, SequenceForecaster)
    assert entry.summary == " ".join((family.__doc__ or "").split("\n\n")[0].split())
