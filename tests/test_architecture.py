"""The package is laid out as its architecture, and its imports flow one way.

    dlops/api       what clients see beyond /predict: /v2, the page at /ui, the API page
    dlops/http      ASGI plumbing: guards, deadline, drain, API key, JSON errors, uploads, routes
    dlops/serving   a worker's models, from the settings and the store, in step with the others
    dlops/pipeline  files in, probabilities out: no HTTP, no BentoML
    dlops/model     the spec, how import decides it, the store entry

Each layer imports only the layers below it; any module may import the shared ones (config,
metrics, compat), which import no layer. Every import counts, those inside functions too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "dlops"
LAYERS = ["model", "pipeline", "serving", "http", "api"]  # bottom first
SHARED = {"dlops", "dlops.config", "dlops.metrics", "dlops.compat"}
# Frameworks the pipeline and the model never import (the model store entry reads BentoML's
# store: dlops/model/store.py alone may import bentoml).
FRAMEWORKS = ("bentoml", "_bentoml_sdk", "_bentoml_impl", "starlette", "uvicorn", "fastapi")
STORE_MODULE = "dlops.model.store"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, module: str) -> Iterator[tuple[str, int, bool]]:
    """(module imported, line, whether at module level) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, id(node) in top_level
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names = [f"{base}.{alias.name}" for alias in node.names]
            # "from dlops.pipeline import worker" imports a module; "from x import name", x
            for name in names if base in {m for m in modules()} - SHARED else [base]:
                yield name, node.lineno, id(node) in top_level


def layer_of(module: str) -> int | None:
    """The layer's position, bottom first; None for the shared modules."""
    if module in SHARED:
        return None
    return LAYERS.index(module.split(".")[1])


def owning_module(name: str, known: set[str]) -> str | None:
    """The dlops module that ``name`` (a module, or a name inside one) belongs to."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def test_every_module_belongs_to_a_layer_or_is_shared() -> None:
    for module in modules():
        assert module in SHARED or module.split(".")[1] in LAYERS, module


def test_imports_flow_down_the_layers() -> None:
    known = set(modules())
    wrong = []
    for module, path in modules().items():
        for name, line, _ in imported(path, module):
            target = owning_module(name, known) if name.startswith("dlops") else None
            if target is None or target == module:
                continue
            source_layer, target_layer = layer_of(module), layer_of(target)
            if target_layer is None:
                continue  # anything may use config, metrics and compat
            if source_layer is None or target_layer > source_layer:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert wrong == []


@pytest.mark.parametrize("layer", ["pipeline", "model"])
def test_the_pipeline_and_the_model_use_no_serving_framework(layer: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for module, path in modules().items()
        if module.startswith(f"dlops.{layer}") and module != STORE_MODULE
        for name, line, _ in imported(path, module)
        if name.split(".")[0] in FRAMEWORKS
    ]
    assert wrong == []


def test_no_import_cycles_between_modules() -> None:
    """Module-level imports only: an import inside a function runs after both modules exist."""
    known = set(modules())
    graph: dict[str, set[str]] = {module: set() for module in known}
    for module, path in modules().items():
        for name, _, at_top in imported(path, module):
            target = owning_module(name, known) if name.startswith("dlops") else None
            if at_top and target is not None and target != module:
                graph[module].add(target)
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        assert module not in visiting, " -> ".join([*visiting[visiting.index(module) :], module])
        visiting.append(module)
        for target in sorted(graph[module]):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
