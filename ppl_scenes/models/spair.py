"""SPAIR: Spatially Invariant Attend, Infer, Repeat.

Crawford & Pineau, *Spatially Invariant Unsupervised Object Detection with Convolutional Neural
Networks*, AAAI 2019.

Generative story (§4.1-4.4). The image is divided into an ``H x W`` grid of ``c_h x c_w``-pixel
cells. Each cell holds at most one object:

* ``z_pres ∈ {0, 1}^{HW}`` -- presence, with the **count prior**: the number of objects
  ``C ~ Geometric(p)`` truncated to ``{0..HW}``, then ``z_pres`` uniform among vectors with ``C`` ones
  (:class:`~ppl_scenes.distributions.CountPrior`; independent Bernoullis are the swappable alternative);
* ``z_where ∈ R^4 ~ N(μ, σ)`` -- the box: centre ``(cell index + b̃) c`` with
  ``b̃ = σ(z)(b_max - b_min) + b_min`` and size ``σ(z_h) a_h, σ(z_w) a_w`` for the anchor ``a``;
* ``z_depth ∈ R ~ N(μ, σ)`` -- relative depth; ``z_what ∈ R^A ~ N(0, I)`` -- appearance.

An object decoder maps ``z_what`` to an appearance and an opacity glimpse; opacity is multiplied by
``z_pres``; a spatial transformer places each glimpse at its box -- on a patch the size of the
largest box, which follows the box, so cost grows with objects x patch, not objects x canvas
(:mod:`ppl_scenes.ops.patches`) -- and objects are mixed
by depth-weighted convex combination over a background (:mod:`ppl_scenes.ops.compositing`). Pixels
are Bernoulli (the paper's likelihood; gray levels make this a pseudo-likelihood, so the site has
``validate_args=False``), or Continuous-Bernoulli / fixed-σ Normal as documented options.

Guide (§4.3, :class:`SPAIRGuide`). A convolutional backbone gives one feature vector per cell. A
lateral MLP produces ``q(z_where)``, ``q(z_depth)`` and the presence probability of a cell from its
feature and the already-sampled latents of its neighbours ``(i-1, j-1), (i-1, j), (i-1, j+1),
(i, j-1)`` (a learned vector stands in outside the grid); a glimpse at the sampled box gives
``q(z_what)``. Since cells with equal ``2i + j`` depend on none of each other, each such
anti-diagonal is one batched call (*wavefront*): ``2H + W - 2`` sequential steps instead of ``HW``.
Presence is a Concrete (relaxed Bernoulli) sample scored with the Bernoulli log-mass, so
``log p(z_pres) - log q(z_pres)`` estimates SPAIR's Bernoulli KL (§4.5 and supplement).

Training maximises the ELBO with ``Trace_ELBO`` through the relaxed samples; ``parse`` uses the
guide's modes with presence rounded at 0.5 (§4.5). The network is fully convolutional: train on crops,
parse larger images.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger
from torch import Tensor, nn

from ppl_scenes.distributions import (
    Bernoulli,
    ConcreteBernoulli,
    CountPrior,
    IndependentBernoulliPrior,
    Normal,
    Presampled,
    concrete_sample,
    logistic_parts,
)
from ppl_scenes.models.base import (
    PresenceBoxes,
    PriorSampling,
    RankedParse,
    SceneModel,
    SceneParse,
    plate,
)
from ppl_scenes.models.preset import Preset
from ppl_scenes.nn import (
    GlimpseDecoder,
    GlimpseEncoder,
    GridBackbone,
    inverse_positive,
    mlp,
    positive,
    summed_weight_gradients,
)
from ppl_scenes.ops import (
    cached_constant,
    cell_schedule,
    clip,
    clip_boxes,
    composite_patches,
    cxcywh_to_xyxy,
    drawn_boxes,
    from_groups,
    grid_shape,
    lateral_inputs,
    multiply,
    pad_to_grid,
    paste_patches,
    patch_size,
    sample_glimpses,
    scalar,
    spair_glimpse_grid_map,
    tighten_boxes,
    to_groups,
    vector,
)
from ppl_scenes.ops import spair_where_to_cxcywh as where_to_cxcywh
from ppl_scenes.ops.schedules import exponential_schedule

LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "normal")
ORDERS = ("wavefront", "raster")
PRES_PRIORS = ("count", "bernoulli")
TIGHT_MODES = ("opacity", "ink")
#: SPAIR's object-level sites: one per cell, weighted by the cell's presence under ``mask_absent``.
OBJECT_SITES = ("z_where", "z_depth", "z_what")


@dataclass
class SPAIRConfig:
    """SPAIR's settings (defaults: the paper's scattered-MNIST experiment at CPU scale).

    Attributes:
        channels: image channels (1 or 3).
        cell_size: ``(c_h, c_w)`` grid cell in pixels (products of 2s and 3s).
        anchor: ``(a_h, a_w)`` anchor box in pixels; boxes are at most this large.
        center_bounds: ``(b_min, b_max)`` of the centre offset in cell units.
        what_dim: ``A``, the size of ``z_what``.
        object_size: decoded object glimpse ``(H_obj, W_obj)``.
        glimpse_size: encoder glimpse size.
        feature_dim: backbone features per cell.
        backbone_width: channels of the backbone's first layer.
        hidden_dim: hidden units of the MLPs.
        lateral: lateral connections in the guide (False: a mean-field guide over cells).
        lateral_what: neighbours pass their ``z_what`` too, not only where/depth/pres.
        order: ``wavefront`` (batched anti-diagonals) or ``raster`` (one cell at a time; same result).
        pres_prior: ``count`` (SPAIR's count prior) or ``bernoulli`` (independent cells).
        pres_prob_start / pres_prob_end / pres_anneal_steps: the prior's success probability ``p``,
            annealed geometrically from start to end over the first steps.
        pres_temperature: Concrete temperature of ``z_pres`` in the guide (0.5: sharper samples
            than 1.0 teach the decoder whole objects; count accuracy after 1,500 steps on 5-digit
            scenes rose from 0.35 to 0.66).
        where_prior_loc / where_prior_scale: Normal prior of ``(z_y, z_x, z_h, z_w)``. The size prior
            is what makes boxes tight: the box may only grow as far as the reconstruction pays for.
        mask_absent: weight the ELBO terms of a cell's where/depth/what by its presence (see
            :class:`PresenceWeights`).
        init_scale: the scale of ``q(z_where)`` and ``q(z_depth)`` in the untrained guide (small:
            jittering glimpses early on would teach the decoder blurred blobs).
        depth_prior_scale / what_prior_scale: Normal prior scales (means 0).
        likelihood: ``bernoulli`` (paper), ``continuous_bernoulli`` or ``normal``.
        obs_scale: σ of the ``normal`` likelihood.
        background: ``fixed`` (``background_value``) or ``learned`` (one learned colour).
        background_value: the fixed background colour.
        score_threshold: presence probability above which ``parse`` reports an object.
        tight_boxes: ``parse`` shrinks each box to the part of its decoded glimpse whose opacity
            exceeds ``tight_threshold`` (GMAIR's evaluation, its Appendix B.3). Off by default: the
            paper's boxes are those of ``z_where``.
        tight_mode: how ``tight_boxes`` finds an object's extent. ``opacity``: the rows and columns of
            its decoded glimpse whose opacity exceeds ``tight_threshold`` (GMAIR's rule). ``ink``: the
            object drawn alone on the canvas, its pixels whose opacity times contrast with the
            background exceed ``tight_threshold`` -- the rule by which the scene generators box the
            truth around each digit's ink (:func:`~ppl_scenes.ops.drawn_boxes`); it also trims a
            glimpse drawn with full opacity and an empty (background-coloured) margin.
        tight_threshold: value above which a pixel counts as drawn.
    """

    channels: int = 1
    cell_size: tuple[int, int] = (12, 12)
    anchor: tuple[float, float] = (16.0, 16.0)
    center_bounds: tuple[float, float] = (-0.5, 1.5)
    what_dim: int = 50
    object_size: tuple[int, int] = (14, 14)
    glimpse_size: tuple[int, int] = (14, 14)
    feature_dim: int = 128
    backbone_width: int = 16
    hidden_dim: int = 256
    lateral: bool = True
    lateral_what: bool = True
    order: str = "wavefront"
    pres_prior: str = "count"
    pres_prob_start: float = 0.99
    pres_prob_end: float = 1e-4
    pres_anneal_steps: int = 1000
    pres_temperature: float = 0.5
    where_prior_loc: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    where_prior_scale: tuple[float, float, float, float] = (1.0, 1.0, 0.5, 0.5)
    init_scale: float = 0.1
    mask_absent: bool = True
    depth_prior_scale: float = 1.0
    what_prior_scale: float = 1.0
    likelihood: str = "bernoulli"
    obs_scale: float = 0.1
    background: str = "fixed"
    background_value: float = 0.0
    score_threshold: float = 0.5
    tight_boxes: bool = False
    tight_threshold: float = 0.1
    tight_mode: str = "opacity"

    def __post_init__(self):
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        for name, options in (
            ("likelihood", LIKELIHOODS),
            ("order", ORDERS),
            ("pres_prior", PRES_PRIORS),
            ("tight_mode", TIGHT_MODES),
        ):
            if getattr(self, name) not in options:
                raise ValueError(f"{name} must be one of {options}, got {getattr(self, name)!r}")
        if self.background not in ("fixed", "learned"):
            raise ValueError(f"background must be 'fixed' or 'learned', got {self.background!r}")
        if not (0 < self.pres_prob_end < 1 and 0 < self.pres_prob_start < 1):
            raise ValueError("pres_prob_start and pres_prob_end must lie in (0, 1)")
        if self.center_bounds[0] >= self.center_bounds[1]:
            raise ValueError("center_bounds must be (b_min, b_max) with b_min < b_max")
        if min(self.anchor) <= 0 or self.what_dim <= 0 or self.pres_temperature <= 0:
            raise ValueError("anchor, what_dim and pres_temperature must be positive")
        if min(self.where_prior_scale) <= 0 or self.init_scale <= 0:
            raise ValueError("where_prior_scale and init_scale must be positive")


@dataclass
class CellLatents:
    """Per-cell latents of a batch (raster order), with the guide's distribution parameters."""

    where: Tensor  # [B, N, 4]
    depth: Tensor  # [B, N, 1]
    pres: Tensor  # [B, N]
    what: Tensor  # [B, N, A]
    where_loc: Tensor
    where_scale: Tensor
    depth_loc: Tensor
    depth_scale: Tensor
    pres_logits: Tensor
    what_loc: Tensor
    what_scale: Tensor


class SPAIRGuide(nn.Module):
    """SPAIR's amortised guide: backbone, lateral MLP over cells, glimpse encoder for ``z_what``.

    Call it with an image batch inside a Pyro context to register ``z_pres``, ``z_where``,
    ``z_depth`` and ``z_what`` (unweighted: :meth:`SPAIR.guide` adds the presence mask of
    ``mask_absent``); :meth:`encode` gives the latents directly (e.g. the modes).

    GMAIR replaces the appearance part, ``q(z_what | x)``, by ``q(z_cat | x) q(z_what | x, z_cat)``:
    for that it extends :meth:`draw_noise`, :meth:`encode_what`, :meth:`object_sites` and
    ``latents_class``.

    Args:
        config: the model's :class:`SPAIRConfig` (its ``lateral``, ``lateral_what`` and ``order``
            decide the guide's structure).
    """

    latents_class = CellLatents

    def __init__(self, config: SPAIRConfig):
        super().__init__()
        c = config
        self.config = c
        self.backbone = GridBackbone(c.channels, c.cell_size, c.feature_dim, c.backbone_width)
        self.latent_dim = 6 + (c.what_dim if c.lateral_what else 0)
        lateral_in = c.feature_dim + (4 * self.latent_dim if c.lateral else 0)
        self.lateral_mlp = mlp([lateral_in, c.hidden_dim, c.hidden_dim, 4 + 4 + 1 + 1 + 1])
        # the border's latents: kept in the weights either way, learned only with lateral connections
        self.outside = nn.Parameter(torch.zeros(self.latent_dim), requires_grad=c.lateral)
        self.what_encoder = GlimpseEncoder(c.channels, c.glimpse_size, c.what_dim, c.hidden_dim)
        with torch.no_grad():
            # Start with objects on: early reconstruction pressure is what teaches the decoder objects.
            self.lateral_mlp[-1].bias[-1].fill_(2.0)
            # Start with precise boxes: jittering glimpses would teach the decoder blurred blobs.
            self.lateral_mlp[-1].bias[4:8].fill_(inverse_positive(c.init_scale))
            self.lateral_mlp[-1].bias[9].fill_(inverse_positive(c.init_scale))

    def forward(self, x: Tensor) -> CellLatents:
        """Sample every cell's latents (:meth:`sample_latents`) and register them (:meth:`sample_sites`)."""
        lat = self.sample_latents(x)
        self.sample_sites(lat)
        return lat

    def sample_latents(self, x: Tensor) -> CellLatents:
        """One posterior sample of every cell's latents, without Pyro sites (§4.3)."""
        return self.encode(x, self.draw_noise(x.shape[0], self.grid_cells(x), x))

    def sample_sites(self, lat: CellLatents) -> None:
        """Register ``lat`` as Pyro sites: ``z_pres`` per image, then :meth:`object_sites` per cell.

        Presence is the Concrete sample scored with the Bernoulli log-mass (§4.5).
        """
        b, n = lat.pres.shape
        dev = lat.pres.device
        with plate("data", b, dim=-2, device=dev):
            pres_q = ConcreteBernoulli(lat.pres_logits.unsqueeze(1), self.config.pres_temperature)
            pyro.sample("z_pres", Presampled(pres_q.to_event(1), lat.pres.unsqueeze(1)))
            with plate("cells", n, dim=-1, device=dev):
                for name, (q, value) in self.object_sites(lat).items():
                    pyro.sample(name, Presampled(q, value))

    def object_sites(self, lat: CellLatents) -> dict[str, tuple[dist.TorchDistribution, Tensor]]:
        """Every cell's object-level sites: name -> (posterior, its sample ``lat`` holds).

        ``z_where``, ``z_depth`` and ``z_what``: the reparameterised Normal samples of §4.3.
        """
        return {
            f"z_{name}": (
                Normal(getattr(lat, f"{name}_loc"), getattr(lat, f"{name}_scale")).to_event(1),
                getattr(lat, name),
            )
            for name in ("where", "depth", "what")
        }

    def grid_cells(self, x: Tensor) -> int:
        gh, gw = grid_shape(x, self.config.cell_size)
        return gh * gw

    def draw_noise(self, b: int, n: int, like: Tensor) -> dict[str, Tensor]:
        """All randomness of one guide pass, drawn up front (so any cell order gives the same sample)."""
        a = self.config.what_dim
        return {
            "where": torch.randn(b, n, 4, device=like.device),
            "depth": torch.randn(b, n, 1, device=like.device),
            "pres": torch.rand(b, n, device=like.device),
            "what": torch.randn(b, n, a, device=like.device),
        }

    def encode(self, x: Tensor, noise: dict[str, Tensor] | None, order: str | None = None) -> CellLatents:
        """Latents of every cell; ``noise=None`` gives the modes (presence rounded at 0.5).

        Cells are visited group by group in the :class:`~ppl_scenes.ops.CellSchedule` of the order
        (§4.3): per group one call of the lateral MLP, of the where/depth/presence sampling and (with
        ``lateral_what``) of the glimpse encoder. Features and noise are put in visiting order once;
        the lateral MLP hands its output's heads (locs, raw scales, presence logit) out separately
        (:meth:`~ppl_scenes.nn.MLP.heads`), and each head's groups are stacked after the loop.
        The guide's MLPs sum their weight gradients over the groups in one product each
        (:func:`~ppl_scenes.nn.summed_weight_gradients`).

        Args:
            x: images ``[B, C, H, W]``.
            noise: from :meth:`draw_noise`, or None for the deterministic modes.
            order: ``wavefront`` or ``raster`` (default: the config's); both give identical results.
        """
        one_pass = torch.compiler.is_compiling() or not self.config.lateral  # each MLP called once
        scope = contextlib.nullcontext() if one_pass else summed_weight_gradients(self)
        with scope:
            return self._encode(x, noise, order)

    def _encode(self, x: Tensor, noise: dict[str, Tensor] | None, order: str | None) -> CellLatents:
        c = self.config
        grid = grid_shape(x, c.cell_size)
        feats = self.backbone(pad_to_grid(x, c.cell_size)).flatten(2).transpose(1, 2)  # [B, N, F]
        plan = cell_schedule(grid, (order or c.order) if c.lateral else "batch", x.device)

        feats = to_groups(feats, plan)
        appearance = None
        if noise is not None:
            appearance = {k: v for k, v in noise.items() if k not in ("where", "depth", "pres")}
            appearance_groups = {}
            if c.lateral_what:
                appearance_groups = {k: to_groups(v, plan) for k, v in appearance.items()}
            where_depth_noise = to_groups(torch.cat((noise["where"], noise["depth"]), -1), plan)
            log_u, log1m_u = (to_groups(t.unsqueeze(-1), plan) for t in logistic_parts(noise["pres"]))
            temperature = scalar(c.pres_temperature, x)
        head_order = _head_order(x.device)
        heads, samples, whats = [], [], []
        if c.lateral:
            outside = self.outside.expand(x.shape[0], 1, self.latent_dim).contiguous()
        for g in range(len(plan.bounds)):
            inputs = feats[g]
            if c.lateral:  # beside the latents of the cell's earlier neighbours, or the learned `outside`
                inputs = lateral_inputs(inputs, outside, samples, plan, g)
            loc, raw_scale, pres_logits = self.lateral_mlp.heads(inputs, (5, 5, 1), *head_order)
            scale = positive(raw_scale)
            heads.append((loc, scale, pres_logits))  # pres_logits [B, n, 1] until after the loop
            if noise is None:
                where_depth = loc
                pres = (pres_logits > 0).to(x.dtype)
            else:
                where_depth = loc + scale * where_depth_noise[g]
                pres = concrete_sample(pres_logits, log_u[g], log1m_u[g], temperature)
            lateral = [where_depth, pres]
            if c.lateral_what:
                group_noise = None
                if appearance is not None:
                    group_noise = {k: v[g] for k, v in appearance_groups.items()}
                what = self.encode_what(x, where_depth, plan.cells[g], grid, group_noise)
                whats.append(what)
                lateral.append(what["what"])
            samples.append(torch.cat(lateral, -1))
        loc, scale, pres_logits = (from_groups([group[k] for group in heads], plan) for k in range(3))
        sample = from_groups(samples, plan)
        # split, not slices: one gradient node per tensor instead of one zero-filled copy per slice
        where, depth, pres, *_ = sample.split((4, 1, 1, sample.shape[-1] - 6), -1)
        where_loc, depth_loc = loc.split((4, 1), -1)
        where_scale, depth_scale = scale.split((4, 1), -1)
        merged = dict(
            where=where,
            depth=depth,
            pres=pres.squeeze(-1),
            where_loc=where_loc,
            where_scale=where_scale,
            depth_loc=depth_loc,
            depth_scale=depth_scale,
            pres_logits=pres_logits.squeeze(-1),
        )
        if c.lateral_what:
            merged.update({k: from_groups([w[k] for w in whats], plan) for k in whats[0]})
        else:
            merged.update(self.encode_what(x, merged["where"], None, grid, appearance))
        return self.latents_class(**{k: merged[k] for k in self.latents_class.__dataclass_fields__})

    def glimpses(self, x: Tensor, where: Tensor, cells: Tensor | None, grid: tuple[int, int]) -> Tensor:
        """The encoder's glimpse ``[B, n, C, h, w]`` of each of ``cells`` (None: all) at its box ``where``
        (``[B, n, 4]``; further columns are ignored), the sampling grid one affine map of
        ``sigmoid(where)`` (:func:`~ppl_scenes.ops.spair_glimpse_grid_map`)."""
        c = self.config
        weights, bias = spair_glimpse_grid_map(
            tuple(grid), tuple(c.cell_size), tuple(c.anchor), tuple(c.center_bounds),
            tuple(c.glimpse_size), tuple(x.shape[-2:]), where.shape[-1], x.device, x.dtype,
        )  # fmt: skip
        if cells is not None:
            bias = bias.index_select(0, cells)
        grids = torch.matmul(torch.sigmoid(where), weights) + bias
        return sample_glimpses(x, grids, c.glimpse_size)

    def encode_what(self, x, where, cells, grid, noise) -> dict[str, Tensor]:
        """``q(z_what | glimpse)`` of ``cells`` at their boxes ``where``: its parameters and sample.

        Args:
            x: the images; where: ``[B, n, 4]`` boxes of the ``n`` cells listed in ``cells`` (None:
                every cell, raster order); grid: the grid's shape; noise: the rows of these cells of
                :meth:`draw_noise`'s appearance noise (``"what"``, and GMAIR's ``"cat"``), or None for
                the mode.
        """
        what_loc, what_scale = self.what_encoder(self.glimpses(x, where, cells, grid))
        what = what_loc if noise is None else what_loc + what_scale * noise["what"]
        return {"what": what, "what_loc": what_loc, "what_scale": what_scale}


class SPAIR(SceneModel, PresenceBoxes, PriorSampling, RankedParse):
    """SPAIR as a Pyro model/guide pair (see the module docstring for the generative story).

    Args:
        config: :class:`SPAIRConfig` (defaults: scattered MNIST, 12-pixel cells, A = 50).
        pres_prior: optional ``fn(success_prob, num_cells) -> distribution`` over the presence vector,
            replacing the config's choice (default :class:`~ppl_scenes.distributions.CountPrior`).
            A string names the config's choice instead: ``pres_prior="bernoulli"`` gives
            independent Bernoullis.
        what_prior: optional ``fn(batch_shape) -> distribution`` with event shape ``[A]`` for
            ``z_what`` (default ``Normal(0, what_prior_scale)``); GMAIR's mixture plugs in here.
        guide: optional module or callable ``guide(x)`` replacing :class:`SPAIRGuide`.
        **overrides: config fields.
    """

    name = "spair"
    config_class = SPAIRConfig
    default_dataset = "scattered"
    default_data_kwargs = {"num_digits": 5}
    default_train = {"batch_size": 32, "lr": 1e-3, "steps": 5000}
    presets = {
        "scattered-5": Preset(
            "scattered-5",
            "5-digit 48x48 scattered MNIST: 8-px cells, ink boxes, a decaying rate; 9,000 steps "
            "(about 30 CPU minutes on one thread)",
            (
                "cell_size=8,8",
                "pres_prob_end=0.5",
                "tight_boxes=true",
                "tight_mode=ink",
                "tight_threshold=0.05",
                "train.steps=9000",
                "train.lr_decay_from=0.3",
                "train.lr_decay_to=0.05",
                "data.num_digits=5",
            ),
            dataset="scattered",
        ),
    }
    #: The guide module built when no ``guide`` is given (GMAIR's subclasses it).
    guide_class = SPAIRGuide
    #: The guide's wavefront of lateral MLP and glimpse encoder (noise drawn before it), and the
    #: decoder with the compositing (``TrainConfig.compile``).
    compiled_methods = ("encoder.encode", "render_patches")

    def __init__(
        self,
        config: SPAIRConfig | None = None,
        pres_prior: Callable | None = None,
        what_prior: Callable | None = None,
        guide: Callable | None = None,
        **overrides,
    ):
        if isinstance(pres_prior, str):  # the config's choice by name, e.g. SPAIR(pres_prior="bernoulli")
            overrides["pres_prior"], pres_prior = pres_prior, None
        super().__init__(config, **overrides)
        c = self.config
        self.encoder = guide if guide is not None else self.guide_class(c)
        self.object_decoder = GlimpseDecoder(c.what_dim, c.channels, c.object_size, c.hidden_dim)
        self.background = Background(c.channels, c.background_value, learned=c.background == "learned")
        self._pres_prior = pres_prior
        self._what_prior = what_prior
        self.pres_schedule = exponential_schedule(c.pres_prob_start, c.pres_prob_end, c.pres_anneal_steps)
        self.pres_prob = c.pres_prob_start

    # -- schedules -----------------------------------------------------------------------------
    def set_step(self, step: int) -> dict[str, float]:
        self.step = int(step)
        self.pres_prob = float(self.pres_schedule(step))
        return {"pres_prob": self.pres_prob}

    @property
    def presence_threshold(self) -> float:
        """``config.score_threshold``: the presence probability from which an object is reported."""
        return float(self.config.score_threshold)

    def min_image_size(self) -> tuple[int, int]:
        return self.config.cell_size

    # -- priors --------------------------------------------------------------------------------
    def pres_prior(self, num_cells: int):
        """The prior over the presence vector at the current annealing step."""
        if self._pres_prior is not None:
            return self._pres_prior(self.pres_prob, num_cells)
        prob = torch.as_tensor(self.pres_prob, dtype=torch.get_default_dtype(), device=self.device)
        if self.config.pres_prior == "count":
            return CountPrior(prob, num_cells)
        return IndependentBernoulliPrior(prob, num_cells)

    def what_prior(self, batch_shape: tuple[int, ...]):
        """The prior over ``z_what`` with the given batch shape (event shape ``[A]``)."""
        if self._what_prior is not None:
            return self._what_prior(batch_shape)
        c = self.config
        loc = torch.zeros((), device=self.device)
        return Normal(loc, c.what_prior_scale).expand([*batch_shape, c.what_dim]).to_event(1)

    # -- model ---------------------------------------------------------------------------------
    def model(
        self, x: Tensor | None = None, batch_size: int = 1, image_size: tuple[int, int] | None = None
    ) -> Tensor:
        """``p(x, z)``: observes ``x`` if given, else generates ``batch_size`` images of ``image_size``.

        The story of :meth:`generate`; with ``mask_absent`` each cell's where/depth/what sites are
        weighted by its presence (:class:`PresenceWeights`), as in :meth:`guide`.

        Returns:
            the rendered canvas ``[B, C, H, W]`` (the likelihood's mean).
        """
        with presence_mask(self.config, OBJECT_SITES):
            return self.generate(x, batch_size, image_size)[0]

    def generate(
        self, x: Tensor | None = None, batch_size: int = 1, image_size: tuple[int, int] | None = None
    ) -> tuple[Tensor, Tensor]:
        """SPAIR's generative story (§4.1-4.4) as unweighted Pyro sites, in the paper's order.

        ``z_pres`` from the presence prior (§4.2), then per cell ``z_where``, ``z_depth`` and ``z_what``
        (:meth:`sample_what`), the objects rendered over the background (§4.4), and the pixels ``x``
        (observed if ``x`` is given, else ``batch_size`` images of ``image_size``).

        Returns:
            the canvas ``[B, C, H, W]`` and each cell's object drawn on its patch, with the patches'
            origins (see :meth:`render_patches`).
        """
        c = self.config
        if x is not None:
            self.check_input(x)
            b, size = x.shape[0], tuple(x.shape[-2:])
        else:
            b, size = batch_size, image_size or (4 * c.cell_size[0], 4 * c.cell_size[1])
        grid = grid_shape(size, c.cell_size)
        n = grid[0] * grid[1]
        dev = self.device
        with plate("data", b, dim=-2, device=dev):
            z_pres = pyro.sample("z_pres", self.pres_prior(n).expand([b, 1]))
            with plate("cells", n, dim=-1, device=dev):
                loc, scale = vector(c.where_prior_loc, dev), vector(c.where_prior_scale, dev)
                z_where = pyro.sample("z_where", Normal(loc, scale).expand([b, n, 4]).to_event(1))
                depth_prior = Normal(vector([0.0], dev), c.depth_prior_scale)
                z_depth = pyro.sample("z_depth", depth_prior.expand([b, n, 1]).to_event(1))
                z_what = self.sample_what((b, n))
            canvas, drawn, origins = self.render_patches(z_pres.squeeze(-2), z_where, z_depth, z_what, size)
            obs = None if x is None else x.unsqueeze(1)
            pyro.sample("x", self.likelihood(canvas.unsqueeze(1)), obs=obs)
        return canvas, (drawn, origins)

    def sample_what(self, shape: tuple[int, int]) -> Tensor:
        """Sample ``z_what`` of every cell (``shape = (B, N)``) from :meth:`what_prior`.

        GMAIR replaces this piece of the story: ``z_cat`` first, then ``z_what | z_cat``.
        """
        return pyro.sample("z_what", self.what_prior(shape))

    def likelihood(self, canvas: Tensor):
        """Per-pixel observation distribution around the rendered ``canvas`` (event dims C, H, W)."""
        c = self.config
        mean = clip(canvas, 1e-4, 1 - 1e-4)
        if c.likelihood == "bernoulli":
            # Gray-level pixels are not binary: the paper's Bernoulli is a pseudo-likelihood here.
            return Bernoulli(probs=mean, validate_args=False).to_event(3)
        if c.likelihood == "continuous_bernoulli":
            return dist.ContinuousBernoulli(probs=mean).to_event(3)
        return Normal(canvas, c.obs_scale).to_event(3)

    def render(self, z_pres: Tensor, z_where: Tensor, z_depth: Tensor, z_what: Tensor, image_size) -> Tensor:
        """Draw the objects of every cell over the background: ``[B, C, H, W]``.

        Args:
            z_pres: ``[B, N]`` presence (relaxed or 0/1); z_where ``[B, N, 4]``; z_depth ``[B, N, 1]``;
                z_what ``[B, N, A]``; image_size: ``(H, W)`` of the output.
        """
        return self.render_patches(z_pres, z_where, z_depth, z_what, image_size)[0]

    def render_patches(
        self, z_pres: Tensor, z_where: Tensor, z_depth: Tensor, z_what: Tensor, image_size
    ) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`render`'s canvas, and each cell's object drawn on a patch the size of its box.

        Returns:
            the canvas ``[B, C, H, W]``, the patches ``[B, N, C + 1, P_h, P_w]`` (appearance, then
            opacity times presence) and their integer origins ``[B, N, 2]``
            (:func:`~ppl_scenes.ops.paste_patches`).
        """
        drawn, origins = self.draw_patches(z_pres, z_where, z_what, image_size)
        background = self.background()[:, None, None]
        canvas = composite_patches(drawn, origins, z_depth[..., 0], background, tuple(image_size))
        return canvas, drawn, origins

    def draw_patches(
        self, z_pres: Tensor, z_where: Tensor, z_what: Tensor, image_size
    ) -> tuple[Tensor, Tensor]:
        """Each cell's object alone on its patch: ``(drawn [B, N, C + 1, P_h, P_w], origins [B, N, 2])``.

        Patches hold the largest box (the anchor) with its bilinear fringe
        (:func:`~ppl_scenes.ops.patch_size`); pixel ``(i, j)`` of patch ``n`` is image pixel
        ``origins[n] + (j, i)``.
        """
        c = self.config
        appearance, alpha = self.object_decoder(z_what)
        alpha = alpha * z_pres[..., None, None, None]
        boxes = where_to_cxcywh(
            z_where, grid_shape(image_size, c.cell_size), c.cell_size, c.anchor, c.center_bounds
        )
        patch = patch_size(c.anchor, tuple(appearance.shape[-2:]))
        return paste_patches(torch.cat((appearance, alpha), 2), boxes, patch, canvas=tuple(image_size))

    def tight_boxes(self, lat: CellLatents, boxes: Tensor, image_size) -> Tensor:
        """Every cell's box shrunk to what its object draws (``config.tight_mode``); ``[B, N, 4]``.

        Each cell's object is decoded as if present, so candidates below the presence threshold are
        tightened too (average precision ranks them).
        """
        c = self.config
        if c.tight_mode == "opacity":
            return tighten_boxes(boxes, self.object_decoder(lat.what)[1], c.tight_threshold)
        drawn, origins = self.draw_patches(torch.ones_like(lat.pres), lat.where, lat.what, image_size)
        contrast = (drawn[:, :, :-1] - self.background()[:, None, None]).abs().amax(2)
        ink, found = drawn_boxes(drawn[:, :, -1] * contrast, origins.to(boxes.dtype), c.tight_threshold)
        return torch.where(found[..., None], ink, boxes)

    # -- guide and parse -----------------------------------------------------------------------
    def guide(self, x: Tensor):
        """``q(z | x)``: the guide module (by default :class:`SPAIRGuide`), masked as :meth:`model` is."""
        self.check_input(x)
        with presence_mask(self.config, OBJECT_SITES):
            return self.encoder(x)

    def parse(self, x: Tensor, score_threshold: float | None = None) -> SceneParse:
        """Boxes, presence scores, ``z_what`` and the reconstruction from the guide's modes.

        Args:
            x: images ``[B, C, H, W]`` (any size that is at least one cell).
            score_threshold: report cells whose presence probability is at least this
                (default ``config.score_threshold`` = 0.5; a lower value gives ranked candidates
                for average precision -- the latents themselves are always rounded at 0.5).
        """
        self.check_input(x)
        with self.evaluating():
            return self.parse_latents(self.posterior_modes(x), tuple(x.shape[-2:]), score_threshold)

    def parse_latents(
        self,
        lat: CellLatents,
        image_size: tuple[int, int],
        score_threshold: float | None = None,
        labels: Tensor | None = None,
    ) -> SceneParse:
        """:meth:`parse` of given per-cell latents (e.g. :meth:`posterior_modes`) of images of ``image_size``.

        Args:
            labels: optional category per cell ``[B, N]`` to report with each object.
        """
        threshold = self.config.score_threshold if score_threshold is None else score_threshold
        c = self.config
        size = tuple(image_size)
        recon = self.render(lat.pres, lat.where, lat.depth, lat.what, size)
        boxes = self.where_boxes(lat.where, size, clip=False)
        if c.tight_boxes:
            boxes = self.tight_boxes(lat, boxes, size)
        boxes = clip_boxes(boxes, size)
        scores = torch.sigmoid(lat.pres_logits)
        keep = scores >= threshold
        return SceneParse(
            boxes=[boxes[i][keep[i]] for i in range(len(keep))],
            scores=[scores[i][keep[i]] for i in range(len(keep))],
            what=[lat.what[i][keep[i]] for i in range(len(keep))],
            labels=None if labels is None else [labels[i][keep[i]] for i in range(len(keep))],
            reconstruction=recon,
        )

    def where_boxes(self, z_where: Tensor, image_size: tuple[int, int], clip: bool = True) -> Tensor:
        """Every cell's box ``[..., N, 4]`` (xyxy pixels) from ``z_where`` on an image of ``image_size``."""
        c = self.config
        grid = grid_shape(image_size, c.cell_size)
        boxes = cxcywh_to_xyxy(where_to_cxcywh(z_where, grid, c.cell_size, c.anchor, c.center_bounds))
        return clip_boxes(boxes, image_size) if clip else boxes

    def present_boxes(self, z_pres: Tensor, z_where: Tensor, image_size: tuple[int, int]) -> list[Tensor]:
        """Boxes of the objects present (``z_pres > 0.5``) in each scene of a batch of latents.

        Args:
            z_pres: ``[..., N]``; z_where: ``[..., N, 4]`` (any leading dims, flattened in order).
            image_size: ``(H, W)`` of the images the latents describe.

        Returns:
            one ``[K_i, 4]`` xyxy tensor per scene.
        """
        boxes = self.where_boxes(z_where, image_size).reshape(-1, z_where.shape[-2], 4)
        return [b[p > 0.5] for b, p in zip(boxes, z_pres.reshape(-1, z_pres.shape[-1]))]

    def posterior_modes(self, x: Tensor) -> CellLatents:
        """The guide's modes for every cell (a swapped-in guide is traced once instead)."""
        if isinstance(self.encoder, SPAIRGuide):
            return self.encoder.encode(x, None)
        return self.modes_from_trace(poutine.trace(self.encoder).get_trace(x))

    def modes_from_trace(self, trace) -> CellLatents:
        """Per-cell latents from one trace of a swapped-in guide (its sampled values stand for the modes)."""
        values = {k: trace.nodes[k]["value"] for k in ("z_pres", "z_where", "z_depth", "z_what")}
        pres = values["z_pres"].squeeze(-2)
        return CellLatents(
            where=values["z_where"],
            depth=values["z_depth"],
            pres=(pres > 0.5).to(pres),
            what=values["z_what"],
            where_loc=values["z_where"],
            where_scale=torch.zeros_like(values["z_where"]),
            depth_loc=values["z_depth"],
            depth_scale=torch.zeros_like(values["z_depth"]),
            pres_logits=torch.logit(pres.clamp(1e-6, 1 - 1e-6)),
            what_loc=values["z_what"],
            what_scale=torch.zeros_like(values["z_what"]),
        )


class Background(nn.Module):
    """A solid background colour, fixed or learned (SPAIR §4.4 uses monochrome backgrounds)."""

    def __init__(self, channels: int, value: float, learned: bool):
        super().__init__()
        self.logit = nn.Parameter(torch.full((channels,), _logit(value)), requires_grad=learned)

    def forward(self) -> Tensor:
        return torch.sigmoid(self.logit)


class PresenceWeights(Messenger):
    """Weighs each cell's object-level sites by its presence, so that absent objects cost nothing.

    An absent object has no box, depth or appearance: with ``mask_absent`` the ELBO terms of a
    cell's where/depth/what latents are multiplied by its presence, in model and guide alike (as in
    SPACE, Lin et al. 2020; without it every cell pays the KL of all its latents, which on many-cell
    grids drives ``z_what`` to the prior). The handler reads the presence ``[B, N]`` off the
    ``z_pres`` site (``[B, 1, N]``) as it is sampled and multiplies the ``scale`` of the ``sites``
    sampled after it. Presence is clamped at 1e-6 because Pyro needs positive scales (a prior
    sample has hard zeros).

    Args:
        sites: names of the object-level sites.
        probs: a presence weight ``[B, N]`` to use instead of the ``z_pres`` value, e.g. GMAIR's
            ``q(z_pres = 1 | x)`` (its eqs. 7-10); ignored when its shape is not that of this
            trace's presence (it came from a guide run on another batch).
    """

    def __init__(self, sites: Collection[str], probs: Tensor | None = None):
        super().__init__()
        self.sites = frozenset(sites)
        self.probs = probs
        self._weight: Tensor | None = None

    def __enter__(self):
        self._weight = None
        return super().__enter__()

    def _process_message(self, msg) -> None:
        if msg["type"] != "sample" or msg["name"] not in self.sites:
            return
        if self._weight is None:
            raise ValueError(f"site {msg['name']!r} is weighted by presence but came before 'z_pres'")
        msg["scale"] = multiply(self._weight, msg["scale"])

    def _postprocess_message(self, msg) -> None:
        if msg["type"] == "sample" and msg["name"] == "z_pres":
            presence = msg["value"].squeeze(-2)
            if self.probs is not None and self.probs.shape == presence.shape:
                self._weight = self.probs
            else:
                self._weight = clip(presence, min=1e-6)


def presence_mask(config: SPAIRConfig, sites: Collection[str], probs: Tensor | None = None):
    """:class:`PresenceWeights` over ``sites`` if ``config.mask_absent``, else a handler that does nothing."""
    return PresenceWeights(sites, probs) if config.mask_absent else contextlib.nullcontext()


@cached_constant
def _head_order(device) -> tuple[Tensor, Tensor]:
    """The lateral MLP's outputs ``(where_loc 4, where_scale 4, depth_loc, depth_scale, pres_logit)``
    as ``(locs 5, raw scales 5, presence logit)``: the permutation and its inverse."""
    order = torch.tensor([0, 1, 2, 3, 8, 4, 5, 6, 7, 9, 10], device=device)
    return order, torch.argsort(order)


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))
