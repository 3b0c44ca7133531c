"""GMAIR: sites and cluster labels per variant, presence-weighted KL terms, overlap loss, clustering."""

import pyro.poutine as poutine
import pytest
import torch

from ppl_scenes.baselines import WhatGMM
from ppl_scenes.metrics.scoring import evaluate_detection
from ppl_scenes.models import GMAIR, MODELS, SPAIR
from tests.helpers import GMAIR_TINY, SPAIR_TINY, check_spair_sites_and_parse


def tiny(**overrides) -> GMAIR:
    return GMAIR(**{**GMAIR_TINY, **overrides})


def images(b=2, c=1, h=12, w=18):
    x = torch.zeros(b, c, h, w)
    x[..., 2:6, 3:7] = 0.8
    x[..., 7:11, 10:14] = 1.0
    return x


VARIANTS = {
    "default": {},
    "lateral": {"lateral": True, "lateral_what": True},
    "count_prior": {"pres_prior": "count"},
    "rgb": {"channels": 3},
    "no_overlap_loss": {"overlap_anneal_steps": 0},
    "unmasked": {"mask_absent": False},
    "loose_boxes": {"tight_boxes": False},
    "sampled_cat_kl": {"cat_kl": "sample"},
    "exact_cat_expectation": {"cat_expectation": "exact", "what_sees_cat": False},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_sites_and_parse_labels(variant):
    """Each variant has SPAIR's sites and parse, samples one-hot categories and labels each cell."""
    overrides = VARIANTS[variant]
    trace, parse = check_spair_sites_and_parse(tiny(**overrides), images(c=overrides.get("channels", 1)))
    z_cat = trace.nodes["z_cat"]["value"]
    assert z_cat.shape == (2, 6, 3) and (z_cat.sum(-1) == 1).all() and ((z_cat == 0) | (z_cat == 1)).all()
    for labels in parse.labels:
        assert labels.shape == (6,) and labels.dtype == torch.long and ((labels >= 0) & (labels < 3)).all()


def test_registered_and_built_from_spair():
    assert MODELS["gmair"] is GMAIR and issubclass(GMAIR, SPAIR)
    assert GMAIR().config.num_clusters == 10 and GMAIR().config.recon_weight == 1.0


def _traces(model, x):
    guide_trace = poutine.trace(model.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(x)
    return guide_trace, model_trace


def test_object_kl_terms_are_weighted_by_the_presence_probability():
    model = tiny()
    head = model.encoder.lateral_mlp[-1]
    with torch.no_grad():  # presence logits: cells alternate between certainly absent and 50/50
        head.weight[10].zero_()
        head.bias[10] = 0.0
    x = images()
    lat = model.encoder.encode(x, None)
    guide_trace, model_trace = _traces(model, x)
    q = torch.sigmoid(lat.pres_logits)
    for name in ("z_where", "z_depth", "z_cat", "z_what"):
        for trace in (guide_trace, model_trace):
            torch.testing.assert_close(trace.nodes[name]["scale"], q)
    # a cell with q(z_pres = 1) = 0 contributes no where/depth/cat/what term
    with torch.no_grad():
        head.bias[10] = -40.0
    guide_trace, model_trace = _traces(model, x)
    for name in ("z_where", "z_depth", "z_cat", "z_what"):
        for trace in (guide_trace, model_trace):
            site = trace.nodes[name]
            contribution = site["scale"] * site["fn"].log_prob(site["value"])
            assert contribution.abs().max() < 1e-3, name


def _cat_logits(guide_trace):
    """The logits of ``q(z_cat)`` of the glimpses at the sampled boxes."""
    fn = guide_trace.nodes["z_cat"]["fn"]
    while hasattr(fn, "base_dist"):  # the plate's expansion
        fn = fn.base_dist
    return fn.base.logits


def test_cat_kl_is_eq_9():
    model = tiny()
    x = images()
    guide_trace, model_trace = _traces(model, x)
    g, m = guide_trace.nodes["z_cat"], model_trace.nodes["z_cat"]
    logits = _cat_logits(guide_trace)
    uniform = torch.distributions.Categorical(logits=torch.zeros_like(logits))
    kl = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=logits), uniform)
    assert kl.abs().max() > 1e-4  # the case is not trivial
    log_ratio = g["fn"].log_prob(g["value"]) - m["fn"].log_prob(m["value"])
    torch.testing.assert_close(log_ratio, kl)
    with pytest.raises(ValueError, match="cat_kl"):
        tiny(cat_kl="analytic")


def test_exact_cat_expectation_sums_eq_10_over_the_categories():
    model = tiny(cat_expectation="exact", what_sees_cat=False)
    guide_trace, model_trace = _traces(model, images())
    probs = torch.softmax(_cat_logits(guide_trace), -1)
    # the guide hands q(z_cat)'s probabilities as the value, not a relaxed sample
    torch.testing.assert_close(guide_trace.nodes["z_cat"]["value"], probs)
    z_what = model_trace.nodes["z_what"]["value"]
    prior = model.what_priors
    loc, scale = prior.loc.detach(), prior.log_scale.exp().detach()
    per_component = torch.stack(
        [torch.distributions.Normal(loc[k], scale[k]).log_prob(z_what).sum(-1) for k in range(3)], -1
    )
    expected = (probs * per_component).sum(-1)
    site = model_trace.nodes["z_what"]
    torch.testing.assert_close(site["fn"].log_prob(site["value"]), expected)
    # the relaxed-sample estimate scores something else: the interpolated component
    sampled = tiny(what_sees_cat=False)
    sampled.load_state_dict(model.state_dict())
    _, sampled_trace = _traces(sampled, images())
    s = sampled_trace.nodes["z_what"]
    assert not torch.allclose(s["fn"].log_prob(s["value"]), expected)
    for bad in ({"what_sees_cat": True}, {"what_sees_cat": False, "cat_kl": "sample"}):
        with pytest.raises(ValueError, match="cat_expectation"):
            tiny(cat_expectation="exact", **bad)


def test_loss_coefficients_scale_their_sites():
    model = tiny(recon_weight=8.0, cat_weight=3.0, pres_weight=2.0)
    with torch.no_grad():
        model.encoder.lateral_mlp[-1].bias[10] = 40.0  # every cell present: presence weight 1
    guide_trace, model_trace = _traces(model, images())
    assert model_trace.nodes["x"]["scale"] == 8.0
    assert model_trace.nodes["z_pres"]["scale"] == 2.0 and guide_trace.nodes["z_pres"]["scale"] == 2.0
    torch.testing.assert_close(model_trace.nodes["z_cat"]["scale"], torch.full((2, 6), 3.0))
    torch.testing.assert_close(guide_trace.nodes["z_cat"]["scale"], torch.full((2, 6), 3.0))


def test_overlap_loss_is_annealed_away():
    model = tiny(overlap_start=2.0, overlap_anneal_steps=4)
    model.set_step(0)
    _, trace = _traces(model, images())
    assert "overlap" in trace.nodes and model.overlap_coef == 2.0
    assert (trace.nodes["overlap"]["fn"].log_factor <= 0).all()
    assert model.set_step(2)["overlap_coef"] == pytest.approx(1.0)
    model.set_step(4)
    _, trace = _traces(model, images())
    assert "overlap" not in trace.nodes


def test_overlapping_objects_are_penalised_more():
    model = tiny(overlap_start=1.0)
    drawn = torch.zeros(1, 3, 2, 8, 8)  # three objects, each a 6x6 square on its 8-px patch
    drawn[:, :, :, 1:7, 1:7] = 1.0
    canvas = (12, 18)
    apart = torch.tensor([[[-1, -1], [11, -1], [5, 5]]])  # (x, y) origins: no pixel shared
    together = torch.tensor([[[-1, -1], [1, 1], [11, 5]]])  # the second drawn over the first

    def factor(origins):
        trace = poutine.trace(model.overlap_loss).get_trace(drawn, origins, canvas)
        return float(trace.nodes["overlap"]["fn"].log_factor.sum())

    assert factor(apart) == 0.0 and factor(together) < -1.0


def test_clustering_metrics_and_the_spair_gmm_baseline(data_root):
    from ppl_scenes.data import MultiMNIST

    data = MultiMNIST(8, split="test", canvas_size=24, digit_size=10, num_digits=(1, 2), root=data_root)
    model = tiny(score_threshold=0.0)
    results = evaluate_detection(model, data, batch_size=4)
    assert {"acc", "nmi", "num_clustered", "ap50"} <= set(results)
    spair = SPAIR(**SPAIR_TINY, score_threshold=0.0)
    assert "acc" not in evaluate_detection(spair, data, batch_size=4)
    baseline = WhatGMM(spair, num_components=3).fit(data)
    parse = baseline.parse(data[0][0][None])
    assert parse.labels[0].shape == parse.scores[0].shape
    assert ((parse.labels[0] >= 0) & (parse.labels[0] < 3)).all()
    assert {"acc", "nmi"} <= set(evaluate_detection(baseline, data, batch_size=4))
    with pytest.raises(RuntimeError, match="fit"):
        WhatGMM(spair).predict(torch.zeros(2, 4))


@pytest.mark.parametrize(
    "overrides",
    [{"num_clusters": 0}, {"cat_temperature": 0.0}, {"recon_weight": -1.0}, {"overlap_start": -1.0}],
)
def test_bad_configs_are_rejected(overrides):
    with pytest.raises(ValueError):
        tiny(**overrides)
