"""Looking at the posterior over objects: samples, object counts and ArviZ ``InferenceData``.

For any SVI scene model (``model.model`` / ``model.guide``, sites named as the papers name them)::

    samples = sample_posterior(model, images, num_samples=100)   # z_pres, z_where, ..., reconstruction
    counts = count_posterior(samples["z_pres"])                   # P(count = k | x) per image, mean, HDI
    idata = to_inference_data(samples)                            # az.summary / az.plot_posterior / az.hdi

The saccade model's per-step codes ``z_0 .. z_{T-1}`` come back stacked as ``z_t`` ``[S, B, T, D]``
with its classifier's ``logits`` (the model's return value); :func:`posterior_boxes` turns them into
each draw's glimpse boxes.

Samples come from :class:`pyro.infer.Predictive` with the model's guide, so a swapped-in guide is
sampled the same way. Relaxed presence samples are rounded at 0.5 when objects are counted, as
``parse`` rounds them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyro.poutine as poutine
import torch
from pyro.infer import Predictive
from torch import Tensor

from ppl_scenes.checks import check_positive_int
from ppl_scenes.models.base import PresenceBoxes, PriorSampling
from ppl_scenes.ops.boxes import cxcywh_to_xyxy

#: Latent sites of the object-centric models, in the papers' names; absent ones are skipped.
LATENT_SITES = ("z_pres", "z_where", "z_depth", "z_what", "z_cat", "z_t")
#: Coordinates of ``z_where`` unless the model names its own (``model.where_coords``).
WHERE_COORDS = ("y", "x", "h", "w")
#: Named dimensions of each site after the ``(chain, draw, image)`` ones.
SITE_DIMS = {
    "z_pres": ["cell"],
    "z_where": ["cell", "where_coord"],
    "z_depth": ["cell", "depth_coord"],
    "z_what": ["cell", "what_dim"],
    "z_cat": ["cell", "category"],
    "z_t": ["saccade", "z_dim"],
    "logits": ["output"],
    "count": [],
    "reconstruction": ["channel", "row", "column"],
}


def _latent_sites(model, images: Tensor) -> list[str]:
    """The latent sites: the papers' names present, then the guide's per-step ``z_0, z_1, ...``.

    The papers' names are looked up in the guide and in the model run on the guide's draws, so that
    latents the model fixes rather than the guide samples (SSDIR's observed ``z_pres`` and
    deterministic ``z_where``) are reported too.
    """

    with torch.no_grad():
        trace = poutine.trace(model.guide).get_trace(images)
        model_trace = poutine.trace(poutine.replay(model.model, trace=trace)).get_trace(images)
    steps = sorted((n for n in trace.nodes if _step_index(n) is not None), key=_step_index)
    present = set(trace.nodes) | set(model_trace.nodes)
    return [name for name in LATENT_SITES if name in present] + steps


def _step_index(name: str) -> int | None:
    """``t`` of a per-step site ``z_t`` (``"z_3"`` -> 3), else None."""
    head, _, tail = name.partition("_")
    return int(tail) if head == "z" and tail.isdigit() else None


@torch.no_grad()
def sample_posterior(model, images: Tensor, num_samples: int = 100) -> dict[str, Tensor]:
    """Draws of every latent site from the guide, and the reconstruction each one renders.

    Args:
        model: an SVI scene model (``model.model(x)`` returns the rendered canvas).
        images: ``[B, C, H, W]`` in [0, 1] (validated by the model).
        num_samples: posterior draws per image.

    Returns:
        ``{site: [S, B, ...]}`` with the batch dimension right after the sample one -- ``z_pres``
        ``[S, B, N]``, ``z_where`` ``[S, B, N, 4]``, ... -- plus ``reconstruction`` ``[S, B, C, H, W]``
        (the model's return value, named by its ``return_name``: the saccade model's is ``logits``);
        per-step sites ``z_0 .. z_{T-1}`` are stacked as ``z_t`` ``[S, B, T, D]``.
    """
    num_samples = check_positive_int(num_samples, "num_samples")
    model.check_input(images)
    sites = _latent_sites(model, images)
    predictive = Predictive(
        model.model, guide=model.guide, num_samples=num_samples, return_sites=[*sites, "_RETURN"]
    )
    draws = predictive(images)
    steps = [name for name in sites if _step_index(name) is not None]
    out = {name: _drop_plate_dims(draws[name], len(images)) for name in sites if name not in steps}
    if steps:
        out["z_t"] = torch.stack([_drop_plate_dims(draws[name], len(images)) for name in steps], 2)
    out[model.return_name] = draws["_RETURN"]
    return out


@torch.no_grad()
def sample_prior(model, num_samples: int, image_size: tuple[int, int] | None = None) -> dict[str, Tensor]:
    """Scenes generated from the model's prior: latent draws and the rendered images.

    Args:
        model: an SVI scene model whose ``model`` takes ``batch_size`` and ``image_size`` (SPAIR,
            GMAIR; a model without, such as SSDIR or the saccade model, raises ``ValueError``).
        num_samples: scenes to generate.
        image_size: ``(H, W)`` (default: the model's own default).

    Returns:
        ``{site: [S, ...]}`` for the latent sites, ``images`` ``[S, C, H, W]`` (the likelihood's
        mean) and ``boxes``, a list of ``[N_i, 4]`` xyxy boxes of the objects present when the
        model can convert ``z_where`` (``model.present_boxes``).
    """
    num_samples = check_positive_int(num_samples, "num_samples")
    if not isinstance(model, PriorSampling):
        raise ValueError(
            f"{type(model).__name__} has no prior over whole scenes: its model needs an image (SSDIR's boxes "
            "come from a detector run on it; the saccade model glimpses it)"
        )
    trace = poutine.trace(model.model).get_trace(batch_size=num_samples, image_size=image_size)
    out = {
        name: _drop_plate_dims(trace.nodes[name]["value"], num_samples, leading=False)
        for name in LATENT_SITES
        if name in trace.nodes
    }
    out["images"] = trace.nodes["_RETURN"]["value"]
    if isinstance(model, PresenceBoxes):
        out["boxes"] = model.present_boxes(out["z_pres"], out["z_where"], tuple(out["images"].shape[-2:]))
    return out


def posterior_boxes(model, samples: dict[str, Tensor], image_size: tuple[int, int]) -> list[list[Tensor]]:
    """Per image, the boxes of the objects present in each posterior draw: ``boxes[image][draw]``.

    For the saccade model, the boxes of each draw's glimpses (``[T, 4]``, in order of ``t``).

    Args:
        model: the model the samples came from (it converts ``z_where``: ``model.present_boxes``; or
            ``z_t``: ``model.saccade_boxes``).
        samples: from :func:`sample_posterior`.
        image_size: ``(H, W)`` of the images.
    """
    if "z_t" in samples:  # the saccade model: each draw's glimpses, in order of t
        boxes = cxcywh_to_xyxy(model.saccade_boxes(samples["z_t"], image_size))  # [S, B, T, 4]
        return [[boxes[k, i] for k in range(boxes.shape[0])] for i in range(boxes.shape[1])]
    s, b = samples["z_pres"].shape[:2]
    flat = model.present_boxes(samples["z_pres"], samples["z_where"], image_size)  # draw-major
    return [[flat[k * b + i] for k in range(s)] for i in range(b)]


def _drop_plate_dims(value: Tensor, batch: int, leading: bool = True) -> Tensor:
    """Squeeze the singleton plate dimension some sites carry right after the batch (``[.., B, 1, N]``)."""
    dim = 2 if leading else 1
    if value.dim() > dim and value.shape[dim - 1] == batch and value.shape[dim] == 1:
        return value.squeeze(dim)
    return value


@dataclass
class CountPosterior:
    """The posterior over the number of objects in each image.

    Attributes:
        probs: ``[B, N + 1]``: ``probs[i, k] = P(count = k | x_i)`` (sample frequencies; rows sum to 1).
        mean: ``[B]`` posterior mean count.
        hdi: ``[B, 2]`` highest-density interval of the count (``hdi_prob`` of the mass).
        samples: ``[S, B]`` the count of every draw.
    """

    probs: Tensor
    mean: Tensor
    hdi: Tensor
    samples: Tensor


def count_posterior(z_pres: Tensor, hdi_prob: float = 0.94) -> CountPosterior:
    """Object counts of posterior draws of ``z_pres`` (rounded at 0.5), summarised per image.

    Args:
        z_pres: ``[S, B, N]`` presence draws (relaxed values in [0, 1] allowed).
        hdi_prob: mass of the highest-density interval (ArviZ's default 0.94).
    """
    if z_pres.dim() != 3:
        raise ValueError(f"z_pres must be [samples, images, cells], got shape {tuple(z_pres.shape)}")
    counts = (z_pres > 0.5).sum(-1)  # [S, B]
    n = z_pres.shape[-1]
    probs = torch.stack([torch.bincount(c, minlength=n + 1) for c in counts.T]).float() / counts.shape[0]
    hdi = torch.tensor(np.stack([_hdi(c.numpy(), hdi_prob) for c in counts.T]))
    return CountPosterior(probs=probs, mean=counts.float().mean(0), hdi=hdi, samples=counts)


@dataclass
class ObjectPosterior:
    """Per-cell summaries of posterior draws: how sure the model is of each object and of its box.

    Attributes:
        presence: ``[B, N]`` posterior probability that cell ``n`` holds an object (the share of
            draws whose ``z_pres`` rounds to 1).
        where_mean: ``[B, N, 4]`` posterior mean of ``z_where`` (the model's own parameterisation).
        where_std: ``[B, N, 4]`` its posterior standard deviation: the box's uncertainty (zero where
            the model fixes the box, as SSDIR's detector does).
    """

    presence: Tensor
    where_mean: Tensor
    where_std: Tensor


def object_posterior(samples: dict[str, Tensor]) -> ObjectPosterior:
    """Per-object presence probability and box spread from :func:`sample_posterior`'s draws.

    Raises:
        ValueError: when the samples hold no ``z_pres`` and ``z_where`` (e.g. the saccade model's).
    """
    if "z_pres" not in samples or "z_where" not in samples:
        raise ValueError("object_posterior needs draws of z_pres and z_where (an object-centric model's)")
    where = samples["z_where"].float()
    return ObjectPosterior(
        presence=(samples["z_pres"] > 0.5).float().mean(0),
        where_mean=where.mean(0),
        where_std=where.std(0, unbiased=False),
    )


def _arviz():
    """The ``arviz`` module, imported without its FutureWarning about the coming refactoring."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


def _hdi(values: np.ndarray, prob: float) -> np.ndarray:
    """ArviZ's HDI of one 1-D sample."""
    return np.asarray(_arviz().hdi(values.astype(float), hdi_prob=prob))


def to_inference_data(samples: dict[str, Tensor], sites: Sequence[str] | None = None, model=None):
    """An ArviZ ``InferenceData`` of posterior draws, one chain, with named dimensions.

    Dimensions: ``chain``, ``draw``, ``image``, then ``cell``, ``where_coord``, ...; a ``count``
    variable (objects present per draw) is added when ``z_pres`` is there, so
    ``az.summary(idata, var_names=["count"])`` and ``az.hdi`` work on counts directly.

    Args:
        samples: from :func:`sample_posterior` (``[S, B, ...]`` tensors).
        sites: which entries to include (default: every latent site, the count and not the
            reconstruction).
        model: the model the draws came from; its ``where_coords`` name the ``where_coord``
            coordinates (default SPAIR's ``y, x, h, w``; SSDIR's are ``cx, cy, w, h``).
    """
    arrays = {}
    for name, value in samples.items():
        if (sites is None and name in LATENT_SITES) or (sites is not None and name in sites):
            arrays[name] = value.detach().cpu().numpy()[None]  # one chain
    if "z_pres" in samples and (sites is None or "count" in sites):
        arrays["count"] = (samples["z_pres"] > 0.5).sum(-1).cpu().numpy()[None]
    dims = {name: ["image", *SITE_DIMS.get(name, [])] for name in arrays}
    where_coords = list(model.where_coords if isinstance(model, PresenceBoxes) else WHERE_COORDS)
    coords = {"where_coord": where_coords} if "z_where" in arrays else {}
    return _from_dict(arrays, dims, coords)


def _from_dict(arrays, dims, coords):
    """``az.from_dict`` across ArviZ versions (0.2x takes ``posterior=``; 1.x groups by name)."""
    az = _arviz()
    try:
        return az.from_dict(posterior=arrays, dims=dims, coords=coords)
    except TypeError:  # ArviZ 1.x: from_dict({"posterior": {...}}, dims=..., coords=...)
        return az.from_dict({"posterior": arrays}, dims=dims, coords=coords)
