"""Smoke runs of the experiment scripts (DESIGN.md habit 8): each ``main([...])`` with tiny flags.

Every script is imported from ``experiments/`` by path and run in-process on a few scenes and two
SVI steps; the tests check the JSON record (keys, values in range, strict JSON) and that the figures
exist. Digits come from ``$PPL_SCENES_DATA`` when it holds MNIST, else from scikit-learn's fallback
(never downloaded).
"""

import importlib.util
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

import pytest
import torch

from ppl_scenes import SPAIR, load
from ppl_scenes.rundir import DETECTOR_FILE, RunDir

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
METRICS = ("ap50", "ap_spair", "ap_coco", "count_accuracy", "count_mae", "num_scenes")
TINY = ["--steps", "2", "--num-train", "8", "--batch-size", "4", "--threads", "1", "--no-progress"]

pytestmark = pytest.mark.filterwarnings("ignore::ppl_scenes.data.DigitFallbackWarning")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Flags for the digit source: CI's MNIST copy, else an empty root (offline fallback digits)."""
    root = os.environ.get("PPL_SCENES_DATA")
    if not root or not os.path.isdir(os.path.join(root, "MNIST", "raw")):
        root = str(tmp_path_factory.mktemp("no_mnist"))
    return ["--data-root", root, "--no-download"]


@pytest.fixture
def script(monkeypatch):
    """``script(name)`` imports ``experiments/name.py`` as module ``name`` (its helpers importable)."""
    monkeypatch.syspath_prepend(str(EXPERIMENTS))  # the scripts import _common from their folder

    def load_script(name):
        spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)  # spawned workers unpickle by module name
        spec.loader.exec_module(module)
        return module

    return load_script


@pytest.fixture
def scenes_seen(monkeypatch):
    """Which splits' scenes the scripts read: ``{"curves": set, "all": set}``.

    Every scene generator reads its scenes through ``SceneDataset.__getitem__`` (wrappers such as
    ``Subset``, crops and upscaling call it); ``curves`` holds the splits read while a training run's
    ``eval_fn`` (its curve points and final evaluation) runs, ``all`` those read at any time.
    """
    from ppl_scenes.data.scenes import SceneDataset
    from ppl_scenes.runs import RunSpec

    seen = {"curves": set(), "all": set()}
    in_eval = []
    getitem, train_into = SceneDataset.__getitem__, RunSpec.train_into

    def logged_getitem(self, index):
        seen["all"].add(self.split)
        if in_eval:
            seen["curves"].add(self.split)
        return getitem(self, index)

    def logged_train_into(self, *args, eval_fn=None, **kwargs):
        if eval_fn is not None:
            inner = eval_fn

            def eval_fn(model):
                in_eval.append(True)
                try:
                    return inner(model)
                finally:
                    in_eval.pop()

        return train_into(self, *args, eval_fn=eval_fn, **kwargs)

    monkeypatch.setattr(SceneDataset, "__getitem__", logged_getitem)
    monkeypatch.setattr(RunSpec, "train_into", logged_train_into)
    return seen


def check_protocol(record: dict, validation: bool = True) -> None:
    """BENCHMARKS.md's protocol in a record: validation scored beside test, the splits and the source."""
    splits = record["splits"]
    for part in splits.values() if "test" not in splits else [splits]:
        assert part["validation"]["split"] == "val" and part["test"]["split"] == "test"
        assert part["validation"]["scenes"] > 0 and part["test"]["scenes"] > 0
        assert isinstance(part["validation"]["seed"], int) and isinstance(part["test"]["seed"], int)
    assert record["digit_source"] in ("mnist", "sklearn-fallback") or all(
        v in ("mnist", "sklearn-fallback", None) for v in record["digit_source"].values()
    )
    if validation:
        assert record["validation"] and set(record["validation"]) == set(record["results"])


def _source(digits: list[str]) -> str:
    """The digit source a record made with the ``digits`` flags names."""
    return "sklearn-fallback" if "no_mnist" in digits[1] else "mnist"


def read_record(path: Path) -> dict:
    """The JSON file, refusing NaN/Infinity (the records must be strict JSON)."""

    def refuse(constant):
        raise AssertionError(f"{path} holds the non-JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def check_metrics(metrics: dict, num_scenes: int) -> None:
    assert set(METRICS) <= set(metrics)
    assert metrics["num_scenes"] == num_scenes
    for key in ("ap50", "ap_spair", "ap_coco", "count_accuracy"):
        assert metrics[key] is None or 0.0 <= metrics[key] <= 1.0, (key, metrics[key])
    assert metrics["count_mae"] >= 0.0


def check_common(record: dict, name: str, out: Path) -> None:
    assert record["experiment"] == name
    assert record["command"].startswith(f"python experiments/{name}.py")
    assert {"platform", "processor", "cpus", "torch_threads", "torch"} <= set(record["machine"])
    assert record["train"]["steps"] == 2 and record["train"]["batch_size"] == 4
    assert read_record(out / f"{name}.json") == json.loads(json.dumps(record, default=str))
    for path in record["figures"].values():
        assert Path(path).is_file() and Path(path).suffix == ".png" and Path(path).stat().st_size > 0


def test_spair_scaling(script, digits, tmp_path):
    scaling = script("spair_scaling")
    out = tmp_path / "scaling"
    args = [*TINY, *digits, "--counts", "3", "1", "--num-test", "4", "--out", str(out)]
    record = scaling.main(args)
    check_common(record, "spair_scaling", out)
    assert record["settings"]["counts"] == [1, 3]
    assert [c["num_digits"] for c in record["conditions"]] == [1, 3]
    for c in record["conditions"]:
        check_metrics(c["spair"], 4)
        check_metrics(c["spair_validation"], 4)
        check_protocol(c, validation=False)
        assert c["splits"]["test"]["seed"] == 0 and "intervals" in c["spair"]
        check_metrics(c["spair_tight_boxes"], 4)
        assert c["spair_tight_boxes"]["count_accuracy"] == c["spair"]["count_accuracy"]  # boxes only
        check_metrics(c["conncomp"], 4)
        assert c["steps"] == 2 and c["torch_threads"] == 1
        assert c["train_seconds"] >= 0 and c["seconds"] >= c["train_seconds"]
        assert "rmse" in c["spair"] and "rmse" not in c["conncomp"]
        assert (out / f"examples_{c['num_digits']}digits.png").is_file()
        run = Path(c["run_dir"])
        assert read_record(run / "eval.json")["step"] == 2
        assert isinstance(load(run), SPAIR)  # the run directory restores
    assert (out / "ap_by_digits.png").is_file()

    # An existing run is never overwritten; --resume continues it.
    with pytest.raises(SystemExit) as err:
        scaling.main(args)
    assert err.value.code == 2
    resumed = scaling.main([*args[2:], "--steps", "3", "--counts", "1", "--resume"])
    assert resumed["conditions"][0]["steps"] == 3


def test_spair_scaling_takes_config_overrides(script, digits, tmp_path):
    scaling = script("spair_scaling")
    out = tmp_path / "scaling"
    args = [*TINY, *digits, "--counts", "1", "--num-test", "2", "--out", str(out), "--set", "cell_size=8,8"]
    record = scaling.main([*args, "--train-set", "lr_decay_from=0.5", "lr=5e-4"])
    assert record["model"]["config"]["cell_size"] == [8, 8]
    run_dir = Path(record["conditions"][0]["run_dir"])
    assert load(run_dir).config.cell_size == (8, 8)
    stored = json.loads((run_dir / "config.json").read_text())["train_config"]
    assert stored["lr_decay_from"] == 0.5 and stored["lr"] == 5e-4
    with pytest.raises(SystemExit):
        scaling.main([*args[:-3], str(tmp_path / "other"), "--set", "no_such_field=1"])
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("item", ["lr_decay_from", "no_such_field=1", "lr=fast", "steps=3"])
def test_bad_train_set_items_exit_2(script, item, tmp_path):
    with pytest.raises(SystemExit) as err:
        script("spair_scaling").main(["--out", str(tmp_path / "x"), "--train-set", item])
    assert err.value.code == 2
    assert not (tmp_path / "x").exists()


@pytest.mark.slow  # spawns two fresh Python processes (torch and Pyro imported in each)
def test_spair_scaling_jobs_match_sequential(script, digits, tmp_path):
    scaling = script("spair_scaling")
    args = [*TINY, *digits, "--counts", "1", "2", "--num-test", "4"]
    seq = scaling.main([*args, "--out", str(tmp_path / "seq")])
    par = scaling.main([*args, "--out", str(tmp_path / "par"), "--jobs", "2"])
    for a, b in zip(seq["conditions"], par["conditions"]):
        assert a["num_digits"] == b["num_digits"] and b["torch_threads"] == 1
        assert a["spair"] == pytest.approx(b["spair"], nan_ok=True)


def test_spair_generalization(script, digits, tmp_path):
    out = tmp_path / "generalization"
    record = script("spair_generalization").main(
        [*TINY, *digits, "--max-count", "12", "--test-per-count", "1", "--out", str(out)]
    )
    check_common(record, "spair_generalization", out)
    check_protocol(record, validation=False)
    assert record["splits"]["validation"]["scenes"] == record["splits"]["test"]["scenes"] == 12
    check_metrics(record["variants"]["SPAIR"]["validation"]["overall"], 12)
    assert "ap_spair" in record["variants"]["SPAIR"]["overall"]["intervals"]
    assert record["settings"]["train_digits"] == [6, 10]  # the scattered-crops generator's default
    assert record["settings"]["test_counts"] == list(range(1, 13))
    spair, conncomp = record["variants"]["SPAIR"], record["conncomp"]
    assert spair["steps"] == 2
    for result in (spair, conncomp):
        check_metrics(result["overall"], 12)
        assert list(result["by_count"]) == list(range(1, 13))
        for metrics in result["by_count"].values():
            check_metrics(metrics, 1)
        # Headline: mean absolute count error over the scenes with 11-20 digits (here 11 and 12).
        expected = (result["by_count"][11]["count_mae"] + result["by_count"][12]["count_mae"]) / 2
        assert result["count_mae_11_20"] == pytest.approx(expected)
    check_metrics(spair["tight_boxes"]["overall"], 12)
    assert spair["tight_boxes"]["overall"]["count_mae"] == spair["overall"]["count_mae"]  # boxes only
    assert {"by_count", "examples_spair"} <= set(record["figures"])
    assert RunDir(spair["run_dir"]).has_checkpoint()


def test_spair_lateral_ablation(script, digits, tmp_path):
    out = tmp_path / "lateral"
    record = script("spair_lateral_ablation").main(
        [*TINY, *digits, "--max-count", "2", "--test-per-count", "1", "--out", str(out)]
    )
    check_common(record, "spair_lateral_ablation", out)
    assert record["settings"]["train_digits"] == [11, 15]
    assert set(record["variants"]) == {"lateral", "no lateral"}
    assert record["model"]["lateral"]["config"]["lateral"] is True
    assert record["model"]["no lateral"]["config"]["lateral"] is False
    for variant in record["variants"].values():
        check_metrics(variant["overall"], 2)
        assert list(variant["by_count"]) == [1, 2]
        assert variant["count_mae_11_20"] is None  # no test scene has 11 or more digits
    assert {"by_count", "examples_lateral", "examples_no-lateral"} <= set(record["figures"])
    assert load(record["variants"]["no lateral"]["run_dir"]).config.lateral is False


def test_spair_atari(script, tmp_path):
    pytest.importorskip("ale_py")
    out = tmp_path / "atari"
    args = [*TINY, "--num-frames", "3", "--frame-every", "2", "--num-test", "2", "--out", str(out)]
    record = script("spair_atari").main(args)
    check_common(record, "spair_atari", out)
    assert record["frame_size"] == [210, 160]
    assert record["model"]["config"]["channels"] == 3
    assert record["steps"] == 2
    assert isinstance(record["ale_py"], str) and record["ale_py"]
    counts = record["objects_per_frame"]
    assert len(counts["spair"]) == len(counts["conncomp"]) == 2
    assert counts["spair_mean"] == pytest.approx(sum(counts["spair"]) / 2)
    assert {"parses", "crops"} <= set(record["figures"])


def test_spair_atari_without_ale_py(script, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ale_py", None)  # import ale_py now raises ImportError
    with pytest.raises(SystemExit) as err:
        script("spair_atari").main([*TINY, "--out", str(tmp_path / "atari")])
    assert err.value.code == 2
    assert "pip install 'ppl_scenes[atari]'" in capsys.readouterr().err
    assert not (tmp_path / "atari").exists()


def test_own_images(script, tmp_path):
    pytest.importorskip("skimage")
    out = tmp_path / "own"
    record = script("own_images").main(
        ["--steps", "2", "--runs", "coins:spair", "--out", str(out), "--no-progress"]
    )
    assert record["experiment"] == "own_images" and read_record(out / "own_images.json") == record
    assert record["calls"][0]["command"].startswith("python experiments/own_images.py")
    coins = record["runs"]["coins:spair"]
    assert coins["commands"][0].startswith("ppl-scenes train spair --images") and coins["steps"] == 2
    assert coins["validation"]["dataset"] == "images" and "elbo" in coins["validation"]
    assert list(coins["objects_per_image"]) == ["coins.png"]
    assert coins["coco"]["num_objects"] == 24 and coins["coco"]["num_images"] == 1  # the 24 coins
    assert Path(record["figures"]["coins"]).stat().st_size > 0


def test_own_images_without_scikit_image(script, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage now raises ImportError
    with pytest.raises(SystemExit) as err:
        script("own_images").main(["--steps", "2", "--out", str(tmp_path / "own")])
    assert err.value.code == 2
    assert "pip install 'ppl_scenes[examples]'" in capsys.readouterr().err
    assert not (tmp_path / "own").exists()


def test_gmair_clustering(script, digits, tmp_path, scenes_seen):
    out = tmp_path / "gmair"
    small = ["--num-test", "12", "--gmm-scenes", "8", "--curve-scenes", "4", "--eval-every", "1"]
    sizes = ["--canvas-size", "32", "--digit-size", "12", "--digits", "1", "2"]
    record = script("gmair_clustering").main([*TINY, *digits, *small, *sizes, "--out", str(out)])
    check_common(record, "gmair_clustering", out)
    assert set(record["results"]) == {"gmair", "spair_gmm"}
    for metrics in record["results"].values():
        check_metrics(metrics, 12)
        for key in ("acc", "nmi"):
            assert metrics[key] is None or 0.0 <= metrics[key] <= 1.0
    assert set(record["met"]) == {"ap50", "acc", "nmi", "acc_gain", "nmi_gain"}
    assert [r["step"] for r in record["curves"]["gmair"]] == [1, 2]
    assert scenes_seen["curves"] == {"val"}  # the curves are drawn on validation scenes only
    check_protocol(record)
    assert record["splits"]["validation"]["scenes"] == 12 and record["splits"]["test"]["seed"] == 1
    assert set(record["results"]["gmair"]["intervals"]) >= {"ap50", "count_accuracy"}
    for metrics in record["validation"].values():
        check_metrics(metrics, 12)
    assert record["models"]["gmair"]["config"]["num_clusters"] == 10
    assert load(out / "runs" / "gmair").config.tight_boxes
    assert {"curves", "tsne", "generated", "edits", "examples", "clusters"} == set(record["figures"])
    assert (out / "clusters.png").stat().st_size > 0


def test_gmair_clustering_in_two_processes(script, digits, tmp_path):
    """Each model trained by its own call; a last call with --resume only evaluates."""
    gmair = script("gmair_clustering")
    args = [
        *TINY,
        *digits,
        "--num-test",
        "4",
        "--gmm-scenes",
        "4",
        "--eval-every",
        "0",
        "--out",
        str(tmp_path),
    ]
    args += ["--canvas-size", "32", "--digit-size", "12", "--digits", "1", "2"]
    assert gmair.main([*args, "--models", "spair"]) == {}
    record = gmair.main([*args, "--models", "gmair", "--resume"])
    assert record["cost"]["spair"]["steps"] == 2 and record["cost"]["gmair"]["steps"] == 2


@pytest.mark.parametrize(
    "name", ["spair_scaling", "spair_generalization", "spair_lateral_ablation", "gmair_clustering"]
)
def test_bad_flags_exit_2(script, name, tmp_path):
    with pytest.raises(SystemExit) as err:
        script(name).main(["--steps", "0", "--out", str(tmp_path)])
    assert err.value.code == 2


def test_spair_stream_speed(script, digits, tmp_path):
    out = tmp_path / "stream"
    args = ["--steps", "2", "--warmup", "1", "--log-every", "1", "--repeats", "1", "--batch-size", "2"]
    args += ["--memory-scenes", "4", "--out", str(out), *digits[:2]]
    record = script("spair_stream_speed").main(args)
    conditions = record["conditions"]
    assert set(conditions) == {"memory", "stream", "stream_default_malloc"}
    assert conditions["memory"]["generated_batch_by_batch"] is False
    assert conditions["stream"]["generated_batch_by_batch"] is True
    for result in conditions.values():
        assert result["median_ms"] > 0 and len(result["per_run_median_ms"]) == 1
    assert all(len(r[0]["ms_per_step"]) == 2 for r in record["runs"].values())  # steps 1-2, 2-3
    assert read_record(out / "spair_stream_speed.json")["settings"]["steps"] == 2


def test_spair_speed(script, digits, tmp_path):
    out = tmp_path / "speed"
    args = [
        "--timed-steps",
        "2",
        "--warmup",
        "1",
        "--sizes",
        "24",
        "48",
        "--batch-size",
        "2",
        "--out",
        str(out),
    ]
    record = script("spair_speed").main([*args, "--threads", "1", *digits])
    assert (
        record["seed"] == 0
        and record["digit_source"] == _source(digits)
        and record["budget"]["warmup_steps"] == 1
    )
    results = record["results"]
    for name in ("target", "raster", "no_lateral"):
        assert 0 < results[name]["q25_ms"] <= results[name]["median_ms"] <= results[name]["q75_ms"]
    assert results["wavefront_speedup"] == results["raster"]["median_ms"] / results["target"]["median_ms"]
    assert (
        set(results["pixels"]) == {"24", "48"}
        and results["pixels"]["48"]["median_ms"] == results["target"]["median_ms"]
    )
    assert read_record(out / "spair_speed.json")["batch_size"] == 2
    assert (out / "step_time_by_pixels.png").stat().st_size > 0


def test_spair_misses_splits_the_misses_by_cause(script, digits, tmp_path):
    scaling = script("spair_scaling")
    runs = tmp_path / "scaling"
    scaling.main([*TINY, *digits, "--counts", "3", "--num-test", "2", "--out", str(runs)])
    record = script("spair_misses").main(
        [str(runs / "runs" / "digits-3"), "--num-test", "4", "--out", str(tmp_path / "misses")]
    )
    for kind in ("where_boxes", "tight_boxes"):
        r = record[kind]
        assert r["digits"] == 12 and r["missed"] == r["overlapping"] + r["border"] + r["loose"] <= 12
    assert read_record(tmp_path / "misses" / "spair_misses.json")["num_test"] == 4


def test_spair_boxes_scores_where_and_tightened_boxes(script, digits, tmp_path, scenes_seen):
    scaling = script("spair_scaling")
    runs = tmp_path / "scaling"
    scaling.main([*TINY, *digits, "--counts", "3", "--num-test", "2", "--out", str(runs)])
    out = tmp_path / "boxes"
    scenes_seen["all"].clear()
    record = script("spair_boxes").main(
        [str(runs / "runs" / "digits-3"), "--num-val", "3", "--num-test", "4", "--out", str(out)]
        + ["--opacity-thresholds", "0.1", "--ink-thresholds", "0.05", "0.2"]
    )
    assert [r["boxes"] for r in record["settings"]] == ["where", "opacity", "ink", "ink"]
    counts = {r["test"]["count_accuracy"] for r in record["settings"]}
    assert len(counts) == 1  # boxes do not change the counts
    assert set(record["chosen_on_validation"]) == {"where", "opacity", "ink"}
    chosen = record["chosen_on_validation"]["ink"]
    assert chosen["tight_threshold"] in (0.05, 0.2)
    assert len(chosen["test_ap_by_iou"]) == 9
    assert read_record(out / "spair_boxes.json")["num_test"] == 4
    # thresholds chosen on split "val" scenes (never training digits), scored once more on test scenes
    assert scenes_seen["all"] == {"val", "test"}
    assert record["splits"]["validation"] == {"split": "val", "seed": 1, "scenes": 3}
    assert record["splits"]["test"]["split"] == "test" and record["digit_source"] in (
        "mnist",
        "sklearn-fallback",
    )
    assert set(chosen["test_intervals"]) >= {"ap_spair", "ap50"}
    for name in ("ap_by_iou", "parses_where", "parses_opacity", "parses_ink"):
        assert (out / f"{name}.png").stat().st_size > 0


def test_miss_report_on_a_constructed_case(script):
    report = script("spair_misses").miss_report
    truth = [
        torch.tensor(
            [[10.0, 10.0, 20.0, 20.0], [14.0, 12.0, 24.0, 22.0], [0.0, 30.0, 8.0, 40.0], [30, 5, 34, 15.0]]
        )
    ]
    pred = [torch.tensor([[10.0, 10.0, 20.0, 20.0], [29.0, 5.0, 39.0, 15.0], [40.0, 40.0, 44.0, 44.0]])]
    r = report(pred, truth, (48, 48))
    # box 0 found; box 1 overlaps box 0 (merged); box 2 touches the border; box 3 is boxed loosely
    assert (r["missed"], r["overlapping"], r["border"], r["loose"]) == (3, 1, 1, 1)
    assert r["false_positives"] == 2 and r["loose_mean_true_width"] == 4.0


def test_docstrings_give_the_command(script):
    names = (
        "spair_scaling",
        "spair_generalization",
        "spair_lateral_ablation",
        "spair_atari",
        "own_images",
        "spair_speed",
        "spair_misses",
        "spair_boxes",
        "gmair_clustering",
        "mist_reconstruction",
        "mist_classification",
        "saccade_cluttered",
        "ssdir_probe",
        "ssdir_ablation",
        "saccade_fixed_batch",
        "saccade_noisy_proxy",
        "saccade_large",
        "saccade_attention_start",
        "benchmark",
        "step_profile",
        "gpu_check",
        "anchor_compare",
    )
    for name in names:
        doc = script(name).__doc__
        assert f"python experiments/{name}.py" in doc


MIST_TINY = ["--set", "task_width=4", "heatmap_channels=4", "heatmap_blocks=1", "refine_steps=1"]
MIST_SMALL = ["--num-test", "6", "--curve-scenes", "3", "--eval-every", "1"]


def test_mist_reconstruction(script, digits, tmp_path, scenes_seen):
    out = tmp_path / "mist"
    record = script("mist_reconstruction").main([*TINY, *digits, *MIST_SMALL, *MIST_TINY, "--out", str(out)])
    check_common(record, "mist_reconstruction", out)
    expected = {"easy-mist", "easy-grid", "easy-channelwise", "hard-mist", "hard-grid", "hard-channelwise"}
    assert set(record["results"]) == expected | {"gabor-mist"}
    assert scenes_seen["curves"] == {"val"}  # the curve points, MNIST and Gabor alike
    check_protocol(record)
    assert record["digit_source"]["gabor"] is None and "intervals" in record["results"]["easy-mist"]
    for metrics in record["results"].values():
        assert metrics["num_scenes"] == 6 and metrics["rmse"] > 0
        assert 0.0 <= metrics["detection_rate"] <= 1.0
    assert set(record["targets_met"]) == {"easy-mist", "hard-mist", "gabor-mist"}
    assert 0 < record["blank_canvas_rmse"]["gabor"] < 0.5
    assert record["models"]["gabor-mist"]["background"] == 0.5 and record["cost"]["easy-mist"]["steps"] == 2
    assert {"examples_easy", "patches_hard", "heatmaps_gabor", "training_hard"} <= set(record["figures"])
    assert len(list((out / "runs" / "easy-mist" / "heatmaps").glob("*.npy"))) == 2
    assert type(load(out / "runs" / "hard-grid")).__name__ == "GridPatches"


def test_mist_reconstruction_dense_gabor_is_mist_only_with_k_30(script, digits, tmp_path):
    """Also a MIST told each scene's count (the paper's 'only the total number of instances')."""
    out = tmp_path / "dense"
    argv = [*TINY, *digits, *MIST_SMALL, *MIST_TINY, "count_from_labels=true"]
    argv += ["--datasets", "gabor-dense", "--models", "mist", "grid", "--out", str(out)]
    record = script("mist_reconstruction").main(argv)
    assert set(record["results"]) == {"gabor-dense-mist"}
    config = record["models"]["gabor-dense-mist"]
    assert config["num_patches"] == 30 and config["nms_window"] == 5 and config["background"] == 0.5
    assert config["count_from_labels"] is True
    assert record["blank_canvas_rmse"]["gabor-dense"] > record["paper_rmse"]["gabor-dense"]["mist"]


def test_mist_classification_in_two_processes(script, digits, tmp_path, scenes_seen):
    """Each model trained by its own call; a last call with --resume only evaluates them both."""
    classify = script("mist_classification")
    args = [*TINY, *digits, *MIST_SMALL, "--out", str(tmp_path)]
    first = classify.main([*args, *MIST_TINY, "--models", "channelwise"])
    assert set(first["results"]) == {"channelwise"} and first["targets_met"] == {}
    classify.main([*args, *MIST_TINY, "recon_weight=1.5", "task_jitter=1", "--models", "mist"])
    # the evaluating call does not repeat the mist run's own --set items: the run keeps them
    record = classify.main([*args, *MIST_TINY, "--resume"])
    check_common(record, "mist_classification", tmp_path)
    assert scenes_seen["curves"] == {"val"}
    check_protocol(record)
    assert record["models"]["mist"]["recon_weight"] == 1.5 and record["models"]["mist"]["task_jitter"] == 1.0
    assert "rmse" in record["results"]["mist"] and "rmse" not in record["results"]["channelwise"]
    assert record["cost"]["mist"]["steps"] == 2 and record["cost"]["channelwise"]["steps"] == 2
    for metrics in record["results"].values():
        for key in ("detection_rate", "detected_and_classified"):
            assert 0.0 <= metrics[key] <= 1.0
    assert set(record["targets_met"]) == {
        "detection_rate",
        "classification_accuracy",
        "detected_and_classified",
    }
    assert record["models"]["mist"]["count_from_labels"] is True
    # without --steps a resumed run keeps its own budget: nothing more is trained
    no_budget = [a for a in args if a not in ("--steps", "2")]
    again = classify.main([*no_budget, "--resume"])
    assert again["cost"]["mist"]["steps"] == 2 and again["cost"]["channelwise"]["steps"] == 2
    with pytest.raises(SystemExit):
        classify.main([*args, "--models", "grid"])


def test_saccade_cluttered(script, digits, tmp_path, scenes_seen):
    out = tmp_path / "saccade"
    small = ["--num-test", "6", "--curve-scenes", "3", "--eval-every", "1", "--canvas-size", "60"]
    models = ["--models", "saccade", "resnet", "resnet_crops"]
    record = script("saccade_cluttered").main([*TINY, *digits, *small, *models, "--out", str(out)])
    check_common(record, "saccade_cluttered", out)
    assert scenes_seen["curves"] == {"val"}
    check_protocol(record)
    assert set(record["splits"]) == {"identify", "sum"} and record["splits"]["sum"]["test"]["seed"] == 1
    assert {"accuracy"} <= set(record["results"]["sum-saccade"]["intervals"])
    runs = {f"{t}-{m}" for t in ("identify", "sum") for m in ("saccade", "resnet", "resnet_crops")}
    assert set(record["results"]) == runs
    for metrics in record["results"].values():
        assert metrics["num_scenes"] == 6 and 0.0 <= metrics["accuracy"] <= 1.0
    assert set(record["targets_met"]) == {"identify", "sum"}
    assert (
        record["models"]["sum-saccade"]["task"] == "sum"
        and record["models"]["identify-resnet_crops"]["crop_grid"] == 4
    )
    assert record["parameters"]["identify-resnet"] > record["parameters"]["identify-saccade"] > 0
    assert record["data"]["sum"]["kwargs"]["num_clutter"] == 0  # the paper's sum task has no clutter
    assert "num_clutter" not in record["data"]["identify"]["kwargs"]
    assert load(out / "runs" / "sum-saccade").config.task == "sum"
    assert {"saccades_identify", "saccades_sum", "training_sum-resnet"} <= set(record["figures"])


def test_saccade_noisy_proxy(script, digits, tmp_path, scenes_seen):
    out = tmp_path / "noisy"
    small = ["--num-test", "6", "--curve-scenes", "3", "--eval-every", "1", "--canvas-size", "60"]
    levels = ["--noise-levels", "0", "0.5", "--fixed-scales", "1.2"]
    record = script("saccade_noisy_proxy").main([*TINY, *digits, *small, *levels, "--out", str(out)])
    check_common(record, "saccade_noisy_proxy", out)
    assert scenes_seen["curves"] == {"val"}
    check_protocol(record)
    assert set(record["results"]) == {"noise-0", "noise-0.5", "fixed-1.2"}
    for name, metrics in record["results"].items():
        assert metrics["num_scenes"] == 6 and 0.0 <= metrics["accuracy"] <= 1.0
        assert record["curves"][name]["step"] == [1, 2] and len(record["curves"][name]["accuracy"]) == 2
    models = record["models"]
    assert models["noise-0"]["proxy_noise"] == 0 and models["noise-0.5"]["learn_posterior_scale"] is True
    fixed = {"proxy_noise": 0.5, "learn_posterior_scale": False, "posterior_scale": 1.2}
    assert models["fixed-1.2"] | fixed == models["fixed-1.2"]
    assert record["learned_run_at_noisiest"] == "noise-0.5"
    assert {"proxies", "accuracy_vs_noise", "learned_vs_fixed"} == set(record["figures"])
    assert type(load(out / "runs" / "fixed-1.2")).__name__ == "VariationalSaccading"


def test_saccade_large(script, digits, tmp_path):
    """Two calls: the saccade model from a small-scene run's weights, then the ResNets and the costs."""
    large = script("saccade_large")
    small_run = tmp_path / "small"
    script("saccade_cluttered").main(
        [*TINY, *digits, "--canvas-size", "60", "--num-test", "2", "--eval-every", "0",
         "--models", "saccade", "--tasks", "identify", "--out", str(small_run)]
    )  # fmt: skip
    out = tmp_path / "large"
    flags = [*TINY, *digits, "--canvas-size", "60", "--size", "96", "--num-test", "4", "--eval-every",
             "0", "--crop-grid", "2", "--cost-sides", "--cost-batch", "1", "--repeats", "1", "--out",
             str(out)]  # fmt: skip
    init = ["--init-from", str(small_run / "runs" / "identify-saccade")]
    first = large.main([*flags, "--models", "saccade", "--skip-costs", *init])
    assert first["inference"] == [] and first["comparison"] == {}
    assert set(first["results"]) == {"saccade", "saccade_localized"}
    # the localized transformer reads the same pixels: the same predictions
    assert first["results"]["saccade"]["accuracy"] == first["results"]["saccade_localized"]["accuracy"]
    record = large.main([*flags, "--resume"])
    check_common(record, "saccade_large", out)
    check_protocol(record)
    assert set(record["results"]) == {"saccade", "saccade_localized", "resnet", "resnet_crops"}
    assert record["data"] == {"name": "cluttered-large", "kwargs": {"canvas_size": 60, "size": 96}}
    kinds = [c["model"] for c in record["inference"]]
    assert kinds == ["saccade", "saccade_localized", "resnet", "resnet_crops"]
    for cost in record["inference"]:
        assert cost["side"] == 96 and cost["seconds_per_image"] > 0 and cost["peak_working_mib"] >= 0
        assert cost["input_mib"] == 96 * 96 * 4 / 2**20 and cost["weights_mib"] > 0
    assert record["parameters"]["resnet"] > record["parameters"]["saccade"] > 0
    assert set(record["targets_met"]) == {"speedup", "memory_ratio", "accuracy_gap"}
    assert set(record["comparison"]) == {"speedup", "memory_ratio", "accuracy_gap", "resnet_epochs"}
    # 2 steps of 4 scenes over 8 training scenes: one epoch, enough to judge the gap
    assert record["comparison"]["resnet_epochs"] == record["cost"]["resnet"]["epochs"] == 1.0
    assert isinstance(record["targets_met"]["accuracy_gap"], bool)
    assert record["cost"]["resnet"]["seconds_per_epoch"] > 0
    assert {"saccades", "cost_vs_side"} == set(record["figures"])
    with pytest.raises(SystemExit):
        large.main([*flags, "--models", "saccade", "--init-from", str(out / "runs" / "resnet"), "--out",
                    str(tmp_path / "other")])  # fmt: skip


def test_saccade_large_leaves_the_gap_unjudged_before_an_epoch(script):
    """A ResNet-18 trained for part of an epoch neither meets nor misses "comparable accuracy"."""
    compare = script("saccade_large").compare
    at_size = {"saccade": {"seconds_per_image": 0.01, "peak_working_mib": 10.0},
               "resnet": {"seconds_per_image": 1.0, "peak_working_mib": 500.0}}  # fmt: skip
    results = {"saccade": {"accuracy": 0.95}, "resnet": {"accuracy": 0.0}}
    comparison, met = compare(at_size, results, resnet_epochs=0.01)
    assert met == {"speedup": True, "memory_ratio": True, "accuracy_gap": None}
    assert comparison["speedup"] == 100.0 and comparison["memory_ratio"] == 0.02
    results["resnet"]["accuracy"] = 0.99  # 4 points ahead: comparable
    assert compare(at_size, results, resnet_epochs=1.0)[1]["accuracy_gap"] is True
    results["saccade"]["accuracy"] = 0.90  # 9 points behind: not
    assert compare(at_size, results, resnet_epochs=3.0)[1]["accuracy_gap"] is False
    results["resnet"]["accuracy"] = 0.0  # an untrained ResNet never makes the gap "met"
    assert compare(at_size, results, resnet_epochs=0.5)[1]["accuracy_gap"] is None


def test_saccade_init_from_another_task(script, digits, tmp_path, capsys):
    """The sum task starts from an identification run: every weight but the classifier's output layer."""
    cluttered = script("saccade_cluttered")
    flags = [*TINY, *digits, "--canvas-size", "60", "--num-test", "2", "--eval-every", "0"]
    flags += ["--models", "saccade"]
    cluttered.main([*flags, "--tasks", "identify", "--out", str(tmp_path / "identify")])
    source = load(tmp_path / "identify" / "runs" / "identify-saccade")
    make = script("_saccade").initial_weights(str(tmp_path / "identify" / "runs" / "identify-saccade"))
    model = make(task="sum")
    assert "classifier.2.weight" in capsys.readouterr().err  # named as starting afresh
    torch.testing.assert_close(model.glimpse_encoder[0].weight, source.glimpse_encoder[0].weight)
    torch.testing.assert_close(model.where_offset, source.where_offset)
    assert model.classifier[-1].weight.shape != source.classifier[-1].weight.shape
    init = ["--init-from", str(tmp_path / "identify" / "runs" / "identify-saccade")]
    record = cluttered.main([*flags, "--tasks", "sum", *init, "--out", str(tmp_path / "sum")])
    assert record["models"]["sum-saccade"]["task"] == "sum"


SSDIR_TINY = [
    "--canvas-size", "32", "--digit-sizes", "8", "16", "--grid-sizes", "2", "2", "--num-test", "6",
    "--speed-batch", "2", "--detector-steps", "2",
    "--ssdir-set", "backbone_widths=4,4,4", "pyramid_levels=2", "pyramid_channels=8", "what_dim=4",
    "patch_size=8", "decoder_width=8",
    "--spair-set", "what_dim=4", "hidden_dim=16", "feature_dim=16", "backbone_width=4",
]  # fmt: skip


def test_ssdir_probe(script, digits, tmp_path):
    out = tmp_path / "probe"
    record = script("ssdir_probe").main([*TINY, *digits, *SSDIR_TINY, "--seeds", "0", "1", "--out", str(out)])
    assert record["experiment"] == "ssdir_probe" and read_record(out / "ssdir_probe.json")
    assert record["cost"]["ssdir-seed0"]["steps"] == 4 and record["cost"]["spair-seed1"]["steps"] == 2
    assert (out / "runs" / "ssdir-seed1" / DETECTOR_FILE).is_file()
    for model in ("ssdir", "spair"):
        assert [r["seed"] for r in record["results"][model]["per_seed"]] == [0, 1]
        for r in record["results"][model]["per_seed"]:
            assert r["n_codes"] >= 0 and "iou50" in r
            assert r["ap50"] is None or 0 <= r["ap50"] <= 1
            assert "accuracy" not in r or 0 <= r["accuracy"] <= 1
        speed = record["throughput"][model]
        assert speed["guide_images_per_second"] > 0 and speed["parse_images_per_second"] > 0
    assert "ssdir_faster_than_spair" in record["targets_met"]
    check_protocol(record)
    assert record["splits"]["test"]["seed"] == 10_000 and record["splits"]["train"]["seeds"] == [0, 1]
    assert [r["seed"] for r in record["validation"]["ssdir"]["per_seed"]] == [0, 1]
    for summary in record["results"]["ssdir"].values():  # the sample sd over the two seeds, beside std
        assert not isinstance(summary, dict) or (summary["n"] == 2 and summary["sd"] is not None)
    assert record["models"]["ssdir"]["image_size"] == [32, 32]
    assert record["models"]["spair"]["cell_size"] == [16, 16]
    for path in record["figures"].values():
        assert Path(path).is_file() and Path(path).stat().st_size > 0
    again = script("ssdir_probe").main(
        [*TINY, *digits, *SSDIR_TINY, "--seeds", "0", "1", "--out", str(out), "--resume"]
    )
    assert again["cost"] == record["cost"]
    # a what-encoder variant on seed 1's trained detector: no detector steps, the same detector weights
    other = tmp_path / "variant"
    at = SSDIR_TINY.index("--detector-steps")
    skipped = [*SSDIR_TINY[:at], *SSDIR_TINY[at + 2 :]]  # no --detector-steps: the detector stage is skipped
    flags = [*TINY, *digits, *skipped, "--models", "ssdir", "--seeds", "1", "--out", str(other)]
    variant = script("ssdir_probe").main([*flags, "--detector-from", str(out)])
    assert variant["cost"]["ssdir-seed1"]["steps"] == 2 and variant["models"]["ssdir"]["detector_steps"] == 0
    trained, given = load(out / "runs" / "ssdir-seed1"), load(other / "runs" / "ssdir-seed1")
    for name, weight in trained.detector.state_dict().items():
        torch.testing.assert_close(given.detector.state_dict()[name], weight)
    # ... or trained on from there
    more = [*flags, "--detector-from", str(out), "--detector-steps", "1", "--out", str(tmp_path / "more")]
    assert script("ssdir_probe").main(more)["cost"]["ssdir-seed1"]["steps"] == 3
    with pytest.raises(SystemExit, match="no trained detector"):
        script("ssdir_probe").main([*flags, "--seeds", "2", "--detector-from", str(out)])


def test_ssdir_ablation(script, digits, tmp_path):
    out = tmp_path / "ablation"
    ssdir_set = SSDIR_TINY[SSDIR_TINY.index("--ssdir-set") + 1 : SSDIR_TINY.index("--spair-set")]
    flags = ["--canvas-size", "32", "--digit-sizes", "8", "16", "--num-test", "4", "--detector-steps", "1"]
    sweeps = ["--max-sizes", "12", "16", "--grids", "2"]
    record = script("ssdir_ablation").main(
        [*TINY, *digits, *flags, *sweeps, "--set", *ssdir_set, "--out", str(out)]
    )
    assert set(record["results"]) == {"size12", "size16", "grid2"}
    assert record["variants"]["grid2"]["grid_size"] == 2 and record["variants"]["size12"]["max_size"] == 12
    for name, r in record["results"].items():
        assert r["mse"] >= 0 and record["cost"][name]["steps"] == 3
        assert r["object_mse"] is None or r["object_mse"] >= 0
    assert read_record(out / "ssdir_ablation.json")["experiment"] == "ssdir_ablation"
    check_protocol(record)
    for path in record["figures"].values():
        assert Path(path).is_file() and Path(path).stat().st_size > 0


def test_saccade_fixed_batch(script, digits, tmp_path):
    out = tmp_path / "fixed"
    flags = ["--steps", "2", "--batch-size", "4", "--proxy-weights", "1", "0.001", "--log-every", "1"]
    record = script("saccade_fixed_batch").main(
        [*flags, "--data-root", digits[1], "--threads", "1", "--out", str(out)]
    )
    assert set(record["results"]) == {"spread-w1", "spread-w0.001", "centre-w1", "centre-w0.001"}
    for r in record["results"].values():
        assert [p["step"] for p in r["curve"]] == [1, 2] and r["label_log_lik_per_scene"] <= 0
        assert 0 <= r["train_accuracy"] <= 1
    assert record["constant_predictor_log_lik_per_scene"] < 0
    assert read_record(out / "saccade_fixed_batch.json")["experiment"] == "saccade_fixed_batch"


def test_saccade_attention_start(script, digits, tmp_path, scenes_seen):
    out = tmp_path / "start"
    flags = ["--num-val", "4", "--canvas-size", "60", "--saliency", "0", "120", "--inhibition", "0", "30"]
    record = script("saccade_attention_start").main(
        [*digits, *flags, "--set", "proxy_size=16", "--out", str(out)]
    )
    assert set(record["attention"]) == {f"saliency={s},inhibition={v}" for s in (0, 120) for v in (0, 30)}
    for metrics in [record["tiles"], *record["attention"].values()]:
        assert 0.0 <= metrics["objects_in_view"] <= 1.0 and metrics["glimpse_side"] > 0
    # with neither brightness nor inhibition, the untrained glimpses sit on the same places in every scene
    assert record["attention"]["saliency=0,inhibition=0"]["glimpse_centre_std"] < 1e-4
    assert record["attention"]["saliency=120,inhibition=30"]["glimpse_centre_std"] > 0.1
    assert all(Path(path).is_file() for path in record["figures"].values())
    assert (out / "saccade_attention_start.json").is_file()
    # the attention settings are chosen: on validation scenes, never on test scenes
    assert scenes_seen["all"] == {"val"} and record["splits"]["validation"]["scenes"] == 4


def test_build_splits_draws_validation_from_held_out_digits(script, digits):
    """The shared helper: train/val/test scenes of their own splits and seeds, and their record."""
    import argparse

    common = script("_common")
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=3)
    common.add_split_args(parser)
    args = parser.parse_args(["--num-val", "5"])
    assert args.intervals == common.DEFAULT_INTERVALS and args.val_seed is None
    root = digits[1]
    kwargs = {"canvas_size": 32, "digit_size": 12, "num_digits": 2, "root": root, "download": False}
    splits = common.build_splits(
        "multimnist", args, kwargs, train_kwargs={"num_scenes": 7}, num_test=4, test_seed=4
    )
    assert (splits.train.split, splits.val.split, splits.test.split) == ("train", "val", "test")
    assert splits.record == {
        "train": {"split": "train", "seed": 3, "scenes": 7},
        "validation": {"split": "val", "seed": 3 + common.VAL_SEED_OFFSET, "scenes": 5},
        "test": {"split": "test", "seed": 4, "scenes": 4},
    }
    assert splits.source in ("mnist", "sklearn-fallback")
    assert common.digit_source(common.first_scenes(splits.val, 2)) == splits.source  # through a Subset
    # --num-val left out: as many validation scenes as test scenes; no digit source for Gabor noise
    args = parser.parse_args(["--val-seed", "9"])
    gabor = common.build_splits("gabor", args, {"num_impulses": 3}, num_test=2, test_seed=4, train=False)
    assert gabor.train is None and gabor.record["validation"] == {"split": "val", "seed": 9, "scenes": 2}
    assert gabor.source is None
    assert not torch.equal(gabor.val[0][0], gabor.test[0][0])  # the split is in the random stream


def test_no_script_scores_curves_or_choices_on_test_scenes():
    """A static check beside the runs above: no curve set or choice is built from test scenes."""
    import re

    patterns = [
        r"Subset\(\s*test",  # a curve set cut from the test scenes
        r"curve_fit_kwargs\(\s*args,\s*test",
        r"first_scenes\(\s*test",
        r"eval_fn.*test_set",
    ]
    wrong = []
    for path in sorted(EXPERIMENTS.glob("*.py")):
        text = path.read_text()
        wrong += [f"{path.name}: {p}" for p in patterns if re.search(p, text)]
    assert not wrong, wrong
    # spair_boxes chooses its thresholds on split "val" scenes, not on training digits
    boxes = (EXPERIMENTS / "spair_boxes.py").read_text()
    calls = re.sub(r"\s+", "", boxes)
    assert 'build_dataset(data["name"],"val"' in calls and 'build_dataset(data["name"],"train"' not in calls


# -- the cross-model benchmark (issue 34) ------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Two-step tiny runs of SPAIR (24x24 canvases), SSDIR (32x32 input), MIST told the counts, saccade."""
    from ppl_scenes.cli import main as cli

    root = tmp_path_factory.mktemp("bench_runs")
    data = ["train.batch_size=4", "data.num_scenes=8", "data.download=false"]
    runs = {
        "spair": [
            *["what_dim=4", "feature_dim=8", "backbone_width=4", "hidden_dim=16"],
            *["object_size=6,6", "glimpse_size=6,6", "data.canvas_size=24", "data.num_digits=1,2"],
        ],
        "ssdir": [
            *["image_size=32,32", "backbone_widths=4,4,4", "pyramid_levels=2", "pyramid_channels=8"],
            *["what_dim=4", "patch_size=8", "decoder_width=8", "detector_steps=1"],
            *["data.canvas_size=32", "data.min_size=8", "data.max_size=16"],
        ],
        "mist": [
            *["num_patches=3", "patch_side=12", "patch_size=12", "task_levels=1", "task_width=4"],
            *["heatmap_channels=4", "heatmap_blocks=1", "refine_steps=1", "heatmap_scales=1.0,0.5"],
            *["task=classification", "count_from_labels=true"],
            *["data.canvas_size=32", "data.digit_size=12", "data.num_digits=1,3"],
        ],
        "saccade": [
            *["proxy_size=8", "glimpse_size=8", "z_dim=4", "hidden_dim=16", "embed_dim=8", "conv_width=4"],
            *["task=sum", "data.canvas_size=40", "data.digit_size=14"],
        ],
    }
    for name, extra in runs.items():
        out = root / name
        args = ["train", name, "--out", str(out), "--num-test", "2", "--no-progress", "--steps", "3"]
        assert cli([*args, *extra, *data]) == 0
    return {name: str(root / name) for name in runs}


BENCH_TINY = ["--num-test", "6", "--num-val", "4", "--intervals", "5", "--batch-size", "4"]
BENCH_TINY += ["--repeats", "2", "--warmup", "1", "--conncomp-thresholds", "0.1", "0.3", "--no-progress"]


def test_benchmark_scores_every_model_on_the_same_scenes(script, digits, tiny_runs, tmp_path, monkeypatch):
    bench = script("benchmark")
    monkeypatch.setattr(bench, "pretrained_names", lambda: [])  # gmair: neither shipped nor given
    out = tmp_path / "bench"
    runs = [f"--run={name}={path}" for name, path in tiny_runs.items()]
    record = bench.main(["--out", str(out), "--no-memory", *BENCH_TINY, *runs, *digits])
    assert read_record(out / "scattered.json") == json.loads(json.dumps(record))
    assert record["experiment"] == "benchmark" and record["task"] == "scattered"
    assert record["command"].startswith("python experiments/benchmark.py")
    assert {"platform", "cpus", "torch_threads", "torch"} <= set(record["machine"])
    test = record["test"]
    assert test["split"] == "test" and test["seed"] == 101 and test["num_scenes"] == 6
    assert test["image_size"] == [48, 48]
    rows = {row["name"]: row for row in record["models"]}
    assert list(rows) == ["spair", "gmair", "ssdir", "mist", "saccade", "conncomp"]

    assert rows["gmair"]["status"] == "missing" and "no --run" in rows["gmair"]["reason"]
    assert rows["saccade"]["status"] == "n/a" and "image-level" in rows["saccade"]["reason"]
    assert "scores" not in rows["saccade"] and rows["saccade"]["ms_per_image"] > 0
    scored = [row for row in record["models"] if row["status"] == "scored"]
    assert [row["name"] for row in scored] == ["spair", "ssdir", "mist", "conncomp"]
    for row in scored:  # the same test scenes for every model
        assert row["test_scenes_sha256"] == test["scenes_sha256"]
        check_metrics(row["scores"], 6)
        assert {"ap50", "count_accuracy"} <= set(row["scores"]["intervals"])
        assert sum(m["num_scenes"] for m in row["by_count"].values()) == 6
        assert {int(c) for c in row["by_count"]} <= {1, 2, 3, 4, 5}
        assert row["ms_per_image"] > 0 and row["timing"]["batch_ms"]
        assert row["parameters"] >= 0 and row["train_cpu_minutes"] >= 0
    for name in ("spair", "ssdir", "mist", "saccade"):
        assert rows[name]["source"] == {
            "kind": "run",
            "run_dir": tiny_runs[name],
            "command": rows[name]["source"]["command"],
        }
        assert rows[name]["steps"] == 3 and rows[name]["parameters"] > 0
    assert any("out of its training distribution" in n for n in rows["spair"]["notes"])  # 24x24 -> 48x48
    assert rows["ssdir"]["parse"] == "tiles" and any("fixed 32x32 input" in n for n in rows["ssdir"]["notes"])
    assert any("told the true number" in n for n in rows["mist"]["notes"])
    conncomp = record["validation"]["conncomp"]
    assert conncomp["split"] == "val" and conncomp["scenes_sha256"] != test["scenes_sha256"]
    assert conncomp["chosen_threshold"] in (0.1, 0.3)
    assert rows["conncomp"]["source"] == {"kind": "baseline", "threshold": conncomp["chosen_threshold"]}
    assert rows["conncomp"]["train_cpu_minutes"] == 0.0 and rows["conncomp"]["parameters"] == 0


def test_benchmark_measures_memory_in_a_child_and_renders_in_the_report(
    script, digits, tmp_path, monkeypatch
):
    bench = script("benchmark")
    monkeypatch.setattr(bench, "pretrained_names", lambda: [])
    out = tmp_path / "benchmarks" / "benchmark"
    record = bench.main(["--out", str(out), "--task", "multiscale", "--models", *BENCH_TINY, *digits])
    (row,) = record["models"]
    assert row["name"] == "conncomp" and record["test"]["image_size"] == [128, 128]
    assert (
        record["memory_method"] and row["memory"]["peak_rss_mb"] > 0 and row["memory"]["parse_peak_mb"] >= 0
    )
    report = script("report")
    text = report.cross_model(report.Records(tmp_path))
    assert "**Task `multiscale`**" in text and "| `conncomp` |" in text


@pytest.mark.parametrize(
    "flags", [["--run", "spair"], ["--run", "=dir"], ["--task", "nosuch"], ["--batch-size", "0"]]
)
def test_benchmark_bad_flags_exit_2(script, flags):
    with pytest.raises(SystemExit) as exit_info:
        script("benchmark").main(flags)
    assert exit_info.value.code == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_benchmark_refuses_cuda_without_a_gpu(script):
    with pytest.raises(SystemExit) as exit_info:
        script("benchmark").main(["--device", "cuda"])
    assert exit_info.value.code == 2


def test_benchmark_gpu_numbers_path_runs_on_the_cpu(script, digits, tiny_runs):
    """The ``--device cuda`` measurements, run with device="cpu": every batch size gives numbers, no error."""
    bench = script("benchmark")
    args = bench.make_parser().parse_args(
        ["--gpu-batch-sizes", "1", "2", "--gpu-steps", "1", "--repeats", "1", "--warmup", "0", *digits]
    )
    test = bench.scenes("scattered", "test", 4, 101, args.data_root, False)
    for name in ("spair", "ssdir", "saccade"):
        numbers = bench.gpu_numbers(load(tiny_runs[name]), args, test, device="cpu")
        assert numbers["device"] == "cpu"
        for size in ("1", "2"):
            assert numbers["inference"][size]["images_per_s"] > 0, (name, numbers)
            assert "step_ms" in numbers["train_step"][size], (name, numbers)


def test_step_profile_counts_operations_and_call_sites(script, digits, tmp_path):
    out = tmp_path / "profile"
    args = ["--models", "spair", "saccade", "--batch-size", "2", "--warmup", "1", "--timed-steps", "2"]
    record = script("step_profile").main(
        [*args, "--threads", "1", "--label", "smoke", "--out", str(out), *digits]
    )
    assert set(record["models"]) == {"spair", "saccade"} and record["threads"] == 1
    assert (
        record["seed"] == 0
        and record["digit_source"] == _source(digits)
        and record["budget"]["timed_steps"] == 2
    )
    for result in record["models"].values():
        assert result["aten_ops"] > 100 and sum(result["top_ops"].values()) <= result["aten_ops"]
        assert any(site.startswith("ppl_scenes/models/") for site in result["top_sites"])
        # the loss and the gradient norm, read together (fused Adam's own read left out)
        assert result["host_reads"] == 1
        assert 0 < result["timing"]["q25_ms"] <= result["timing"]["median_ms"] <= result["timing"]["q75_ms"]
        if sys.platform.startswith("linux"):  # each timed step's page faults, counted
            assert result["timing"]["minor_faults_per_step"] >= 0
    assert (
        read_record(out / "smoke.json")["models"]["spair"]["aten_ops"]
        == record["models"]["spair"]["aten_ops"]
    )


def test_step_profile_times_a_git_revision_in_turns(script, digits, tmp_path):
    """``--against REV``: the package of that revision, loaded under another name next to today's,
    and its step timed in alternation with today's."""
    import sys

    args = ["--models", "spair", "--batch-size", "2", "--warmup", "1", "--timed-steps", "2", "--threads", "1"]
    record = script("step_profile").main(
        [
            *args,
            "--label",
            "ab",
            "--out",
            str(tmp_path),
            "--against",
            "HEAD",
            "--against-script",
            "HEAD",
            *digits,
        ]
    )
    result = record["models"]["spair"]
    assert record["against"] == "HEAD" and result["timing_baseline"]["median_ms"] > 0
    assert record["against_script"] == "HEAD" and result["aten_ops_baseline"] > 0
    assert result["timing"]["median_ms"] > 0 and "timing_eager" not in result
    loaded = [name for name in sys.modules if name.startswith("ppl_scenes_at_")]
    assert loaded and all(sys.modules[name].__file__ != sys.modules["ppl_scenes"].__file__ for name in loaded)


def test_gpu_check_smoke_on_the_cpu(script, digits, tmp_path):
    out = tmp_path / "gpu"
    record = script("gpu_check").main(
        ["--device", "cpu", "--smoke", "--models", "gmair", "--out", str(out), *digits]
    )
    assert record["smoke"] and set(record["spair"]) == {"48"} and set(record["spair"]["48"]) == {"2"}
    assert (
        record["spair"]["48"]["2"]["aten_ops"] > 100 and record["models"]["gmair"]["timing"]["median_ms"] > 0
    )
    assert len(list(out.glob("*.json"))) == 1


def test_anchor_compare_without_the_anchor_says_where_to_get_it(script, tmp_path, capsys):
    module = script("anchor_compare")
    with pytest.raises(SystemExit) as err:
        module.main(["--out", str(tmp_path)])
    assert err.value.code == 2 and "--anchor-path" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="not a SPAIR_pytorch checkout"):
        module.main(["--anchor-path", str(tmp_path), "--out", str(tmp_path)])


FAKE_ANCHOR_MODELS = """
import torch
from torch import nn


class SPAIR(nn.Module):
    def __init__(self, image_shape):
        super().__init__()
        self.conv = nn.Conv2d(image_shape[0], 2, 3, padding=1)

    def forward(self, x):
        return self.conv(x).square().mean()
"""


def test_anchor_compare_times_each_program_in_its_own_process(script, tmp_path, digits):
    """A checkout of the anchor's shape (a stand-in model here): both step in turn, each in a worker."""
    anchor = tmp_path / "anchor"
    (anchor / "spair").mkdir(parents=True)
    (anchor / "spair" / "__init__.py").write_text("")
    names = "BATCH_SIZE INPUT_IMAGE_SHAPE OBJECT_SHAPE ANCHORBOX_SHAPE N_ATTRIBUTES N_CONTEXT_DIM".split()
    (anchor / "spair" / "config.py").write_text("".join(f"{name} = None\n" for name in names))
    (anchor / "spair" / "models.py").write_text(FAKE_ANCHOR_MODELS)
    out = tmp_path / "out"
    argv = ["--anchor-path", str(anchor), "--out", str(out), "--sizes", "24", "--batch-size", "2"]
    record = script("anchor_compare").main(
        [*argv, "--warmup", "1", "--timed-steps", "2", "--threads", "1", *digits]
    )
    result = record["results"]["24"]
    for name in ("ours", "anchor"):
        assert result[name]["steps"] == 2 and result[name]["median_ms"] > 0
        assert result[name]["minor_faults_per_step"] >= 0
    assert result["anchor_over_ours"] == result["anchor"]["median_ms"] / result["ours"]["median_ms"]
    assert record["processes"].startswith("one per program") and (out / "anchor_compare.json").is_file()
    broken = tmp_path / "broken"
    (broken / "spair").mkdir(parents=True)
    (broken / "spair" / "config.py").write_text("")
    (broken / "spair" / "models.py").write_text(FAKE_ANCHOR_MODELS)
    with pytest.raises(SystemExit, match="anchor: this anchor's spair/config.py has no BATCH_SIZE"):
        script("anchor_compare").main(
            ["--anchor-path", str(broken), "--out", str(out), "--sizes", "24", *digits]
        )


def _reproduce_card() -> dict:
    return {
        "name": "spair",
        "model": "spair",
        "preset": "paper",
        "command": "ppl-scenes train spair --preset paper --out RUN_DIR",
        "steps": 3,
        "validation": {"ap50": 0.5},
        "test": {"ap50": 0.5},
        "test_intervals": {"ap50": [0.4, 0.6]},
        "targets": {"ap50": 0.95},
        "splits": {
            "validation": {"split": "val", "seed": 101, "scenes": 4},
            "test": {"split": "test", "seed": 101, "scenes": 6},
        },
    }


def test_reproduce_scores_a_finished_rerun_beside_its_card(
    script, tiny_runs, tmp_path, monkeypatch, data_root
):
    """A rerun that reached the card's steps is scored, not retrained, on the card's own splits; one
    short of them is resumed through the real CLI to its own steps."""
    reproduce = script("reproduce")
    card = _reproduce_card()
    monkeypatch.setattr(reproduce, "pretrained_info", lambda name: card)
    calls = []
    monkeypatch.setattr(reproduce, "ppl_scenes_cli", lambda argv: calls.append(argv) or 0)
    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs["spair"], runs / "spair-s1")
    args = ["spair", "--seeds", "1", "--runs", str(runs), "--out", str(tmp_path / "out"), "--resamples", "5"]
    (record,) = reproduce.main(args)
    assert calls == []  # finished: scored only
    assert read_record(tmp_path / "out" / "spair-s1.json") == json.loads(json.dumps(record))
    assert record["seed"] == 1 and record["steps"] == 3 and record["card"]["test"] == {"ap50": 0.5}
    assert record["command"].endswith("--preset paper --out " + str(runs / "spair-s1") + " --seed 1")
    assert record["digit_source"] == "mnist" and record["splits"] == card["splits"]
    assert 0 <= record["test"]["ap50"] <= 1 and "ap50" in record["validation"]
    assert set(record["test_intervals"]) >= {"ap50"}
    config = runs / "spair-s1" / "config.json"  # one step short of its own budget: resumed
    saved = json.loads(config.read_text())
    saved["train_config"]["steps"] = record["steps"] + 1
    config.write_text(json.dumps(saved))
    monkeypatch.undo()
    monkeypatch.setattr(reproduce, "pretrained_info", lambda name: card)
    (resumed,) = reproduce.main(args)
    assert resumed["steps"] == record["steps"] + 1
    saved["train_config"]["steps"] = record["steps"] + 3  # a training that fails: no record
    config.write_text(json.dumps(saved))
    (tmp_path / "out" / "spair-s1.json").unlink()
    monkeypatch.setattr(reproduce, "ppl_scenes_cli", lambda argv: 2)
    with pytest.raises(SystemExit, match="did not reach its steps"):
        reproduce.main(args)
    assert not (tmp_path / "out" / "spair-s1.json").exists()


def test_reproduce_writes_its_reruns_into_the_card(script, tmp_path, monkeypatch):
    """--card-only trains nothing and writes the records in --out into the card and the card's record
    (each in its own format); without records it stops, naming why."""
    reproduce = script("reproduce")
    card = _reproduce_card() | {"test": {"ap50": 0.5}, "test_intervals": {"ap50": [0.45, 0.55]}}
    monkeypatch.setattr(reproduce, "pretrained_info", lambda name: card)
    monkeypatch.setattr(reproduce, "reproduce", lambda *a: pytest.fail("--card-only trained"))
    out, cards, records = tmp_path / "out", tmp_path / "cards", tmp_path / "records"
    for folder in (out, cards, records):
        folder.mkdir()
    (cards / "spair.json").write_text(json.dumps(card, indent=1) + "\n")
    (records / "spair.json").write_text(json.dumps(card | {"experiment": "pretrained"}))
    args = ["spair", "--card-only", "--out", str(out), "--cards", str(cards), "--card-records", str(records)]
    with pytest.raises(SystemExit, match="no rerun records of spair"):
        reproduce.main(args)
    for seed, ap50 in ((2, 0.6), (1, 0.52)):
        rerun = {"seed": seed, "command": f"ppl-scenes train spair --seed {seed}", "steps": 3}
        (out / f"spair-s{seed}.json").write_text(json.dumps(rerun | {"test": {"ap50": ap50}}))
    assert reproduce.main(args) == []
    written = json.loads((cards / "spair.json").read_text())["reproduction"]
    assert written == read_record(records / "spair.json")["reproduction"]
    assert written["seeds"] == [1, 2] and written["steps"] == [3, 3]
    ap50 = written["test"]["ap50"]
    assert ap50["reruns"] == [0.52, 0.6] and ap50["inside_card_interval"] == [True, False]
    assert ap50["seeds"] == 3 and ap50["mean"] == pytest.approx(0.54)
    assert ap50["sd"] == pytest.approx(statistics.stdev([0.5, 0.52, 0.6]))
    assert read_record(records / "spair.json")["experiment"] == "pretrained"  # the rest kept


def test_reproduce_refuses_the_fallback_digits(script, tiny_runs, tmp_path, monkeypatch):
    """Without MNIST a rerun would train and score on the fallback digits: it stops, naming why, and
    writes no record."""
    reproduce = script("reproduce")
    monkeypatch.setattr(reproduce, "pretrained_info", lambda name: _reproduce_card())
    monkeypatch.setenv("PPL_SCENES_DATA", str(tmp_path / "no_mnist"))
    monkeypatch.setattr("ppl_scenes.data.digits._fallback_warned", False)
    runs = tmp_path / "runs"
    shutil.copytree(tiny_runs["spair"], runs / "spair-s1")
    args = ["spair", "--seeds", "1", "--runs", str(runs), "--out", str(tmp_path / "out"), "--resamples", "5"]
    with pytest.raises(SystemExit, match="needs the real MNIST"):
        reproduce.main(args)
    assert not (tmp_path / "out").exists()


def test_equal_budget_scores_the_card_and_its_baselines_on_the_cards_scenes(
    script, tiny_runs, tmp_path, monkeypatch, data_root
):
    """The shipped model and each baseline (a plain run, and a run made SPAIR + GMM) are scored on
    the card's own validation and test scenes, each with its budget beside it."""
    from ppl_scenes.runs import RunSpec, load

    equal = script("equal_budget")
    spec = RunSpec.from_run_dir(tiny_runs["spair"]).to_json()
    card = {
        **_reproduce_card(),
        "model_config": spec["model_config"],
        "dataset": spec["data"]["name"],
        "data_kwargs": spec["data"]["kwargs"],
        "cpu_minutes": 0.5,
    }
    monkeypatch.setattr(equal, "pretrained_info", lambda name: card)
    monkeypatch.setattr(equal, "pretrained", lambda name: load(tiny_runs["spair"]))
    run = f"SPAIR, same budget={tiny_runs['spair']}"
    args = ["spair", "--run", run, "--gmm", f"SPAIR + GMM={tiny_runs['spair']}", "--gmm-scenes", "8"]
    record = equal.main([*args, "--gmm-components", "2", "--resamples", "5", "--out", str(tmp_path)])
    assert read_record(tmp_path / "spair.json") == json.loads(json.dumps(record))
    assert list(record["models"]) == ["shipped `spair`", "SPAIR, same budget", "SPAIR + GMM"]
    shipped, plain, gmm = record["models"].values()
    assert shipped["budget"]["steps"] == 3 and shipped["budget"]["train_minutes"] == 0.5
    assert plain["budget"]["steps"] == 3 and plain["budget"]["run_dir"] == tiny_runs["spair"]
    assert (
        gmm["budget"]["gmm"] == {"components": 2, "training_scenes": 8}
        and gmm["budget"]["gmm_fit_minutes"] >= 0
    )
    # the same weights on the same scenes: the same detection scores
    assert shipped["test"]["ap50"] == plain["test"]["ap50"] and "ap50" in plain["test_intervals"]
    assert "acc" in gmm["test"] and record["splits"] == card["splits"] and record["digit_source"] == "mnist"


@pytest.mark.parametrize("flags", [[], ["--run", "no-equals-sign"], ["--run", "x=/no/such/run"]])
def test_equal_budget_bad_flags_exit_2(script, flags):
    with pytest.raises(SystemExit) as exit_info:
        script("equal_budget").main(["spair", *flags])
    assert exit_info.value.code == 2


RECIPE_TINY = [
    *["what_dim=4", "feature_dim=8", "backbone_width=4", "hidden_dim=16", "object_size=[6,6]"],
    *["glimpse_size=[6,6]", "data.canvas_size=24", "data.num_digits=[1,2]", "data.num_scenes=8"],
    *["data.download=false", "train.batch_size=4", "train.steps=2"],
]


def test_recipe_search_chooses_on_validation_and_scores_only_the_choice_on_test(
    script, tmp_path, monkeypatch, data_root
):
    """Every variant is trained and scored on validation scenes; the one with the best summed
    validation score is chosen, and the test scenes are built and scored for it alone."""
    search = script("recipe_search")
    built = []
    real_scenes = search.run_scenes
    monkeypatch.setattr(
        search,
        "run_scenes",
        lambda spec, split, n, seed: built.append(split) or real_scenes(spec, split, n, seed),
    )
    grid = ["--grid", *RECIPE_TINY, "pres_prob_end=0.3,0.5", "cell_size=[6,6],[8,8]"]
    common = [
        "spair",
        "--preset",
        "paper",
        *grid,
        "--select",
        "ap50",
        "rmse",
        "--runs",
        str(tmp_path / "runs"),
    ]
    small = ["--num-val", "4", "--num-test", "6", "--resamples", "5", "--out", str(tmp_path / "out")]
    assert search.main([*common, *small, "--only", "1", "3"]) is None  # a share of the variants only
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["v1", "v3"] and built == []
    record = search.main([*common, *small])
    assert built == ["val", "test"]  # one validation set for all, test scenes once, for the choice
    assert [v["overrides"][-2:] for v in record["variants"]] == [
        ["pres_prob_end=0.3", "cell_size=[6,6]"],
        ["pres_prob_end=0.3", "cell_size=[8,8]"],
        ["pres_prob_end=0.5", "cell_size=[6,6]"],
        ["pres_prob_end=0.5", "cell_size=[8,8]"],
    ]
    scores = [v["selection_score"] for v in record["variants"]]
    assert record["chosen"] == scores.index(max(scores))
    for v in record["variants"]:
        assert v["steps"] == 2 and "test" not in v
        assert v["selection_score"] == pytest.approx(v["validation"]["ap50"] - v["validation"]["rmse"])
    assert record["variants"][3]["command"].endswith(
        "--seed 0 " + " ".join(record["variants"][3]["overrides"])
    )
    assert set(record["test"]) >= {"ap50", "count_accuracy"} and "ap50" in record["test_intervals"]
    assert record["digit_source"] == "mnist" and record["splits"]["test"] == {
        "split": "test",
        "seed": 202,
        "scenes": 6,
    }
    assert read_record(tmp_path / "out" / "spair-paper.json") == json.loads(json.dumps(record))
    assert not (tmp_path / "runs" / "v0" / "eval.json").exists()  # no test scoring while training
    other = [*common[:3], "--grid", *RECIPE_TINY, "pres_prob_end=0.1", *common[-5:]]  # another search
    with pytest.raises(SystemExit, match="holds another run"):
        search.main([*other, *small])


@pytest.mark.parametrize(
    "flags", [["--grid", "novalue"], ["--grid", "a=1", "--select", "ap50", "--only", "5"]]
)
def test_recipe_search_bad_flags_exit_2(script, flags, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        script("recipe_search").main(
            ["spair", "--preset", "paper", "--select", "ap50", *flags, "--runs", str(tmp_path)]
        )
    assert exit_info.value.code == 2


def test_equal_budget_names_the_command_that_started_a_resumed_run(script, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    config = {
        "model": "spair",
        "seed": 1,
        "command": "evaluate --resume",
        "history": [{"command": "train it"}],
    }
    (run / "config.json").write_text(json.dumps(config))
    (run / "metrics.jsonl").write_text('{"step": 5, "seconds": 120.0}\n')
    budget = script("equal_budget").run_budget(run)
    assert budget["command"] == "train it" and budget["later_commands"] == ["evaluate --resume"]
    assert budget["steps"] == 5 and budget["train_minutes"] == 2.0 and budget["seed"] == 1
