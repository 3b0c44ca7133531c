"""Pinned losses of the first fixed-seed training steps of every SVI model and MIST's lifting step.

Issue 36 made the step lean (cached constants, batched sites, fewer copies) without changing its
maths. The numbers below were measured on the code before that work (commit eac679a, torch 2.x CPU);
any change that alters a model's loss or gradient breaks them. Tiny configs, three steps each.
"""

from __future__ import annotations

import pyro
import pytest
import torch

from ppl_scenes import MODELS
from ppl_scenes.infer import TRAINERS
from ppl_scenes.infer.trainer import TrainConfig
from tests.helpers import (
    GMAIR_TINY,
    MIST_TINY,
    SACCADE_TINY,
    SPAIR_TINY,
    SSDIR_TINY,
)
from tests.helpers import square_scenes as scenes

CASES = {
    "spair": ("spair", {**SPAIR_TINY, "cell_size": (8, 8), "anchor": (10.0, 10.0)}),
    "spair_raster": ("spair", {**SPAIR_TINY, "cell_size": (8, 8), "anchor": (10.0, 10.0), "order": "raster"}),
    "spair_what_after": (
        "spair",
        {
            **SPAIR_TINY,
            "cell_size": (8, 8),
            "anchor": (10.0, 10.0),
            "lateral_what": False,
            "mask_absent": False,
        },
    ),
    "gmair": ("gmair", {**GMAIR_TINY, "cell_size": (8, 8), "anchor": (10.0, 10.0)}),
    "ssdir": ("ssdir", {**SSDIR_TINY, "detector_classes": 4, "detector_steps": 1}),
    "saccade": ("saccade", SACCADE_TINY),
    "mist": ("mist", {**MIST_TINY, "num_classes": 4, "task": "classification"}),
}
#: What each case logs that depends on the step's maths.
KEYS = ("loss", "grad_norm", "lift_loss", "refined_task_loss", "heatmap_grad_norm")
#: Measured on the code before issue 36 (commit eac679a).
PINNED: dict[str, list[dict[str, float]]] = {
    "spair": [
        {"loss": 797.29736328125, "grad_norm": 605.5299072265625},
        {"loss": 614.0599365234375, "grad_norm": 751.1235961914062},
        {"loss": 800.8884887695312, "grad_norm": 983.9312133789062},
    ],
    "spair_raster": [
        {"loss": 797.29736328125, "grad_norm": 605.5299072265625},
        {"loss": 614.0599365234375, "grad_norm": 751.123779296875},
        {"loss": 800.8883666992188, "grad_norm": 983.9309692382812},
    ],
    "spair_what_after": [
        {"loss": 827.891845703125, "grad_norm": 427.4715576171875},
        {"loss": 634.3861083984375, "grad_norm": 333.85467529296875},
        {"loss": 823.1946411132812, "grad_norm": 579.3395385742188},
    ],
    "gmair": [
        {"loss": 872.5573120117188, "grad_norm": 813.192138671875},
        {"loss": 743.6134033203125, "grad_norm": 339.9413146972656},
        {"loss": 1013.5081176757812, "grad_norm": 663.6744995117188},
    ],
    "ssdir": [
        {"loss": 13.211822509765625, "grad_norm": 18.471651077270508},
        {"loss": 1064.3958740234375, "grad_norm": 0.0},
        {"loss": 2708.145263671875, "grad_norm": 0.0},
    ],
    "saccade": [
        {"loss": 2.8940000534057617, "grad_norm": 1.5771737098693848},
        {"loss": 3.0690085887908936, "grad_norm": 2.266772747039795},
        {"loss": 2.9217798709869385, "grad_norm": 1.1353590488433838},
    ],
    "mist": [
        {
            "loss": 0.2541346549987793,
            "grad_norm": 0.8075173497200012,
            "lift_loss": 3.470156192779541,
            "refined_task_loss": 0.22046208381652832,
            "heatmap_grad_norm": 0.06608375161886215,
        },
        {
            "loss": 0.23849274218082428,
            "grad_norm": 1.3630456924438477,
            "lift_loss": 3.4722957611083984,
            "refined_task_loss": 0.21403765678405762,
            "heatmap_grad_norm": 0.06366349756717682,
        },
        {
            "loss": 0.23124606907367706,
            "grad_norm": 0.5650976896286011,
            "lift_loss": 3.4764580726623535,
            "refined_task_loss": 0.20818550884723663,
            "heatmap_grad_norm": 0.05387881398200989,
        },
    ],
}


def first_steps(case: str, steps: int = 3, **train) -> list[dict[str, float]]:
    """The logged values of the first ``steps`` training steps of ``case`` (seed 0); ``train``:
    further :class:`TrainConfig` fields."""
    name, config = CASES[case]
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    model = MODELS[name](**config)
    trainer = TRAINERS[model.trainer](
        model, TrainConfig(steps=steps, batch_size=2, log_every=1, **train), progress=False
    )
    records = trainer.fit(scenes())
    return [{k: float(r[k]) for k in KEYS if k in r} for r in records]


def assert_pinned(case: str, got: list[dict[str, float]]) -> None:
    want = PINNED[case]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for k in w:
            assert g[k] == pytest.approx(w[k], rel=1e-4, abs=1e-6), (case, k)


@pytest.mark.parametrize("case", sorted(CASES))
def test_first_steps_keep_their_losses(case):
    assert_pinned(case, first_steps(case))


@pytest.mark.parametrize("case", ["spair", "gmair", "saccade"])
def test_the_compiled_path_keeps_the_losses(case):
    """``train.compile``: each model's ``compiled_methods`` (SPAIR's and GMAIR's guide wavefront and
    renderer, the saccade model's per-saccade networks) captured by ``torch.compile``
    (``aot_eager``: dynamo's graphs and AOT autograd's backward, without code generation, which CI
    has no time for) give the pinned losses and gradient norms."""
    torch._dynamo.reset()
    try:
        assert_pinned(case, first_steps(case, compile=True, compile_backend="aot_eager"))
    finally:
        torch._dynamo.reset()


def test_a_compiler_that_fails_leaves_the_run_eager_with_the_pinned_losses():
    """A backend that cannot compile (inductor without a C++ compiler, here a registered backend
    that raises): the first step is redone eagerly from the same random state, with a warning, and
    the run trains on with the eager losses; the model's methods are its class's again."""
    from torch._dynamo import register_backend

    def no_compiler(graph, example_inputs):
        raise RuntimeError("no C++ compiler found")

    register_backend(no_compiler, name="ppl_scenes_test_failing")
    torch._dynamo.reset()
    try:
        with pytest.warns(UserWarning, match="failed .*no C\\+\\+ compiler.*training eagerly"):
            got = first_steps("spair", compile=True, compile_backend="ppl_scenes_test_failing")
        assert_pinned("spair", got)
    finally:
        torch._dynamo.reset()


def test_a_compiled_model_evaluates_eagerly_without_compiling_again():
    """Compiled methods run compiled where gradients are recorded (the steps) and eagerly elsewhere:
    evaluating or parsing a compiled model (another batch size, no grad) compiles nothing more."""
    from torch._dynamo import register_backend

    from ppl_scenes.infer.compiled import compile_model

    graphs = []

    def counting(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    register_backend(counting, name="ppl_scenes_test_counting")
    torch._dynamo.reset()
    try:
        name, config = CASES["spair"]
        torch.manual_seed(0)
        pyro.clear_param_store()
        model = MODELS[name](**config)
        trainer = TRAINERS[model.trainer](model, TrainConfig(steps=2, batch_size=2), progress=False)
        trainer.fit(scenes())
        compile_model(model, "ppl_scenes_test_counting")
        loss = trainer.loss(torch.stack([image for image, _ in scenes()][:2]))
        loss.backward()
        compiled = len(graphs)
        assert compiled > 0  # the training pass went through the compiler
        parse = model.parse(torch.stack([image for image, _ in scenes()][:3]))
        assert len(graphs) == compiled and len(parse.boxes) == 3
    finally:
        torch._dynamo.reset()


def test_a_model_without_compiled_networks_trains_eagerly_with_a_warning():
    with pytest.warns(UserWarning, match="names no deterministic network"):
        assert_pinned("ssdir", first_steps("ssdir", compile=True, compile_backend="aot_eager"))


def _elbo_step(case: str, elbo) -> tuple[float, dict[str, torch.Tensor], int]:
    """``elbo``'s loss of one fixed-seed batch of ``case``, the gradient of every parameter, and how
    many values the loss and its backward pass read back to the host."""
    from torch.profiler import profile

    name, config = CASES[case]
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    model = MODELS[name](**config)
    trainer = TRAINERS[model.trainer](model, TrainConfig(batch_size=2), elbo=elbo, progress=False)
    images = trainer.prepare_data(scenes())
    trainer.batch_index = torch.arange(2)  # the batch whose labels a supervised model gets
    pyro.set_rng_seed(1)
    with profile(with_stack=True) as prof:
        loss = trainer.loss(images[:2])
        loss.backward()
    names = [e.name for e in prof.events()]
    reads = names.count("aten::_local_scalar_dense") + sum("method tolist of" in n for n in names)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads, reads


@pytest.mark.parametrize("case", ["spair", "gmair", "saccade"])
def test_the_device_elbo_is_pyros_trace_elbo_without_host_syncs(case):
    """:class:`DeviceTraceELBO` (the SVI trainers' default) gives Pyro's ``Trace_ELBO`` loss to
    float32 rounding and its gradient exactly, and reads back to the host only the input checks'
    one value pair (Pyro's reads one value per sample site). The saccade model's label values are
    checked only under Pyro's validation, off in the step."""
    from pyro.infer import Trace_ELBO

    from ppl_scenes.infer import DeviceTraceELBO

    loss, grads, reads = _elbo_step(case, DeviceTraceELBO())
    pyro_loss, pyro_grads, pyro_reads = _elbo_step(case, Trace_ELBO())
    assert loss == pytest.approx(pyro_loss, rel=1e-6)
    assert grads.keys() == pyro_grads.keys() and grads
    for n in grads:
        torch.testing.assert_close(grads[n], pyro_grads[n], rtol=0, atol=0, msg=n)
    assert reads == 1 and pyro_reads >= reads + 4


def test_the_device_elbo_keeps_the_score_function_terms():
    """A guide site without ``rsample`` gets its score-function term: the surrogate's gradient is
    Pyro's, for the guide's parameter too."""
    import pyro.distributions as dist
    from pyro.infer import Trace_ELBO

    from ppl_scenes.infer import DeviceTraceELBO

    def model(x):
        z = pyro.sample("z", dist.Bernoulli(0.3))
        pyro.sample("x", dist.Normal(z * 2.0, 1.0), obs=x)

    def guide(x):
        q = pyro.param("q", torch.tensor(0.6), constraint=dist.constraints.unit_interval)
        pyro.sample("z", dist.Bernoulli(q))

    def grad(elbo) -> float:
        pyro.clear_param_store()
        pyro.set_rng_seed(3)
        pyro.param("q", torch.tensor(0.6), constraint=dist.constraints.unit_interval)
        loss = elbo.differentiable_loss(model, guide, torch.tensor(1.5))
        (g,) = torch.autograd.grad(loss, [pyro.param("q").unconstrained()])
        return float(g)

    ours = grad(DeviceTraceELBO(num_particles=4))
    assert ours != 0 and ours == pytest.approx(grad(Trace_ELBO(num_particles=4)), rel=1e-6)


@pytest.mark.parametrize("case", ["spair", "saccade"])
def test_a_training_step_reads_the_host_once_for_its_loss_and_gradient_norm(case, monkeypatch):
    """A whole SVI step (loss, backward, clipping, checks, Adam) reads back one pair of values: the
    loss and the gradient norm together, for the non-finite check and the log. Counted as
    ``experiments/step_profile.py`` counts (fused Adam's own read of its step count on the CPU left out;
    on CUDA it reads none)."""
    import importlib
    from pathlib import Path

    from torch.profiler import profile

    monkeypatch.syspath_prepend(str(Path(__file__).parents[2] / "experiments"))  # its _common
    host_reads = importlib.import_module("step_profile").host_reads
    name, config = CASES[case]
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    model = MODELS[name](**config)
    trainer = TRAINERS[model.trainer](model, TrainConfig(batch_size=2), progress=False)
    images = trainer.prepare_data(scenes())
    trainer.batch_index = torch.arange(2)
    batch = images[:2]
    trainer.setup(batch)
    trainer.train_step(batch)  # the input check of this batch is done once, then cached
    with profile(with_stack=True) as prof:  # with Python's calls: ``tolist`` is one
        stats = trainer.train_step(batch)
    assert host_reads(prof.events()) == 1
    assert stats["loss"] == pytest.approx(stats["loss"]) and stats["grad_norm"] > 0
