"""Posterior samples, object-count posterior and ArviZ InferenceData for SPAIR."""

import pytest
import torch

from ppl_scenes.infer.posterior import (
    count_posterior,
    object_posterior,
    posterior_boxes,
    sample_posterior,
    sample_prior,
    to_inference_data,
)
from ppl_scenes.models import SPAIR
from tests.helpers import SACCADE_TINY, SPAIR_TINY, SSDIR_TINY


@pytest.fixture
def model():
    return SPAIR(**SPAIR_TINY)


@pytest.fixture
def images():
    x = torch.zeros(2, 1, 12, 18)
    x[..., 2:6, 3:7] = 1.0
    return x


def test_posterior_samples_have_one_draw_per_sample_and_image(model, images):
    s = sample_posterior(model, images, num_samples=5)
    assert s["z_pres"].shape == (5, 2, 6) and s["z_where"].shape == (5, 2, 6, 4)
    assert s["z_what"].shape == (5, 2, 6, 4) and s["z_depth"].shape == (5, 2, 6, 1)
    assert s["reconstruction"].shape == (5, 2, 1, 12, 18)
    assert not torch.equal(s["z_where"][0], s["z_where"][1])  # independent draws


def test_count_posterior_sums_to_one_and_agrees_with_rounded_samples(model, images):
    s = sample_posterior(model, images, num_samples=20)
    counts = count_posterior(s["z_pres"])
    torch.testing.assert_close(counts.probs.sum(-1), torch.ones(2))
    expected = (s["z_pres"] > 0.5).sum(-1)
    assert torch.equal(counts.samples, expected)
    for i in range(2):
        for k in range(7):
            assert counts.probs[i, k] == pytest.approx(float((expected[:, i] == k).float().mean()))
    torch.testing.assert_close(counts.mean, expected.float().mean(0))
    assert (counts.hdi[:, 0] <= counts.hdi[:, 1]).all()


def test_count_posterior_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="samples, images, cells"):
        count_posterior(torch.rand(3, 4))


def test_inference_data_has_named_dims(model, images):
    idata = to_inference_data(sample_posterior(model, images, num_samples=4))
    post = idata.posterior
    assert post["z_where"].dims == ("chain", "draw", "image", "cell", "where_coord")
    assert list(post["where_coord"].values) == ["y", "x", "h", "w"]
    assert post["count"].dims == ("chain", "draw", "image") and post.sizes["draw"] == 4
    assert "reconstruction" not in post


def test_prior_samples_give_images_and_the_boxes_of_present_objects(model):
    s = sample_prior(model, num_samples=3, image_size=(12, 18))
    assert s["images"].shape == (3, 1, 12, 18) and s["z_pres"].shape == (3, 6)
    assert [len(b) for b in s["boxes"]] == (s["z_pres"] > 0.5).sum(-1).tolist()
    for b in s["boxes"]:
        assert (b[:, 2] <= 18).all() and (b[:, 3] <= 12).all()


def test_bad_input_is_rejected(model, images):
    with pytest.raises(ValueError):
        sample_posterior(model, images, num_samples=0)
    with pytest.raises(ValueError):
        sample_posterior(model, images[0], num_samples=2)


def test_posterior_boxes_follow_each_draw(model, images):
    s = sample_posterior(model, images, num_samples=3)
    boxes = posterior_boxes(model, s, (12, 18))
    assert len(boxes) == 2 and all(len(per_image) == 3 for per_image in boxes)
    for i in range(2):
        for k in range(3):
            assert len(boxes[i][k]) == int((s["z_pres"][k, i] > 0.5).sum())
            full = model.where_boxes(s["z_where"][k, i], (12, 18))
            torch.testing.assert_close(boxes[i][k], full[s["z_pres"][k, i] > 0.5])


def test_gmair_posterior_has_its_category_site(images):
    from ppl_scenes.models import GMAIR

    gmair = GMAIR(**SPAIR_TINY, num_clusters=3)
    s = sample_posterior(gmair, images, num_samples=4)
    assert s["z_cat"].shape == (4, 2, 6, 3) and s["z_what"].shape == (4, 2, 6, 4)
    torch.testing.assert_close(s["z_cat"].sum(-1), torch.ones(4, 2, 6))  # relaxed one-hots
    post = to_inference_data(s).posterior
    assert post["z_cat"].dims == ("chain", "draw", "image", "cell", "category")
    prior = sample_prior(gmair, num_samples=2, image_size=(12, 18))
    assert prior["images"].shape == (2, 1, 12, 18)
    assert ((prior["z_cat"] == 0) | (prior["z_cat"] == 1)).all()  # the prior draws hard categories


def test_saccade_posterior_stacks_its_steps_and_gives_each_draws_glimpses():
    from ppl_scenes.models import VariationalSaccading

    # a random where-head: each draw's z moves the glimpses
    model = VariationalSaccading(**SACCADE_TINY, spread_glimpses=False)
    x = torch.rand(2, 1, 24, 24)
    samples = sample_posterior(model, x, num_samples=5)
    assert set(samples) == {"z_t", "logits"}
    assert samples["z_t"].shape == (5, 2, 2, 4) and samples["logits"].shape == (5, 2, 4)
    boxes = posterior_boxes(model, samples, (24, 24))
    assert len(boxes) == 2 and len(boxes[0]) == 5 and boxes[0][0].shape == (2, 4)
    assert not torch.equal(boxes[0][0], boxes[0][1])  # the draws differ
    idata = to_inference_data(samples)
    assert tuple(idata.posterior["z_t"].dims) == ("chain", "draw", "image", "saccade", "z_dim")


def test_ssdir_posterior_reports_the_detectors_boxes_and_presence():
    from ppl_scenes.models import SSDIR

    model = SSDIR(**{**SSDIR_TINY, "max_objects": 3})
    with torch.no_grad():  # an untrained detector that calls every cell an object
        for conv in model.detector.head.classification_head.module_list:
            conv.weight.zero_()
            conv.bias.view(-1, 11).copy_(torch.tensor([0.0, 5.0] + [0.0] * 9))
    model.freeze_detector()
    x = torch.rand(2, 1, 32, 32)
    samples = sample_posterior(model, x, num_samples=3)
    cells = samples["z_what"].shape[2]
    assert set(samples) == {"z_pres", "z_where", "z_depth", "z_what", "reconstruction"}
    assert samples["z_pres"].shape == (3, 2, cells) and samples["z_where"].shape == (3, 2, cells, 4)
    assert (samples["z_pres"].sum(-1) == 3).all()  # the detections (max_objects), the same in every draw
    assert not torch.equal(samples["z_what"][0], samples["z_what"][1])  # codes are sampled
    counts = count_posterior(samples["z_pres"])
    assert counts.probs[:, 3].tolist() == [1.0, 1.0]
    idata = to_inference_data(samples, model=model)
    assert list(idata.posterior["z_where"].coords["where_coord"].values) == ["cx", "cy", "w", "h"]
    assert float(object_posterior(samples).where_std.abs().max()) == 0.0  # the detector fixes the boxes
    with pytest.raises(ValueError, match="no prior over whole scenes"):
        sample_prior(model, num_samples=2)
    boxes = posterior_boxes(model, samples, (32, 32))
    parse = model.parse(x)
    for i in range(2):
        torch.testing.assert_close(
            boxes[i][0][boxes[i][0][:, 0].argsort()], parse.boxes[i][parse.boxes[i][:, 0].argsort()]
        )


def test_object_posterior_gives_presence_and_box_spread(model, images):
    samples = sample_posterior(model, images, num_samples=20)
    post = object_posterior(samples)
    n = samples["z_pres"].shape[-1]
    assert post.presence.shape == (2, n) and post.where_mean.shape == post.where_std.shape == (2, n, 4)
    torch.testing.assert_close(post.presence, (samples["z_pres"] > 0.5).float().mean(0))
    torch.testing.assert_close(post.presence.sum(-1), count_posterior(samples["z_pres"]).mean)
    assert (post.where_std > 0).all()  # SPAIR samples its boxes
    fixed = {"z_pres": torch.ones(3, 1, 2), "z_where": torch.tensor([1.0, 2, 3, 4]).expand(3, 1, 2, 4)}
    assert object_posterior(fixed).where_std.abs().max() == 0 and object_posterior(fixed).presence.min() == 1
    with pytest.raises(ValueError, match="z_pres and z_where"):
        object_posterior({"z_t": torch.zeros(3, 1, 2, 4)})
