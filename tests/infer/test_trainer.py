"""The shared training machinery (Trainer, SVITrainer, fit) on a tiny toy scene model.

The toy is a per-pixel Bernoulli VAE on ``[B, 1, 8, 8]`` images with a 2-d Normal latent; switches in
its config poison chosen steps (NaN loss, NaN distribution parameter, infinite gradient) so the
bad-step handling can be tested. A few tests use a tiny SPAIR (24x24 images, 2x2 grid).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
import types
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ppl_scenes.data.loading as loading_mod
import ppl_scenes.infer.trainer as trainer_mod
from ppl_scenes import runs
from ppl_scenes.data.loading import materialize
from ppl_scenes.infer import SVITrainer, fit
from ppl_scenes.infer.fit import train_config
from ppl_scenes.infer.trainer import TrainConfig, Trainer, TrainingDiverged
from ppl_scenes.models.base import MODELS, SceneModel, SceneParse, Variational
from ppl_scenes.models.spair import SPAIR, SPAIRConfig
from ppl_scenes.rundir import CHECKPOINT_FILES, RunDir
from ppl_scenes.runs import RunDirError, read_metrics
from tests.helpers import small_spair, square_images

pytestmark = pytest.mark.filterwarnings("ignore:Encountered NaN")


@dataclasses.dataclass
class ToyConfig:
    channels: int = 1
    latent_dim: int = 2
    param_guide: bool = False  # the guide's scale is a pyro.param (a swapped-in style guide)
    nan_loss_steps: tuple[int, ...] = ()
    nan_param_steps: tuple[int, ...] = ()
    inf_grad_steps: tuple[int, ...] = ()


class Toy(SceneModel, Variational):
    config_class = ToyConfig

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        d = self.config.latent_dim
        self.encoder = nn.Linear(64, 2 * d)
        self.decoder = nn.Linear(d, 64)
        self.offset = nn.Parameter(torch.zeros(1, 8, 8))

    def min_image_size(self):
        return (8, 8)

    def model(self, x):
        b, d = x.shape[0], self.config.latent_dim
        with pyro.plate("data", b):
            z = pyro.sample("z", dist.Normal(torch.zeros(b, d), 1.0).to_event(1))
            logits = self.decoder(z).view(b, 1, 8, 8) + self.offset
            pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(3), obs=x)
        if self.step in self.config.nan_loss_steps:
            poison = dist.Unit(torch.tensor(float("nan")), validate_args=False)
            pyro.sample("poison", poison, obs=poison.sample())
        if self.step in self.config.inf_grad_steps:
            w = self.offset.sum()
            pyro.factor("kink", torch.sqrt(w - w.detach()))  # value 0, gradient +inf

    def guide(self, x):
        b, d = x.shape[0], self.config.latent_dim
        h = self.encoder(x.flatten(1))
        loc, scale = h[:, :d], F.softplus(h[:, d:]) + 1e-3
        if self.config.param_guide:
            scale = scale * pyro.param("toy_q_scale", torch.ones(d), constraint=dist.constraints.positive)
        if self.step in self.config.nan_param_steps:
            loc = loc * float("nan")
        with pyro.plate("data", b):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def parse(self, x):
        b = x.shape[0]
        loc = self.encoder(x.flatten(1))[:, : self.config.latent_dim]
        recon = torch.sigmoid(self.decoder(loc).view(b, 1, 8, 8) + self.offset)
        return SceneParse(
            boxes=[torch.tensor([[0.0, 0.0, 8.0, 8.0]])] * b,
            scores=[torch.ones(1)] * b,
            reconstruction=recon,
        )


# Named after the class body, so the class is not in the global registry for other test modules;
# the fixture below registers it for the duration of each test (runs.load looks models up there).
Toy.name = "toy_trainer"


@pytest.fixture(autouse=True)
def _register_toy(monkeypatch):
    monkeypatch.setitem(MODELS, Toy.name, Toy)


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(1)
    return (torch.rand(12, 1, 8, 8, generator=g) > 0.6).float()


def make_toy(seed=0, **overrides):
    pyro.set_rng_seed(seed)
    return Toy(**overrides)


def params_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def read_checkpoint(run_dir):
    return RunDir(run_dir).load_checkpoint()


def losses(run_dir):
    return [r["loss"] for r in read_metrics(run_dir) if "loss" in r]


def tiny_spair(seed=0):
    return small_spair(seed, pres_anneal_steps=10)


# -- basic fit -------------------------------------------------------------------------------------
def test_fit_trains_and_returns_model_in_eval_mode(images):
    model = make_toy()
    before = params_of(model)
    out = fit(model, images, steps=3, batch_size=4, log_every=1, progress=False)
    assert out is model
    assert not model.training
    after = params_of(model)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_loss_decreases_on_a_learnable_toy(images):
    model = make_toy()
    trainer = SVITrainer(model, TrainConfig(steps=60, batch_size=12, lr=0.05, log_every=1), progress=False)
    records = trainer.fit(images)
    first = sum(r["loss"] for r in records[:5]) / 5
    last = sum(r["loss"] for r in records[-5:]) / 5
    assert last < first


def test_metrics_jsonl_records_step_and_loss_at_log_every(tmp_path, images):
    out = tmp_path / "run"
    fit(make_toy(), images, steps=7, batch_size=4, log_every=3, out=out, progress=False)
    records = read_metrics(out)
    assert [r["step"] for r in records] == [3, 6, 7]  # every 3 steps, and the last
    for r in records:
        assert isinstance(r["loss"], float) and math.isfinite(r["loss"])
        assert r["skipped_steps"] == 0
        assert r["grad_norm"] >= 0
    for line in (out / "metrics.jsonl").read_text().splitlines():
        assert {"step", "loss"} <= set(json.loads(line))


def test_fit_returns_the_logged_records(tmp_path, images):
    model = make_toy()
    trainer = SVITrainer(
        model, TrainConfig(steps=4, batch_size=4, log_every=2), out=tmp_path / "r", progress=False
    )
    records = trainer.fit(images)
    assert records == read_metrics(tmp_path / "r")


def test_progress_bar_on_and_off(capsys, images):
    fit(make_toy(), images, steps=2, batch_size=4, progress=False)
    assert "training toy_trainer" not in capsys.readouterr().err
    fit(make_toy(), images, steps=2, batch_size=4, progress=True)
    assert "training toy_trainer" in capsys.readouterr().err


def test_dataset_of_pairs_is_accepted(images):
    data = [(im, {"count": 0}) for im in images]
    assert torch.equal(materialize(data), images)
    stacked, targets = materialize(data, with_targets=True)
    assert torch.equal(stacked, images) and targets == [{"count": 0}] * len(images)
    assert materialize(images, with_targets=True)[1] == []
    fit(make_toy(), data, steps=2, batch_size=4, progress=False)


# -- optimiser: per-module learning rates and clipping ----------------------------------------------
def _groups_by_lr(trainer, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return {
        g["lr"]: sorted(names[id(p)] for p in g["params"]) for g in trainer.optimizers["adam"].param_groups
    }


def test_lr_per_module_assigns_parameter_groups(images):
    model = make_toy()
    cfg = TrainConfig(
        steps=1, batch_size=4, lr=0.01, clip_norm=0, lr_per_module={"encoder": 0.05, "decoder.weight": 0.2}
    )
    trainer = SVITrainer(model, cfg, progress=False)
    before = params_of(model)
    trainer.fit(images)
    assert _groups_by_lr(trainer, model) == {
        0.05: ["encoder.bias", "encoder.weight"],
        0.2: ["decoder.weight"],
        0.01: ["decoder.bias", "offset"],
    }
    # Adam's first step moves every coordinate with a gradient by its group's lr: the rates are used.
    after = params_of(model)
    for name, lr in [
        ("encoder.weight", 0.05),
        ("decoder.weight", 0.2),
        ("decoder.bias", 0.01),
        ("offset", 0.01),
    ]:
        step = (after[name] - before[name]).abs().max().item()
        assert step == pytest.approx(lr, rel=1e-3), name


def test_lr_per_module_longest_prefix_wins_and_matches_module_boundaries(images):
    model = make_toy()
    cfg = TrainConfig(steps=1, batch_size=4, lr=0.01, lr_per_module={"encoder": 0.05, "encoder.bias": 0.3})
    trainer = SVITrainer(model, cfg, progress=False)
    trainer.fit(images)
    groups = _groups_by_lr(trainer, model)
    assert groups[0.3] == ["encoder.bias"] and groups[0.05] == ["encoder.weight"]


def test_model_learning_rate_factors_scale_the_base_rate_unless_lr_per_module_names_the_parameter(images):
    model = make_toy()
    model.learning_rate_factors = lambda: {"encoder": 0.1, "decoder.bias": 0.5}
    cfg = TrainConfig(steps=1, batch_size=4, lr=0.01, clip_norm=0, lr_per_module={"encoder.bias": 0.3})
    trainer = SVITrainer(model, cfg, progress=False)
    trainer.fit(images)
    groups = {round(lr, 9): names for lr, names in _groups_by_lr(trainer, model).items()}
    assert groups == {
        0.3: ["encoder.bias"],  # named in the config: the config's rate
        0.001: ["encoder.weight"],
        0.005: ["decoder.bias"],
        0.01: ["decoder.weight", "offset"],
    }


@pytest.mark.parametrize("prefix", ["enc", "nonexistent", "encoder.weigh"])
def test_lr_per_module_prefix_matching_nothing_is_an_error(tmp_path, images, prefix):
    with pytest.raises(ValueError, match="lr_per_module"):
        fit(
            make_toy(),
            images,
            steps=1,
            batch_size=4,
            lr_per_module={prefix: 0.1},
            out=tmp_path / "r",
            progress=False,
        )
    assert not (tmp_path / "r" / "config.json").exists()


def test_lr_per_module_applies_to_pyro_params_of_the_guide(images):
    model = make_toy(param_guide=True)
    trainer = SVITrainer(
        model, TrainConfig(steps=1, batch_size=4, lr_per_module={"toy_q_scale": 0.3}), progress=False
    )
    trainer.fit(images)
    scale = pyro.get_param_store().get_param("toy_q_scale").unconstrained()
    group = next(g for g in trainer.optimizers["adam"].param_groups if g["lr"] == 0.3)
    assert len(group["params"]) == 1 and group["params"][0] is scale


class RecordingTrainer(SVITrainer):
    """Records (pre-clip norm, post-clip norm) of every step's gradient."""

    def clip_and_check(self, params, optimizer=None, loss=None):
        norm = super().clip_and_check(params, optimizer, loss)
        grads = [p.grad for p in self.params if p.grad is not None]
        self.seen = getattr(self, "seen", []) + [
            (norm, torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
        ]
        return norm


def test_adam_is_fused_and_steps_as_plain_adam_on_channels_last_weights():
    """Fused Adam (issue 36) takes the plain update, to rounding, on a channels-last weight whose
    gradient keeps the weight's layout (as autograd's are, and the data-parallel all-reduce's)."""
    from ppl_scenes.infer.optim import adam_by_module

    weights = {}
    for fused in (False, True):
        conv = nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
        conv.load_state_dict(_conv_state())
        params = list(conv.parameters())
        if fused:
            opt, _ = adam_by_module(params, {}, 0.01, {}, {})
            assert opt.defaults["fused"] is True
        else:
            opt = torch.optim.Adam(params, lr=0.01)
        for step in range(3):
            opt.zero_grad()
            g = torch.Generator().manual_seed(step)
            x = torch.randn(2, 3, 6, 6, generator=g).to(memory_format=torch.channels_last)
            conv(x).square().sum().backward()
            assert conv.weight.grad.is_contiguous(memory_format=torch.channels_last)
            opt.step()
        weights[fused] = conv.weight.detach().clone()
    torch.testing.assert_close(weights[True], weights[False], atol=1e-6, rtol=1e-5)


def _conv_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"weight": torch.randn(4, 3, 3, 3, generator=g), "bias": torch.randn(4, generator=g)}


def test_lr_decay_holds_then_falls_to_its_final_factor(tmp_path, images):
    cfg = TrainConfig(steps=10, batch_size=4, lr=0.01, log_every=1, lr_decay_from=0.5, lr_decay_to=0.1)
    trainer = SVITrainer(make_toy(), cfg, out=tmp_path / "run", progress=False)
    records = trainer.fit(images)
    factors = [r["lr_factor"] for r in records]
    assert factors[:5] == [1.0] * 5  # the first half of the budget at the full rate
    assert all(a > b for a, b in zip(factors[4:], factors[5:]))  # then strictly falling
    assert factors[-1] == pytest.approx(0.1)
    for group in trainer.optimizers["adam"].param_groups:
        assert group["lr"] == pytest.approx(0.01 * 0.1) and group["initial_lr"] == 0.01


def test_lr_decay_follows_the_minutes_budget(images, monkeypatch):
    clock = {"t": 0.0}

    def fake_perf_counter():
        clock["t"] += 6.0  # every reading of the clock is a tenth of a minute later
        return clock["t"]

    monkeypatch.setattr(trainer_mod, "time", types.SimpleNamespace(perf_counter=fake_perf_counter))
    cfg = TrainConfig(steps=1000, minutes=1.0, batch_size=4, log_every=1, lr_decay_from=0.0, lr_decay_to=0.0)
    records = SVITrainer(make_toy(), cfg, progress=False).fit(images)
    assert records[-1]["step"] < 20  # the minutes, not the 1,000 steps, end the run
    factors = [r["lr_factor"] for r in records]
    assert factors[0] > 0.9 and factors[-1] < 0.1  # decayed over the minutes


def test_no_lr_decay_by_default_leaves_rates_and_records_alone(images):
    trainer = SVITrainer(make_toy(), TrainConfig(steps=3, batch_size=4, lr=0.01, log_every=1), progress=False)
    records = trainer.fit(images)
    assert all("lr_factor" not in r for r in records)
    assert [g["lr"] for g in trainer.optimizers["adam"].param_groups] == [0.01]


def test_clip_norm_bounds_the_gradient_used_by_the_step(images):
    trainer = RecordingTrainer(
        make_toy(), TrainConfig(steps=3, batch_size=4, clip_norm=0.01, log_every=1), progress=False
    )
    records = trainer.fit(images)
    for (pre, post), rec in zip(trainer.seen, records):
        assert pre > 0.01  # the toy's raw gradients are far larger: clipping is active
        assert post == pytest.approx(0.01, rel=1e-3)
        assert rec["grad_norm"] == pytest.approx(pre)


def test_clip_norm_zero_leaves_gradients_alone(images):
    trainer = RecordingTrainer(make_toy(), TrainConfig(steps=2, batch_size=4, clip_norm=0), progress=False)
    trainer.fit(images)
    for pre, post in trainer.seen:
        assert post == pytest.approx(pre, rel=1e-5)


# -- evaluation ------------------------------------------------------------------------------------
def test_periodic_eval_goes_to_metrics_and_final_eval_to_eval_json(tmp_path, images):
    calls = []

    def eval_fn(model):
        calls.append((model.training, torch.is_grad_enabled()))
        torch.rand(5)  # evaluation may draw random numbers: training must not notice
        return {"calls": len(calls), "offset_mean": model.offset.mean().item()}

    out = tmp_path / "run"
    fit(
        make_toy(),
        images,
        steps=5,
        batch_size=4,
        log_every=10,
        eval_every=2,
        eval_fn=eval_fn,
        out=out,
        progress=False,
    )
    records = read_metrics(out)
    assert [r["step"] for r in records] == [2, 4, 5]
    assert [r["eval/calls"] for r in records] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in records)  # eval lines carry the loss too
    assert calls == [(False, False)] * 3  # eval mode, no gradient
    final = json.loads((out / "eval.json").read_text())
    assert final["step"] == 5 and final["calls"] == 3

    plain = tmp_path / "plain"
    fit(make_toy(), images, steps=5, batch_size=4, log_every=1, out=plain, progress=False)
    with_eval = tmp_path / "with_eval"
    fit(
        make_toy(),
        images,
        steps=5,
        batch_size=4,
        log_every=1,
        eval_every=1,
        eval_fn=eval_fn,
        out=with_eval,
        progress=False,
    )
    assert losses(with_eval) == losses(plain)


def test_eval_only_at_the_end_by_default(tmp_path, images):
    out = tmp_path / "run"
    fit(
        make_toy(),
        images,
        steps=4,
        batch_size=4,
        log_every=1,
        eval_fn=lambda m: {"x": 1.0},
        out=out,
        progress=False,
    )
    assert [("eval/x" in r) for r in read_metrics(out)] == [False, False, False, True]
    assert json.loads((out / "eval.json").read_text()) == {"step": 4, "stop_reason": "steps", "x": 1.0}


def test_eval_fn_must_return_a_dict(images):
    with pytest.raises(ValueError, match="dict"):
        fit(make_toy(), images, steps=1, batch_size=4, eval_fn=lambda m: 0.5, progress=False)


# -- time budget -----------------------------------------------------------------------------------
def test_minutes_budget_stops_training(tmp_path, images, monkeypatch):
    clock = {"t": 1000.0}

    def fake_perf_counter():
        clock["t"] += 30.0  # every reading of the clock is half a minute later
        return clock["t"]

    monkeypatch.setattr(trainer_mod, "time", types.SimpleNamespace(perf_counter=fake_perf_counter))
    out = tmp_path / "run"
    fit(
        make_toy(),
        images,
        steps=100,
        minutes=1.0,
        batch_size=4,
        log_every=50,
        eval_fn=lambda m: {"a": 1},
        out=out,
        progress=False,
    )
    records = read_metrics(out)
    assert records[-1]["step"] < 100
    assert read_checkpoint(out)["step"] == records[-1]["step"]  # the last step is logged and saved
    assert json.loads((out / "eval.json").read_text())["step"] == records[-1]["step"]


def fake_clock(monkeypatch, seconds_per_reading):
    """The trainer's clock, each reading ``seconds_per_reading`` later than the one before (the loop
    reads it once at the start and once after each step: step k ends k readings after the start)."""
    clock = {"t": 1000.0}

    def perf_counter():
        clock["t"] += seconds_per_reading
        return clock["t"]

    monkeypatch.setattr(trainer_mod, "time", types.SimpleNamespace(perf_counter=perf_counter))


class Capped(Toy):
    """A toy whose default training is 3 steps (as SPAIR's default_train holds 5,000)."""

    default_train = {"steps": 3, "batch_size": 4, "log_every": 1}


def test_a_minutes_budget_alone_is_not_capped_by_the_models_default_steps(tmp_path, images, monkeypatch):
    fake_clock(monkeypatch, 1.0)  # a second a step
    out = tmp_path / "run"
    fit(Capped(), images, minutes=0.5, eval_fn=lambda m: {"a": 1.0}, out=out, progress=False)
    records = read_metrics(out)
    assert [r["step"] for r in records] == list(range(1, 31))  # 30 s, not the default's 3 steps
    assert records[-1]["stop_reason"] == "minutes"
    assert all("stop_reason" not in r for r in records[:-1])
    assert json.loads((out / "eval.json").read_text())["stop_reason"] == "minutes"
    assert json.loads((out / "config.json").read_text())["train_config"]["steps"] == 0  # no step limit
    assert fit(Capped(), images, progress=False).step == 3  # without minutes, the default steps hold


def test_train_config_takes_a_minutes_budget_without_steps_as_the_only_limit():
    assert train_config(Capped, minutes=5).steps == 0
    assert train_config(Capped).steps == 3
    assert train_config(Capped, 7, minutes=5).steps == 7  # both given: both are limits
    assert train_config(Capped, minutes=5, steps=7).steps == 7
    assert train_config(Capped, minutes=0).steps == 3
    with pytest.raises(ValueError, match="steps must be a positive integer unless minutes"):
        TrainConfig(steps=0)
    assert TrainConfig(steps=0, minutes=1).steps == 0


@pytest.mark.parametrize(
    "steps, minutes, stop_step, reason",
    [
        (5, 1.0, 5, "steps"),  # the steps come first (5 s of a minute)
        (100, 0.25, 15, "minutes"),  # the minutes come first (15 s, at step 15 of 100)
        (15, 0.25, 15, "steps"),  # both at once: the run did all it was asked
    ],
)
def test_steps_and_minutes_stop_at_whichever_comes_first_and_say_which(
    tmp_path, images, monkeypatch, steps, minutes, stop_step, reason
):
    fake_clock(monkeypatch, 1.0)
    out = tmp_path / "run"
    trainer = SVITrainer(
        make_toy(),
        TrainConfig(steps=steps, minutes=minutes, batch_size=4, log_every=100),
        out=out,
        eval_fn=lambda m: {"a": 1.0},
        progress=False,
    )
    trainer.fit(images)
    last = read_metrics(out)[-1]
    assert last["step"] == stop_step and last["stop_reason"] == reason and trainer.stopped_by == reason
    assert json.loads((out / "eval.json").read_text())["stop_reason"] == reason
    assert read_checkpoint(out)["step"] == stop_step


def test_minutes_budget_counts_the_time_before_a_resume(tmp_path, images, monkeypatch):
    fake_clock(monkeypatch, 1.0)
    out = tmp_path / "run"
    fit(Capped(), images, minutes=0.25, out=out, progress=False)
    assert read_metrics(out)[-1]["step"] == 15
    fit(Capped(), images, minutes=0.5, out=out, resume=True, progress=False)  # 30 s in all
    records = read_metrics(out)
    assert [r["step"] for r in records] == list(range(1, 31))
    assert records[-1]["stop_reason"] == "minutes" and records[-1]["seconds"] == pytest.approx(30.0)


def test_lr_decay_of_a_minutes_budget_alone_follows_the_minutes(images, monkeypatch):
    fake_clock(monkeypatch, 6.0)  # a tenth of a minute a step
    cfg = TrainConfig(steps=0, minutes=1.0, batch_size=4, log_every=1, lr_decay_from=0.5, lr_decay_to=0.1)
    records = SVITrainer(make_toy(), cfg, progress=False).fit(images)
    assert [r["step"] for r in records] == list(range(1, 11))
    factors = [r["lr_factor"] for r in records]
    # step k decays by the share spent before it, (k - 1) / 10: full rate through half the minutes
    assert factors[:6] == [1.0] * 6
    assert all(a > b for a, b in zip(factors[5:], factors[6:])) and 0.1 < factors[-1] < 0.3


def test_annealed_priors_count_steps_from_the_start_whatever_the_budget(tmp_path, monkeypatch):
    """SPAIR's presence prior anneals over its own ``pres_anneal_steps`` steps: a minutes budget (no
    step limit) anneals it exactly as a step budget does."""
    x = square_images()
    steps = TrainConfig(steps=12, batch_size=2, log_every=1)
    by_steps = [r["pres_prob"] for r in SVITrainer(tiny_spair(), steps, progress=False).fit(x)]
    fake_clock(monkeypatch, 1.0)
    minutes = TrainConfig(steps=0, minutes=0.2, batch_size=2, log_every=1)  # 12 s: 12 steps
    by_minutes = [r["pres_prob"] for r in SVITrainer(tiny_spair(), minutes, progress=False).fit(x)]
    assert by_minutes == by_steps
    assert by_minutes[9] == by_minutes[-1] == pytest.approx(SPAIRConfig().pres_prob_end)  # step 10 on


def test_an_interrupted_run_says_where_it_stopped_and_resumes(tmp_path, images, monkeypatch):
    out = tmp_path / "run"
    real = SVITrainer.train_step

    def interrupt_at_step_4(self, batch):
        if self.step == 3:
            raise KeyboardInterrupt
        return real(self, batch)

    with monkeypatch.context() as m:
        m.setattr(SVITrainer, "train_step", interrupt_at_step_4)
        trainer = SVITrainer(
            make_toy(), TrainConfig(steps=5, batch_size=4, checkpoint_every=2), out=out, progress=False
        )
        with pytest.raises(trainer_mod.TrainingInterrupted) as caught:
            trainer.fit(images)
    assert isinstance(caught.value, KeyboardInterrupt)  # what catches Ctrl-C catches it
    assert (caught.value.step, caught.value.last_checkpoint_step) == (3, 2)
    assert trainer.stopped_by == "interrupted"
    fit(make_toy(), images, steps=5, batch_size=4, out=out, resume=True, progress=False)
    assert read_metrics(out)[-1]["stop_reason"] == "steps"


def test_a_diverged_run_says_so(images):
    trainer = SVITrainer(
        make_toy(nan_loss_steps=(1, 2)), TrainConfig(steps=5, batch_size=4, max_bad_steps=2), progress=False
    )
    with pytest.raises(TrainingDiverged):
        trainer.fit(images)
    assert trainer.stopped_by == "diverged"


# -- devices ---------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(images):
    with pytest.raises(ValueError, match="CUDA is not available"):
        TrainConfig(device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        fit(make_toy(), images, steps=1, device="cuda", progress=False)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "", 0])
def test_unknown_device_is_an_error(device):
    with pytest.raises(ValueError, match="device"):
        TrainConfig(device=device)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_on_cuda(tmp_path, images):
    out = tmp_path / "run"
    model = fit(make_toy(), images, steps=3, batch_size=4, device="cuda", out=out, progress=False)
    assert model.device.type == "cuda"
    loaded = runs.load(out)
    assert loaded.device.type == "cpu"
    assert torch.allclose(loaded.offset, model.offset.cpu())
    fit(make_toy(), images, steps=5, batch_size=4, device="cuda", out=out, resume=True, progress=False)
    assert read_checkpoint(out)["step"] == 5


# -- checkpoints -----------------------------------------------------------------------------------
def test_checkpoints_every_n_steps_and_at_the_end(tmp_path, images, monkeypatch):
    saved = []
    real = RunDir.save_checkpoint

    def spy(run_dir, state):
        saved.append(state["step"])
        real(run_dir, state)

    monkeypatch.setattr(RunDir, "save_checkpoint", spy)
    out = tmp_path / "run"
    model = fit(make_toy(), images, steps=5, batch_size=4, checkpoint_every=2, out=out, progress=False)
    assert saved == [2, 4, 5]
    state = read_checkpoint(out)
    assert state["step"] == 5
    assert {"model", "optimizers", "rng", "param_store", "elapsed"} <= set(state)
    assert all(torch.equal(state["model"][k], v) for k, v in model.state_dict().items())


def test_final_checkpoint_is_not_written_twice(tmp_path, images, monkeypatch):
    saved = []
    real = RunDir.save_checkpoint
    monkeypatch.setattr(RunDir, "save_checkpoint", lambda d, s: (saved.append(s["step"]), real(d, s)))
    fit(make_toy(), images, steps=4, batch_size=4, checkpoint_every=2, out=tmp_path / "run", progress=False)
    assert saved == [2, 4]


def _files(run_dir):
    return {p.name: p.read_bytes() for p in run_dir.iterdir()}


@pytest.mark.parametrize("failing_write", [1, 2, 3, 4])
def test_checkpoint_write_failing_midway_leaves_the_old_one(tmp_path, images, monkeypatch, failing_write):
    """The disk fills up while the n-th file of a checkpoint is written (4: config.json, the commit)."""
    out = tmp_path / "run"
    fit(make_toy(), images, steps=2, batch_size=4, out=out, progress=False)
    before = _files(out)
    checksums = runs.read_config(out)["checksums"]
    writes = []
    real_fsync, real_save = os.fsync, RunDir.save_checkpoint

    def broken_fsync(fd):
        writes.append(fd)
        if len(writes) == failing_write:
            raise OSError("disk full")
        real_fsync(fd)

    def save_on_a_full_disk(self, state):
        with monkeypatch.context() as m:
            m.setattr(os, "fsync", broken_fsync)
            real_save(self, state)

    with monkeypatch.context() as m, pytest.raises(OSError, match="disk full"):
        m.setattr(RunDir, "save_checkpoint", save_on_a_full_disk)
        fit(make_toy(), images, steps=4, batch_size=4, out=out, resume=True, progress=False)
    for name in CHECKPOINT_FILES:
        assert (out / name).read_bytes() == before[name], name
    assert sorted(_files(out)) == sorted(before)  # no temporary or pending file left behind
    assert runs.read_config(out)["checksums"] == checksums
    assert runs.load(out).step == 2


def test_checkpoint_rename_failing_leaves_the_old_one(tmp_path, images, monkeypatch):
    out = tmp_path / "run"
    fit(make_toy(), images, steps=2, batch_size=4, out=out, progress=False)
    before = _files(out)
    state = read_checkpoint(out)
    state["step"] = 99

    def broken_replace(src, dst):
        raise OSError("rename failed")

    with monkeypatch.context() as m, pytest.raises(OSError, match="rename failed"):
        m.setattr(os, "replace", broken_replace)
        RunDir(out).save_checkpoint(state)
    assert _files(out) == before
    assert read_checkpoint(out)["step"] == 2


def test_run_files_get_ordinary_permissions(tmp_path, images):
    umask = os.umask(0o022)
    os.umask(umask)
    out = tmp_path / "run"
    fit(make_toy(), images, steps=1, batch_size=4, out=out, progress=False)
    for name in (*CHECKPOINT_FILES, "config.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~umask, name


# -- resume ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("param_guide", [False, True])
def test_resumed_run_reproduces_the_uninterrupted_losses_exactly(tmp_path, images, param_guide):
    kw = dict(batch_size=4, log_every=1, checkpoint_every=100, progress=False)
    straight = fit(make_toy(param_guide=param_guide), images, steps=6, out=tmp_path / "a", **kw)
    straight_params = params_of(straight)
    straight_q = pyro.param("toy_q_scale").detach().clone() if param_guide else None

    pyro.clear_param_store()
    fit(make_toy(param_guide=param_guide), images, steps=3, out=tmp_path / "b", **kw)
    pyro.clear_param_store()  # as in a new process
    resumed = fit(
        make_toy(seed=123, param_guide=param_guide), images, steps=6, out=tmp_path / "b", resume=True, **kw
    )

    assert [r["step"] for r in read_metrics(tmp_path / "b")] == [1, 2, 3, 4, 5, 6]
    assert losses(tmp_path / "b") == losses(tmp_path / "a")
    assert all(torch.equal(straight_params[k], v) for k, v in params_of(resumed).items())
    if param_guide:
        assert torch.equal(pyro.param("toy_q_scale").detach(), straight_q)


class CrashingTrainer(SVITrainer):
    crash_at = 0

    def train_step(self, batch):
        if self.step + 1 == self.crash_at:
            raise KeyboardInterrupt
        return super().train_step(batch)


def test_resume_after_a_crash_replays_the_steps_after_the_checkpoint(tmp_path, images):
    cfg = TrainConfig(steps=6, batch_size=4, log_every=1, checkpoint_every=3)
    SVITrainer(make_toy(), cfg, out=tmp_path / "a", progress=False).fit(images)

    pyro.clear_param_store()
    crashing = CrashingTrainer(make_toy(), cfg, out=tmp_path / "b", progress=False)
    crashing.crash_at = 5
    with pytest.raises(KeyboardInterrupt):
        crashing.fit(images)
    assert [r["step"] for r in read_metrics(tmp_path / "b")] == [1, 2, 3, 4]
    assert read_checkpoint(tmp_path / "b")["step"] == 3

    pyro.clear_param_store()
    SVITrainer(make_toy(seed=7), cfg, out=tmp_path / "b", progress=False).fit(images, resume=True)
    assert [r["step"] for r in read_metrics(tmp_path / "b")] == [1, 2, 3, 4, 5, 6]
    assert losses(tmp_path / "b") == losses(tmp_path / "a")


def test_resume_of_a_finished_run_trains_nothing_and_keeps_files(tmp_path, images):
    out = tmp_path / "run"
    fit(make_toy(), images, steps=3, batch_size=4, out=out, progress=False)
    before = _files(out)
    model = fit(make_toy(seed=5), images, steps=3, batch_size=4, out=out, resume=True, progress=False)
    assert _files(out) == before
    assert torch.equal(model.offset, runs.load(out).offset)


def test_resume_with_new_settings_records_them_and_keeps_the_old_in_history(tmp_path, images):
    out = tmp_path / "run"
    fit(make_toy(), images, steps=2, batch_size=4, out=out, progress=False)
    first = runs.read_config(out)
    fit(make_toy(), images, steps=4, batch_size=4, lr_decay_from=0.5, out=out, resume=True, progress=False)
    second = runs.read_config(out)
    assert second["train_config"]["steps"] == 4 and second["train_config"]["lr_decay_from"] == 0.5
    del first["checksums"]  # the checkpoint's, kept up to date at the top level only
    assert second["history"] == [{**first, "until_step": 2}]
    fit(make_toy(), images, steps=5, batch_size=4, out=out, resume=True, progress=False)
    third = runs.read_config(out)
    assert [h["train_config"]["steps"] for h in third["history"]] == [2, 4]
    assert [h["until_step"] for h in third["history"]] == [2, 4]
    assert read_metrics(out)[-1]["step"] == 5


def test_resumed_spair_reproduces_the_uninterrupted_losses_exactly(tmp_path):
    x = square_images()
    kw = dict(batch_size=2, log_every=1, checkpoint_every=100, progress=False)
    fit(tiny_spair(), x, steps=6, out=tmp_path / "a", **kw)
    pyro.clear_param_store()
    fit(tiny_spair(), x, steps=3, out=tmp_path / "b", **kw)
    pyro.clear_param_store()
    fit(tiny_spair(seed=9), x, steps=6, out=tmp_path / "b", resume=True, **kw)
    assert losses(tmp_path / "b") == losses(tmp_path / "a")
    assert [r["pres_prob"] for r in read_metrics(tmp_path / "b")] == [
        r["pres_prob"] for r in read_metrics(tmp_path / "a")
    ]


def test_spair_lr_per_module(images):
    model = tiny_spair()
    trainer = SVITrainer(
        model, TrainConfig(steps=1, batch_size=2, lr_per_module={"encoder.backbone": 1e-4}), progress=False
    )
    trainer.fit(square_images())
    names = {id(p): n for n, p in model.named_parameters()}
    slow = next(g for g in trainer.optimizers["adam"].param_groups if g["lr"] == 1e-4)
    assert {names[id(p)] for p in slow["params"]} == {
        n for n in names.values() if n.startswith("encoder.backbone.")
    }


@pytest.mark.parametrize(
    "setup, error",
    [
        ("missing", "does not exist"),
        ("empty", "no config.json"),
        ("other_model", "holds a 'spair' run"),
        ("no_checkpoint", "weights.safetensors is missing"),
    ],
)
def test_resume_from_an_unusable_run_dir_is_refused(tmp_path, images, setup, error):
    out = tmp_path / "run"
    if setup == "empty":
        out.mkdir()
    elif setup == "other_model":
        fit(tiny_spair(), square_images(), steps=1, batch_size=2, out=out, progress=False)
    elif setup == "no_checkpoint":
        fit(make_toy(), images, steps=1, batch_size=4, out=out, progress=False)
        (out / "weights.safetensors").unlink()
    with pytest.raises(RunDirError, match=error):
        fit(make_toy(), images, steps=2, batch_size=4, out=out, resume=True, progress=False)


def test_resume_with_a_checkpoint_of_another_shape_is_refused(tmp_path, images):
    out = tmp_path / "run"
    fit(make_toy(), images, steps=1, batch_size=4, out=out, progress=False)
    with pytest.raises(RunDirError, match="does not fit"):
        fit(make_toy(latent_dim=3), images, steps=2, batch_size=4, out=out, resume=True, progress=False)


def test_resume_needs_a_run_directory(images):
    with pytest.raises(ValueError, match="resume needs a run directory"):
        fit(make_toy(), images, steps=1, resume=True, progress=False)


# -- run directory refusals ------------------------------------------------------------------------
def test_training_into_a_non_empty_dir_is_refused_and_touches_nothing(tmp_path, images):
    out = tmp_path / "run"
    fit(make_toy(), images, steps=2, batch_size=4, out=out, progress=False)
    before = _files(out)
    with pytest.raises(RunDirError, match="not empty"):
        fit(make_toy(), images, steps=3, batch_size=4, out=out, progress=False)
    assert _files(out) == before

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not empty"):
        fit(make_toy(), images, steps=1, batch_size=4, out=other, progress=False)
    assert _files(other) == {"notes.txt": b"mine"}


def test_training_onto_a_file_is_refused(tmp_path, images):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(RunDirError, match="not a directory"):
        fit(make_toy(), images, steps=1, batch_size=4, out=target, progress=False)


def test_a_failed_start_leaves_no_half_made_run(tmp_path, images):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit(make_toy(), images * 2, steps=1, batch_size=4, out=out, progress=False)
    with pytest.raises(ValueError, match="too small"):
        fit(make_toy(), torch.zeros(2, 1, 4, 4), steps=1, batch_size=4, out=out, progress=False)
    assert not out.exists() or not any(out.iterdir())
    fit(make_toy(), images, steps=1, batch_size=4, out=out, progress=False)  # the path is still free
    assert RunDir(out).has_checkpoint() and (out / "weights.safetensors").is_file()


def test_config_json_describes_the_run(tmp_path, images):
    out = tmp_path / "run"
    model = make_toy(latent_dim=3)
    fit(
        model,
        images,
        steps=1,
        batch_size=4,
        seed=4,
        out=out,
        run_info={"data": {"name": "toy"}},
        progress=False,
    )
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "toy_trainer"
    assert config["model_config"]["latent_dim"] == 3
    assert config["train_config"]["steps"] == 1 and config["train_config"]["batch_size"] == 4
    assert config["seed"] == 4
    assert config["data"] == {"name": "toy"}
    assert config["version"] == __import__("ppl_scenes").__version__


# -- non-finite steps ------------------------------------------------------------------------------
@pytest.mark.parametrize("poison", ["nan_loss_steps", "nan_param_steps", "inf_grad_steps"])
def test_non_finite_steps_are_skipped_and_counted(tmp_path, images, poison):
    out = tmp_path / "run"
    fit(make_toy(**{poison: (2, 3)}), images, steps=5, batch_size=4, log_every=1, out=out, progress=False)
    records = read_metrics(out)
    assert [math.isnan(r["loss"]) for r in records] == [False, True, True, False, False]
    assert [r["skipped_steps"] for r in records] == [0, 1, 2, 2, 2]


@pytest.mark.parametrize("poison", ["nan_loss_steps", "nan_param_steps", "inf_grad_steps"])
def test_a_skipped_step_changes_no_parameter(images, poison):
    model = make_toy(**{poison: (1, 2, 3)})
    before = params_of(model)
    trainer = SVITrainer(model, TrainConfig(steps=3, batch_size=4, log_every=1), progress=False)
    records = trainer.fit(images)
    assert all(torch.equal(before[k], v) for k, v in params_of(model).items())
    assert trainer.optimizers["adam"].state_dict()["state"] == {}  # Adam's moments untouched
    assert records[-1]["skipped_steps"] == 3


def test_too_many_bad_steps_raise_training_diverged_and_keep_the_last_good_checkpoint(tmp_path, images):
    out = tmp_path / "run"
    model = make_toy(nan_loss_steps=tuple(range(4, 30)))
    with pytest.raises(TrainingDiverged, match=r"3 consecutive steps \(4 to 6\).*checkpoint \(step 2\)"):
        fit(
            model,
            images,
            steps=20,
            batch_size=4,
            log_every=1,
            checkpoint_every=2,
            max_bad_steps=3,
            out=out,
            progress=False,
        )
    state = read_checkpoint(out)
    assert state["step"] == 2  # no checkpoint was written at step 4: it was skipped
    records = read_metrics(out)
    assert records[-1]["diverged"] is True and records[-1]["skipped_steps"] == 3

    # The checkpoint is the good state after step 2: the same as a clean 2-step run's.
    pyro.clear_param_store()
    clean = fit(make_toy(), images, steps=2, batch_size=4, progress=False)
    loaded = runs.load(out)
    assert loaded.step == 2
    assert all(torch.equal(v, params_of(clean)[k]) for k, v in params_of(loaded).items())


def test_default_max_bad_steps_is_20(images):
    assert TrainConfig().max_bad_steps == 20
    model = make_toy(nan_loss_steps=tuple(range(1, 100)))
    with pytest.raises(TrainingDiverged, match="20 consecutive"):
        fit(model, images, steps=50, batch_size=4, progress=False)
    assert model.step == 20


def test_bad_steps_below_the_limit_do_not_stop_training(images):
    model = make_toy(nan_loss_steps=(2, 3, 5, 6))
    trainer = SVITrainer(
        model, TrainConfig(steps=8, batch_size=4, log_every=1, max_bad_steps=3), progress=False
    )
    records = trainer.fit(images)
    assert records[-1]["step"] == 8 and records[-1]["skipped_steps"] == 4


# -- bad settings ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value",
    [
        ("steps", 0),
        ("steps", -3),
        ("steps", 1.5),
        ("steps", True),
        ("steps", "10"),
        ("steps", float("nan")),
        ("steps", float("inf")),
        ("batch_size", 0),
        ("lr", 0.0),
        ("lr", -1e-3),
        ("lr", float("inf")),
        ("lr", "0.1"),
        ("minutes", -1.0),
        ("minutes", float("nan")),
        ("minutes", "5"),
        ("log_every", 0),
        ("checkpoint_every", 0),
        ("max_bad_steps", 0),
        ("num_particles", 0),
        ("clip_norm", -1.0),
        ("clip_norm", float("nan")),
        ("eval_every", -1),
        ("eval_every", 1.5),
        ("seed", -1),
        ("lr_per_module", {"encoder": 0.0}),
        ("lr_per_module", {"": 0.1}),
        ("lr_per_module", [("encoder", 0.1)]),
        ("tensorboard", "yes"),
        ("lr_decay_from", 1.5),
        ("lr_decay_from", -0.1),
        ("lr_decay_to", 2.0),
        ("lr_decay_to", float("nan")),
    ],
)
def test_train_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_train_config_normalises_whole_numbers():
    import numpy as np

    cfg = TrainConfig(steps=np.int64(3), batch_size=4.0, minutes=1)
    assert cfg.steps == 3 and type(cfg.steps) is int
    assert type(cfg.batch_size) is int and type(cfg.minutes) is float


def test_fit_rejects_unknown_settings(images):
    with pytest.raises(ValueError, match="bogus"):
        fit(make_toy(), images, steps=1, bogus=1, progress=False)


def test_fit_rejects_bad_settings_and_data(images):
    with pytest.raises(ValueError, match="steps"):
        fit(make_toy(), images, steps=0, progress=False)
    with pytest.raises(ValueError, match="rank 4"):
        fit(make_toy(), images[0], steps=1, progress=False)
    with pytest.raises(ValueError, match="empty"):
        fit(make_toy(), [], steps=1, progress=False)
    with pytest.raises(ValueError, match="dataset"):
        fit(make_toy(), 3, steps=1, progress=False)
    with pytest.raises(ValueError, match="channels"):
        fit(make_toy(), torch.zeros(2, 3, 8, 8), steps=1, progress=False)


def test_trainer_rejects_a_config_of_the_wrong_type():
    with pytest.raises(ValueError, match="TrainConfig"):
        Trainer(make_toy(), {"steps": 3})
    with pytest.raises(ValueError, match="eval_fn"):
        Trainer(make_toy(), eval_fn="accuracy")


def test_model_default_train_settings_are_used(images):
    class Tuned(Toy):
        default_train = {"batch_size": 3, "steps": 2, "log_every": 1}

    trainer_batches = []
    model = Tuned()
    real = trainer_mod.Trainer.batch_indices

    def spy(self, step, n):
        idx = real(self, step, n)
        trainer_batches.append(len(idx))
        return idx

    trainer_mod.Trainer.batch_indices, saved = spy, real
    try:
        fit(model, images, progress=False)
    finally:
        trainer_mod.Trainer.batch_indices = saved
    assert trainer_batches == [3, 3]


@pytest.mark.parametrize("model_name", ["spair", "saccade"])
def test_large_training_sets_are_generated_batch_by_batch(monkeypatch, model_name):
    """Above the memory limit the scenes are fetched per batch, with the same batches and labels."""
    from ppl_scenes import ClutteredDigits, DigitFallbackWarning, VariationalSaccading

    with warnings.catch_warnings():  # the offline digits (warned once per process)
        warnings.simplefilter("ignore", DigitFallbackWarning)
        scenes = ClutteredDigits(6, seed=0, canvas_size=40, num_digits=1, root="/nonexistent", download=False)

    def build():
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        if model_name == "spair":
            return SPAIR(SPAIRConfig(cell_size=(8, 8), anchor=(24.0, 24.0), what_dim=4, backbone_width=8))
        return VariationalSaccading(proxy_size=8, glimpse_size=8, z_dim=4, hidden_dim=16, embed_dim=8)

    def losses():
        config = TrainConfig(steps=3, batch_size=2, seed=0, log_every=1)
        records = SVITrainer(build(), config, progress=False).fit(scenes)
        return [r["loss"] for r in records]

    in_memory = losses()
    fetched = []
    original = scenes.__class__.__getitem__
    monkeypatch.setattr(loading_mod, "MAX_IN_MEMORY_BYTES", 100)
    counted = lambda self, i: fetched.append(i) or original(self, i)  # noqa: E731
    monkeypatch.setattr(scenes.__class__, "__getitem__", counted)
    lazy = losses()
    assert lazy == pytest.approx(in_memory, rel=1e-5)
    # scene 0 for the size estimate and the input check, then two per batch (setup and three steps):
    # never the whole set at once
    assert len(fetched) == 2 + 2 * 4
