"""The layout's promises (docs/architecture.md): dependencies point one way, the engine stays plain Python,
and code cites only files inside this repository."""
from __future__ import annotations

import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("imgprotect", "catalog", "matching", "workers", "spark", "bench", "training")
RUNTIME = ("imgprotect", "catalog", "matching", "workers", "spark")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every project module ``name`` imports, at the top or inside functions (a lazy import still couples)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        candidates: list[str] = []
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            candidates = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for candidate in candidates:
            while candidate and candidate not in MODULES:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph)))
    try:
        for node in sorted(graph):
            if node not in index:
                visit(node)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_cycle_finder_finds_a_cycle_through_a_function_level_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_the_projects_modules():
    assert _cycles(GRAPH) == []


def _third_party_imports(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("matching.core")))
def test_the_engine_imports_no_django_benchmark_training_or_app_code(name):
    path = MODULES[name]
    forbidden = {"django", "rest_framework", "celery", "bench", "training", "catalog", "workers", "imgprotect", "spark"}
    assert not _third_party_imports(path) & forbidden
    assert all(target.startswith("matching.core") for target in GRAPH[name]), GRAPH[name]
    assert "os.environ" not in path.read_text() and "getenv" not in path.read_text(), "the engine reads no environment"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("catalog")))
def test_catalog_imports_nothing_from_matching(name):
    assert not {t for t in GRAPH[name] if t.split(".")[0] in {"matching", "workers"}}


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.split(".")[0] in RUNTIME))
def test_runtime_code_never_imports_benchmarks_or_training(name):
    assert not {t for t in GRAPH[name] if t.split(".")[0] in {"bench", "training"}}


def test_no_private_name_is_imported_across_modules():
    offenders = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] in PACKAGES):
                offenders += [f"{name}: {alias.name}" for alias in node.names
                              if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert offenders == []


# The evaluation images beside the checkout (shared/datasets) are data, not a citation.
OUTSIDE = re.compile(r"DESIGN\.md|STYLE\.md|\.\./shared/(?!datasets)|/work/shared")


def test_code_cites_only_files_inside_the_repository():
    cited = []
    for folder in (*PACKAGES, "tests", "scripts", "docker", "templates", "static"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in {".py", ".html", ".js", ".css", ".sh", ".yml", ""} \
                    and path != Path(__file__).resolve():
                text = path.read_text(errors="replace")
                cited += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in OUTSIDE.finditer(text)]
    assert cited == []
