"""``models.base.plate``: pyro's plate over all of range(size), its indices built once."""

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch

from ppl_scenes.models.base import plate


def test_plate_gives_pyros_sites_shapes_and_scales():
    def story(make):
        with make("data", 3, dim=-2):
            with make("cells", 4, dim=-1):
                pyro.sample("z", dist.Normal(0.0, 1.0))

    traces = []
    for make in (pyro.plate, plate):
        pyro.set_rng_seed(0)
        traces.append(poutine.trace(lambda make=make: story(make)).get_trace())
    ours, theirs = traces[1].nodes["z"], traces[0].nodes["z"]
    assert torch.equal(ours["value"], theirs["value"]) and ours["value"].shape == (3, 4)
    assert ours["scale"] == theirs["scale"] == 1.0
    assert [f.size for f in ours["cond_indep_stack"]] == [f.size for f in theirs["cond_indep_stack"]]
    assert torch.equal(traces[1].nodes["data"]["value"], torch.arange(3))


def test_plate_keeps_scales_masks_and_broadcasts_of_every_kind_of_site():
    """Sites already of the plates' batch shape, sites Pyro must broadcast, scaled and masked sites,
    and an observed one: the same values, shapes, scales and log-densities as under ``pyro.plate``."""
    from ppl_scenes.models.base import scaled

    obs = torch.ones(3, 4)

    def story(make):
        with make("data", 3, dim=-2):
            a = pyro.sample("a", dist.Normal(torch.zeros(3, 1), 1.0))  # broadcast along the cells
            with make("cells", 4, dim=-1):
                b = pyro.sample("b", dist.Normal(torch.zeros(3, 4), 1.0))  # already the plates' shape
                with scaled(0.5, obs), poutine.mask(mask=obs > 0):
                    c = pyro.sample("c", dist.Normal(a + b, 2.0))
                pyro.sample("x", dist.Normal(c, 1.0).to_event(0), obs=obs)
                pyro.sample("d", dist.Normal(0.0, 1.0))  # from a scalar distribution
        return a

    traces = []
    for make in (pyro.plate, plate):
        pyro.set_rng_seed(0)
        trace = poutine.trace(lambda make=make: story(make)).get_trace()
        trace.compute_log_prob()
        traces.append(trace)
    for name in ("a", "b", "c", "x", "d"):
        ours, theirs = traces[1].nodes[name], traces[0].nodes[name]
        assert ours["fn"].batch_shape == theirs["fn"].batch_shape, name
        assert torch.equal(ours["value"], theirs["value"]), name
        assert torch.allclose(ours["log_prob"], theirs["log_prob"]), name
        assert float(torch.as_tensor(ours["scale"]).max()) == float(torch.as_tensor(theirs["scale"]).max())
    assert traces[1].nodes["a"]["fn"].batch_shape == (3, 1)
