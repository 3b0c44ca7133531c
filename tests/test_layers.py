"""The import contract of the package (``make lint`` runs this file; docs/architecture.md draws it).

The package's parts stand in layers, and an import only ever points down a layer (or stays inside
its own part). Imports inside functions count the same, so no import can hide a cycle. Nothing in
the package imports the package root. Experiments use public names only: a name listed in the
``__all__`` of a public module.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ppl_scenes"

#: Bottom to top. A part is a subpackage or a top-level module of ``ppl_scenes``.
LAYERS: list[tuple[str, ...]] = [
    ("_version", "checks", "config"),
    ("ops",),
    ("distributions", "scene", "rundir"),
    ("nn", "data"),
    ("metrics",),
    ("viz",),
    ("models",),
    ("baselines", "files", "sizing", "zoo"),
    ("infer",),
    ("runs", "figures"),
    ("cli",),
    ("__main__",),
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every import of ``ppl_scenes`` in the file, at any depth.

    ``from ppl_scenes.x import y`` where ``y`` is a module counts as an import of ``ppl_scenes.x.y``.
    """
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] == "ppl_scenes"]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            if module.split(".")[0] == "ppl_scenes":
                names = [a.name for a in node.names]
                submodules = [n for n in names if _is_module(f"{module}.{n}")]
                found += [(node.lineno, f"{module}.{n}", []) for n in submodules]
                rest = [n for n in names if n not in submodules]
                if rest or not names:
                    found.append((node.lineno, module, rest))
    return found


def _is_module(name: str) -> bool:
    """Whether dotted ``name`` (``ppl_scenes.x.y``) is a module or package of the package."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_part_has_a_layer():
    parts = {_part(_module_name(p)) for p in _package_files()} - {None}
    assert parts <= set(RANK), f"parts without a layer in LAYERS: {sorted(parts - set(RANK))}"


def test_imports_point_down_the_layers():
    wrong = []
    for path in _package_files():
        here = _part(_module_name(path))
        if here is None:  # the root __init__ sits on top and may import anything
            continue
        for line, module, _names in _imports(path):
            there = _part(module)
            if there is None:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports the package root")
            elif there != here and RANK[there] >= RANK[here]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {module} ({there})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (scipy's, on the import graph)."""
    nodes = sorted(set(graph) | {w for targets in graph.values() for w in targets})
    at = {v: i for i, v in enumerate(nodes)}
    pairs = [(at[v], at[w]) for v, targets in graph.items() for w in targets]
    rows, cols = zip(*pairs) if pairs else ((), ())
    matrix = coo_matrix((np.ones(len(pairs)), (rows, cols)), shape=(len(nodes), len(nodes)))
    _, labels = connected_components(matrix, directed=True, connection="strong")
    groups: dict[int, list[str]] = {}
    for v, label in zip(nodes, labels):
        groups.setdefault(int(label), []).append(v)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def test_no_import_cycle_among_modules():
    """Module by module (a package's ``__init__`` included), imports inside functions counted."""
    modules = {_module_name(p): p for p in _package_files()}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for _, module, names in _imports(path):
            for candidate in [f"{module}.{n}" for n in names] + [module]:
                if candidate in modules and candidate != name:
                    targets.add(candidate)
                    break
        graph[name] = targets
    cycles = [c for c in _cycles(graph) if c != ["ppl_scenes"]]
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.py")), ids=lambda p: p.name)
def test_experiments_import_public_names_only(path):
    wrong = []
    for line, module, names in _imports(path):
        if any(part.startswith("_") for part in module.split(".")):
            wrong.append(f"{path.name}:{line} imports the private module {module}")
            continue
        public = set(getattr(importlib.import_module(module), "__all__", ()))
        if not names and module != "ppl_scenes":
            wrong.append(f"{path.name}:{line} imports {module} whole (import names from it instead)")
        private = [
            n for n in names if n not in public and not (module == "ppl_scenes" and n == "__version__")
        ]
        if private:
            wrong.append(f"{path.name}:{line} imports {private} from {module}, not in its __all__")
    assert not wrong, "\n".join(wrong)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
