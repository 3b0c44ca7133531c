"""Generator-specific truth: multi-scale grids, clutter, MIST easy/hard, Gabor impulses, shapes."""

import math

import pytest
import torch

from ppl_scenes.data import (
    SHAPE_NAMES,
    ClutteredDigits,
    GaborNoise,
    MISTDigits,
    MultiScaleDigits,
    Shapes,
)


def test_multiscale_grid_cells_and_sizes(offline):
    ds = MultiScaleDigits(12, canvas_size=96, grid_size=(2, 3), min_size=12, max_size=40, **offline)
    grids = set()
    for i in range(len(ds)):
        _, t = ds[i]
        g = int(t["grid_size"])
        grids.add(g)
        cells = t["cells"]
        assert 1 <= len(cells) <= g * g and len(set(cells.tolist())) == len(cells)
        assert (cells < g * g).all()
        sides = t["patch_boxes"][:, 2] - t["patch_boxes"][:, 0]
        assert ((sides >= 12) & (sides <= 40)).all()
        # A digit not pushed back from the border has its centre inside its own cell.
        cell = 96 / g
        centre = (t["patch_boxes"][:, :2] + t["patch_boxes"][:, 2:]) / 2
        cell_xy = torch.stack([cells % g, cells // g], dim=1)
        free = (t["patch_boxes"][:, :2] > 0).all(1) & (t["patch_boxes"][:, 2:] < 96).all(1)
        assert (centre[free] >= cell_xy[free] * cell - 0.5).all()
        assert (centre[free] <= (cell_xy[free] + 1) * cell + 0.5).all()
    assert grids == {2, 3}


@pytest.mark.parametrize("canvas", [60, 100])
def test_cluttered_targets(canvas, offline):
    ds = ClutteredDigits(6, canvas_size=canvas, **offline)
    for i in range(len(ds)):
        image, t = ds[i]
        assert image.shape == (1, canvas, canvas)
        labels = t["labels"]
        assert len(labels) == 2 and int(t["count"]) == 2
        assert t["multi_label"].dtype == torch.float32 and t["multi_label"].shape == (10,)
        assert torch.equal(t["multi_label"].nonzero().flatten(), labels.unique())
        assert t["sum"].dtype == torch.int64 and int(t["sum"]) == int(labels.sum())
        p = t["patch_boxes"]
        overlap = (torch.minimum(p[0, 2:], p[1, 2:]) - torch.maximum(p[0, :2], p[1, :2])).clamp(min=0).prod()
        assert float(overlap) == 0.0
        assert len(t["clutter_boxes"]) == ds.num_clutter
        assert (t["clutter_boxes"] >= 0).all() and (t["clutter_boxes"] <= canvas).all()


def test_cluttered_scales_to_large_canvases(offline):
    ds = ClutteredDigits(1, canvas_size=1024, **offline)
    assert ds.num_clutter == round(8 * 1024 * 1024 / 10_000)
    image, t = ds[0]
    assert image.shape == (1, 1024, 1024) and len(t["clutter_boxes"]) == ds.num_clutter
    assert ClutteredDigits(1, num_clutter=0, **offline).num_clutter == 0


def test_mist_easy_sorted_perturbed_grid(offline):
    ds = MISTDigits(6, mode="easy", **offline)
    cell, sigma = 80 / 3, 80 / 3 / 8
    for i in range(len(ds)):
        _, t = ds[i]
        assert t["labels"].tolist() == list(range(9))
        centre = (t["patch_boxes"][:, :2] + t["patch_boxes"][:, 2:]) / 2
        k = torch.arange(9)
        grid = torch.stack([(k % 3 + 0.5) * cell, (k // 3 + 0.5) * cell], dim=1)
        assert ((centre - grid).abs() <= 5 * sigma + 1).all()


def test_mist_hard_poisson_disk(offline):
    ds = MISTDigits(10, mode="hard", **offline)
    counts = set()
    for i in range(len(ds)):
        _, t = ds[i]
        n = int(t["count"])
        counts.add(n)
        assert 1 <= n <= 9
        corners = t["patch_boxes"][:, :2]
        d = torch.cdist(corners, corners) + torch.eye(n) * 1e6
        assert (d >= ds.min_distance - 1e-4).all()
    assert len(counts) > 1


def test_gabor_impulses(offline):
    ds = GaborNoise(6, canvas_size=64, kernel_size=13, num_orientations=4)
    for i in range(len(ds)):
        image, t = ds[i]
        boxes, points = t["boxes"], t["points"]
        assert points.dtype == torch.float32 and points.shape == (len(boxes), 2)
        assert torch.allclose(points, (boxes[:, :2] + boxes[:, 2:]) / 2)
        assert ((boxes[:, 2] - boxes[:, 0]) == 13).all()
        assert ((t["labels"] >= 0) & (t["labels"] < 4)).all()
        assert torch.allclose(t["angles"], t["labels"].float() * math.pi / 4)
        covered = torch.zeros(64, 64, dtype=torch.bool)
        for x1, y1, x2, y2 in boxes.long().tolist():
            covered[y1:y2, x1:x2] = True
        assert (image[0][~covered] == 0.5).all()
    fixed = GaborNoise(3, num_impulses=7)
    assert all(int(fixed[i][1]["count"]) == 7 for i in range(3))


def test_shapes_classes_colours_boxes():
    ds = Shapes(8, canvas_size=48, num_shapes=(2, 4))
    for i in range(len(ds)):
        image, t = ds[i]
        assert image.shape == (3, 48, 48)
        assert ((t["labels"] >= 0) & (t["labels"] < len(SHAPE_NAMES))).all()
        colors = t["colors"]
        assert colors.shape == (len(t["labels"]), 3) and (colors >= 0).all() and (colors <= 1).all()
        boxes, patches = t["boxes"], t["patch_boxes"]
        assert (boxes[:, :2] >= patches[:, :2]).all() and (boxes[:, 2:] <= patches[:, 2:]).all()
        # The last-painted shape is unoccluded: its colour fills part of its box.
        x1, y1, x2, y2 = boxes[-1].long().tolist()
        region = image[:, y1:y2, x1:x2]
        assert (region == colors[-1][:, None, None]).all(0).any()
    circles = Shapes(3, shapes=("circle",))
    assert all((circles[i][1]["labels"] == SHAPE_NAMES.index("circle")).all() for i in range(3))


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (MultiScaleDigits, {"min_size": 40, "max_size": 20}),
        (MultiScaleDigits, {"max_size": 200}),
        (MultiScaleDigits, {"grid_size": 0}),
        (ClutteredDigits, {"clutter_size": 40}),
        (ClutteredDigits, {"num_clutter": -1}),
        (ClutteredDigits, {"canvas_size": 20}),
        (ClutteredDigits, {"num_digits": 0}),
        (MISTDigits, {"mode": "medium"}),
        (MISTDigits, {"min_distance": -1}),
        (MISTDigits, {"digit_size": 100}),
        (GaborNoise, {"kernel_size": 16}),
        (GaborNoise, {"kernel_size": 99}),
        (GaborNoise, {"mean_impulses": 0}),
        (GaborNoise, {"num_impulses": (3, 1)}),
        (Shapes, {"shapes": ("hexagon",)}),
        (Shapes, {"shapes": ()}),
        (Shapes, {"min_size": 30, "max_size": 20}),
        (Shapes, {"background": 2.0}),
        (Shapes, {"split": "valid"}),
    ],
)
def test_bad_parameters(cls, kwargs, offline):
    extra = {} if cls in (GaborNoise, Shapes) else offline
    with pytest.raises(ValueError):
        cls(**extra, **kwargs)
