"""SPAIR: sites and parses over variants, wavefront = raster, Predictive, prior swaps."""

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Predictive

from ppl_scenes.distributions import IndependentBernoulliPrior
from ppl_scenes.infer import fit
from ppl_scenes.models import SPAIR, SPAIRConfig
from ppl_scenes.ops import cell_groups, window_pad
from tests.helpers import SPAIR_TINY, check_spair_sites_and_parse


def tiny(**overrides) -> SPAIR:
    return SPAIR(**{**SPAIR_TINY, **overrides})


def images(b=2, c=1, h=12, w=18, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(b, c, h, w)
    x[..., 2:6, 3:7] = torch.rand(b, c, 4, 4, generator=g)  # one bright blob per image
    x[..., 7:11, 10:14] = 1.0
    return x


VARIANTS = {
    "default": {},
    "no_lateral": {"lateral": False},
    "lateral_without_what": {"lateral_what": False},
    "raster": {"order": "raster"},
    "bernoulli_prior": {"pres_prior": "bernoulli"},
    "continuous_bernoulli": {"likelihood": "continuous_bernoulli"},
    "normal_likelihood": {"likelihood": "normal"},
    "learned_background": {"background": "learned", "background_value": 0.2},
    "rgb": {"channels": 3},
    "unmasked": {"mask_absent": False},
    "tight_boxes": {"tight_boxes": True},
    "tight_ink_boxes": {"tight_boxes": True, "tight_mode": "ink"},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_sites_and_parse_shapes(variant):
    """Each variant samples, scores and parses one object per cell (training: the contract test)."""
    overrides = VARIANTS[variant]
    check_spair_sites_and_parse(tiny(**overrides), images(c=overrides.get("channels", 1)))


def test_wavefront_groups_cover_each_cell_once_with_neighbours_earlier():
    grid = (3, 4)
    groups = cell_groups(grid, "wavefront")
    assert len(groups) == 2 * 3 + 4 - 2
    seen = torch.cat(groups).sort().values
    assert torch.equal(seen, torch.arange(12))
    position = {int(c): k for k, g in enumerate(groups) for c in g}
    for cell, k in position.items():
        i, j = divmod(cell, 4)
        for di, dj in ((-1, -1), (-1, 0), (-1, 1), (0, -1)):
            if 0 <= i + di < 3 and 0 <= j + dj < 4:
                assert position[(i + di) * 4 + j + dj] < k


def test_wavefront_equals_raster_under_the_same_noise():
    model = tiny()
    x = images(h=18, w=24)
    guide = model.encoder
    noise = guide.draw_noise(2, guide.grid_cells(x), x)
    wave = guide.encode(x, noise, order="wavefront")
    raster = guide.encode(x, noise, order="raster")
    for name in ("where", "depth", "pres", "what", "pres_logits", "what_scale"):
        torch.testing.assert_close(getattr(wave, name), getattr(raster, name), rtol=1e-5, atol=1e-6)
    # and the traced guide has the same log-probabilities under the same seed
    log_probs = {}
    for order in ("wavefront", "raster"):
        model.config.order = order
        pyro.set_rng_seed(3)
        tr = poutine.trace(model.guide).get_trace(x)
        tr.compute_log_prob()
        log_probs[order] = {
            k: tr.nodes[k]["log_prob_sum"] for k in ("z_pres", "z_where", "z_what", "z_depth")
        }
    for k, v in log_probs["wavefront"].items():
        torch.testing.assert_close(v, log_probs["raster"][k], rtol=1e-5, atol=1e-4)


def test_lateral_guide_uses_neighbour_latents():
    model = tiny()
    x = images(h=18, w=24)
    guide = model.encoder
    noise = guide.draw_noise(2, guide.grid_cells(x), x)
    base = guide.encode(x, noise)
    changed = {k: v.clone() for k, v in noise.items()}
    changed["where"][:, 0] += 1.0  # the first cell's sample changes, its features do not
    other = guide.encode(x, changed)
    assert not torch.allclose(base.where_loc[:, 1], other.where_loc[:, 1])  # right neighbour sees it
    torch.testing.assert_close(base.where_loc[:, 0], other.where_loc[:, 0])


def test_predictive_runs_on_model_and_guide():
    model = tiny()
    x = images()
    prior = Predictive(model.model, num_samples=3, return_sites=["z_pres", "z_where", "x"])
    samples = prior(batch_size=2, image_size=(12, 18))
    assert samples["x"].shape == (3, 2, 1, 1, 12, 18)
    posterior = Predictive(model.model, guide=model.guide, num_samples=3, return_sites=["z_pres", "z_what"])
    post = posterior(x)
    assert post["z_pres"].shape == (3, 2, 1, 6) and post["z_what"].shape == (3, 2, 6, 4)
    assert ((post["z_pres"] >= 0) & (post["z_pres"] <= 1)).all()


def test_independent_bernoulli_prior_trains():
    torch.manual_seed(0)
    model = tiny(pres_prior="bernoulli")
    assert isinstance(model.pres_prior(6), IndependentBernoulliPrior)
    x = images(b=8)
    losses = []
    fit(model, x, steps=40, batch_size=8, progress=False, lr=3e-3)
    elbo = pyro.infer.Trace_ELBO(num_particles=8, vectorize_particles=False)
    with torch.no_grad():
        losses.append(elbo.loss(model.model, model.guide, x))
    fresh = tiny(pres_prior="bernoulli")
    with torch.no_grad():
        losses.append(elbo.loss(fresh.model, fresh.guide, x))
    assert losses[0] < losses[1]


def test_prior_and_guide_are_swappable():
    calls = []

    def pres_prior(p, n):
        calls.append((p, n))
        return IndependentBernoulliPrior(0.5, n)

    model = tiny(pres_prior=pres_prior)
    with torch.no_grad():
        poutine.trace(model.model).get_trace(images())
    assert calls and calls[-1][1] == 6

    # any callable with the model's signature may replace the guide
    reference = tiny()

    def guide(x):
        return reference.encoder(x)

    swapped = SPAIR(reference.config, guide=guide)
    loss = pyro.infer.Trace_ELBO().differentiable_loss(swapped.model, swapped.guide, images())
    assert torch.isfinite(loss)
    parse = swapped.parse(images(), score_threshold=0.0)
    assert parse.boxes[0].shape == (6, 4)


def test_absent_objects_cost_nothing_when_masked():
    model = tiny()
    x = images()
    tr = poutine.trace(model.guide).get_trace(x)
    pres = tr.nodes["z_pres"]["value"].squeeze(-2)
    torch.testing.assert_close(tr.nodes["z_what"]["scale"], pres.clamp(min=1e-6))
    unmasked = tiny(mask_absent=False)
    assert poutine.trace(unmasked.guide).get_trace(x).nodes["z_what"]["scale"] == 1.0


def test_parse_is_fully_convolutional_and_deterministic():
    model = tiny()
    small = model.parse(images(h=12, w=12))
    large = model.parse(images(h=30, w=42))
    assert small.reconstruction.shape[-2:] == (12, 12) and large.reconstruction.shape[-2:] == (30, 42)
    again = model.parse(images(h=30, w=42))
    for a, b in zip(large.boxes, again.boxes):
        torch.testing.assert_close(a, b)
    assert model.training  # parse restores the training mode


def test_window_covers_every_reachable_box():
    c = SPAIRConfig()
    pad = window_pad(c.cell_size, c.anchor, c.center_bounds)
    # centre up to b_max cells away plus half the anchor must stay inside the window
    reach = c.center_bounds[1] * c.cell_size[0] + c.anchor[0] / 2 - c.cell_size[0]
    assert pad[0] >= reach and pad[0] >= -c.center_bounds[0] * c.cell_size[0] + c.anchor[0] / 2


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.rand(2, 12, 12), "rank"),
        (torch.rand(2, 3, 12, 12), "channel"),
        (torch.full((2, 1, 12, 12), float("nan")), "NaN"),
        (torch.rand(2, 1, 12, 12) * 3, r"\[0, 1\]"),
        (torch.rand(0, 1, 12, 12), "empty"),
        (torch.rand(2, 1, 4, 4), "small"),
        (torch.rand(2, 1, 12, 12).double(), "float"),
    ],
)
def test_bad_images_are_rejected_clearly(bad, message):
    model = tiny()
    with pytest.raises(ValueError, match=message):
        model.parse(bad)
    with pytest.raises(ValueError, match=message):
        model.guide(bad)


@pytest.mark.parametrize(
    "overrides",
    [
        {"likelihood": "poisson"},
        {"order": "zigzag"},
        {"channels": 2},
        {"pres_prob_end": 0.0},
        {"anchor": (0, 4)},
    ],
)
def test_bad_configs_are_rejected(overrides):
    with pytest.raises(ValueError):
        SPAIR(**overrides)


def test_tight_boxes_lie_inside_the_where_boxes():
    model = tiny()
    x = images()
    loose = model.parse(x, score_threshold=0.0).boxes
    decode = model.object_decoder.forward

    def centre_only(codes):  # objects drawn only in the middle third of their glimpse
        appearance, alpha = decode(codes)
        mask = torch.zeros_like(alpha)
        mask[..., 2:4, 2:4] = 1.0
        return appearance, mask

    model.object_decoder.forward = centre_only
    model.config.tight_boxes = True
    tight = model.parse(x, score_threshold=0.0).boxes
    for a, b in zip(loose, tight):
        assert (b[:, :2] >= a[:, :2] - 1e-4).all() and (b[:, 2:] <= a[:, 2:] + 1e-4).all()
        widths = (b[:, 2] - b[:, 0]) / (a[:, 2] - a[:, 0]).clamp(min=1e-6)
        inside = (a[:, 0] > 0) & (a[:, 2] < 18)  # boxes not clipped by the image edge
        torch.testing.assert_close(widths[inside], torch.full_like(widths[inside], 1 / 3))


@pytest.mark.parametrize("background_value", [0.0, 0.3])
def test_ink_boxes_are_the_truth_rule_applied_to_each_object_drawn_alone(background_value):
    torch.manual_seed(0)
    model = tiny(tight_boxes=True, tight_mode="ink", tight_threshold=0.05, background_value=background_value)
    ramp = torch.linspace(0, 1, 6)

    def blob(codes):  # opacity rising across the glimpse, ink brighter than the background
        alpha = (ramp[:, None] * ramp.flip(0)[None, :]).expand(*codes.shape[:-1], 1, 6, 6)
        return torch.full_like(alpha, 0.9), alpha

    model.object_decoder.forward = blob
    x = images()
    with torch.no_grad():
        lat = model.posterior_modes(x)
        where = model.where_boxes(lat.where, (12, 18), clip=False)
        boxes = model.tight_boxes(lat, where, (12, 18))
        for b, n in [(0, 1), (1, 4)]:
            alone = torch.zeros_like(lat.pres)
            alone[b, n] = 1.0  # only this cell's object, drawn over the background
            canvas = model.render(alone, lat.where, lat.depth, lat.what, (12, 18))[b, 0]
            ink = (canvas - background_value).abs() > 0.05
            rows, cols = ink.any(1).nonzero()[:, 0], ink.any(0).nonzero()[:, 0]
            assert 0 < len(rows) and 0 < len(cols)
            expected = torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=boxes.dtype)
            torch.testing.assert_close(boxes[b, n], expected)


def test_ink_boxes_keep_the_where_box_of_an_object_that_draws_nothing():
    model = tiny(tight_boxes=True, tight_mode="ink")
    decode = model.object_decoder.forward
    model.object_decoder.forward = lambda codes: (decode(codes)[0], torch.zeros_like(decode(codes)[1]))
    x = images()
    with torch.no_grad():
        lat = model.posterior_modes(x)
        where = model.where_boxes(lat.where, (12, 18), clip=False)
        torch.testing.assert_close(model.tight_boxes(lat, where, (12, 18)), where)


def test_conditioned_latents_render_where_the_box_says():
    model = tiny()
    n = 6  # 12x18 image, 2x3 grid of 6-px cells
    z_pres = torch.zeros(1, 1, n)
    z_pres[..., 4] = 1.0  # one object, in cell (1, 1)
    z_what = torch.randn(1, n, 4)
    rendered = {}
    for name, centre in (
        ("left", -3.0),
        ("right", 3.0),
    ):  # sigmoid(-3) / sigmoid(3): left / right of the cell
        z_where = torch.zeros(1, n, 4)
        z_where[0, 4] = torch.tensor([0.0, centre, 0.0, 0.0])
        data = {"z_pres": z_pres, "z_where": z_where, "z_what": z_what}
        with torch.no_grad():
            rendered[name] = poutine.condition(model.model, data=data)(batch_size=1, image_size=(12, 18))[
                0, 0
            ]
        box = model.present_boxes(z_pres[:, 0], z_where, (12, 18))[0][0]
        drawn = rendered[name] > model.background().max() + 1e-6  # the background is not quite 0
        cols = drawn.any(0).nonzero().flatten()
        assert drawn.any() and box[0] - 1 <= cols.min() and cols.max() < box[2] + 1  # ink only in the box
    left_mass = (rendered["left"].sum(0) * torch.arange(18.0)).sum() / rendered["left"].sum()
    right_mass = (rendered["right"].sum(0) * torch.arange(18.0)).sum() / rendered["right"].sum()
    assert right_mass > left_mass + 2  # the object moved right with z_x
