"""Data-parallel training (ppl_scenes.infer.distributed): two gloo ranks equal one process on the batch.

The ranks are ``torch.multiprocessing.spawn``-ed processes of one thread each with torchrun's
variables set, so the trainer joins the process group itself. SPAIR's guide noise is replaced by a
function of (step, dataset index of the image), so the single process and each rank draw the same
noise for an image and the runs can be compared parameter by parameter.
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
from tests.helpers import SPAIR_TINY

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
