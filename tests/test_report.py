"""``experiments/report.py`` writes BENCHMARKS.md from the records (issue 34); no training, no torch."""

from __future__ import annotations

import importlib.util
import json
import shutil
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("experiments_report", ROOT / "experiments" / "report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    sys.path.insert(0, str(ROOT / "experiments"))  # its sibling helpers, as when run as a script
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
        sys.path.remove(str(ROOT / "experiments"))


def _copy_records(dst: Path) -> None:
    """The JSON records (and the figures' paths) of this checkout under ``dst``, nothing else."""
    for path in (ROOT / "benchmarks").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".png"):
            target = dst / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".json":
                shutil.copyfile(path, target)
            else:
                target.touch()  # only whether a figure exists matters to the page


def test_the_page_is_deterministic_and_committed(report):
    first, second = report.render(ROOT), report.render(ROOT)
    assert first == second
    ok, diff = report.check(ROOT)
    assert ok, f"BENCHMARKS.md differs from the records; run `python experiments/report.py`:\n{diff[:3000]}"


def test_check_fails_on_one_number_changed(report, tmp_path, capsys):
    page = tmp_path / "BENCHMARKS.md"
    text = (ROOT / "BENCHMARKS.md").read_text()
    row = "| SSDIR probe accuracy | 0.950 ± 0.007 |"
    assert row in text
    page.write_text(text.replace(row, "| SSDIR probe accuracy | 0.951 ± 0.007 |"))
    ok, diff = report.check(ROOT, page)
    assert not ok
    assert "-| SSDIR probe accuracy | 0.951 ± 0.007 |" in diff
    assert "+| SSDIR probe accuracy | 0.950 ± 0.007 |" in diff
    assert report.main(["--check", "--out", str(page)]) == 1
    assert "0.951" in capsys.readouterr().out
    page.write_text(text)
    assert report.main(["--check", "--out", str(page)]) == 0


def test_a_missing_record_is_reported(report, tmp_path, capsys):
    _copy_records(tmp_path)
    missing = "benchmarks/ssdir_probe_what/dim32_lrdrop_svi2000/ssdir_probe.json"
    (tmp_path / missing).unlink()
    page = report.render(tmp_path)
    assert f"> **Missing record:** `{missing}` — this table cannot be drawn." in page
    assert f"Records a section needs and that are not there: `{missing}`." in page
    assert "SSDIR: object codes" in capsys.readouterr().err
    # the other sections are drawn as before
    assert "| AP@0.5 (ink boxes) | 0.983 ± 0.000 |" in page


def test_headline_sd_is_the_sample_sd_of_the_seeds(report):
    path = ROOT / "benchmarks" / "ssdir_probe_what" / "dim32_lrdrop_svi2000" / "ssdir_probe.json"
    record = json.loads(path.read_text())
    seeds = [s["accuracy"] for s in record["results"]["ssdir"]["per_seed"]]
    claim = report.Claim("probe", list(enumerate(seeds)), target=0.95, paper=0.979)
    assert claim.sd == pytest.approx(statistics.stdev(seeds))
    assert claim.sd > record["results"]["ssdir"]["accuracy"]["std"]  # the record's is the population sd
    row = report.claim_table([claim]).splitlines()[2]
    assert "0.950 ± 0.007" in row and "| ≥ 0.950 | yes |" in row and row.endswith("| 0.979 | no |")


def test_an_interval_that_straddles_the_bar_is_said(report):
    claim = report.Claim("AP", [(0, 0.96), (1, 0.95), (2, 0.955)], target=0.95, interval=(0.94, 0.97))
    assert "yes (interval straddles the bar)" in report.claim_table([claim])


PRETRAINED = {
    "name": "spair-5digits",
    "model": "spair",
    "preset": "spair_5digits_30min",
    "command": "ppl-scenes pretrain spair_5digits_30min --out runs/pretrained/spair",
    "steps": 12084,
    "cpu_minutes": 30.0,
    "machine": {"platform": "Linux", "cpus": 2, "torch": "2.14.1"},
    "validation": {"ap50": 0.985, "count_accuracy": 0.938},
    "test": {"ap50": 0.983, "count_accuracy": 0.908, "rmse": 0.068},
    "test_intervals": {"ap50": [0.975, 0.99], "count_accuracy": [0.882, 0.932]},
    "targets": {"ap50": 0.95, "count_accuracy": 0.9, "rmse": 0.1},
    "sha256": "0" * 64,
    "notes": "a fixture",
}


def test_pretrained_records_are_one_table(report, tmp_path):
    assert report.pretrained(report.Records(tmp_path)) == "No records yet (`benchmarks/pretrained/*.json`)."
    (tmp_path / "benchmarks" / "pretrained").mkdir(parents=True)
    (tmp_path / "benchmarks" / "pretrained" / "spair.json").write_text(json.dumps(PRETRAINED))
    text = report.pretrained(report.Records(tmp_path))
    header, _, ap50, counts, rmse, _, note, trained = text.splitlines()
    assert header.startswith("| name | model | preset | steps | CPU minutes | score | validation | test")
    assert ap50 == (
        "| `spair-5digits` | spair | `spair_5digits_30min` | 12,084 | 30.0 | ap50 | 0.985 "
        "| 0.983 [0.975, 0.990] | ≥ 0.950 | yes |"
    )
    assert counts.endswith(
        "| count_accuracy | 0.938 | 0.908 [0.882, 0.932] | ≥ 0.900 | yes (interval straddles the bar) |"
    )
    assert rmse.endswith("| rmse | – | 0.068 | ≤ 0.100 | yes |")
    assert note == "- `spair-5digits`: a fixture" and "ppl-scenes pretrain" in trained
    failing = {**PRETRAINED, "test": {**PRETRAINED["test"], "rmse": 0.2}}
    (tmp_path / "benchmarks" / "pretrained" / "spair.json").write_text(json.dumps(failing))
    assert "| rmse | – | 0.200 | ≤ 0.100 | no |" in report.pretrained(report.Records(tmp_path))


def test_optional_sections_appear_only_with_their_records(report, tmp_path):
    _copy_records(tmp_path)
    shutil.rmtree(tmp_path / "benchmarks" / "step_profile", ignore_errors=True)
    assert "## Step profiles" not in report.render(tmp_path)
    (tmp_path / "benchmarks" / "step_profile").mkdir()
    for label, ops, ms in (("before", 8000, 160.0), ("after-idle", 4000, 98.3)):
        record = {
            "command": f"python experiments/step_profile.py --label {label}",
            "models": {"spair": {"aten_ops": ops, "timing": {"median_ms": ms}}},
        }
        (tmp_path / "benchmarks" / "step_profile" / f"{label}.json").write_text(json.dumps(record))
    page = report.render(tmp_path)
    assert "## Step profiles" in page and "| spair | 8,000, 160.0 ms | 4,000 (2.0x fewer), 98.3 ms |" in page
    assert "--label after-idle" in page and page == report.render(tmp_path)


def test_the_reproduction_table_sets_each_rerun_against_the_cards_interval(report, tmp_path):
    card = {
        "command": "ppl-scenes train spair --preset scattered-5 --out RUN_DIR",
        "steps": 9000,
        "validation": {"ap50": 0.98},
        "test": {"ap50": 0.98},
        "test_intervals": {"ap50": [0.97, 0.99]},
    }
    folder = tmp_path / "benchmarks" / "reproduce"
    folder.mkdir(parents=True)
    for seed, value in ((1, 0.975), (2, 0.96)):
        record = {
            "name": "spair",
            "seed": seed,
            "command": f"ppl-scenes train spair --preset scattered-5 --out r --seed {seed}",
            "steps": 9000,
            "train_minutes": 40.0,
            "targets": {"ap50": 0.95},
            "test": {"ap50": value},
            "card": card,
        }
        (folder / f"spair-s{seed}.json").write_text(json.dumps(record))
    text = report.reproduction(report.Records(tmp_path))
    row = next(line for line in text.splitlines() if line.startswith("| `spair`"))
    assert "s1: 0.975, s2: 0.960" in row and "| yes, no |" in row
    assert "0.972 ± 0.010 (n=3)" in row and "≥ 0.950: yes" in row


def test_equal_budget_records_set_each_baseline_beside_the_card(report, tmp_path):
    """One table per card: each model's steps and minutes (a GMM's fitting time said apart), its
    validation scores and its test scores with their intervals."""
    folder = tmp_path / "benchmarks" / "equal_budget"
    folder.mkdir(parents=True)
    scores = {"acc": 0.7, "ap50": 0.9}
    model = {"validation": scores, "test": scores, "test_intervals": {"ap50": [0.8, 0.95]}}
    record = {
        "card": "gmair",
        "command": "python experiments/equal_budget.py gmair --gmm ...",
        "targets": {"ap50": 0.95, "acc": 0.75},
        "splits": {"test": {"split": "test", "seed": 101, "scenes": 1000}},
        "models": {
            "shipped `gmair`": {**model, "budget": {"steps": 160000, "train_minutes": 362.0, "command": "c"}},
            "SPAIR + GMM": {
                **model,
                "budget": {
                    "steps": 9000,
                    "train_minutes": 35.04,
                    "gmm_fit_minutes": 0.5,
                    "run_dir": "runs/spair",
                    "command": "ppl-scenes train spair",
                },
            },
        },
    }
    (folder / "gmair.json").write_text(json.dumps(record))
    text = report.equal_budgets(report.Records(tmp_path))
    assert "| shipped `gmair` | 160,000 | 362.0 | 0.700 | 0.900 | 0.700 | 0.900 [0.800, 0.950] |" in text
    assert "| SPAIR + GMM | 9,000 | 35.0 + 0.5 (GMM fit) |" in text
    assert "SPAIR + GMM: `ppl-scenes train spair`" in text and "seed 101" in text and "acc ≥ 0.750" in text


def test_the_demo_record_sets_the_pretrained_spair_beside_the_demos_own(report, tmp_path):
    folder = tmp_path / "benchmarks" / "demo"
    folder.mkdir(parents=True)
    scores = {"ap50": 0.9, "ap_spair": 0.7, "count_accuracy": 0.6, "rmse": 0.1}
    record = {
        "command": "ppl-scenes demo",
        "seed": 0,
        "preset": "scattered-5",
        "budget": {"minutes": 5, "steps": 2400, "seconds": 300.0},
        "machine": {"cpus": 2, "torch_threads": 2, "torch": "2.x"},
        "test_scenes": 500,
        "yours": {**scores, "step": 2400},
        "pretrained": {**scores, "ap50": 0.98, "steps": 9000, "cpu_minutes": 70.6, "preset": "scattered-5"},
    }
    (folder / "demo.json").write_text(json.dumps(record))
    text = report.demo(report.Records(tmp_path))
    assert "| pretrained SPAIR (preset `scattered-5`, 70.6 CPU min) | 9,000 | 0.980 | 0.700 |" in text
    assert "| the demo's SPAIR (preset `scattered-5`, 5.0 min) | 2,400 | 0.900 |" in text
    assert "Command: `ppl-scenes demo` (seed 0; 2 CPUs, 2 torch threads" in text


def test_recipe_search_records_show_every_variants_validation_and_the_choices_test(report, tmp_path):
    folder = tmp_path / "benchmarks" / "recipe_search"
    folder.mkdir(parents=True)
    variant = {"steps": 9000, "validation": {"ap50": 0.98, "count_accuracy": 0.9}, "selection_score": 1.88}
    record = {
        "model": "spair",
        "preset": "scattered-5",
        "seed": 0,
        "command": "python experiments/recipe_search.py spair ...",
        "select": ["ap50", "count_accuracy"],
        "splits": {"test": {"split": "test", "seed": 202, "scenes": 1000}},
        "variants": [
            {**variant, "variant": 0, "overrides": ["pres_prob_end=0.3"]},
            {**variant, "variant": 1, "overrides": ["pres_prob_end=0.5"], "selection_score": 1.9},
        ],
        "chosen": 1,
        "test": {"ap50": 0.97, "count_accuracy": 0.91, "rmse": 0.1},
        "test_intervals": {"ap50": [0.96, 0.98]},
    }
    (folder / "spair-scattered-5.json").write_text(json.dumps(record))
    text = report.recipe_searches(report.Records(tmp_path))
    assert "| v0 | `pres_prob_end=0.3` | 9,000 | 0.980 | 0.900 | 1.880 |" in text
    assert "| v1 **(chosen)** | `pres_prob_end=0.5` | 9,000 | 0.980 | 0.900 | 1.900 |" in text
    assert (
        "1,000 test scenes of seed 202, scored once: ap50 0.970 [0.960, 0.980], count_accuracy 0.910." in text
    )


def test_lean_check_records_sit_beside_their_cards(report, tmp_path):
    for folder in ("lean_check", "pretrained"):
        (tmp_path / "benchmarks" / folder).mkdir(parents=True)
    card = {
        "steps": 9000,
        "cpu_minutes": 70.6,
        "validation": {"ap50": 0.985, "count_accuracy": 0.932},
        "test": {"ap50": 0.983, "count_accuracy": 0.925},
        "test_intervals": {"ap50": [0.978, 0.987], "count_accuracy": [0.908, 0.94]},
        "splits": {"validation": {"seed": 101}, "test": {"seed": 101}},
    }
    (tmp_path / "benchmarks" / "pretrained" / "spair.json").write_text(json.dumps(card))
    record = {
        "model": "spair",
        "preset": "scattered-5",
        "machine": {"revision": "abc1234"},
        "variants": [
            {
                "variant": 0,
                "steps": 9000,
                "train_minutes": 31.0,
                "validation": {"ap50": 0.98, "count_accuracy": 0.9},
            }
        ],
        "chosen": 0,
        "test": {"ap50": 0.97, "count_accuracy": 0.91, "rmse": 0.1},
        "test_intervals": {"ap50": [0.96, 0.98], "count_accuracy": [0.89, 0.93]},
        "splits": {"validation": {"seed": 101}, "test": {"seed": 202}},
        "command": "python experiments/recipe_search.py spair ...",
    }
    (tmp_path / "benchmarks" / "lean_check" / "spair-scattered-5.json").write_text(json.dumps(record))
    text = report.lean_checks(report.Records(tmp_path))
    assert (
        "| card `spair` | `scattered-5` | 101 / 101 | 9,000 | 70.6 | 0.985 | 0.932 | 0.983 [0.978, 0.987] |"
        in text
    )
    lean = "| lean step, revision `abc1234` | `scattered-5` | 101 / 202 | 9,000 | 31.0 | 0.980 | 0.900 | "
    lean += "0.970 [0.960, "
    assert lean in text
