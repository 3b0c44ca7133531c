"""The figures the command line draws from a trained model: parses, posterior draws, prior samples."""

from __future__ import annotations

from pathlib import Path

import torch

from ppl_scenes.infer.posterior import count_posterior, posterior_boxes, sample_posterior
from ppl_scenes.metrics.scoring import parse_options
from ppl_scenes.models.base import PresenceBoxes, PriorSampling
from ppl_scenes.viz import plot_count_posterior, plot_posterior_boxes, plot_scenes

__all__ = ["first_scenes", "posterior_figure", "posterior_sample_figures", "prior_figure"]


def first_scenes(test_set, n: int):
    """The first ``n`` (at most) scenes of ``test_set``: stacked images and their targets."""
    items = [test_set[i] for i in range(min(n, len(test_set)))]
    return torch.stack([im for im, _ in items]), [t for _, t in items]


def posterior_figure(model, test_set, n: int, path: Path) -> Path:
    """The model's parses of the first ``n`` test scenes: found (blue) and true (yellow) boxes, and the
    reconstructions below."""
    images, targets = first_scenes(test_set, n)
    n = len(images)
    parse = model.parse(images.to(model.device), **parse_options(model, targets))
    boxes = [b.cpu() for b in parse.boxes]
    truth = [t["boxes"] for t in targets]
    titles = [f"{len(b)} found / {int(t['count'])} true" for b, t in zip(boxes, targets)]
    recon = None if parse.reconstruction is None else parse.reconstruction.cpu().clamp(0, 1)
    plot_scenes(images, boxes, gt_boxes=truth, reconstructions=recon, titles=titles, path=path, max_images=n)
    return path


def prior_figure(model, n: int, image_size: tuple[int, int], path: Path) -> Path | None:
    """Images drawn from the model's prior, when ``model.model`` can generate (``x=None``)."""
    if not isinstance(model, PriorSampling):
        return None
    with torch.no_grad():
        canvas = model.model(None, batch_size=n, image_size=image_size)
    if not isinstance(canvas, torch.Tensor) or canvas.dim() != 4:
        return None
    titles = [f"prior sample {i + 1}" for i in range(n)]
    fig = plot_scenes(canvas.detach().cpu().clamp(0, 1), titles=titles, max_images=n)
    fig.axes[0].set_ylabel("prior")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def posterior_sample_figures(model, test_set, n: int, draws: int, out: Path) -> tuple[Path, Path] | None:
    """Boxes of ``draws`` posterior draws on ``n`` test scenes, and their count posteriors."""
    if not isinstance(model, PresenceBoxes):
        return None
    images, targets = first_scenes(test_set, n)
    n, images = len(images), images.to(model.device)
    samples = sample_posterior(model, images, num_samples=draws)
    counts = count_posterior(samples["z_pres"].cpu())
    boxes = [[b.cpu() for b in per_image] for per_image in posterior_boxes(model, samples, images.shape[-2:])]
    truth = [int(t["count"]) for t in targets]
    titles = [f"{m:.1f} found ({t} true)" for m, t in zip(counts.mean.tolist(), truth)]
    box_path = out.with_name(f"{out.stem}-posterior{out.suffix}")
    count_path = out.with_name(f"{out.stem}-counts{out.suffix}")
    gt = [t["boxes"] for t in targets]
    plot_posterior_boxes(images.cpu(), boxes, gt_boxes=gt, titles=titles, path=box_path, max_images=n)
    plot_count_posterior(counts.probs, path=count_path, true_counts=truth, max_images=n)
    return box_path, count_path
