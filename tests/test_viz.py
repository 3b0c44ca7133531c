"""Figures are written as non-empty PNGs for grey and RGB images, with and without options."""

import json

import pytest
import torch
from matplotlib.figure import Figure

from ppl_scenes import viz


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 100 and data[:8] == b"\x89PNG\r\n\x1a\n"


def _boxes(batch):
    return [torch.tensor([[1.0, 1.0, 5.0, 6.0]]) if b % 2 == 0 else torch.zeros(0, 4) for b in range(batch)]


@pytest.mark.parametrize("channels", [1, 3])
def test_plot_scenes_full(tmp_path, channels):
    images = torch.rand(3, channels, 12, 10)
    path = tmp_path / "nested" / "scenes.png"
    fig = viz.plot_scenes(
        images,
        pred_boxes=_boxes(3),
        gt_boxes=[torch.tensor([[0.0, 0.0, 4.0, 4.0]])] * 3,
        reconstructions=images.flip(-1),
        titles=["a", "b", "c"],
        path=path,
        max_images=2,
    )
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4  # 2 rows x 2 shown images
    assert _is_png(path)


@pytest.mark.parametrize("channels", [1, 3])
def test_plot_scenes_minimal(tmp_path, channels):
    fig = viz.plot_scenes(torch.rand(2, channels, 8, 8))
    assert len(fig.axes) == 2
    fig.savefig(tmp_path / "x.png")
    assert _is_png(tmp_path / "x.png")


def test_draw_boxes_places_pixel_edges():
    fig = Figure()
    ax = fig.subplots()
    artists = viz.draw_boxes(ax, torch.tensor([[2.0, 3.0, 7.0, 5.0]]), labels=["7"])
    rect, text = artists
    assert rect.get_xy() == (2.0, 3.0) and rect.get_width() == 5.0 and rect.get_height() == 2.0
    assert text.get_text() == "7"
    assert viz.draw_boxes(ax, torch.zeros(0, 4)) == []
    with pytest.raises(ValueError, match="labels"):
        viz.draw_boxes(ax, torch.tensor([[0.0, 0, 1, 1]]), labels=["a", "b"])
    with pytest.raises(ValueError):
        viz.draw_boxes(ax, torch.zeros(2, 2))


def test_plot_scenes_bad_inputs():
    images = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="channels"):
        viz.plot_scenes(torch.rand(2, 2, 8, 8))
    with pytest.raises(ValueError, match="pred_boxes"):
        viz.plot_scenes(images, pred_boxes=_boxes(3))
    with pytest.raises(ValueError, match="reconstructions"):
        viz.plot_scenes(images, reconstructions=torch.rand(2, 1, 8, 7))
    with pytest.raises(ValueError, match="titles"):
        viz.plot_scenes(images, titles=["only one"])
    with pytest.raises(ValueError, match="max_images"):
        viz.plot_scenes(images, max_images=0)


def test_plot_curves_from_records_and_jsonl(tmp_path):
    records = [{"step": s, "loss": 10.0 / (s + 1), "elbo": -10.0 / (s + 1)} for s in range(20)]
    records.append({"step": 20, "eval_ap": 0.5})
    fig = viz.plot_curves(records, keys=("loss", "eval_ap"), path=tmp_path / "curves.png")
    assert len(fig.axes) == 2
    assert _is_png(tmp_path / "curves.png")
    jsonl = tmp_path / "run" / "metrics.jsonl"
    jsonl.parent.mkdir()
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    viz.plot_curves(str(jsonl), path=tmp_path / "loss.png")
    assert _is_png(tmp_path / "loss.png")
    with pytest.raises(ValueError, match="no record has 'kl'"):
        viz.plot_curves(jsonl, keys="kl")
    with pytest.raises(ValueError, match="empty"):
        viz.plot_curves([])
    with pytest.raises(ValueError, match="step"):
        viz.plot_curves([{"loss": 1.0}])
    (tmp_path / "bad.jsonl").write_text('{"step": 1, "loss": 2}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        viz.plot_curves(tmp_path / "bad.jsonl")


def test_plot_metric_by_count(tmp_path):
    fig = viz.plot_metric_by_count({1: 0.9, 2: 0.8, 5: float("nan")}, ylabel="AP", path=tmp_path / "a.png")
    assert isinstance(fig, Figure)
    assert _is_png(tmp_path / "a.png")
    series = {"SPAIR": {1: 0.1, 2: 0.3}, "ConnComp": {1: 0.0, 2: 0.9, 3: 1.4}}
    viz.plot_metric_by_count(series, ylabel="count MAE", title="t", path=tmp_path / "b.png")
    assert _is_png(tmp_path / "b.png")
    with pytest.raises(ValueError, match="non-empty"):
        viz.plot_metric_by_count({}, ylabel="AP")
    with pytest.raises(ValueError, match="mixes"):
        viz.plot_metric_by_count({1: 0.5, "x": {1: 0.5}}, ylabel="AP")
    with pytest.raises(ValueError, match="numbers"):
        viz.plot_metric_by_count({1: "high"}, ylabel="AP")


def test_plot_metrics_by_count(tmp_path):
    results = {
        "SPAIR": {1: {"ap_spair": 0.9, "count_mae": 0.0}, 2: {"ap_spair": float("nan"), "count_mae": 0.5}},
        "ConnComp": {1: {"ap_spair": 1.0, "count_mae": None}, 3: {"ap_spair": 0.4}},
    }
    fig = viz.plot_metrics_by_count(
        results, {"ap_spair": "AP", "count_mae": "count MAE"}, title="t", path=tmp_path / "m.png"
    )
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert [ax.get_ylabel() for ax in fig.axes] == ["AP", "count MAE"]
    assert [len(ax.get_lines()) for ax in fig.axes] == [2, 2]
    assert _is_png(tmp_path / "m.png")
    with pytest.raises(ValueError, match="non-empty"):
        viz.plot_metrics_by_count({}, {"ap50": "AP"})
    with pytest.raises(ValueError, match="metrics"):
        viz.plot_metrics_by_count(results, {})
    with pytest.raises(ValueError, match="no series has"):
        viz.plot_metrics_by_count(results, {"ap50": "AP"})
    with pytest.raises(ValueError, match="dict of metrics"):
        viz.plot_metrics_by_count({"SPAIR": {1: 0.5}}, {"ap50": "AP"})


def test_plot_count_posterior(tmp_path):
    probs = torch.softmax(torch.randn(6, 5), dim=-1)
    fig = viz.plot_count_posterior(
        probs, path=tmp_path / "p.png", true_counts=[0, 1, 2, 3, 4, 4], max_images=5
    )
    assert len([ax for ax in fig.axes if ax.axison]) == 5
    assert _is_png(tmp_path / "p.png")
    viz.plot_count_posterior(probs[:1].numpy(), path=tmp_path / "q.png")
    assert _is_png(tmp_path / "q.png")
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        viz.plot_count_posterior(torch.rand(5))
    with pytest.raises(ValueError, match="non-negative"):
        viz.plot_count_posterior(torch.log(probs))
    with pytest.raises(ValueError, match="true_counts"):
        viz.plot_count_posterior(probs, true_counts=[1])


def test_plot_posterior_boxes_draws_every_sample(tmp_path):
    from ppl_scenes.viz import plot_posterior_boxes

    images = torch.rand(2, 1, 16, 16)
    draws = [
        [torch.tensor([[1.0, 1.0, 5.0, 6.0]]), torch.zeros(0, 4)],
        [torch.tensor([[2.0, 2.0, 9.0, 9.0]])] * 2,
    ]
    fig = plot_posterior_boxes(images, draws, gt_boxes=[torch.zeros(0, 4)] * 2, path=tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0
    assert [len(ax.patches) for ax in fig.axes[:2]] == [1, 2]
    with pytest.raises(ValueError, match="sample_boxes"):
        plot_posterior_boxes(images, draws[:1])


def test_plot_contingency_puts_the_matched_clusters_on_the_diagonal(tmp_path):
    from ppl_scenes.viz import plot_contingency

    true = [0, 0, 1, 1, 2, 2, 2]
    pred = [7, 7, 3, 3, 5, 5, 9]  # class 0 -> 7, 1 -> 3, 2 -> 5; cluster 9 is left unmatched
    fig = plot_contingency({"a": (pred, true), "b": (true, true)}, path=tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0 and len(fig.axes) == 2
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["7", "3", "5", "9"]
    assert ax.get_title() == f"a: ACC {6 / 7:.3f}"
    outlined = sorted((p.get_x() + 0.5, p.get_y() + 0.5) for p in ax.patches if not p.get_fill())
    assert outlined == [(0, 0), (1, 1), (2, 2)]
    with pytest.raises(ValueError, match="empty"):
        plot_contingency({})


def test_plot_heatmaps_marks_points(tmp_path):
    from ppl_scenes.viz import plot_heatmaps

    maps = torch.rand(3, 12, 16)
    points = [torch.tensor([[2.5, 3.5], [10.5, 8.5]]), None, torch.zeros(0, 2)]
    fig = plot_heatmaps(maps, titles=["a", "b", "c"], points=points, path=tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 0 and len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]
    assert len(fig.axes[0].collections) == 1 and not fig.axes[1].collections
    with pytest.raises(ValueError, match="2-D"):
        plot_heatmaps([torch.rand(1, 4, 4)])
    with pytest.raises(ValueError, match="one entry per map"):
        plot_heatmaps(maps, titles=["a"])
    with pytest.raises(ValueError, match="empty"):
        plot_heatmaps([])


def test_plot_patches_with_decodings(tmp_path):
    from ppl_scenes.viz import plot_patches

    patches = torch.rand(4, 1, 8, 8)
    fig = plot_patches(patches, patches.flip(-1), titles=list("abcd"), path=tmp_path / "p.png")
    assert len(fig.axes) == 8 and fig.axes[0].get_title() == "a"
    assert len(plot_patches(torch.rand(3, 3, 8, 8)).axes) == 3
    with pytest.raises(ValueError, match="shape"):
        plot_patches(patches, torch.rand(4, 1, 6, 6))
    with pytest.raises(ValueError, match="one entry per patch"):
        plot_patches(patches, titles=["a"])
