"""GMAIR: SPAIR with a categorical ``z_cat`` and a Gaussian-mixture prior on ``z_what``.

Zhu et al., *GMAIR: Unsupervised Object Detection Based on Spatial Attention and Gaussian Mixture*
(2021).

Generative story (§2.1, Table 1). As SPAIR (:mod:`ppl_scenes.models.spair`), an ``H x W`` grid of cells
each holding at most one object, ``z_i = (z_pres, z_where, z_depth, z_cat, z_what)``:

* ``z_pres ~ Bernoulli(p)`` per cell, ``p`` annealed from near 1 down to 6e-6 early in training;
* ``z_where ~ N(0, 1)``, ``z_depth ~ N(0, 1)`` -- the box and relative depth, exactly as SPAIR's;
* ``z_cat ~ Cat(1/C, ..., 1/C)`` -- a one-hot cluster over ``C`` categories (``C = 10``);
* ``z_what | z_cat ~ N(mu(z_cat), sigma(z_cat))`` with ``mu`` and ``log sigma`` learnable linear maps
  of the one-hot (the "what priors" module,
  :meth:`~ppl_scenes.distributions.GaussianMixtureWhatPrior.conditional`): marginally a Gaussian mixture.

Glimpses decoded from ``z_what`` are placed and composited by SPAIR's renderer.

Guide (§2.2, eq. 3). SPAIR's backbone with its presence/where/depth heads -- mean-field over cells by
default, as GMAIR's convolutional heads are (``lateral=False``) -- then a spatial transformer takes a
glimpse per cell; a cat-encoder gives ``q(z_cat | glimpse)``, sampled as a Gumbel-softmax relaxed
one-hot (:class:`~ppl_scenes.distributions.ConcreteCategorical`, temperature ``cat_temperature``), and
a what-encoder gives ``q(z_what | glimpse, z_cat)`` from the glimpse concatenated with ``z_cat``.

Loss (§2.3, eqs. 5-11). ``L = sum_x lambda_x L_x`` over recon, overlap, pres, where, depth, cat, what.
In Pyro every term is a site, and the coefficients are applied by composition: :meth:`GMAIR.model` and
:meth:`GMAIR.guide` run SPAIR's unweighted model and guide inside :class:`TermWeights`, which multiplies
the log-density of each site by its coefficient (``<term>_weight`` in :class:`GMAIRConfig`) in model and
guide alike, so a latent site contributes ``lambda (log p - log q)``, a single-sample estimate of
``-lambda KL``. Eqs. 7-10 weight each cell's where/depth/cat/what KL by ``q(z_pres = 1 | x)``: the guide
weighs those four sites by its presence probability ``sigmoid(pres_logits)``
(:class:`~ppl_scenes.models.spair.PresenceWeights` given ``probs``), and :meth:`GMAIR.guide` hands the
same tensor to the model, which weighs its four sites by it -- so a cell's contribution is exactly
``q_i (log p - log q)`` for each, and a cell with ``q(z_pres = 1) = 0`` contributes nothing. (Run on its
own -- sampling the prior -- or after a swapped-in guide, the model weighs by the ``z_pres`` value
instead, i.e. absent objects cost nothing.) ``L_pres`` is the
Bernoulli KL estimated with the relaxed sample scored by the Bernoulli log-mass, as in SPAIR. ``L_cat``
is eq. 9's categorical KL exactly: the guide scores ``z_cat`` by the expected log-mass
``sum_k pi_k log pi_k`` and the uniform prior's log-mass is ``-log C`` at any relaxed one-hot
(``cat_kl="exact"``; ``"sample"`` scores the log-mass at the relaxed sample instead, a biased estimate).
``L_what`` takes its expectation over ``z_cat`` at the relaxed sample, as the paper does; with
``cat_expectation="exact"`` (a what-encoder blind to ``z_cat``) the guide hands the probabilities
``pi`` as ``z_cat``'s value and the model scores ``sum_k pi_k log N(z_what; mu_k, sigma_k)``, so the
expectation is summed over the ``C`` categories instead.

The overlap loss renders each object's decoded glimpse (appearance x opacity x presence) on its own
patch and, per pixel, takes the sum minus the maximum over objects
(:func:`~ppl_scenes.ops.patch_overlap`); :meth:`GMAIR.model` adds it after SPAIR's story as
``pyro.factor("overlap", -lambda_overlap * O)`` (:meth:`GMAIR.overlap_loss`) with ``lambda_overlap``
annealed from 2 to 0 early in training. ``O`` is summed over pixels (and averaged over the batch as the
ELBO is): the reconstruction term is a sum over pixels too, and a per-pixel mean with a coefficient of 2
would weigh about a thousandth of it.

Evaluation (Appendix B.3): ``parse`` uses the guide's modes (``argmax`` for ``z_cat``), tightens each box
to its decoded glimpse's drawn area and reports the cluster of every object in ``labels``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pyro
import torch
import torch.nn.functional as F
from pyro.poutine.messenger import Messenger
from torch import Tensor

from ppl_scenes.checks import check_choice
from ppl_scenes.distributions import (
    ConcreteCategorical,
    GaussianMixtureWhatPrior,
    OneHotCategoricalPrior,
)
from ppl_scenes.models.base import Categorised, plate
from ppl_scenes.models.preset import Preset
from ppl_scenes.models.spair import OBJECT_SITES, SPAIR, CellLatents, SPAIRConfig, SPAIRGuide, presence_mask
from ppl_scenes.nn import GlimpseEncoder, mlp
from ppl_scenes.ops import clip, multiply, patch_overlap
from ppl_scenes.ops.schedules import linear_schedule
from ppl_scenes.scene import SceneParse

#: GMAIR's object-level sites, weighted per cell by ``q(z_pres = 1 | x)`` (eqs. 7-10).
GMAIR_OBJECT_SITES = (*OBJECT_SITES, "z_cat")


@dataclass
class GMAIRConfig(SPAIRConfig):
    """GMAIR's settings (defaults: MultiMNIST at CPU scale, 64x64 with 20-pixel digits).

    Every :class:`~ppl_scenes.models.SPAIRConfig` field applies; the defaults that differ follow GMAIR's
    Table 7 (Bernoulli presence prior annealed to 6e-6, mean-field heads, tight boxes at evaluation)
    scaled to the CPU setting. GMAIR's own fields:

    Attributes:
        num_clusters: ``C``, the categories of ``z_cat``.
        cat_temperature: Gumbel-softmax temperature of ``q(z_cat)``.
        cat_kl: how the guide scores ``z_cat``. ``"exact"`` (default): the expected log-mass, so the
            site's ``log q - log p`` is eq. 9's KL against the uniform prior exactly
            (:class:`~ppl_scenes.distributions.ConcreteCategorical`'s ``expected_log_mass``).
            ``"sample"``: the categorical log-mass at the relaxed sample, a single-sample estimate of
            the KL, biased at a finite temperature (tests/distributions/test_categorical.py); the
            default until BENCHMARKS.md (GMAIR) measured it clustering more slowly on the way (the
            curves meet later). Either way the relaxed sample still
            feeds ``p(z_what | z_cat)``.
        cat_expectation: how eq. 10 takes its expectation over ``q(z_cat)``. ``"sample"`` (default, the
            paper's): at the relaxed one-hot sample, where ``mu`` and ``sigma`` interpolate between
            components. ``"exact"``: summed over the ``C`` categories, ``sum_k pi_k log N(z_what; mu_k,
            sigma_k)`` (:meth:`~ppl_scenes.distributions.GaussianMixtureWhatPrior.expected`) -- the
            guide hands ``pi`` itself as ``z_cat``'s value. Needs ``what_sees_cat=False`` (else the
            code would depend on the category) and ``cat_kl="exact"``. Then ``q(z_cat)``'s best answer
            is each component's responsibility for the code, as in an EM step. BENCHMARKS.md (GMAIR,
            "Eq. 10's expectation over z_cat summed exactly") compares the two on the same run.
        what_sees_cat: the what-encoder takes ``z_cat`` with the glimpse (the paper's eq. 3,
            ``q(z_what | x, z_where, z_cat)``); False gives ``q(z_what | x, z_where)``, so that
            ``q(z_cat)`` can only lower the what-KL by choosing the component nearest to the code.
        what_prior_init_scale: initial standard deviation of every mixture component.
        what_prior_init_spread: spread of the components' initial means around 0. Small, as GMAIR's
            linear "what priors" layers start (PyTorch's default initialisation): components that
            start far apart leave the nearest one to take every object for good.
        recon_weight / pres_weight / where_weight / depth_weight / cat_weight / what_weight: the loss
            coefficients of eq. 11. Table 7 weighs the reconstruction 8; with this package's Bernoulli
            log-likelihood summed over pixels that makes a second object cheaper than drawing one
            digit well, and GMAIR cut digits in two (64x64 MultiMNIST, 8 minutes: AP@0.5 0.53 and
            count accuracy 0.00 at 3,800 steps, against 0.89 and 0.85 at 2,200 steps with 1), so the
            default is 1 (the plain ELBO); the others are 1 as in Table 7.
        overlap_start / overlap_anneal_steps: the overlap-loss coefficient, linear from
            ``overlap_start`` to 0 over the first steps (0 steps: no overlap loss).
    """

    cell_size: tuple[int, int] = (16, 16)
    anchor: tuple[float, float] = (24.0, 24.0)
    object_size: tuple[int, int] = (20, 20)
    glimpse_size: tuple[int, int] = (16, 16)
    lateral: bool = False
    lateral_what: bool = False
    pres_prior: str = "bernoulli"
    pres_prob_start: float = 0.99
    pres_prob_end: float = 6e-6
    pres_anneal_steps: int = 2000
    tight_boxes: bool = True
    num_clusters: int = 10
    cat_temperature: float = 0.5
    cat_kl: str = "exact"
    cat_expectation: str = "sample"
    what_sees_cat: bool = True
    what_prior_init_scale: float = 1.0
    what_prior_init_spread: float = 0.3
    recon_weight: float = 1.0
    pres_weight: float = 1.0
    where_weight: float = 1.0
    depth_weight: float = 1.0
    cat_weight: float = 1.0
    what_weight: float = 1.0
    overlap_start: float = 2.0
    overlap_anneal_steps: int = 2000

    def __post_init__(self):
        super().__post_init__()
        check_choice(self.cat_kl, ("sample", "exact"), "cat_kl")
        check_choice(self.cat_expectation, ("sample", "exact"), "cat_expectation")
        if self.cat_expectation == "exact" and (self.what_sees_cat or self.cat_kl != "exact"):
            raise ValueError('cat_expectation="exact" needs what_sees_cat=False and cat_kl="exact"')
        if self.num_clusters < 1:
            raise ValueError(f"num_clusters must be at least 1, got {self.num_clusters}")
        if self.cat_temperature <= 0 or self.what_prior_init_scale <= 0 or self.what_prior_init_spread < 0:
            raise ValueError("cat_temperature and what_prior_init_scale must be positive, the spread >= 0")
        for term in ("recon", "pres", "where", "depth", "cat", "what"):
            if getattr(self, f"{term}_weight") < 0:
                raise ValueError(f"{term}_weight must be non-negative")
        if self.overlap_start < 0 or self.overlap_anneal_steps < 0:
            raise ValueError("overlap_start and overlap_anneal_steps must be non-negative")


@dataclass
class GMAIRLatents(CellLatents):
    """SPAIR's per-cell latents plus ``z_cat`` ``[B, N, C]`` and its logits."""

    cat: Tensor
    cat_logits: Tensor


class GMAIRGuide(SPAIRGuide):
    """GMAIR's guide: SPAIR's heads, then a cat-encoder and a what-encoder conditioned on ``z_cat``.

    Registers ``z_pres``, ``z_cat``, ``z_where``, ``z_depth`` and ``z_what``, unweighted (:meth:`GMAIR.guide`
    applies eq. 11's coefficients and the presence weights; see the module docstring).

    Args:
        config: the model's :class:`GMAIRConfig`.
    """

    latents_class = GMAIRLatents

    def __init__(self, config: GMAIRConfig):
        super().__init__(config)
        c = config
        glimpse_pixels = c.channels * c.glimpse_size[0] * c.glimpse_size[1]
        self.cat_encoder = mlp([glimpse_pixels, c.hidden_dim, c.hidden_dim, c.num_clusters])
        condition = c.num_clusters if c.what_sees_cat else 0
        self.what_encoder = GlimpseEncoder(
            c.channels, c.glimpse_size, c.what_dim, c.hidden_dim, condition_dim=condition
        )

    def draw_noise(self, b: int, n: int, like: Tensor) -> dict[str, Tensor]:
        noise = super().draw_noise(b, n, like)
        noise["cat"] = torch.rand(b, n, self.config.num_clusters, device=like.device)
        return noise

    def encode_what(self, x, where, cells, grid, noise) -> dict[str, Tensor]:
        """``q(z_cat | glimpse)``, then ``q(z_what | glimpse, z_cat)`` (eq. 3): parameters and samples."""
        c = self.config
        glimpses = self.glimpses(x, where, cells, grid)
        cat_logits = self.cat_encoder(glimpses.flatten(-3))
        if noise is None:
            cat = F.one_hot(cat_logits.argmax(-1), c.num_clusters).to(x.dtype)
        elif c.cat_expectation == "exact":
            cat = torch.softmax(cat_logits, -1)
        else:
            cat = ConcreteCategorical(cat_logits, c.cat_temperature).relax(noise["cat"])
        what_loc, what_scale = self.what_encoder(glimpses, cat if c.what_sees_cat else None)
        what = what_loc if noise is None else what_loc + what_scale * noise["what"]
        return dict(what=what, what_loc=what_loc, what_scale=what_scale, cat=cat, cat_logits=cat_logits)

    def object_sites(self, lat: GMAIRLatents) -> dict[str, tuple[ConcreteCategorical, Tensor]]:
        """``z_cat`` (the relaxed one-hot, scored as ``cat_kl`` says), then SPAIR's where/depth/what."""
        c = self.config
        q_cat = ConcreteCategorical(lat.cat_logits, c.cat_temperature, expected_log_mass=c.cat_kl == "exact")
        return {"z_cat": (q_cat, lat.cat), **super().object_sites(lat)}


class GMAIR(SPAIR, Categorised):
    """GMAIR as a Pyro model/guide pair (see the module docstring for the story and the loss).

    Args:
        config: :class:`GMAIRConfig` (defaults: 64x64 MultiMNIST with 1-5 digits, 16-pixel cells,
            ``C = 10`` clusters, ``A = 50``).
        what_priors: the "what priors" module giving ``p(z_what | z_cat)`` (default a learnable
            :class:`~ppl_scenes.distributions.GaussianMixtureWhatPrior` with ``C`` components).
        guide: optional module or callable ``guide(x)`` replacing :class:`GMAIRGuide`.
        pres_prior: as :class:`~ppl_scenes.models.SPAIR`'s (default: independent Bernoullis).
        **overrides: config fields.
    """

    name = "gmair"
    config_class = GMAIRConfig
    default_dataset = "multimnist"
    default_data_kwargs = {"canvas_size": 64, "digit_size": 20, "num_digits": [1, 5]}
    default_train = {"batch_size": 32, "lr": 1e-3, "steps": 5000}
    presets = {
        "multimnist-64": Preset(
            "multimnist-64",
            "64x64 scenes of 1-5 digits: z_what unseen by z_cat, eq. 10 summed over the categories; "
            "160,000 steps (about 6 CPU hours)",
            (
                "what_sees_cat=false",
                "what_dim=16",
                "cat_kl=exact",
                "cat_expectation=exact",
                "train.steps=160000",
                "train.lr_decay_from=0.8",
                "train.lr_decay_to=0.1",
                "train.eval_every=2500",
            ),
            dataset="multimnist",
        ),
    }
    guide_class = GMAIRGuide

    def __init__(
        self,
        config: GMAIRConfig | None = None,
        what_priors: GaussianMixtureWhatPrior | None = None,
        guide: Callable | None = None,
        pres_prior: Callable | str | None = None,
        **overrides,
    ):
        super().__init__(config, pres_prior=pres_prior, guide=guide, **overrides)
        c = self.config
        if what_priors is None:
            what_priors = GaussianMixtureWhatPrior(
                c.num_clusters, c.what_dim, c.what_prior_init_scale, c.what_prior_init_spread
            )
        self.what_priors = what_priors
        if (self.what_priors.num_components, self.what_priors.dim) != (c.num_clusters, c.what_dim):
            raise ValueError("what_priors must have num_clusters components of dimension what_dim")
        # with overlap_anneal_steps = 0 the schedule is 0 from the start: no overlap loss
        self.overlap_schedule = linear_schedule(c.overlap_start, 0.0, c.overlap_anneal_steps)
        self.overlap_coef = float(self.overlap_schedule(0))
        self._guide_presence: Tensor | None = None

    @property
    def num_categories(self) -> int:
        """``config.num_clusters``: the objects' clusters are their categories."""
        return int(self.config.num_clusters)

    def set_step(self, step: int) -> dict[str, float]:
        values = super().set_step(step)
        self.overlap_coef = float(self.overlap_schedule(step))
        return {**values, "overlap_coef": self.overlap_coef}

    # -- priors ----------------------------------------------------------------------------------
    def what_prior(self, batch_shape: tuple[int, ...]):
        """The marginal of ``z_what``: the Gaussian mixture (``z_cat`` summed out)."""
        return self.what_priors(batch_shape)

    def sample_what(self, shape: tuple[int, int]) -> Tensor:
        """``z_cat ~ Cat(1/C)``, then ``z_what ~ N(mu(z_cat), sigma(z_cat))`` for every cell."""
        c = self.config
        z_cat = pyro.sample("z_cat", OneHotCategoricalPrior.uniform(c.num_clusters, shape, self.device))
        expected = c.cat_expectation == "exact"
        prior = self.what_priors.expected(z_cat) if expected else self.what_priors.conditional(z_cat)
        return pyro.sample("z_what", prior)

    # -- model: SPAIR's story under eq. 11 -------------------------------------------------------
    def model(
        self, x: Tensor | None = None, batch_size: int = 1, image_size: tuple[int, int] | None = None
    ) -> Tensor:
        """``p(x, z)`` with eq. 11's coefficients and the overlap loss.

        SPAIR's story (:meth:`~SPAIR.generate`, with GMAIR's :meth:`sample_what`) runs inside
        :class:`TermWeights`, its object-level sites weighted by the ``q(z_pres = 1 | x)`` that
        :meth:`guide` handed over in the same ELBO step (else by ``z_pres``); then :meth:`overlap_loss`.

        Returns:
            the rendered canvas ``[B, C, H, W]``.
        """
        c = self.config
        probs, self._guide_presence = self._guide_presence, None
        with TermWeights(term_weights(c)), presence_mask(c, GMAIR_OBJECT_SITES, probs):
            canvas, (drawn, origins) = self.generate(x, batch_size, image_size)
        self.overlap_loss(drawn, origins, tuple(canvas.shape[-2:]))
        return canvas

    def overlap_loss(self, drawn: Tensor, origins: Tensor, image_size: tuple[int, int]) -> None:
        """The overlap loss (§2.3) as ``pyro.factor("overlap", ...)`` while its coefficient is positive.

        Args:
            drawn: each cell's object drawn on its patch ``[B, N, C + 1, P_h, P_w]`` and origins the
                patches' ``[B, N, 2]`` (:meth:`~SPAIR.render_patches`); image_size: ``(H, W)``.
        """
        if self.overlap_coef <= 0:
            return
        c = self.config
        # one split, not two slices: a slice's backward zero-fills the whole patch tensor
        appearance, alpha = drawn.split((c.channels, drawn.shape[2] - c.channels), 2)
        excess = patch_overlap(appearance * alpha, origins, tuple(image_size))
        # per image, like the data plate (which SPAIR's story has closed, so a plate of its own)
        with plate("overlap_images", drawn.shape[0], dim=-2, device=drawn.device):
            pyro.factor("overlap", -self.overlap_coef * excess.flatten(1).sum(-1, keepdim=True))

    # -- guide and parse -----------------------------------------------------------------------
    def guide(self, x: Tensor):
        """``q(z | x)`` weighted as eq. 11, its object-level sites by ``q(z_pres = 1 | x)`` (eqs. 7-10).

        The guide module's latents are sampled first, so that their presence probabilities weigh
        their own sites, and kept for :meth:`model`. A swapped-in guide callable is weighted by its
        ``z_pres`` value instead (as the model then is).
        """
        self.check_input(x)
        c = self.config
        if not isinstance(self.encoder, SPAIRGuide):
            self._guide_presence = None
            with TermWeights(term_weights(c)), presence_mask(c, GMAIR_OBJECT_SITES):
                return self.encoder(x)
        lat = self.encoder.sample_latents(x)
        self._guide_presence = presence_weight(lat)
        with TermWeights(term_weights(c)), presence_mask(c, GMAIR_OBJECT_SITES, self._guide_presence):
            self.encoder.sample_sites(lat)
        return lat

    def parse(self, x: Tensor, score_threshold: float | None = None) -> SceneParse:
        """SPAIR's parse (see :meth:`SPAIR.parse`), each object labelled by the mode of ``q(z_cat)``.

        A swapped-in guide without categories gives no labels.
        """
        self.check_input(x)
        with self.evaluating():
            lat = self.posterior_modes(x)
            labels = lat.cat_logits.argmax(-1) if isinstance(lat, GMAIRLatents) else None
            return self.parse_latents(lat, tuple(x.shape[-2:]), score_threshold, labels)

    def modes_from_trace(self, trace) -> CellLatents:
        modes = super().modes_from_trace(trace)
        if "z_cat" not in trace.nodes:
            return modes
        cat = trace.nodes["z_cat"]["value"]
        fields = {k: getattr(modes, k) for k in CellLatents.__dataclass_fields__}
        return GMAIRLatents(**fields, cat=cat, cat_logits=torch.log(cat.clamp(min=1e-6)))

    def compose_what(self, z_cat: Tensor, z_local: Tensor | None = None) -> Tensor:
        """``z_what = mu(z_cat) + sigma(z_cat) * z_local`` (GMAIR Fig. 3's ``z_avg`` plus local style).

        Args:
            z_cat: ``[..., C]`` one-hot (or relaxed) categories.
            z_local: ``[..., A]`` standard-Normal offsets (default zeros: each category's average object).
        """
        prior = self.what_priors.conditional(z_cat.to(self.device))
        loc, scale = prior.base_dist.loc, prior.base_dist.scale
        return loc if z_local is None else loc + scale * z_local.to(self.device)

    def local_codes(self, z_what: Tensor, z_cat: Tensor) -> Tensor:
        """The style of codes within their categories: ``(z_what - mu(z_cat)) / sigma(z_cat)``.

        With :meth:`compose_what` this edits scenes (GMAIR Fig. 4): a new category with the same
        local code keeps an object's style, a new local code with the same category keeps its class.
        """
        prior = self.what_priors.conditional(z_cat.to(self.device))
        return (z_what.to(self.device) - prior.base_dist.loc) / prior.base_dist.scale

    @torch.no_grad()
    def generate_objects(self, z_cat: Tensor, z_local: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Decode objects from categories and local variation (GMAIR Fig. 3), see :meth:`compose_what`.

        Returns:
            appearance ``[..., channels, h, w]`` and opacity ``[..., 1, h, w]`` glimpses.
        """
        return self.object_decoder(self.compose_what(z_cat, z_local))


class TermWeights(Messenger):
    """Eq. 11's coefficients by composition: multiplies the log-density of each named site.

    Around a model and, alike, its guide, ``TermWeights({"x": 8.0, "z_cat": 3.0})`` multiplies the
    ``scale`` of site ``x`` by 8 and of ``z_cat`` by 3 (a latent site then contributes
    ``3 (log p - log q)``); sites it does not name keep theirs. It composes with other scaling handlers
    (e.g. :class:`~ppl_scenes.models.spair.PresenceWeights`) by multiplication.

    Args:
        weights: site name -> coefficient (see :func:`term_weights`).
    """

    def __init__(self, weights: Mapping[str, float]):
        super().__init__()
        self.weights = dict(weights)

    def _process_message(self, msg) -> None:
        weight = self.weights.get(msg["name"]) if msg["type"] == "sample" else None
        if weight is not None:
            msg["scale"] = multiply(weight, msg["scale"])


def term_weights(config: GMAIRConfig) -> dict[str, float]:
    """Eq. 11's coefficients by site name (the ``x`` site is ``L_recon``'s).

    The overlap loss is not here: it carries its own annealed coefficient.
    """
    c = config
    return {
        "x": c.recon_weight,
        "z_pres": c.pres_weight,
        "z_where": c.where_weight,
        "z_depth": c.depth_weight,
        "z_cat": c.cat_weight,
        "z_what": c.what_weight,
    }


def presence_weight(lat: CellLatents) -> Tensor:
    """``q(z_pres = 1)`` of every cell, the weight of its object-level KL terms (eqs. 7-10).

    Clamped away from 0 only because Pyro requires positive scales.
    """
    return clip(torch.sigmoid(lat.pres_logits), min=1e-6)
