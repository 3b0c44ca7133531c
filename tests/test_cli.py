"""The ``ppl-scenes`` command line, run in-process on tiny models and datasets.

One tiny SPAIR run is trained once per module (2 steps, 8 training scenes of 24x24 pixels, 4 test
scenes); the other tests evaluate, sample, resume and break copies of it.
"""

import hashlib
import json
import math
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from ppl_scenes import SPAIRConfig, SSDIRConfig, cli
from ppl_scenes.cli import main
from ppl_scenes.config import parse_value, replace_config

# Small enough that a training step takes milliseconds; download=false keeps CI offline (fallback
# digits with a warning when $PPL_SCENES_DATA has no MNIST).
TINY_MODEL = [
    "what_dim=4",
    "feature_dim=8",
    "backbone_width=4",
    "hidden_dim=16",
    "object_size=6,6",
    "glimpse_size=6,6",
]
TINY_DATA = ["data.num_scenes=8", "data.canvas_size=24", "data.num_digits=1,2", "data.download=false"]
TINY = [*TINY_MODEL, "train.batch_size=4", *TINY_DATA]


def train_args(out, *extra):
    return ["train", "spair", "--out", str(out), "--num-test", "4", "--no-progress", *extra]


def snapshot(run_dir: Path) -> dict[str, tuple[str, int]]:
    """Name -> (content hash, mtime_ns) of every file under ``run_dir``."""
    return {
        str(p.relative_to(run_dir)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step tiny SPAIR run directory (train once; tests copy it before changing it)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(train_args(out, "--steps", "2", *TINY)) == 0
    return out


@pytest.fixture
def run_copy(trained, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(trained, dst)
    return dst


def assert_clean_error(capsys, code, expected_status=2, *needles):
    err = capsys.readouterr().err
    assert code == expected_status, err
    assert "Traceback" not in err
    assert "error" in err
    for needle in needles:
        assert needle in err, err
    return err


# -- the happy path ------------------------------------------------------------------------------
def test_train_writes_a_run_directory(trained):
    assert {p.name for p in trained.iterdir()} >= {
        "config.json",
        "weights.safetensors",
        "state.safetensors",
        "state.json",
        "metrics.jsonl",
        "eval.json",
    }
    config = json.loads((trained / "config.json").read_text())
    assert config["model"] == "spair"
    assert config["model_config"]["what_dim"] == 4
    assert config["model_config"]["object_size"] == [6, 6]
    assert config["train_config"]["batch_size"] == 4 and config["train_config"]["steps"] == 2
    assert config["data"]["name"] == "scattered"
    assert config["data"]["kwargs"]["num_scenes"] == 8 and config["data"]["kwargs"]["num_digits"] == [1, 2]
    assert config["data"]["num_test"] == 4
    evaluation = json.loads((trained / "eval.json").read_text())
    assert evaluation["step"] == 2 and evaluation["num_scenes"] == 4
    assert {"ap50", "count_accuracy", "rmse"} <= set(evaluation)
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("step") == 2 and "loss" in r for r in records)


def test_train_gmair_on_its_default_dataset_evaluates_clusters(tmp_path, capsys):
    out = tmp_path / "gmair"
    extra = [*TINY_MODEL, "cell_size=8,8", "anchor=10,10", "train.batch_size=4", "data.num_scenes=8"]
    extra += ["data.canvas_size=32", "data.digit_size=12", "data.download=false"]
    args = ["train", "gmair", "--out", str(out), "--num-test", "4", "--no-progress", "--steps", "2", *extra]
    assert main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "gmair" and config["data"]["name"] == "multimnist"
    assert config["model_config"]["num_clusters"] == 10
    evaluation = json.loads((out / "eval.json").read_text())
    assert {"ap50", "acc", "nmi", "num_clustered"} <= set(evaluation)
    capsys.readouterr()
    assert main(["eval", str(out), "--json"]) == 0
    assert {"acc", "nmi"} <= set(json.loads(capsys.readouterr().out))


@pytest.mark.parametrize("name", ["mist", "mist_channelwise"])
def test_train_mist_classification_eval_and_sample(name, tmp_path, capsys):
    out = tmp_path / name
    tiny = ["num_patches=3", "patch_side=12", "patch_size=12", "task_levels=1", "task_width=4"]
    tiny += ["heatmap_channels=4", "heatmap_blocks=1", "refine_steps=1", "heatmap_scales=1.0,0.5"]
    if name == "mist_channelwise":
        tiny[-1] = "heatmap_scales=1.0"
    extra = [
        *tiny,
        "task=classification",
        "count_from_labels=true",
        "train.batch_size=4",
        "data.num_scenes=8",
    ]
    extra += ["data.canvas_size=32", "data.digit_size=12", "data.num_digits=1,3", "data.download=false"]
    args = ["train", name, "--out", str(out), "--num-test", "4", "--no-progress", "--steps", "2", *extra]
    assert main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == name and config["data"]["name"] == "mist-hard"
    scales = config["model_config"]["heatmap_scales"]
    assert scales == ([1.0, 0.5] if name == "mist" else [1.0])
    evaluation = json.loads((out / "eval.json").read_text())
    assert {"detection_rate", "classification_accuracy", "detected_and_classified"} <= set(evaluation)
    capsys.readouterr()
    assert main(["eval", str(out), "--json"]) == 0
    assert "detection_rate" in json.loads(capsys.readouterr().out)
    assert main(["sample", str(out), "--num-samples", "2", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()


def test_train_saccade_on_cluttered_digits(tmp_path, capsys):
    out = tmp_path / "saccade"
    tiny = ["proxy_size=8", "glimpse_size=8", "z_dim=4", "hidden_dim=16", "embed_dim=8", "conv_width=4"]
    extra = [*tiny, "task=sum", "train.batch_size=4", "data.num_scenes=8", "data.canvas_size=40"]
    extra += ["data.digit_size=14", "data.download=false"]
    args = ["train", "saccade", "--out", str(out), "--num-test", "4", "--no-progress", "--steps", "2", *extra]
    assert main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "saccade" and config["data"]["name"] == "cluttered"
    assert set(json.loads((out / "eval.json").read_text())) >= {"accuracy", "num_scenes"}
    assert main(["sample", str(out), "--num-samples", "2", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()


def test_train_ssdir_runs_both_stages(tmp_path, capsys):
    out = tmp_path / "ssdir"
    tiny = ["image_size=32,32", "backbone_widths=4,4,4", "pyramid_levels=2", "pyramid_channels=8"]
    tiny += ["what_dim=4", "patch_size=8", "decoder_width=8", "detector_steps=1"]
    data = [
        "data.num_scenes=8",
        "data.canvas_size=32",
        "data.min_size=8",
        "data.max_size=16",
        "train.batch_size=4",
    ]
    args = [
        "train",
        "ssdir",
        "--out",
        str(out),
        "--num-test",
        "4",
        "--no-progress",
        "--steps",
        "3",
        *tiny,
        *data,
    ]
    assert main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "ssdir" and config["data"]["name"] == "multiscale"
    assert (out / "detector.safetensors").is_file()
    assert [r["stage"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())][-1] == 2
    assert {"ap50", "rmse"} <= set(json.loads((out / "eval.json").read_text()))
    capsys.readouterr()
    assert main(["eval", str(out), "--num-test", "4", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert printed["acc"] is None or 0 <= printed["acc"] <= 1  # undefined (no match) is null, not NaN
    assert main(["sample", str(out), "--num-samples", "2", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()


def test_eval_json_prints_only_json(trained, capsys):
    capsys.readouterr()
    assert main(["eval", str(trained), "--json"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads(out)  # nothing but the object on stdout
    assert {"ap50", "count_accuracy", "count_mae", "step"} <= set(metrics)
    assert metrics["num_scenes"] == 4 and metrics["dataset"] == "scattered"


def test_eval_on_another_dataset_writes_its_own_file(run_copy, capsys):
    before = (run_copy / "eval.json").read_text()
    args = ["eval", str(run_copy), "--dataset", "large-scattered", "--num-test", "2", "--json"]
    assert main(args) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["dataset"] == "large-scattered" and metrics["num_scenes"] == 2
    assert json.loads((run_copy / "eval-large-scattered.json").read_text()) == metrics
    assert (run_copy / "eval.json").read_text() == before
    code = main(["eval", str(run_copy), "--dataset", "shapes", "--num-test", "2"])  # RGB, model is grey
    assert_clean_error(capsys, code, 2, "channels")


def test_sample_writes_figures(run_copy, capsys, tmp_path):
    assert main(["sample", str(run_copy), "--num-samples", "2"]) == 0
    assert (run_copy / "samples.png").stat().st_size > 0
    assert (run_copy / "samples-prior.png").stat().st_size > 0  # SPAIR can sample its prior
    assert (run_copy / "samples-posterior.png").stat().st_size > 0  # boxes of several draws
    assert (run_copy / "samples-counts.png").stat().st_size > 0  # the count posterior
    target = tmp_path / "figs" / "parse.png"
    assert main(["sample", str(run_copy), "--num-samples", "1", "--out", str(target)]) == 0
    assert target.is_file()
    assert str(target) in capsys.readouterr().out


def test_resume_continues_to_more_steps(run_copy):
    assert main(train_args(run_copy, "--resume", "--steps", "3")) == 0
    records = [json.loads(line) for line in (run_copy / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [2, 3]
    assert json.loads((run_copy / "eval.json").read_text())["step"] == 3


def fake_clock(monkeypatch, seconds_per_step):
    """The trainer's clock (read at the start and after each step), a step ``seconds_per_step`` long."""
    import ppl_scenes.infer.trainer as trainer_mod

    clock = {"t": 0.0}

    def perf_counter():
        clock["t"] += seconds_per_step
        return clock["t"]

    monkeypatch.setattr(trainer_mod, "time", types.SimpleNamespace(perf_counter=perf_counter))


def test_minutes_alone_train_for_the_minutes_and_the_summary_says_so(tmp_path, monkeypatch, capsys):
    from ppl_scenes import SPAIR

    monkeypatch.setattr(SPAIR, "default_train", {**SPAIR.default_train, "steps": 2})  # 5,000 in SPAIR
    fake_clock(monkeypatch, 1.0)
    out = tmp_path / "run"
    assert main(train_args(out, "--minutes", "0.1", *TINY)) == 0  # 6 s: 6 steps, not the default 2
    printed = capsys.readouterr().out
    assert "stopped by the 0.1-minute budget after 6 steps" in printed
    assert "stop_reason" not in printed  # said once, not again among the metrics
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 6 and records[-1]["stop_reason"] == "minutes"
    assert json.loads((out / "eval.json").read_text())["stop_reason"] == "minutes"
    assert json.loads((out / "config.json").read_text())["train_config"]["steps"] == 0


@pytest.mark.parametrize(
    "budget, line",
    [
        (["--steps", "3", "--minutes", "10"], "stopped after the 3 steps asked (0.1 minutes)"),
        (["--minutes", "0.05", "train.steps=10"], "stopped by the 0.05-minute budget after 2 steps"),
    ],
)
def test_steps_and_minutes_together_stop_at_whichever_comes_first(
    tmp_path, monkeypatch, capsys, budget, line
):
    fake_clock(monkeypatch, 2.0)
    assert main(train_args(tmp_path / "run", *budget, *TINY)) == 0
    assert line in capsys.readouterr().out


def test_resume_with_minutes_alone_trains_to_that_many_minutes_in_all(run_copy, monkeypatch, capsys):
    """The run stopped after its 2 steps asked; --minutes alone lifts them."""
    elapsed = json.loads((run_copy / "metrics.jsonl").read_text().splitlines()[-1])["seconds"]
    fake_clock(monkeypatch, 1.0)
    assert main(train_args(run_copy, "--resume", "--minutes", "0.1")) == 0
    records = [json.loads(line) for line in (run_copy / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["stop_reason"] == "minutes" and records[-1]["seconds"] >= 6.0
    assert records[-1]["step"] == 2 + math.ceil(6.0 - elapsed)
    assert "stopped by the 0.1-minute budget" in capsys.readouterr().out


def test_an_interrupted_run_says_where_it_stopped(tmp_path, monkeypatch, capsys):
    from ppl_scenes.infer import SVITrainer

    real = SVITrainer.train_step

    def interrupt_at_step_3(self, batch):
        if self.step == 2:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(SVITrainer, "train_step", interrupt_at_step_3)
    code = main(train_args(tmp_path / "run", "--steps", "5", *TINY, "train.checkpoint_every=1"))
    err = assert_clean_error(capsys, code, 130, "interrupted at step 2 after")
    assert "from its last checkpoint (step 2)" in err


def test_ssdir_minutes_are_shared_by_its_stages_and_the_summary_says_so(tmp_path, monkeypatch, capsys):
    fake_clock(monkeypatch, 6.0)
    out = tmp_path / "ssdir"
    tiny = ["image_size=32,32", "backbone_widths=4,4,4", "pyramid_levels=2", "pyramid_channels=8"]
    tiny += ["what_dim=4", "patch_size=8", "decoder_width=8", "detector_steps=1000"]
    data = ["data.num_scenes=8", "data.canvas_size=32", "data.min_size=8", "data.max_size=16"]
    args = ["train", "ssdir", "--out", str(out), "--num-test", "4", "--no-progress", "--minutes", "1"]
    assert main([*args, *tiny, *data, "train.batch_size=4", "train.log_every=1"]) == 0
    # stage 1's share: 1,000 of 1,000 + 2,000 steps, 20 s; it ends after step 4 (24 s); SVI to 60 s
    printed = capsys.readouterr().out
    assert "stopped by the 1-minute budget after 10 steps; stage 1 ended after 4 of its 1000 steps" in printed
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == [1] * 4 + [2] * 6
    assert (out / "detector.safetensors").is_file()


def test_overrides_may_sit_between_options(tmp_path):
    out = tmp_path / "run"
    args = ["train", "spair", *TINY[:3], "--out", str(out), *TINY[3:], "--steps", "1", "--num-test", "2"]
    assert main([*args, "--no-progress", "train.lr=0.01"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_config"]["hidden_dim"] == 16 and config["train_config"]["lr"] == 0.01


def test_demo_never_overwrites(tmp_path, monkeypatch, capsys):
    from ppl_scenes import SPAIR

    # The demo's own model and budget, on tiny data.
    monkeypatch.setattr(SPAIR, "default_data_kwargs", {"num_scenes": 4, "num_digits": 2, "download": False})
    monkeypatch.setattr(cli, "DEFAULT_NUM_TEST", 2)
    monkeypatch.chdir(tmp_path)
    taken = tmp_path / "runs" / "demo"
    taken.mkdir(parents=True)
    (taken / "keep.txt").write_text("mine")
    assert main(["demo", "--steps", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    demo = Path("runs") / "demo-2"
    assert {"demo.png", "eval.json", "loss.png", "config.json", "weights.safetensors"} <= {
        p.name for p in demo.iterdir()
    }
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    assert "count accuracy" in out and str(demo / "demo.png") in out
    record = json.loads((demo / "demo.json").read_text())  # the demo's record: both models, its budget
    assert record["command"] == "ppl-scenes demo --steps 1 --no-progress" and record["seed"] == 0
    assert record["budget"]["steps"] == 1 and record["budget"]["minutes"] is None
    assert record["yours"]["step"] == 1 and set(record["yours"]) >= {"ap50", "count_accuracy"}
    assert record["pretrained"]["preset"] == "scattered-5" and record["machine"]["cpus"] >= 1
    assert record["test_scenes"] == 2


def test_parse_value():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("1e-3") == 1e-3
    assert parse_value("1,5") == (1, 5) and parse_value("[1, 5]") == (1, 5) and parse_value("(2,3)") == (2, 3)
    assert parse_value("true") is True and parse_value("none") is None
    assert parse_value("wavefront") == "wavefront" and parse_value("a,b") == ("a", "b")


# -- bad input: exit status 2, one line on stderr, no traceback ---------------------------------
@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "nosuchmodel", "--steps", "1"], "unknown model 'nosuchmodel'"),
        (["train", "spair", "--steps", "1", "--dataset", "nosuchdata"], "unknown dataset 'nosuchdata'"),
        (["train", "spair", "--steps", "1", "what_dim"], "malformed override 'what_dim'"),
        (["train", "spair", "--steps", "1", "=4"], "malformed override"),
        (["train", "spair", "--steps", "1", "nosuchkey=1"], "unknown model config key 'nosuchkey'"),
        (["train", "spair", "--steps", "1", "train.nosuchkey=1"], "unknown training key 'nosuchkey'"),
        (["train", "spair", "--steps", "1", "data.nosuchkey=1"], "unknown option 'nosuchkey'"),
        (["train", "spair", "--steps", "1", "what_dim=abc"], "what_dim"),
        (["train", "spair", "--steps", "1", "what_dim=2.5"], "what_dim"),
        (["train", "spair", "--steps", "1", "cell_size=12"], "cell_size"),
        (["train", "spair", "--steps", "1", "lateral=maybe"], "lateral"),
        (["train", "spair", "--steps", "1", "order=sideways"], "order"),
        (["train", "spair", "--steps", "1", "train.batch_size=0"], "batch_size"),
        (["train", "spair", "--steps", "1", "train.lr_per_module=3"], "lr_per_module"),
        (["train", "spair", "--steps", "1", "data.num_scenes=many"], "num_scenes"),
        (["train", "spair", "--steps", "1", "what_dim=4", "what_dim=5"], "second time"),
        (["train", "spair", "--steps", "0"], "--steps: must be a positive integer"),
        (["train", "spair", "--steps", "-3"], "--steps"),
        (["train", "spair", "--minutes", "0"], "--minutes: must be a positive number"),
        (["train", "spair", "--minutes", "nan"], "--minutes"),
        (["train", "spair", "--steps", "1", "--bogus"], "unrecognized arguments: --bogus"),
        (["demo", "--steps", "0"], "--steps"),
        (["demo", "--minutes", "-1"], "--minutes"),
        (["nosuchverb"], "invalid choice"),
    ],
)
def test_bad_train_input(args, needle, tmp_path, capsys):
    out = tmp_path / "run"
    if args[0] == "train":
        args = [*args[:2], "--out", str(out), *args[2:]]
    assert_clean_error(capsys, main(args), 2, needle)
    assert not out.exists()  # nothing was written


def test_train_onto_existing_run_leaves_it_untouched(run_copy, capsys):
    before = snapshot(run_copy)
    assert_clean_error(capsys, main(train_args(run_copy, "--steps", "1", *TINY)), 2, "not empty", "--resume")
    assert snapshot(run_copy) == before


def test_train_onto_a_file(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert_clean_error(capsys, main(train_args(target, "--steps", "1")), 2, "not a directory")
    assert target.read_text() == "x"


def test_resume_needs_a_run_and_keeps_its_model(run_copy, tmp_path, capsys):
    assert_clean_error(
        capsys, main(train_args(tmp_path / "none", "--resume", "--steps", "3")), 2, "does not exist"
    )
    before = snapshot(run_copy)
    assert_clean_error(
        capsys,
        main(train_args(run_copy, "--resume", "--steps", "3", "what_dim=8", "--seed", "1")),
        2,
        "differ",
    )
    assert snapshot(run_copy) == before


def test_resume_names_each_setting_that_differs(run_copy, capsys):
    code = main(
        train_args(run_copy, "--resume", "--steps", "3", "what_dim=8", "--seed", "1", "data.num_scenes=9")
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "what_dim=8 (the run has 4)" in err and "--seed 1 (the run has 0)" in err
    assert "data.num_scenes=9 (the run has 8)" in err


def test_resume_accepts_the_runs_own_settings_repeated(run_copy):
    """The same --seed, model overrides and data settings as the run's are not an error."""
    assert main(train_args(run_copy, "--resume", "--steps", "3", "--seed", "0", *TINY)) == 0


@pytest.mark.parametrize("verb", [["eval"], ["eval", "--json"], ["sample"]])
def test_missing_run_dir(verb, tmp_path, capsys):
    capsys.readouterr()
    code = main([verb[0], str(tmp_path / "nowhere"), *verb[1:]])
    captured = capsys.readouterr()
    assert code == 2 and "does not exist" in captured.err and "Traceback" not in captured.err
    assert captured.out == ""


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda d: (d / "config.json").write_text("{not json"), "corrupt"),
        (lambda d: (d / "config.json").write_text('{"model": "nosuchmodel"}'), "unknown model"),
        (lambda d: (d / "config.json").write_text('{"model": "spair", "model_config": {"zzz": 1}}'), "zzz"),
        (lambda d: (d / "config.json").unlink(), "config.json"),
        (lambda d: (d / "weights.safetensors").write_bytes(b"garbage"), "corrupt"),
        (lambda d: (d / "weights.safetensors").unlink(), "weights.safetensors"),
        (lambda d: (d / "state.json").write_bytes(b"{}"), "state.json"),
    ],
)
@pytest.mark.parametrize("verb", ["eval", "sample"])
def test_corrupt_run_dir(run_copy, damage, needle, verb, capsys):
    damage(run_copy)
    assert_clean_error(capsys, main([verb, str(run_copy)]), 2, needle)


def test_corrupt_checkpoint_on_resume(run_copy, capsys):
    (run_copy / "state.safetensors").write_bytes(b"garbage")
    assert_clean_error(capsys, main(train_args(run_copy, "--resume", "--steps", "3")), 2, "corrupt")


def test_sample_rejects_non_positive_count(trained, capsys):
    assert_clean_error(capsys, main(["sample", str(trained), "--num-samples", "0"]), 2, "--num-samples")
    assert_clean_error(capsys, main(["sample", str(trained), "--num-draws", "0"]), 2, "--num-draws")


def test_diverged_training_exits_1(tmp_path, monkeypatch, capsys):
    from ppl_scenes.infer import SVITrainer
    from ppl_scenes.infer.trainer import NonFiniteStep

    def blow_up(self, batch):
        raise NonFiniteStep("non-finite loss")

    monkeypatch.setattr(SVITrainer, "train_step", blow_up)
    code = main(train_args(tmp_path / "run", "--steps", "5", *TINY, "train.max_bad_steps=2"))
    assert_clean_error(capsys, code, 1, "non-finite")


def test_help_runs_as_a_program():
    exe = Path(sys.executable).with_name("ppl-scenes")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "ppl_scenes.cli"]
    result = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for verb in ("train", "eval", "sample", "demo"):
        assert verb in result.stdout


def test_tuple_overrides_take_every_written_form():
    spair = SPAIRConfig()
    for text in ("8,8", "(8, 8)", "[8,8]", " 8 , 8 "):
        assert replace_config(spair, {"cell_size": text}).cell_size == (8, 8)
    assert replace_config(spair, {"where_prior_loc": "0,0,-1,-1"}).where_prior_loc == (0.0, 0.0, -1.0, -1.0)
    nested = replace_config(SSDIRConfig(), {"detector_lr_schedule": "((0, 0.1), (500, 0.01))"})
    assert nested.detector_lr_schedule == ((0, 0.1), (500, 0.01))
    with pytest.raises(ValueError, match="cell_size"):
        replace_config(spair, {"cell_size": "8,8,8"})
