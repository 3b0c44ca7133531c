"""The package's public surface: one-level imports, docstrings, and a README whose code runs."""

import inspect
import re
from pathlib import Path

import ppl_scenes

README = Path(__file__).resolve().parents[1] / "README.md"

NAMES = [
    "SPAIR",
    "SPAIRConfig",
    "GMAIR",
    "GMAIRConfig",
    "GMAIRGuide",
    "MIST",
    "MISTConfig",
    "SceneModel",
    "SceneParse",
    "MODELS",
    "load",
    "fit",
    "TrainConfig",
    "make_dataset",
    "DATASETS",
    "ScatteredDigits",
    "LargeScatteredDigits",
    "MultiMNIST",
    "MultiScaleDigits",
    "ClutteredDigits",
    "MISTDigits",
    "GaborNoise",
    "Shapes",
    "RandomCrops",
    "Upscaled",
    "__version__",
]


def test_names_import_one_level_deep():
    for name in NAMES:
        assert name in ppl_scenes.__all__, name
        assert getattr(ppl_scenes, name) is not None, name
    assert len(set(ppl_scenes.__all__)) == len(ppl_scenes.__all__)
    assert all(hasattr(ppl_scenes, name) for name in ppl_scenes.__all__)
    from ppl_scenes import SPAIR, load  # noqa: F401  (the form users write)


def test_re_exports_are_the_real_objects():
    from ppl_scenes.data import DATASETS, make_dataset
    from ppl_scenes.infer import fit
    from ppl_scenes.models import MODELS, SPAIR
    from ppl_scenes.runs import load

    assert ppl_scenes.SPAIR is SPAIR and ppl_scenes.MODELS is MODELS and MODELS["spair"] is SPAIR
    assert ppl_scenes.fit is fit and ppl_scenes.load is load
    assert ppl_scenes.make_dataset is make_dataset and ppl_scenes.DATASETS is DATASETS


def test_version_matches_the_distribution():
    from importlib.metadata import version

    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", ppl_scenes.__version__)
    assert version("ppl_scenes") == ppl_scenes.__version__


def test_every_public_name_is_documented():
    assert ppl_scenes.__doc__
    for name in ppl_scenes.__all__:
        obj = getattr(ppl_scenes, name)
        if inspect.isclass(obj):
            doc = obj.__dict__.get("__doc__")  # its own, not one inherited from a base class
        elif callable(obj):
            doc = obj.__doc__
        else:  # registries and the version string are described in the package docstring
            doc = ppl_scenes.__doc__ if f"``{name}``" in ppl_scenes.__doc__ else None
        assert doc and doc.strip(), f"ppl_scenes.{name} has no docstring"


def test_cli_main_is_documented():
    from ppl_scenes import cli

    assert cli.__doc__ and cli.main.__doc__


# -- README --------------------------------------------------------------------------------------
def readme_python() -> str:
    """The README's Python blocks in order: the quickstart, then the snippets that build on it."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README should have a Python quickstart"
    return "\n".join(blocks)


def test_readme_quickstart_runs(tmp_path, monkeypatch):
    code = readme_python()
    # The quickstart as written, with a step count for a test instead of a real training run.
    code, n = re.subn(r"^STEPS = \d+", "STEPS = 2", code, flags=re.M)
    assert n == 1, "the quickstart should set its step count in one `STEPS = N` line"
    code, n = re.subn(r"^MINUTES = \d+", "MINUTES = 0.002", code, flags=re.M)  # the recipe: ~0.1 s
    assert n == 1, "the recipe should set its budget in one `MINUTES = N` line"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert (tmp_path / "quickstart.png").stat().st_size > 0
    parse = namespace["parse"]
    assert len(parse.boxes) == 8 and parse.reconstruction.shape == (8, 1, 48, 48)
    assert namespace["counts"].probs.shape == (8, 17)  # the posterior snippet ran on the quickstart's model
    assert namespace["idata"].posterior.sizes["draw"] == 100


def test_readme_names_every_dataset_and_verb():
    text = README.read_text()
    for name in ppl_scenes.DATASETS:
        assert f"`{name}`" in text, f"dataset {name!r} missing from the README"
    for verb in ("train", "eval", "sample", "demo"):
        assert f"ppl-scenes {verb}" in text
    assert "BENCHMARKS.md" in text and "make demo" in text and "make test" in text
