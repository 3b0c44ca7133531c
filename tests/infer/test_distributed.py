"""Data-parallel training (ppl_scenes.infer.distributed): two gloo ranks equal one process on the batch.

The ranks are ``torch.multiprocessing.spawn``-ed processes of one thread each with torchrun's
variables set, so the trainer joins the process group itself. SPAIR's guide noise is replaced by a
function of (step, dataset index of the image), so the single process and each rank draw the same
noise for an image and the runs can be compared parameter by parameter. MIST's lifting trainer (no
noise without ``task_jitter``) and SSDIR's two stages run under two ranks too; ``ppl-scenes train
--nproc 2`` launches torchrun itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch
import torch.multiprocessing as mp

from ppl_scenes.infer import SVITrainer, TrainConfig
from ppl_scenes.infer.distributed import Distributed
from ppl_scenes.models import SPAIR, SPAIRConfig
from tests.helpers import MIST_TINY, SPAIR_TINY, SSDIR_TINY

ROOT = Path(__file__).resolve().parents[2]
STEPS, BATCH = 3, 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _images() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(6, 1, 12, 18, generator=g)


def _train() -> dict[str, torch.Tensor]:
    """Three Adam steps of a tiny SPAIR on batches of 4, its noise a function of (step, image)."""
    pyro.set_rng_seed(0)
    model = SPAIR(SPAIRConfig(**SPAIR_TINY))
    config = TrainConfig(steps=STEPS, batch_size=BATCH, lr=0.01, log_every=1)
    trainer = SVITrainer(model, config, progress=False)

    def draw_noise(b, n, like):
        rows = []
        for index in trainer.batch_index.tolist():
            g = torch.Generator().manual_seed(1000 * trainer.step + index)
            rows.append(torch.randn(n, 4 + 1 + 1 + model.config.what_dim, generator=g))
        z = torch.stack(rows)
        return {
            "where": z[..., :4],
            "depth": z[..., 4:5],
            "pres": torch.sigmoid(z[..., 5]),
            "what": z[..., 6:],
        }

    model.encoder.draw_noise = draw_noise  # the guide's noise
    trainer.records = trainer.fit(_images())
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    params["_loss"] = torch.tensor([r["loss"] for r in trainer.records])
    return params


def _worker(rank: int, world: int, port: int, out: str, reduce: bool) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    pyro.enable_validation(True)
    if not reduce:  # each rank steps on its own shard's gradient: no all-reduce
        Distributed.reduce_gradients = lambda self, params, reduction, ok: ok
    torch.save(_train(), Path(out) / f"rank{rank}.pt")


def _spawn(tmp_path: Path, reduce: bool) -> list[dict[str, torch.Tensor]]:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), reduce), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]


@pytest.fixture
def single(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    return _train()


def test_two_ranks_take_the_single_process_steps(single, tmp_path):
    ranks = _spawn(tmp_path, reduce=True)
    for name, value in single.items():
        if name == "_loss":
            continue
        assert torch.equal(ranks[0][name], ranks[1][name]), name
        torch.testing.assert_close(ranks[0][name], value, atol=1e-5, rtol=1e-4, msg=name)
    # the logged loss is the global mean: the single process's, on both ranks
    torch.testing.assert_close(ranks[0]["_loss"], single["_loss"], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(ranks[1]["_loss"], single["_loss"], atol=1e-4, rtol=1e-5)


def test_without_the_all_reduce_the_ranks_diverge(tmp_path):
    ranks = _spawn(tmp_path, reduce=False)
    differ = [k for k in ranks[0] if k != "_loss" and not torch.allclose(ranks[0][k], ranks[1][k], atol=1e-5)]
    assert differ


def test_batch_must_divide_by_the_ranks(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    for var in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(var, "1")
    with pytest.raises(ValueError, match="does not divide by the 3"):
        Distributed.from_env("cpu", 4)


def test_torchrun_cli_writes_one_run_and_resumes(tmp_path):
    from tests.test_cli import TINY

    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    train = ["-m", "ppl_scenes", "train", "spair", "--out", str(out), "--num-test", "4", "--no-progress"]
    train += TINY
    done = subprocess.run(
        [*base, *train, "--steps", "2"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained spair") == 1
    import ppl_scenes
    from ppl_scenes.rundir import read_config

    assert read_config(out)["world_size"] == 2
    ppl_scenes.load(out)
    again = subprocess.run(
        [*base, *train, "--steps", "3", "--resume"], env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "to step 3" in again.stdout


# -- MIST's lifting trainer and SSDIR's two stages -------------------------------------------------------
def _state(model) -> dict[str, torch.Tensor]:
    """The model's parameters and buffers, and every ``pyro.param`` value."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state.update({f"pyro:{k}": v.detach().clone() for k, v in pyro.get_param_store().items()})
    return state


def _fit_mist(out: Path | None) -> dict[str, torch.Tensor]:
    """Three lifting iterations of a tiny MIST (classification) on batches of 4 of 8 scenes, its
    patches refined by gradient descent (see the test below)."""
    from ppl_scenes.infer import fit
    from ppl_scenes.models import MIST
    from tests.models.test_mist import scenes

    torch.manual_seed(0)
    model = MIST(**{**MIST_TINY, "num_classes": 3, "task": "classification", "refine_optimizer": "gd"})
    fit(model, scenes(8), steps=3, batch_size=4, lr=0.01, out=out, progress=False, log_every=1)
    return _state(model)


def _fit_ssdir(out: Path | None) -> dict[str, torch.Tensor]:
    """One detector step, then one SVI step, of a tiny SSDIR on batches of 4."""
    from ppl_scenes.infer import fit
    from ppl_scenes.models import SSDIR
    from tests.models.test_ssdir import confident, scenes

    pyro.set_rng_seed(0)
    model = confident(SSDIR(**{**SSDIR_TINY, "detector_classes": 2, "detector_steps": 1}))
    fit(model, scenes(8), steps=2, batch_size=4, out=out, progress=False, log_every=1)
    return _state(model)


_JOBS = {"mist": _fit_mist, "ssdir": _fit_ssdir}


def _job_worker(rank: int, world: int, port: int, out: str, job: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.save(_JOBS[job](Path(out) / "run"), Path(out) / f"rank{rank}.pt")


def _spawn_job(tmp_path: Path, job: str) -> list[dict[str, torch.Tensor]]:
    mp.spawn(_job_worker, args=(2, _free_port(), str(tmp_path), job), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]


def _assert_ranks_agree(ranks: list[dict[str, torch.Tensor]]) -> None:
    assert ranks[0].keys() == ranks[1].keys()
    for name, value in ranks[0].items():
        assert torch.equal(value, ranks[1][name]), name


def test_mist_lifting_under_two_ranks_takes_the_single_process_steps(monkeypatch, tmp_path):
    """Both of a lifting iteration's optimiser steps (task network, then heatmap) see the whole batch's
    gradient: without ``task_jitter`` the step is deterministic given the batch (the refinement is
    per image, its Adam element-wise), so two ranks on half a batch each end where one process on the
    whole batch does, and the ranks agree exactly.

    The single process runs on one thread, as each rank does, and the patches are refined by gradient
    descent: the default refinement's Adam moves a patch by about ``refine_lr`` whatever its
    gradient's size, so a near-zero gradient whose sign depends on rounding (the thread count, the
    all-reduce's sum, the fused optimiser's order of operations) moves the patch the other way, the
    lift target changes, and the heatmap steps apart by a few ``lr`` per step. Gradient descent moves
    a patch in proportion to its gradient, so rounding stays rounding and the runs agree to it, but
    for the heatmap network's last bias: the local spatial softmax is invariant to a constant shift
    of the logits, so its true gradient is zero and Adam moves it by the rounding's sign alone.

    The conv weights are channels-last, so this also checks that the all-reduced gradients keep
    their parameters' layout (fused Adam pairs parameter and gradient by memory order).
    """
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = _fit_mist(None)
    finally:
        torch.set_num_threads(threads)
    ranks = _spawn_job(tmp_path, "mist")
    _assert_ranks_agree(ranks)
    shift_invariant = "heatmap_net.base.3.bias"
    assert shift_invariant in single
    for name, value in single.items():
        if name != shift_invariant:
            torch.testing.assert_close(ranks[0][name], value, atol=1e-5, rtol=1e-4, msg=name)
    from ppl_scenes.runs import read_metrics

    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2, 3]


def test_ssdir_two_stages_under_two_ranks_agree_and_write_one_run(tmp_path):
    """A detector step, then an SVI step: the ranks end with identical parameters, batch-norm
    statistics and ``pyro.param`` values, and rank 0 alone writes the run (one record per step, the
    detector once). Only agreement is asserted, not equality with one process on the whole batch: on
    the CPU (gloo) the detector's batch norm normalises each rank's shard by the shard's own
    statistics, as under DDP (``SyncBatchNorm`` needs CUDA), and SSD's detector loss is normalised by
    the shard's matched boxes, so stage 1's gradient is the mean of the shards', not the batch's."""
    from ppl_scenes.rundir import DETECTOR_FILE, read_config
    from ppl_scenes.runs import read_metrics

    ranks = _spawn_job(tmp_path, "ssdir")
    _assert_ranks_agree(ranks)
    assert any(k.startswith("detector.") and "running_mean" in k for k in ranks[0])  # batch norm compared
    run = tmp_path / "run"
    assert read_config(run)["world_size"] == 2
    assert [(r["step"], r["stage"]) for r in read_metrics(run)] == [(1, 1), (2, 2)]
    assert (run / DETECTOR_FILE).is_file()


# -- ppl-scenes train --nproc --------------------------------------------------------------------------
def test_cli_nproc_runs_torchrun_and_writes_one_run(tmp_path):
    """``--nproc 2`` re-runs the command under torchrun: two ranks, one run directory, one report."""
    from tests.test_cli import TINY

    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(var, None)
    train = ["-m", "ppl_scenes", "train", "spair", "--out", str(out), "--num-test", "4", "--no-progress"]
    done = subprocess.run(
        [sys.executable, *train, "--nproc", "2", *TINY, "--steps", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torch.distributed.run --standalone --nproc-per-node 2" in done.stderr
    assert done.stdout.count("trained spair to step 2") == 1
    from ppl_scenes.rundir import read_config
    from ppl_scenes.runs import read_metrics

    config = read_config(out)
    assert config["world_size"] == 2 and "--nproc" not in config.get("command", "")
    steps = [r["step"] for r in read_metrics(out)]
    assert steps == sorted(set(steps)) and steps[-1] == 2  # one writer: no step logged twice


def test_cli_nproc_needs_a_gpu_per_process_and_is_dropped_from_the_relaunch(tmp_path, monkeypatch, capsys):
    from ppl_scenes.cli import _without_nproc, main

    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    status = main(["train", "spair", "--out", str(tmp_path / "run"), "--nproc", "2", "--device", "cuda"])
    assert status == 2
    assert "needs 2 GPUs (one per process), but this machine has 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    argv = ["train", "spair", "--nproc", "2", "--out", "r", "--nproc=3", "--npr", "4", "train.lr=1"]
    assert _without_nproc(argv) == ["train", "spair", "--out", "r", "train.lr=1"]
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert main(["train", "spair", "--out", str(tmp_path / "run"), "--nproc", "2"]) == 2
    assert "WORLD_SIZE=3" in capsys.readouterr().err
