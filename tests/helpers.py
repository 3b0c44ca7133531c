"""Small model configs and toy images shared by the test files: ``from tests.helpers import ...``.

Each ``*_TINY`` is the smallest config of a model that still exercises every part of it; a test file
spreads it into its own (``{**SPAIR_TINY, "num_clusters": 3}``) and overrides what its cases need.
"""

from __future__ import annotations

import pyro
import pyro.poutine as poutine
import torch

from ppl_scenes.models import SPAIR, SPAIRConfig

#: SPAIR (and GMAIR, built on it) with 6-pixel cells: a 12x18 image is a 2x3 grid of 6 objects.
SPAIR_TINY = dict(
    cell_size=(6, 6),
    anchor=(8.0, 8.0),
    what_dim=4,
    feature_dim=16,
    backbone_width=4,
    hidden_dim=16,
    object_size=(6, 6),
    glimpse_size=(6, 6),
)
#: GMAIR: SPAIR's networks, three clusters, and its presence and overlap schedules over four steps.
GMAIR_TINY = {**SPAIR_TINY, "num_clusters": 3, "pres_anneal_steps": 4, "overlap_anneal_steps": 4}
#: SSDIR on 32x32 images (its detector's classes and steps are each test's own).
SSDIR_TINY = dict(
    image_size=(32, 32),
    backbone_widths=(4, 4, 4),
    pyramid_levels=2,
    pyramid_channels=8,
    min_ratio=0.2,
    max_ratio=0.5,
    what_dim=4,
    patch_size=8,
    decoder_width=8,
    max_objects=4,
)
#: Variational saccading: two glimpses, four classes, sums up to six.
SACCADE_TINY = dict(
    proxy_size=8,
    glimpse_size=8,
    z_dim=4,
    hidden_dim=16,
    embed_dim=8,
    conv_width=4,
    num_saccades=2,
    num_classes=4,
    max_sum=6,
)
#: MIST and its baselines: two 8-pixel patches (the number of classes is each test's own).
MIST_TINY = dict(
    num_patches=2,
    patch_side=8.0,
    patch_size=8,
    softmax_window=5,
    nms_window=3,
    heatmap_channels=4,
    heatmap_blocks=1,
    task_levels=1,
    task_width=4,
    refine_steps=2,
)


def small_spair(seed: int = 0, **overrides: object) -> SPAIR:
    """A SPAIR of SPAIR's default cells and small networks, its parameters drawn under ``seed``."""
    pyro.set_rng_seed(seed)
    config = SPAIRConfig(
        what_dim=4,
        object_size=(6, 6),
        glimpse_size=(6, 6),
        feature_dim=8,
        backbone_width=4,
        hidden_dim=16,
        **overrides,
    )
    return SPAIR(config)


def square_images(n: int = 6) -> torch.Tensor:
    """``n`` 24x24 images of one bright 8x8 square each, at fixed random places."""
    g = torch.Generator().manual_seed(2)
    x = torch.zeros(n, 1, 24, 24)
    for i in range(n):
        r, c = torch.randint(0, 16, (2,), generator=g).tolist()
        x[i, 0, r : r + 8, c : c + 8] = 1.0
    return x


#: Side of :func:`square_scenes`' images.
SQUARE_SCENE_SIZE = 32


def square_scenes(n: int = 4) -> list[tuple[torch.Tensor, dict]]:
    """``n`` 32x32 scenes of two squares of classes 0..3 (their brightness), with every kind of
    target the models train on (boxes, labels, count, multi-label, sum)."""
    items = []
    for i in range(n):
        x = torch.zeros(1, SQUARE_SCENE_SIZE, SQUARE_SCENE_SIZE)
        a, b = i % 4, (i + 1) % 4
        x[:, 3:11, 3 + i : 11 + i] = 0.25 * (a + 1)
        x[:, 18:28, 16:26] = 0.25 * (b + 1)
        boxes = torch.tensor([[3.0 + i, 3, 11 + i, 11], [16, 18, 26, 28]])
        labels = torch.tensor([a, b])
        multi = torch.zeros(4)
        multi[labels] = 1.0
        target = {"boxes": boxes, "patch_boxes": boxes, "labels": labels, "count": 2, "multi_label": multi}
        target["sum"] = a + b
        items.append((x, target))
    return items


def check_spair_sites_and_parse(model: SPAIR, x: torch.Tensor) -> tuple[poutine.Trace, object]:
    """SPAIR's shapes (and GMAIR's, built on it) on two 12x18 images ``x``: a 2x3 grid of 6 cells.

    A prior sample has one presence, box and code per cell and a canvas in [0, 1]; the ELBO of ``x``
    is finite; the parse gives one scored box and code per cell, inside the image, and reconstructs
    ``x``. Returns the prior trace and the parse, for the model's own checks.
    """
    c = x.shape[1]
    with torch.no_grad():
        trace = poutine.trace(model.model).get_trace(batch_size=2, image_size=(12, 18))
    assert trace.nodes["x"]["value"].shape == (2, 1, c, 12, 18)
    assert trace.nodes["z_pres"]["value"].shape == (2, 1, 6)  # 2 x 3 cells
    assert trace.nodes["z_where"]["value"].shape == (2, 6, 4)
    assert trace.nodes["z_what"]["value"].shape == (2, 6, 4)
    canvas = trace.nodes["_RETURN"]["value"]
    assert canvas.shape == (2, c, 12, 18) and 0 <= canvas.min() and canvas.max() <= 1
    assert torch.isfinite(pyro.infer.Trace_ELBO().differentiable_loss(model.model, model.guide, x))
    parse = model.parse(x, score_threshold=0.0)
    assert len(parse.boxes) == 2 and parse.reconstruction.shape == x.shape
    for boxes, scores, what in zip(parse.boxes, parse.scores, parse.what):
        assert boxes.shape == (6, 4) and scores.shape == (6,) and what.shape == (6, 4)
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 18).all() and (boxes[:, 3] <= 12).all()
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    return trace, parse
