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
