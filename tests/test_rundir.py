"""Run directories (ppl_scenes.rundir): the safe checkpoint format, checksums, the lock, upgrades.

Most tests train a tiny SPAIR (24x24 images) for a few steps; the legacy ones build the pickled
``checkpoint.pt`` of the release before safetensors, as ``torch.save`` of the old dict layout.
"""

from __future__ import annotations

import builtins
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyro
import pytest
import safetensors.torch
import torch
from torch.distributions import constraints

import ppl_scenes
from ppl_scenes.cli import main
from ppl_scenes.infer import fit
from ppl_scenes.rundir import CHECKPOINT_FILES, DETECTOR_FILE, RunDir, RunDirError, upgrade
from ppl_scenes.runs import read_config, read_metrics
from tests.helpers import small_spair, square_images

REPO = Path(__file__).resolve().parents[1]
TRAIN = dict(batch_size=2, log_every=1, checkpoint_every=100, progress=False)


def train(out, steps, resume=False, seed=0):
    pyro.clear_param_store()
    return fit(small_spair(seed), square_images(), steps=steps, out=out, resume=resume, **TRAIN)


def losses(run_dir):
    return [r["loss"] for r in read_metrics(run_dir)]


def make_legacy(run_dir, state=None):
    """Turn a run directory into the old format: ``torch.save`` of the old dict layout, no checksums."""
    state = state if state is not None else RunDir(run_dir).load_checkpoint()
    torch.save(state, run_dir / "checkpoint.pt")
    for name in CHECKPOINT_FILES:
        (run_dir / name).unlink()
    config = read_config(run_dir)
    del config["checksums"]
    (run_dir / "config.json").write_text(json.dumps(config))
    return state


def record_checksum(run_dir, name):
    """Record the current sha256 of ``name`` (as if whoever changed it had also changed the record)."""
    import hashlib

    config = read_config(run_dir)
    config["checksums"][name] = hashlib.sha256((run_dir / name).read_bytes()).hexdigest()
    (run_dir / "config.json").write_text(json.dumps(config))


@pytest.fixture
def run(tmp_path):
    out = tmp_path / "run"
    train(out, 2)
    return out


# -- layout and round trip -------------------------------------------------------------------------
def test_a_run_directory_holds_safetensors_json_and_checksums(run):
    assert sorted(p.name for p in run.iterdir()) == [
        "config.json",
        "metrics.jsonl",
        "state.json",
        "state.safetensors",
        "weights.safetensors",
    ]
    assert set(read_config(run)["checksums"]) == set(CHECKPOINT_FILES)
    state = RunDir(run).load_checkpoint()
    assert state["step"] == 2 and state["skipped_steps"] == 0 and state["elapsed"] > 0
    assert state["rng"]["numpy"][0] == "MT19937" and state["rng"]["numpy"][1].dtype == np.uint32
    assert isinstance(state["rng"]["python"], tuple) and isinstance(state["rng"]["python"][1], tuple)
    adam = state["optimizers"]["adam"]
    assert all(isinstance(k, int) for k in adam["state"])
    assert isinstance(adam["param_groups"][0]["betas"], tuple)
    model = ppl_scenes.load(run)
    assert model.step == 2
    assert all(torch.equal(v, state["model"][k]) for k, v in model.state_dict().items())


def test_every_kind_of_value_round_trips(tmp_path):
    rd = RunDir(tmp_path)
    rd.write_config({"model": "spair"})
    state = {
        "model": {"w": torch.arange(6.0).view(2, 3).t(), "n": torch.tensor(3)},  # a non-contiguous one
        "floats": [1.5, math.inf, -math.inf, 0.1 + 0.2],
        "nan": math.nan,
        "keys": {0: "int", 1.5: "float", None: "none", "__odd": "str"},
        "nested": ({"a": (1, [2, None])}, "x", True),
        "array": np.arange(6, dtype=np.int64).reshape(2, 3),
        "np_scalar": np.int64(7),
        "constraints": [
            constraints.positive,
            constraints.interval(torch.tensor(-1.0), 2.0),
            constraints.real,
        ],
        "step": 4,
    }
    rd.save_checkpoint(state)
    loaded = rd.load_checkpoint()
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["model"]["n"].item() == 3
    assert loaded["floats"] == [1.5, math.inf, -math.inf, 0.1 + 0.2] and math.isnan(loaded["nan"])
    assert loaded["keys"] == state["keys"] and loaded["nested"] == state["nested"]
    assert loaded["array"].dtype == np.int64 and np.array_equal(loaded["array"], state["array"])
    assert loaded["np_scalar"] == 7 and loaded["step"] == 4
    positive, interval, real = loaded["constraints"]
    assert positive is constraints.positive and real is constraints.real
    assert type(interval) is type(state["constraints"][1])
    assert torch.equal(interval.lower_bound, torch.tensor(-1.0)) and interval.upper_bound == 2.0


def test_what_a_checkpoint_cannot_hold_is_refused_when_saving(tmp_path):
    rd = RunDir(tmp_path)
    rd.write_config({"model": "spair"})
    with pytest.raises(RunDirError, match="'w' holds a list"):
        rd.save_checkpoint({"model": {"w": [1.0]}})
    with pytest.raises(RunDirError, match="cannot hold a function"):
        rd.save_checkpoint({"model": {}, "hook": lambda: None})
    with pytest.raises(RunDirError, match="cannot hold the constraint"):
        rd.save_checkpoint({"model": {}, "c": constraints.integer_interval(0, 3)})
    with pytest.raises(RunDirError, match="under 'model'"):
        rd.save_checkpoint({"step": 1})
    assert not rd.has_checkpoint() and sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


# -- checksums and malformed files -----------------------------------------------------------------
@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_a_changed_byte_is_refused_naming_the_file(run, name):
    path = run / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(RunDirError, match=rf"{name} does not match its sha256 in config\.json"):
        RunDir(run).load_checkpoint()
    if name != "state.safetensors":  # load reads the weights and state.json only
        with pytest.raises(RunDirError, match=name):
            ppl_scenes.load(run)
    with pytest.raises(RunDirError, match=name):
        train(run, 4, resume=True)


def test_extra_bytes_after_the_weights_are_refused(run):
    with open(run / "weights.safetensors", "ab") as f:
        f.write(b"\x00" * 16)
    with pytest.raises(RunDirError, match="weights.safetensors does not match"):
        ppl_scenes.load(run)
    record_checksum(run, "weights.safetensors")  # the record changed too: the format is checked
    with pytest.raises(RunDirError, match="weights.safetensors is corrupt"):
        ppl_scenes.load(run)


def test_an_unknown_entry_in_state_json_is_refused(run):
    state = json.loads((run / "state.json").read_text())
    state["state"]["rng"]["python"] = {"__reduce__": ["os.system", "touch pwned"]}
    (run / "state.json").write_text(json.dumps(state))
    record_checksum(run, "state.json")
    with pytest.raises(RunDirError, match="unknown entry '__reduce__'"):
        RunDir(run).load_checkpoint()


@pytest.mark.parametrize(
    "entry, error",
    [
        ({"__constraint__": "evil"}, "constraint 'evil'"),
        ({"__constraint__": "interval", "args": ["a", "b"]}, "constraint 'interval'"),
        ({"__ndarray__": "|O", "shape": [1], "data": [1]}, "malformed array"),
        ({"__float__": "1e999"}, "a float"),
        ({"__tensor__": "no such tensor"}, "does not hold"),
        ({"__tensor__": "x", "extra": 1}, "unexpected fields"),
    ],
)
def test_malformed_entries_are_refused(run, entry, error):
    state = json.loads((run / "state.json").read_text())
    state["state"]["extra"] = entry
    (run / "state.json").write_text(json.dumps(state))
    record_checksum(run, "state.json")
    with pytest.raises(RunDirError, match=error):
        RunDir(run).load_checkpoint()


def test_a_tensor_no_entry_uses_is_refused(run):
    tensors = safetensors.torch.load_file(run / "state.safetensors")
    tensors["smuggled"] = torch.zeros(3)
    safetensors.torch.save_file(tensors, run / "state.safetensors")
    record_checksum(run, "state.safetensors")
    with pytest.raises(RunDirError, match="no entry uses: \\['smuggled'\\]"):
        RunDir(run).load_checkpoint()


def test_no_checkpoint_recorded(tmp_path):
    rd = RunDir(tmp_path)
    rd.write_config({"model": "spair"})
    assert not rd.has_checkpoint()
    with pytest.raises(RunDirError, match="has no checkpoint: was it trained"):
        rd.load_checkpoint()


# -- crashes and concurrent readers ----------------------------------------------------------------
def test_a_crash_after_the_commit_is_finished_by_the_next_writer(run, monkeypatch):
    with monkeypatch.context() as m:  # the process dies after recording the checksums
        m.setattr(RunDir, "_settle_pending", lambda self, recorded=None: None)
        train(run, 4, resume=True)
    assert (run / "weights.safetensors.pending").is_file()
    assert ppl_scenes.load(run).step == 4  # the committed checkpoint, read where it lies
    assert RunDir(run).load_checkpoint()["step"] == 4
    train(run, 5, resume=True)
    assert not any(p.name.endswith(".pending") for p in run.iterdir())
    assert ppl_scenes.load(run).step == 5


def test_a_crash_before_the_commit_leaves_the_old_checkpoint(run):
    (run / "weights.safetensors.pending").write_bytes(b"half a checkpoint")
    assert ppl_scenes.load(run).step == 2
    train(run, 3, resume=True)
    assert not (run / "weights.safetensors.pending").exists()
    assert ppl_scenes.load(run).step == 3


def test_a_reader_never_mixes_two_checkpoints(run, monkeypatch):
    newer = RunDir(run).load_checkpoint()
    newer["step"] = 99
    newer["model"] = {k: v + 1 for k, v in newer["model"].items()}
    real = RunDir._read_recorded
    calls = []

    def commit_while_reading(self, name, expected):
        calls.append(name)
        if len(calls) == 2:  # the weights are read; a training commits a new checkpoint
            real_save(RunDir(run), newer)
        return real(self, name, expected)

    real_save = RunDir.save_checkpoint
    monkeypatch.setattr(RunDir, "_read_recorded", commit_while_reading)
    state = RunDir(run).load_checkpoint()
    assert state["step"] == 99
    assert all(torch.equal(v, newer["model"][k]) for k, v in state["model"].items())
    assert len(calls) > len(CHECKPOINT_FILES)  # read again after the change


# -- the lock --------------------------------------------------------------------------------------
def test_a_second_training_into_a_locked_directory_is_refused(run):
    holder = RunDir(run)
    holder.lock()
    try:
        assert (run / ".lock").read_text().strip() == str(os.getpid())
        with pytest.raises(RunDirError, match=rf"{run.name}'? is in use by another training \(process"):
            train(run, 4, resume=True)
        with pytest.raises(RunDirError, match="in use"):
            upgrade(run)
        assert ppl_scenes.load(run).step == 2  # reading needs no lock
    finally:
        holder.unlock()
    assert not (run / ".lock").exists()
    train(run, 3, resume=True)
    assert ppl_scenes.load(run).step == 3


def test_the_lock_is_held_while_training_and_let_go_after(run, monkeypatch):
    seen = []
    real = RunDir.append_metrics

    def during(self, record):
        with pytest.raises(RunDirError, match="in use"):
            RunDir(run).lock()
        seen.append(record["step"])
        real(self, record)

    monkeypatch.setattr(RunDir, "append_metrics", during)
    train(run, 3, resume=True)
    assert seen == [3] and not (run / ".lock").exists()


def test_a_lock_of_another_process_refuses_and_its_death_frees_it(run):
    code = (
        "import sys, time\n"
        "from ppl_scenes.rundir import RunDir\n"
        "RunDir(sys.argv[1]).lock()\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"locked"
        with pytest.raises(RunDirError, match=rf"in use by another training \(process {proc.pid}\)"):
            train(run, 3, resume=True)
    finally:
        proc.kill()  # dies holding the lock: the lock file stays behind
        proc.wait()
        proc.stdout.close()
    assert (run / ".lock").read_text().strip() == str(proc.pid)
    train(run, 3, resume=True)
    assert ppl_scenes.load(run).step == 3


def test_a_stale_lock_file_blocks_nothing(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("999999\n")  # left by a process that died
    RunDir(out).check_new()  # a lock file alone does not make the directory a run
    train(out, 2)
    assert ppl_scenes.load(out).step == 2 and not (out / ".lock").exists()


def test_new_runs_need_an_empty_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="exists and is not a directory"):
        RunDir(tmp_path / "file").check_new()
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "notes.txt").write_text("mine")
    with pytest.raises(
        RunDirError, match=r"'.*dir' already exists and is not empty; use resume or another path"
    ):
        RunDir(tmp_path / "dir").check_new()
    RunDir(tmp_path / "new").check_new()


# -- config and metrics ----------------------------------------------------------------------------
def test_write_config_keeps_history_and_checksums(run):
    rd = RunDir(run)
    first = read_config(run)
    settings = {k: v for k, v in first.items() if k != "checksums"}
    assert rd.write_config(settings, resumed_at=2) is False  # unchanged: nothing is written
    assert rd.write_config({**settings, "seed": 5}, resumed_at=2) is True
    second = read_config(run)
    assert second["seed"] == 5 and second["checksums"] == first["checksums"]
    assert second["history"] == [{**settings, "until_step": 2}]
    with pytest.raises(ValueError, match="checksums"):
        rd.write_config({**settings, "checksums": {}})


def test_metrics_tolerate_a_half_written_line_and_truncate(tmp_path):
    rd = RunDir(tmp_path)
    for step in (1, 2, 3):
        rd.append_metrics({"step": step, "loss": float("nan") if step == 2 else 1.0})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "lo')
    assert [r["step"] for r in rd.read_metrics()] == [1, 2, 3]
    assert math.isnan(rd.read_metrics()[1]["loss"])
    rd.truncate_metrics(2)
    assert [r["step"] for r in rd.read_metrics()] == [1, 2]


# -- legacy run directories ------------------------------------------------------------------------
class Booby:
    """Unpickling this opens (creates) a file: any code could run there instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def test_a_booby_trapped_checkpoint_runs_nothing(run, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    state = RunDir(run).load_checkpoint()
    state["rng"]["python"] = Booby(marker)
    make_legacy(run, state)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(RunDirError, match="old pickle format.*ppl-scenes upgrade"):
        ppl_scenes.load(run)
    with pytest.raises(RunDirError, match="ppl-scenes upgrade"):
        train(run, 3, resume=True)
    with pytest.raises(RunDirError, match=r"not converted: besides tensors it holds io\.open"):
        upgrade(run)
    assert main(["upgrade", str(run)]) == 2
    assert "ppl-scenes: error:" in capsys.readouterr().err
    assert not marker.exists()
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing converted or renamed


def test_upgrade_converts_the_constraints_of_an_old_param_store(run):
    """The old trainer saved ``pyro.get_param_store().get_state()`` whole: a model calling
    ``pyro.module`` (the saccade model) pickled a ``constraints.real`` copy per parameter."""
    state = RunDir(run).load_checkpoint()
    names = ("saccade$$$rnn.weight_ih", "saccade$$$where_offset", "guide$$$scale")
    store_constraints = [constraints.real, constraints.interval(0.0, 1.0), constraints.positive]
    state["param_store"] = {
        "params": {n: torch.randn(3) for n in names},
        "constraints": dict(zip(names, store_constraints)),
    }
    make_legacy(run, state)
    assert upgrade(run) == ["checkpoint.pt"]
    loaded = RunDir(run).load_checkpoint()["param_store"]
    assert all(torch.equal(loaded["params"][n], state["param_store"]["params"][n]) for n in names)
    real, interval, positive = (loaded["constraints"][n] for n in names)
    assert real is constraints.real  # an unpickled copy of real is real (by its kind) ...
    assert (
        type(positive) is constraints.greater_than and positive.lower_bound == 0.0
    )  # ... the rest by bounds
    assert type(interval) is constraints.interval and interval.upper_bound == 1.0


def test_upgrade_refuses_a_constraint_off_the_allow_list(run):
    state = RunDir(run).load_checkpoint()
    state["param_store"] = {
        "params": {"p": torch.zeros(1)},
        "constraints": {"p": constraints.integer_interval(0, 3)},
    }
    make_legacy(run, state)
    with pytest.raises(RunDirError, match=r"not converted: besides tensors it holds .*_IntegerInterval"):
        upgrade(run)
    assert (run / "checkpoint.pt").is_file()


def test_upgrade_round_trip_then_resume_continues_exactly(tmp_path, capsys):
    straight, legacy = tmp_path / "straight", tmp_path / "legacy"
    train(straight, 5)
    train(legacy, 3)
    state = make_legacy(legacy)
    assert isinstance(state["rng"]["numpy"][1], np.ndarray)  # the old layout pickles a numpy array
    assert RunDir(legacy).has_checkpoint()
    with pytest.raises(RunDirError, match="upgrade"):
        ppl_scenes.load(legacy)

    assert main(["upgrade", str(legacy)]) == 0
    assert "converted checkpoint.pt" in capsys.readouterr().out
    assert (legacy / "checkpoint.pt.legacy").is_file() and not (legacy / "checkpoint.pt").exists()
    model = ppl_scenes.load(legacy)
    assert model.step == 3
    assert all(torch.equal(v, state["model"][k]) for k, v in model.state_dict().items())
    assert upgrade(legacy) == []  # nothing left to convert

    train(legacy, 5, resume=True, seed=9)
    assert losses(legacy) == losses(straight)


def test_upgrade_converts_a_detector_and_keeps_earlier_legacy_files(run):
    detector = {"backbone.weight": torch.randn(2, 3), "head.bias": torch.zeros(2)}
    torch.save(detector, run / "detector.pt")
    (run / "detector.pt.legacy").write_text("an older one")
    assert upgrade(run) == ["detector.pt"]
    saved = safetensors.torch.load_file(run / DETECTOR_FILE)
    assert all(torch.equal(saved[k], v) for k, v in detector.items())
    assert (run / "detector.pt.legacy").read_text() == "an older one"
    assert (run / "detector.pt.legacy-2").is_file()


def test_upgrade_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        upgrade(tmp_path / "nowhere")
    (tmp_path / "x").mkdir()
    with pytest.raises(RunDirError, match="no config.json"):
        upgrade(tmp_path / "x")


@pytest.mark.parametrize("name", ["saccade_fresh_scale35/weights", "gmair_cat_expectation/continued/run"])
def test_upgrade_of_a_committed_legacy_run(tmp_path, name):
    source = REPO / "benchmarks" / name
    if not (source / "checkpoint.pt").is_file():
        pytest.skip(f"{source} is not in this checkout")
    run = tmp_path / "run"
    shutil.copytree(source, run)
    with pytest.raises(RunDirError, match="upgrade"):
        ppl_scenes.load(run)
    old = torch.load(run / "checkpoint.pt", weights_only=False)  # the repository's own file
    assert upgrade(run) == ["checkpoint.pt"]
    model = ppl_scenes.load(run)
    assert model.step == old["step"]
    assert all(torch.equal(v, old["model"][k]) for k, v in model.state_dict().items())
    if "rng" in old:
        state = RunDir(run).load_checkpoint()
        assert np.array_equal(state["rng"]["numpy"][1], old["rng"]["numpy"][1])
        assert state["rng"]["python"] == old["rng"]["python"]
