"""The docs under ``docs/`` keep up with the code (``make docs`` builds them with warnings as errors).

Every public module has an ``automodule`` directive on some page; the paths the guides name exist;
the layer table of ``docs/architecture.md`` is ``LAYERS`` of ``tests/test_layers.py``; the model
skeleton of ``docs/adding_a_model.md`` runs and keeps the contract; ``experiments/import_graph.py``
draws, and finds a cycle where there is one.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGE = ROOT / "ppl_scenes"
GUIDES = [DOCS / "architecture.md", DOCS / "adding_a_model.md"]


def _public_modules() -> set[str]:
    """``ppl_scenes`` and every module below it whose dotted name has no part starting with ``_``."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if not any(p.startswith("_") for p in parts):
            names.add(".".join(parts))
    return names


def _documented_modules() -> set[str]:
    """Modules named by an ``automodule`` (or ``optional-automodule``) directive, in rST or MyST."""
    directive = r"\.\. (?:optional-)?automodule::|```\{(?:optional-)?automodule\}"
    pattern = re.compile(rf"^(?:{directive})\s*(\S+)", re.M)
    found = set()
    for path in [*DOCS.rglob("*.rst"), *DOCS.rglob("*.md")]:
        if "_build" not in path.parts:
            found |= set(pattern.findall(path.read_text()))
    return found


def test_every_public_module_has_an_automodule():
    missing = sorted(_public_modules() - _documented_modules())
    assert not missing, f"modules with no automodule directive in docs/ (add them to docs/api/): {missing}"


def test_every_automodule_names_a_module_of_the_package():
    """A plain ``automodule`` of a module that does not exist would break the build; the optional ones
    (modules other branches are adding) may name modules not here yet."""
    plain = set()
    for path in DOCS.rglob("*.rst"):
        if "_build" not in path.parts:
            plain |= set(re.findall(r"^\.\. automodule:: (\S+)", path.read_text(), flags=re.M))
    assert plain <= _public_modules(), sorted(plain - _public_modules())


def _named_paths(text: str) -> list[str]:
    """Repository paths named in backticks: with a slash, ending in a file suffix or a slash."""
    candidates = re.findall(r"`([\w.<>/-]+)`", text)
    return [c for c in candidates if "/" in c and re.search(r"(\.(py|md|rst|toml|png|json)|/)$", c)]


@pytest.mark.parametrize("page", GUIDES, ids=lambda p: p.name)
def test_guides_name_files_that_exist(page):
    """``<name>`` in a path stands for any model: some file must match it."""
    paths = _named_paths(page.read_text())
    assert paths, f"{page.name} names no files"
    missing = [p for p in paths if not list(ROOT.glob(re.sub(r"<\w+>", "*", p.rstrip("/")) or "."))]
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


def test_adding_a_model_names_the_files_a_model_touches():
    text = (DOCS / "adding_a_model.md").read_text()
    for path in (
        "ppl_scenes/models/<name>.py",
        "ppl_scenes/models/__init__.py",
        "tests/models/test_<name>.py",
        "tests/models/test_contract.py",
    ):
        assert f"`{path}`" in text, path


def _layers() -> list[tuple[str, ...]]:
    tree = ast.parse((ROOT / "tests" / "test_layers.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
            if isinstance(target, ast.Name) and target.id == "LAYERS":
                return [tuple(layer) for layer in ast.literal_eval(node.value)]
    raise AssertionError("tests/test_layers.py has no LAYERS")


def test_the_layer_table_is_LAYERS():
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \|", (DOCS / "architecture.md").read_text(), flags=re.M)
    table = {int(k): tuple(re.findall(r"`([^`]+)`", parts)) for k, parts in rows}
    layers = _layers()
    assert table == dict(enumerate(layers)), "docs/architecture.md's layer table differs from LAYERS"


def _skeleton() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "adding_a_model.md").read_text(), flags=re.S)
    (code,) = [b for b in blocks if "class OneObject(" in b]
    return code


def test_the_skeleton_keeps_the_contract(tmp_path, monkeypatch):
    from ppl_scenes import MODELS, SceneParse, fit, load
    from ppl_scenes.data import Shapes
    from ppl_scenes.models.base import SceneModel, Variational

    module = types.ModuleType("one_object")
    monkeypatch.setitem(sys.modules, "one_object", module)
    try:
        exec(compile(_skeleton(), str(DOCS / "adding_a_model.md"), "exec"), module.__dict__)
        cls = module.OneObject
        assert MODELS["one_object"] is cls and issubclass(cls, SceneModel) and issubclass(cls, Variational)
        data = Shapes(4, canvas_size=32, num_shapes=1, min_size=8, max_size=12)
        model = cls(channels=3, what_dim=2, glimpse_size=8, hidden_dim=8)
        model = fit(model, data, steps=2, batch_size=2, out=tmp_path / "run", progress=False)
        x = torch.stack([data[i][0] for i in range(2)])
        parse = model.parse(x)
        assert isinstance(parse, SceneParse) and parse.counts.tolist() == [1, 1]
        assert parse.boxes[0].shape == (1, 4) and parse.reconstruction.shape == x.shape
        metrics = model.evaluate(data)
        assert {"ap50", "count_accuracy", "rmse"} <= set(metrics)
        restored = load(tmp_path / "run")
        assert type(restored) is cls and restored.config == model.config
        torch.testing.assert_close(restored.parse(x).boxes, parse.boxes)
        with pytest.raises(ValueError):
            cls(no_such_field=1)
    finally:
        MODELS.pop("one_object", None)


def _import_graph():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "experiments" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_import_graph_draws_the_package_and_finds_a_cycle(tmp_path, capsys):
    graph = _import_graph()
    assert graph.read_layers() == _layers()
    graph.main(["--out", str(tmp_path / "now.png")])
    assert (tmp_path / "now.png").stat().st_size > 0

    # a package whose parts a and b import each other (b inside a function), and c in no layer
    pkg = tmp_path / "old" / "ppl_scenes"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from ppl_scenes.a import f\n")
    (pkg / "a" / "__init__.py").write_text("from ppl_scenes.b import g\n\ndef f():\n    return g\n")
    (pkg / "b.py").write_text("def g():\n    from ppl_scenes.a import f\n    return f\n")
    (pkg / "c.py").write_text("import ppl_scenes\n")
    layers = tmp_path / "layers.py"
    layers.write_text('LAYERS = [("b",), ("a",)]\n')
    edges, sizes = graph.part_graph(pkg)
    assert edges == {("a", "b"): 1, ("b", "a"): 1, ("c", "(root)"): 1} and sizes["c"] == 1
    capsys.readouterr()
    graph.main(["--package-dir", str(pkg), "--layers", str(layers), "--out", str(tmp_path / "old.png")])
    out = capsys.readouterr().out
    assert "[['a', 'b']]" in out and "c->(root)" in out
    assert (tmp_path / "old.png").stat().st_size > 0
