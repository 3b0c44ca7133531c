"""SPAIR and GMAIR losses are unchanged by composing GMAIR's loss weights as a Pyro handler.

The expected numbers were measured on the code before that refactor (commit cf6f211), where every
site of SPAIR's model and guide sat in a ``poutine.scale`` and GMAIR overrode SPAIR's hooks. Each case
seeds Pyro, builds a tiny model, and takes ``Trace_ELBO().differentiable_loss`` of one fixed batch
(and its gradient's norm), plus the log-joint of one prior sample of the model alone.

Below them: the handlers themselves (:class:`~ppl_scenes.models.gmair.TermWeights`,
:class:`~ppl_scenes.models.spair.PresenceWeights`) and the unweighted story they wrap.
"""

import pyro
import pyro.poutine as poutine
import pytest
import torch

from ppl_scenes.models import GMAIR, SPAIR
from ppl_scenes.models.gmair import TermWeights
from ppl_scenes.models.spair import PresenceWeights
from tests.helpers import GMAIR_TINY, SPAIR_TINY

WEIGHTS = dict(
    recon_weight=1.5, pres_weight=0.5, where_weight=0.7, depth_weight=1.3, cat_weight=3.0, what_weight=2.0
)
EXACT = dict(cat_expectation="exact", what_sees_cat=False)

#: name -> (model class, config overrides, training step)
CASES = {
    "spair_default": (SPAIR, {}, 0),
    "spair_unmasked_raster_bernoulli": (
        SPAIR,
        {"mask_absent": False, "order": "raster", "pres_prior": "bernoulli"},
        0,
    ),
    "spair_lateral_without_what_rgb": (SPAIR, {"lateral_what": False, "channels": 3}, 0),
    "gmair_default": (GMAIR, {}, 0),
    "gmair_weighted": (GMAIR, WEIGHTS, 0),
    "gmair_exact_expectation": (GMAIR, EXACT, 0),
    "gmair_exact_expectation_weighted": (GMAIR, {**EXACT, **WEIGHTS}, 0),
    "gmair_weighted_step_3": (GMAIR, WEIGHTS, 3),
    "gmair_weighted_unmasked_lateral": (
        GMAIR,
        {**WEIGHTS, "mask_absent": False, "lateral": True, "lateral_what": True, "cat_kl": "sample"},
        0,
    ),
    "gmair_weighted_no_overlap_count": (
        GMAIR,
        {**WEIGHTS, "overlap_anneal_steps": 0, "pres_prior": "count"},
        0,
    ),
}

#: name -> (loss, gradient norm, prior log-joint), measured before the refactor at commit cf6f211
EXPECTED = {
    "spair_default": (1127.4727783203125, 721.838623046875, -200.99429321289062),
    "spair_unmasked_raster_bernoulli": (1181.3924560546875, 736.3590087890625, -410.1756591796875),
    "spair_lateral_without_what_rgb": (2743.36376953125, 1393.12158203125, -253.09109497070312),
    "gmair_default": (1242.269775390625, 627.388671875, -413.2077941894531),
    "gmair_weighted": (1728.274658203125, 941.76123046875, -645.2116088867188),
    "gmair_exact_expectation": (1242.02197265625, 646.7864379882812, -413.0707702636719),
    "gmair_exact_expectation_weighted": (1727.805419921875, 971.4625854492188, -645.0023193359375),
    # its prior log-joint, -0.17557 at cf6f211, moved by 2.3e-4 when the pixel likelihood became
    # distributions.Bernoulli: log(1 - p) at the 1e-4 clip is now exact (torch's clamped logits were
    # 1.3e-7 off per pixel, over 1,152 pixels); loss and gradient are unchanged
    "gmair_weighted_step_3": (1841.7528076171875, 942.9390869140625, -0.17534774541854858),
    "gmair_weighted_unmasked_lateral": (1619.1756591796875, 1069.664794921875, -645.7574462890625),
    "gmair_weighted_no_overlap_count": (1724.9742431640625, 941.8792114257812, -343.3363952636719),
}


def images(channels: int = 1) -> torch.Tensor:
    x = torch.zeros(2, channels, 24, 24)
    x[..., 2:8, 3:9] = 0.8
    x[..., 13:20, 12:17] = 1.0
    x[1, ..., 9:13, 18:22] = 0.6
    return x


def measure(name: str) -> tuple[float, float, float]:
    cls, overrides, step = CASES[name]
    pyro.set_rng_seed(0)
    model = cls(**{**(GMAIR_TINY if cls is GMAIR else SPAIR_TINY), **overrides})
    model.set_step(step)
    x = images(model.config.channels)
    pyro.set_rng_seed(1)
    loss = pyro.infer.Trace_ELBO().differentiable_loss(model.model, model.guide, x)
    loss.backward()
    grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
    grad_norm = torch.cat(grads).norm()
    pyro.set_rng_seed(2)
    with torch.no_grad():
        prior = poutine.trace(model.model).get_trace(batch_size=2, image_size=(24, 24))
        log_joint = prior.log_prob_sum()
    return loss.item(), grad_norm.item(), log_joint.item()


@pytest.mark.parametrize("name", CASES)
def test_loss_gradient_and_prior_density_are_unchanged(name):
    expected = EXPECTED[name]
    for got, want in zip(measure(name), expected):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-4)


def test_spair_story_and_guide_module_are_unweighted():
    """Weights come from handlers around SPAIR's story: the story and the guide module carry none."""
    for cls in (SPAIR, GMAIR):
        model = cls(**({**GMAIR_TINY, **WEIGHTS} if cls is GMAIR else SPAIR_TINY))
        x = images()
        guide = poutine.trace(model.encoder).get_trace(x)
        story = poutine.trace(poutine.replay(model.generate, trace=guide)).get_trace(x)
        for trace in (guide, story):
            sites = [s for s in trace.nodes.values() if s["type"] == "sample"]
            assert sites and all(s["scale"] == 1.0 for s in sites), cls.name
        assert "overlap" not in story.nodes  # GMAIR adds the overlap loss in its model, not the story


def test_term_weights_multiply_the_named_sites_and_compose_with_other_scales():
    def toy():
        pyro.sample("a", pyro.distributions.Normal(0.0, 1.0))
        with poutine.scale(scale=0.5):
            pyro.sample("b", pyro.distributions.Normal(0.0, 1.0))
        pyro.sample("c", pyro.distributions.Normal(0.0, 1.0), obs=torch.tensor(0.3))

    with TermWeights({"b": 3.0, "c": 2.0}):
        trace = poutine.trace(toy).get_trace()
    assert trace.nodes["a"]["scale"] == 1.0
    assert trace.nodes["b"]["scale"] == 1.5 and trace.nodes["c"]["scale"] == 2.0


def toy_cells(order=("z_pres", "z_what")):
    """Presence 0, 1/4, 1 in three cells of two images, and a per-cell site."""
    with pyro.plate("data", 2, dim=-2):
        for name in order:
            if name == "z_pres":
                presence = torch.tensor([0.0, 0.25, 1.0]).expand(2, 1, 3)
                pyro.sample("z_pres", pyro.distributions.Delta(presence).to_event(1))
            else:
                with pyro.plate("cells", 3, dim=-1):
                    pyro.sample(name, pyro.distributions.Normal(torch.zeros(2, 3), 1.0))


def test_presence_weights_read_the_presence_or_take_given_probabilities():
    with PresenceWeights(["z_what"]):
        trace = poutine.trace(toy_cells).get_trace()
    torch.testing.assert_close(trace.nodes["z_what"]["scale"], torch.tensor([[1e-6, 0.25, 1.0]] * 2))
    assert trace.nodes["z_pres"]["scale"] == 1.0
    probs = torch.full((2, 3), 0.4)
    with PresenceWeights(["z_what"], probs=probs):
        trace = poutine.trace(toy_cells).get_trace()
    torch.testing.assert_close(trace.nodes["z_what"]["scale"], probs)
    with PresenceWeights(["z_what"], probs=torch.ones(5, 3)):  # another batch's: the presence instead
        trace = poutine.trace(toy_cells).get_trace()
    torch.testing.assert_close(trace.nodes["z_what"]["scale"], torch.tensor([[1e-6, 0.25, 1.0]] * 2))
    with pytest.raises(ValueError, match="before 'z_pres'"), PresenceWeights(["z_what"]):
        toy_cells(order=("z_what", "z_pres"))
