"""Variational saccading: sites and parses per variant, the bound's sites, proxies, tasks, errors."""

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO

from ppl_scenes.infer import fit
from ppl_scenes.models import MODELS, VariationalSaccading
from tests.helpers import SACCADE_TINY


def scenes(n=4, size=24, c=1):
    """``n`` scenes with two squares whose classes are their brightness levels."""
    items = []
    for i in range(n):
        x = torch.zeros(c, size, size)
        a, b = i % 4, (i + 1) % 4
        x[:, 2:8, 2:8] = 0.25 * (a + 1)
        x[:, 14:20, 12:18] = 0.25 * (b + 1)
        multi = torch.zeros(4)
        multi[[a, b]] = 1.0
        boxes = torch.tensor([[2.0, 2, 8, 8], [12, 14, 18, 20]])
        items.append((x, {"multi_label": multi, "sum": torch.tensor(a + b), "count": 2, "boxes": boxes}))
    return items


def tiny(**overrides):
    return VariationalSaccading(**{**SACCADE_TINY, **overrides})


#: The where-head design (before ``where_attention``): glimpses from a dense head on ``z_t``.
HEAD = dict(where_attention=False, max_scale=0.5)


def glimpse_centres(model, x):
    """``[B, T, 2]`` the centres of the glimpses ``parse`` reports."""
    boxes = torch.stack(model.parse(x).boxes)
    return (boxes[..., :2] + boxes[..., 2:]) / 2


VARIANTS = {
    "identify": {},
    "sum": {"task": "sum"},
    "fixed_posterior_scale": {"learn_posterior_scale": False},
    "localized": {"localized": True},
    "rgb": {"channels": 3},
    "where_head": {"where_attention": False},
    "max_pooling": {"pooling": "max", "task": "sum"},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_sites_glimpses_and_image_labels(variant):
    """Each variant samples a code per saccade and the label, and parses glimpses and image labels."""
    overrides = VARIANTS[variant]
    model = tiny(**overrides)
    data = scenes(c=overrides.get("channels", 1))
    x = torch.stack([im for im, _ in data])
    with torch.no_grad():
        trace = poutine.trace(model.model).get_trace(x)  # no y: the label is sampled
    assert trace.nodes["z_0"]["value"].shape == (4, 4) and trace.nodes["z_1"]["value"].shape == (4, 4)
    y = trace.nodes["y"]["value"]
    assert y.shape == ((4, 4) if model.config.task == "identify" else (4,))
    y = model.supervision([t for _, t in data])  # the variant's bound on the true labels
    assert torch.isfinite(Trace_ELBO().differentiable_loss(model.model, model.guide, x, **y))
    parse = model.parse(x)
    assert len(parse.boxes) == 4
    for boxes in parse.boxes:
        assert boxes.shape == (2, 4) and (boxes[:, 2] > boxes[:, 0]).all()
        side = boxes[:, 2] - boxes[:, 0]
        assert ((side >= 0.2 * 24 - 1e-4) & (side <= 0.5 * 24 + 1e-4)).all()
    if model.config.task == "identify":
        assert parse.image_labels.shape == (4, 4) and set(parse.image_labels.unique().tolist()) <= {0, 1}
    else:
        assert parse.image_labels.shape == (4,) and (parse.image_labels <= 6).all()


def test_registered_and_bound_sites():
    assert MODELS["saccade"] is VariationalSaccading
    model = tiny(num_saccades=3)
    data = scenes()
    x = torch.stack([im for im, _ in data])
    y = torch.stack([t["multi_label"] for _, t in data])
    guide = poutine.trace(model.guide).get_trace(x, y)
    trace = poutine.trace(poutine.replay(model.model, trace=guide)).get_trace(x, y)
    sites = {n: s for n, s in trace.nodes.items() if s["type"] == "sample" and n != "data"}  # not the plate
    sampled = {n for n, s in sites.items() if not s["is_observed"]}
    observed = {n for n, s in sites.items() if s["is_observed"]}
    assert sampled == {"z_0", "z_1", "z_2"} and observed == {"proxy_0", "proxy_1", "proxy_2", "y"}
    assert {n for n, s in guide.nodes.items() if s["type"] == "sample" and n != "data"} == {
        "z_0",
        "z_1",
        "z_2",
    }
    assert torch.equal(trace.nodes["y"]["value"], y)
    # the guide's z drive the model's glimpses: both runs see the same boxes
    boxes = model.guide(x, y)
    assert len(boxes) == 3 and boxes[0].shape == (4, 4)
    # the default proxy is the image shrunk by area averaging
    torch.testing.assert_close(trace.nodes["proxy_0"]["value"], torch.nn.functional.avg_pool2d(x, 3))


def test_another_proxy_can_stand_in():
    model = tiny(**HEAD, spread_glimpses=False)  # a random where-head: the glimpses follow the proxy at once
    x = torch.stack([im for im, _ in scenes()])
    noisy = (model.make_proxy(x) + 0.3 * torch.randn(4, 1, 8, 8)).clamp(0, 1)
    trace = poutine.trace(model.model).get_trace(x, proxy=noisy)
    assert torch.equal(trace.nodes["proxy_1"]["value"], noisy)
    a, b = model.parse(x), model.parse(x, proxy=noisy)
    assert not all(torch.equal(p, q) for p, q in zip(a.boxes, b.boxes))
    with pytest.raises(ValueError, match="proxy must be a tensor of shape"):
        model.parse(x, proxy=torch.zeros(4, 1, 9, 9))


def test_proxy_noise_is_fresh_in_training_and_fixed_in_evaluation():
    x = torch.stack([im for im, _ in scenes()])
    model = tiny(proxy_noise=0.5)
    first, second = model.make_proxy(x), model.make_proxy(x)
    assert not torch.equal(first, second)  # fresh noise at every training step
    assert first.min() >= 0 and first.max() <= 1
    # the noise is what it says: on a mid-grey image (little clipping) residuals of sigma 0.1
    grey = torch.full((4, 1, 24, 24), 0.5)
    residual = tiny(proxy_noise=0.1).make_proxy(grey) - 0.5
    assert 0.08 < float(residual.std()) < 0.12 and abs(float(residual.mean())) < 0.03
    model.eval()
    torch.testing.assert_close(model.make_proxy(x), model.make_proxy(x))
    a, b = model.parse(x), model.parse(x)
    assert all(torch.equal(p, q) for p, q in zip(a.boxes, b.boxes))
    with pytest.raises(ValueError, match="proxy_noise"):
        tiny(proxy_noise=-0.1)


def test_fixed_posterior_scale_is_fixed():
    model = tiny(learn_posterior_scale=False, posterior_scale=0.3)
    _, scale = model.posterior(torch.randn(2, 8), torch.randn(2, 16))
    torch.testing.assert_close(scale, torch.full((2, 4), 0.3))
    _, learned = tiny(posterior_scale=0.3).posterior(torch.zeros(2, 8), torch.zeros(2, 16))
    assert learned.shape == (2, 4) and learned.requires_grad


def test_evaluate_scores_the_prediction():
    model = tiny(**HEAD)
    results = model.evaluate(scenes())
    glimpses = {"glimpse_centre_std", "glimpse_side", "objects_in_view", "scenes_in_view"}
    glimpses |= {"accuracy_in_view", "accuracy_out_of_view"}
    assert set(results) == {"accuracy", "label_accuracy", "num_scenes"} | glimpses
    assert results["num_scenes"] == 4 and 0 <= results["accuracy"] <= results["label_accuracy"] <= 1
    assert set(tiny(**HEAD, task="sum").evaluate(scenes())) == {"accuracy", "num_scenes"} | glimpses
    # the untrained spread model looks at the same grid in every image, the side within its range
    assert results["glimpse_centre_std"] < 1e-4
    assert 0.2 * 24 <= results["glimpse_side"] <= 0.5 * 24
    # the top-left glimpse of the starting grid holds the first square; none holds the second
    assert results["objects_in_view"] == 0.5
    # ... so no scene has both in view: every scene's accuracy is out-of-view accuracy
    assert results["scenes_in_view"] == 0.0 and math.isnan(results["accuracy_in_view"])
    assert results["accuracy_out_of_view"] == results["accuracy"]
    unboxed = [(x, {k: v for k, v in t.items() if k != "boxes"}) for x, t in scenes()]
    assert "objects_in_view" not in model.evaluate(unboxed)
    # a random where-head follows the image: the glimpses move from scene to scene
    assert tiny(**HEAD, spread_glimpses=False).evaluate(scenes())["glimpse_centre_std"] > 0.01
    # ... and so does a spread start with a small random where-head, near its starting grid
    nudged = tiny(**HEAD, where_init_scale=0.05).evaluate(scenes())
    assert 1e-3 < nudged["glimpse_centre_std"] < 0.1 * 24


def test_max_pooling_ignores_revisits():
    torch.manual_seed(0)
    a, b, c = torch.randn(3, 2, SACCADE_TINY["embed_dim"])
    h = torch.randn(2, SACCADE_TINY["hidden_dim"])
    model = tiny(pooling="max")
    torch.testing.assert_close(model.classify([a, b, c], h), model.classify([a, b, c, b, b, a], h))
    mean = tiny(pooling="mean")
    mean.load_state_dict(model.state_dict())
    assert not torch.allclose(mean.classify([a, b, c], h), mean.classify([a, b, c, b, b, a], h))


def test_bad_inputs_are_refused():
    model = tiny()
    x = torch.stack([im for im, _ in scenes()])
    with pytest.raises(ValueError, match="multi-hot"):
        model.model(x, y=torch.zeros(4, 3))
    with pytest.raises(ValueError, match="integer sums"):
        tiny(task="sum").model(x, y=torch.full((4,), 9))
    with pytest.raises(ValueError, match="labels"):
        fit(tiny(), x, steps=1, progress=False)
    with pytest.raises(ValueError, match="rank 4"):
        model.parse(x[0])
    for bad, match in (
        ({"task": "count"}, "task"),
        ({"min_scale": 0.6, "max_scale": 0.5}, "min_scale"),
        ({"proxy_size": 2}, "proxy_size"),
        ({"num_saccades": 0}, "num_saccades"),
        ({"where_init_scale": -0.1}, "where_init_scale"),
        ({"pooling": "sum"}, "pooling"),
    ):
        with pytest.raises(ValueError, match=match):
            tiny(**bad)


def bound_terms(seed=0, **overrides):
    """Log-probabilities of every site of the model (``p/<site>``) and guide (``q/<site>``) under one draw."""
    x = torch.stack([im for im, _ in scenes()])
    y = torch.stack([t["multi_label"] for _, t in scenes()])
    torch.manual_seed(seed)
    model = tiny(**overrides)
    guide = poutine.trace(model.guide).get_trace(x, y)
    trace = poutine.trace(poutine.replay(model.model, trace=guide)).get_trace(x, y)
    terms = {}
    for side, tr in (("p", trace), ("q", guide)):
        tr.compute_log_prob()
        sites = {n: site for n, site in tr.nodes.items() if site["type"] == "sample"}
        terms |= {f"{side}/{n}": site["log_prob_sum"] for n, site in sites.items()}
    return terms


def test_proxy_weight_scales_the_proxy_terms():
    full, scaled = bound_terms(proxy_weight=1.0), bound_terms(proxy_weight=0.1)
    torch.testing.assert_close(scaled["p/proxy_0"], 0.1 * full["p/proxy_0"])
    for name in ("p/y", "p/z_0", "q/z_0"):
        torch.testing.assert_close(scaled[name], full[name])


def test_kl_weight_scales_both_sides_of_the_kl():
    full, scaled = bound_terms(kl_weight=1.0), bound_terms(kl_weight=0.01)
    for name in ("p/z_1", "q/z_1"):
        torch.testing.assert_close(scaled[name], 0.01 * full[name])
    for name in ("p/proxy_1", "p/y"):
        torch.testing.assert_close(scaled[name], full[name])
    with pytest.raises(ValueError, match="kl_weight"):
        tiny(kl_weight=0.0)


def test_untrained_glimpses_start_spread_over_the_image():
    model = tiny(**HEAD, num_saccades=4, min_scale=0.2)
    boxes = model.saccade_boxes(torch.randn(4, 4), (100, 100))  # the untrained head ignores z
    torch.testing.assert_close(boxes[:, :2], torch.tensor([[25.0, 25], [75, 25], [25, 75], [75, 75]]))
    assert (boxes[:, 2] > 45).all()  # wide enough for the four to cover the image
    centred = tiny(**HEAD, num_saccades=4, spread_glimpses=False).saccade_boxes(torch.zeros(4, 4), (100, 100))
    torch.testing.assert_close(centred[:, :2], torch.full((4, 2), 50.0))
    one = model.saccade_boxes(torch.zeros(2, 4), (100, 100), t=1)  # one step for a batch
    torch.testing.assert_close(one[:, :2], torch.tensor([[75.0, 25], [75, 25]]))


def test_attention_starts_on_the_grid():
    # without brightness or inhibition of return, only the per-step prior maps place the glimpses
    model = tiny(num_saccades=4, attention_saliency=0, inhibition_of_return=0)
    assert model.where_head is None
    x = torch.stack([im for im, _ in scenes()])
    centres = glimpse_centres(model, x)
    torch.testing.assert_close(centres, centres[:1].expand_as(centres))  # untrained: same for every image
    left, top = centres[0, :, 0] < 12, centres[0, :, 1] < 12  # one glimpse per quadrant, in grid order
    assert left.tolist() == [True, False, True, False] and top.tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match="z_dim"):
        tiny(z_dim=2)


def test_saliency_finds_the_brightest_blob_and_inhibition_of_return_the_next():
    sizes = dict(SACCADE_TINY, proxy_size=16, num_saccades=2)
    x = torch.zeros(2, 1, 48, 48)
    x[:, :, 30:42, 30:42] = 1.0  # bright blob, centre (36, 36)
    x[:, :, 6:18, 4:16] = 0.8  # dimmer blob, centre (10, 12)
    x[1] = x[1].flip(-1)  # mirrored: centres (12, 36) and (38, 12)
    bright, dim = torch.tensor([[36.0, 36], [12, 36]]), torch.tensor([[10.0, 12], [38, 12]])
    both = VariationalSaccading(**sizes)  # the defaults: brightness 120, inhibition 30
    centres = glimpse_centres(both, x)
    assert (centres[:, 0] - bright).norm(dim=-1).max() < 3
    assert (centres[:, 1] - dim).norm(dim=-1).max() < 5
    again = VariationalSaccading(**sizes, inhibition_of_return=0)
    assert (glimpse_centres(again, x)[:, 1] - bright).norm(dim=-1).max() < 3  # back to the bright one
    with pytest.raises(ValueError, match="inhibition_of_return"):
        tiny(inhibition_of_return=-1.0)


def test_attention_learns_at_its_fraction_of_the_rate():
    assert tiny(**HEAD).learning_rate_factors() == {}
    model = tiny(attention_lr_factor=0.05)
    factors = model.learning_rate_factors()
    assert factors == {"attention": 0.05}
    names = [n for n, _ in model.named_parameters()]
    for prefix in factors:  # each names real parameters, and the rest of the model is not slowed
        assert any(n == prefix or n.startswith(prefix + ".") for n in names)
    assert not any(n.startswith(("classifier", "glimpse_encoder", "posterior_net")) for n in factors)
    with pytest.raises(ValueError, match="attention_lr_factor"):
        tiny(attention_lr_factor=0.0)


@pytest.mark.parametrize("variant", ["identify", "where_head"])
def test_the_model_reuses_the_guides_glimpses_with_the_same_gradients(variant, monkeypatch):
    """One loss crops and encodes each glimpse once (the model takes the guide's chain), and its
    gradients are those of a model pass that computes the chain again (issue 36)."""
    from ppl_scenes.infer.elbo import DeviceTraceELBO
    from ppl_scenes.models import saccade

    x = torch.stack([s[0] for s in scenes()])
    y = torch.stack([s[1]["multi_label"] for s in scenes()])

    def loss_and_grads(model):
        calls = []
        hook = model.glimpse_encoder.register_forward_hook(lambda *_: calls.append(1))
        pyro.set_rng_seed(3)
        loss = DeviceTraceELBO().differentiable_loss(model.model, model.guide, x, y=y)
        hook.remove()
        grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
        return loss, grads, len(calls)

    torch.manual_seed(0)
    model = tiny(**VARIANTS[variant])
    loss, grads, encoded = loss_and_grads(model)
    assert encoded == model.config.num_saccades
    monkeypatch.setattr(saccade._GuideChain, "follow", lambda self, x, z, t: None)
    again, grads_again, encoded_again = loss_and_grads(model)
    assert encoded_again == 2 * model.config.num_saccades
    assert torch.allclose(loss, again)
    for g, h in zip(grads, grads_again):
        assert (g is None) == (h is None)
        if g is not None:
            assert torch.allclose(g, h, atol=1e-6)


def test_a_model_pass_on_other_values_than_the_guides_computes_its_own_chain():
    """The model reuses the guide's glimpses only for the guide's own ``z_t`` and images."""
    torch.manual_seed(0)
    model = tiny()
    x = torch.stack([s[0] for s in scenes()])
    guide_trace = poutine.trace(model.guide).get_trace(x)
    sites = guide_trace.nodes.items()
    values = {name: site["value"].clone() for name, site in sites if site["type"] == "sample"}
    calls = []
    model.glimpse_encoder.register_forward_hook(lambda *_: calls.append(1))
    poutine.condition(model.model, data=values)(x)  # equal values, other tensors: computed again
    assert len(calls) == model.config.num_saccades
    assert model._guide_chain is None  # consumed by the model pass, not kept
