"""Variational saccading: a VRNN that chooses glimpses of a large image from a small proxy.

Ramapuram et al., "Variational Saccading: Efficient Inference for Large Resolution Images" (BMVC 2019).
The image ``X`` may be far too large to process whole. A small *proxy* (by default ``X`` downsampled;
any other tensor, e.g. another modality, can be passed) decides where to look; only the ``T`` glimpses
cut from ``X`` at those places are processed at full resolution, and they are classified.

Generative story, per image, with an RNN state ``h_0 = 0`` (a VRNN, Chung et al. 2015; §3 and
Appendix 7.6)::

    for t = 0 .. T-1:
        z_t ~ N(mu_prior(h_t), sigma_prior(h_t))                     learned prior
        proxy ~ N(dec(z_t, h_t), obs_scale)                          the VRNN reconstructs the proxy
        (s_t, x_t, y_t) = where(z_t);  g_t = ST(X; s_t, x_t, y_t)    a glimpse of the full image
        e_t = crop_net(g_t);  h_{t+1} = RNN([e_t, z_t], h_t)
    y ~ Classifier(mean_t e_t, h_T)                                  identification or sum

and the guide is ``q(z_t | proxy, h_t)``, sharing the deterministic RNN. The objective is the paper's
bound (eq. 5): the VRNN ELBO terms (proxy reconstruction and ``KL(q(z_t) || p(z_t | h_t))`` per step)
*plus* the classification log-likelihood. The reference code couples the terms multiplicatively; we
use the additive bound of eq. 5 as written, which is exactly the ELBO of this Pyro model and guide.

Sites: ``z_0 .. z_{T-1}`` (the paper's ``z_t``), ``proxy_0 .. proxy_{T-1}`` (observed proxy) and
``y``; all inside ``pyro.plate("data", B)``, the steps under ``pyro.markov``.

Tasks: ``"identify"`` (which of the classes are present: a multi-hot target, independent Bernoulli
outputs) and ``"sum"`` (the sum of the digits: a categorical over ``0 .. max_sum``). ``parse``
returns the saccades' boxes (in order of ``t``) and the prediction in ``image_labels``.

With ``where_attention=True`` the guide's ``q(z_t | proxy, h_t)`` places each glimpse by attention
over a convolutional map of the proxy (a query from ``h_t`` against the map, plus a learned prior
map per step; its soft-argmax is the mean of the glimpse's position), and ``where(z_t)`` reads the
(scale, x, y) logits from ``z_t[:3]``, as the reference code does.

Glimpses are cut with :func:`ppl_scenes.ops.crop`, or with the localized spatial transformer
:func:`ppl_scenes.ops.crop_localized` (Appendix 7.3; ``localized=True``), which reads only the window
each glimpse touches, so memory does not grow with the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.poutine.util import is_validation_enabled
from torch import Tensor, nn

from ppl_scenes.checks import check_choice, check_int_fields
from ppl_scenes.data.scenes import image_targets
from ppl_scenes.distributions import Normal
from ppl_scenes.metrics.scoring import (
    evaluate_image_labels,
    image_label_correct,
    image_label_metrics,
    parse_dataset,
)
from ppl_scenes.models.base import ImageLevel, SceneModel, SceneParse, Supervised, Variational, plate, scaled
from ppl_scenes.models.preset import Preset
from ppl_scenes.nn import Dense, GRUCell, inverse_positive, mlp, positive, summed_weight_gradients
from ppl_scenes.nn.attention import ProxyAttention, spread_grid
from ppl_scenes.ops.boxes import covered_fraction, cxcywh_to_xyxy
from ppl_scenes.ops.constants import cached_constant, scalar
from ppl_scenes.ops.transformer import crop, crop_localized

TASKS = ("identify", "sum")


def _conv_encoder(channels: int, size: int, width: int, out_dim: int) -> nn.Sequential:
    """Stride-2 convolutions with group norm (the paper's conv layers) down to 4x4, then a dense layer."""
    layers: list[nn.Module] = []
    ch, side = channels, size
    while side > 4:
        layers += [
            nn.Conv2d(ch, width, 4, stride=2, padding=1),
            nn.GroupNorm(min(8, width), width),
            nn.ReLU(),
        ]
        ch, side = width, side // 2
    layers += [nn.Flatten(), Dense(ch * side * side, out_dim), nn.ReLU()]
    return nn.Sequential(*layers)


def initial_where_offsets(config: SaccadeConfig) -> Tensor:
    """``[T, 3]`` starting (scale, x, y) logits of the ``T`` glimpses (``config.spread_glimpses``).

    Spread: the glimpses start on the centres of a ``ceil(sqrt(T))``-square grid, each as wide as a
    grid cell (within the allowed scales), so together they cover the image before anything is
    learnt. Otherwise all start at the centre, at the middle scale.
    """
    t = config.num_saccades
    offsets = torch.zeros(t, 3)
    if not config.spread_glimpses:
        return offsets
    side = math.ceil(math.sqrt(t))
    span = config.max_scale - config.min_scale
    width = (1 / side - config.min_scale) / span if span > 0 else 0.5
    offsets[:, 0] = torch.logit(torch.tensor(width).clamp(0.05, 0.95))
    if config.where_attention:  # the positions come from the attention's prior maps
        return offsets
    offsets[:, 1:] = torch.logit(spread_grid(t))
    return offsets


@dataclass
class SaccadeConfig:
    """Settings of :class:`VariationalSaccading` (CPU-scale defaults).

    Attributes:
        channels: image channels.
        task: ``"identify"`` (multi-hot over ``num_classes``) or ``"sum"`` (categorical over
            ``0 .. max_sum``).
        num_classes: classes of the identification task (10 digits).
        max_sum: largest sum of the sum task (18 for two digits).
        num_saccades: ``T``, glimpses per image (4 in the paper).
        proxy_size: side of the default proxy (``X`` resized by area averaging).
        proxy_noise: sigma of Gaussian noise added to the default proxy (then clipped to [0, 1]), in
            training and evaluation alike; 0 (default) for the clean proxy. The paper's §4.1.1 varies
            it. In evaluation mode the noise comes from a fixed seed, so ``parse`` stays deterministic.
        glimpse_size: side in pixels of a glimpse after resampling.
        min_scale, max_scale: range of a glimpse's side as a fraction of the image's shorter side.
            The default 0.3 is the reference code's largest window (``max_image_percentage``): four
            glimpses cannot tile the image, so they must be placed (at 0.5 the model learnt to read
            four fixed tiles instead, BENCHMARKS.md).
        z_dim: size of ``z_t``; hidden_dim: RNN state; embed_dim: glimpse and proxy embeddings.
        conv_width: channels of the convolutional encoders.
        obs_scale: sigma of the Normal likelihood of the proxy.
        proxy_weight: coefficient of the proxy's log-likelihood in the bound (``poutine.scale`` on
            the ``proxy_t`` sites). 1 is eq. 5 as written; there the proxy's thousand pixels (tens of
            thousands of nats) outweigh the label's few nats and the classifier does not learn at
            all (BENCHMARKS.md: in 200 steps a fixed batch of 32 scenes stays near the constant
            predictor's log-likelihood with weight 1, and is fitted with 0.01 or 0.001; on the full
            data 0.01 still learnt nothing in 4,258 steps while 1e-4 reached 0.567 identification
            accuracy in 6,491). The default 1e-4 trades the VRNN's reconstruction for the task.
        kl_weight: coefficient of the KL terms ``KL(q(z_t) || p(z_t | h_t))`` (``poutine.scale`` on
            the ``z_t`` sites of model and guide alike). 1 is eq. 5 as written. With the proxy's
            reconstruction down-weighted (``proxy_weight``) but the KL at full weight, every nat of
            image information in ``z_t`` costs more than it can earn, the codes fall to the prior and
            the where-head, which reads only ``z_t``, sees the same input for every image: the
            glimpses cannot follow the proxy. Weighting the KL like the reconstruction keeps the
            VRNN's own balance (a beta-VAE view of the down-weighted VRNN bound). Measured with 1e-4
            (BENCHMARKS.md): from scratch the glimpses then move with the image, but the classifier
            learnt nothing in 6,000 steps; from a trained tiling run they stayed on the tiles.
            The default 1e-4 matches ``proxy_weight``: the reference code multiplies the VRNN's loss
            by the label's, which down-weights both VRNN terms alike against the label.
        learn_posterior_scale: the guide learns ``sigma_q``; False fixes it to ``posterior_scale``
            (the paper's §4.1.1 compares both).
        posterior_scale: the fixed ``sigma_q``, and the learned one's initial value.
        localized: cut glimpses with the localized spatial transformer (Appendix 7.3).
        spread_glimpses: with ``where_attention``, each step's prior map starts as a bump on its
            cell of a grid that covers the image
            (:func:`ppl_scenes.nn.attention.initial_attention_maps`), else flat. With the
            where-head, the untrained model's ``T`` glimpses start spread over that grid (a learned
            per-step offset of the where-logits, :func:`initial_where_offsets`) and the where-head
            starts at zero, so they stay there until the task moves them; False starts them all at
            the centre with a random where-head. Centred glimpses of 20-50 % of the side rarely see
            a digit of a cluttered scene, and glimpses that jump with the posterior's noise give the
            classifier nothing steady to learn from: with both, not even a fixed batch of 32 scenes
            was fitted in 200 steps (BENCHMARKS.md).
        where_init_scale: with ``spread_glimpses``, the standard deviation of the where-head's
            starting weights. 0 starts them at zero; then ``z_t`` gets no gradient through the
            glimpses' positions and the glimpses tend to stay on the starting grid (an 80-minute run
            read four fixed tiles, BENCHMARKS.md); a small value lets the positions follow the codes
            from the first step.
        where_attention: the guide places each glimpse by attention over a map of the proxy
            (:class:`ppl_scenes.nn.attention.ProxyAttention`): a convolutional map of the proxy is
            scored against a query from ``h_t``, plus a learned per-step prior map, minus the
            inhibition of return; the soft-argmax of the scores is the posterior mean of the
            glimpse's position. Then ``z_t[:3]`` are the glimpse's (scale, x, y) logits themselves,
            as in the reference code, and there is no where-head. The convolutional map is
            translation-equivariant: what the label teaches about a digit's blob at one place holds
            at every place, which a dense where-head on a pooled code must learn place by place
            (and, in BENCHMARKS.md, did not: four fixed tiles). False: ``where_head(z_t)``.
        attention_saliency: with ``where_attention``, the starting weight of the proxy's local
            brightness (its mean over 3x3 places of the attention map) in the attention scores; a
            learned weight. A positive start sends the untrained glimpses to the brightest blobs of the
            proxy (digits more than clutter), so the classifier sees digits from the first step;
            learnt from the label alone, the attention first fled to blank corners, where an untrained
            classifier's answer varies least (BENCHMARKS.md). 0 leaves brightness out.
        inhibition_of_return: with ``where_attention``, the starting strength of a learned penalty
            on the places already looked at: step ``t``'s scores lose this much times a Gaussian
            bump (sigma ``max_scale / 2`` of the side) on each earlier glimpse's centre, so the
            ``T`` steps visit different blobs. 0 turns it off.
        pooling: how the classifier pools the ``T`` glimpse embeddings: ``"mean"`` (default) or
            ``"max"`` (element-wise). The max does not change when a glimpse revisits a digit already
            seen, so the pooled code holds the set of what was seen, not how often: two glimpses of a
            "3" and two of a "5" pool like three of the "3" and one of the "5".
        attention_lr_factor: with ``where_attention``, the attention modules learn at this fraction
            of the base learning rate (:meth:`VariationalSaccading.learning_rate_factors`). Until the
            classifier can read digits, the label's gradient on the glimpses' positions only says
            "show less": at the full rate it drove the glimpses off the digits within 1,500 steps,
            while at 1/100 they stayed on them (BENCHMARKS.md).
    """

    channels: int = 1
    task: str = "identify"
    num_classes: int = 10
    max_sum: int = 18
    num_saccades: int = 4
    proxy_size: int = 32
    proxy_noise: float = 0.0
    glimpse_size: int = 32
    min_scale: float = 0.2
    max_scale: float = 0.3
    z_dim: int = 32
    hidden_dim: int = 256
    embed_dim: int = 128
    conv_width: int = 32
    obs_scale: float = 0.1
    proxy_weight: float = 0.0001
    kl_weight: float = 0.0001
    learn_posterior_scale: bool = True
    posterior_scale: float = 0.5
    localized: bool = False
    spread_glimpses: bool = True
    where_init_scale: float = 0.0
    where_attention: bool = True
    attention_saliency: float = 120.0
    inhibition_of_return: float = 30.0
    attention_lr_factor: float = 0.01
    pooling: str = "mean"

    def __post_init__(self):
        check_choice(self.channels, (1, 3), "channels")
        check_choice(self.task, TASKS, "task")
        check_choice(self.pooling, ("mean", "max"), "pooling")
        names = ("num_classes", "max_sum", "num_saccades", "proxy_size", "glimpse_size", "z_dim")
        check_int_fields(self, (*names, "hidden_dim", "embed_dim", "conv_width"))
        for name in ("proxy_size", "glimpse_size"):
            if getattr(self, name) < 4:
                raise ValueError(f"{name} must be at least 4, got {getattr(self, name)}")
        if not 0 < self.min_scale <= self.max_scale <= 1:
            raise ValueError(
                f"need 0 < min_scale <= max_scale <= 1, got {self.min_scale} and {self.max_scale}"
            )
        for name in ("obs_scale", "posterior_scale", "proxy_weight", "kl_weight", "attention_lr_factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("where_init_scale", "proxy_noise", "attention_saliency", "inhibition_of_return"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        if self.where_attention and self.z_dim < 3:
            raise ValueError(
                f"where_attention reads (scale, x, y) from z_t[:3]: z_dim must be >= 3, got {self.z_dim}"
            )

    @property
    def num_outputs(self) -> int:
        """Size of the classifier's output: ``num_classes`` or ``max_sum + 1``."""
        return self.num_classes if self.task == "identify" else self.max_sum + 1


def predicted_labels(task: str, logits: Tensor) -> Tensor:
    """The prediction from classifier logits: a 0/1 multi-hot (probability above 0.5) or the sum."""
    return (logits > 0).long() if task == "identify" else logits.argmax(-1)


class ImageLabelModel(SceneModel, Supervised, ImageLevel):
    """A scene model that predicts image-level labels (``config.task``: ``"identify"`` or ``"sum"``).

    It learns from each scene's labels (:meth:`supervision`, read by the trainer) and is scored by the
    accuracy of ``parse(x).image_labels`` (:meth:`evaluate`). The saccade model and the ResNet-18
    baselines are such models.
    """

    def supervision(self, targets: list[dict[str, Any]]) -> dict[str, Tensor]:
        """The labels ``y`` of each training scene (see :func:`image_targets`)."""
        return {"y": image_targets(self.config.task, targets)}

    def evaluate(
        self,
        dataset,
        batch_size: int = 64,
        max_scenes: int | None = None,
        progress: bool = False,
        intervals: int = 0,
    ):
        """Accuracy of the prediction; see :func:`ppl_scenes.metrics.scoring.evaluate_image_labels`."""
        return evaluate_image_labels(
            self, dataset, self.config.task, batch_size, max_scenes, progress, intervals
        )


class VariationalSaccading(ImageLabelModel, Variational):
    """The variational saccading model (Ramapuram et al., BMVC 2019); see the module docstring.

    ``model(x, y=None, proxy=None)`` and ``guide(x, y=None, proxy=None)``: ``x`` the full images
    ``[B, C, H, W]``, ``y`` the targets (multi-hot ``[B, num_classes]`` for ``"identify"``, integer
    sums ``[B]`` for ``"sum"``), ``proxy`` the small images the saccades are planned on (default:
    ``x`` resized to ``proxy_size``; another tensor of that shape may stand in, e.g. a noisy proxy or
    another modality).

    Args:
        config: a :class:`SaccadeConfig` (defaults when None).
        **overrides: individual config fields.
    """

    name: ClassVar[str] = "saccade"
    config_class: ClassVar[type] = SaccadeConfig
    default_dataset: ClassVar[str] = "cluttered"
    default_train: ClassVar[dict[str, Any]] = {"steps": 5000, "batch_size": 32, "lr": 1e-3}
    #: Per saccade: glimpse and recurrent step, prior, posterior and proxy decoder; the classifier
    #: (``TrainConfig.compile``).
    compiled_methods = ("advance", "prior", "posterior", "decode_proxy", "classify")
    presets: ClassVar[dict[str, Preset]] = {
        "cluttered-100": Preset(
            "cluttered-100",
            "identify the digits of 100x100 cluttered MNIST: glimpses up to 35 % of the side, fresh "
            "scenes, a decaying rate; 45,000 steps (about 105 CPU minutes)",
            (
                "task=identify",
                "max_scale=0.35",
                "train.steps=45000",
                "train.lr_decay_from=0.6",
                "train.lr_decay_to=0.1",
                "train.eval_every=500",
                "data.canvas_size=100",
            ),
            dataset="cluttered",
            num_train=2_000_000,
        ),
    }
    #: What ``model`` returns, as :func:`ppl_scenes.infer.posterior.sample_posterior` names it.
    return_name: ClassVar[str] = "logits"
    #: The last guide pass's glimpse chain, which the model pass that follows it reuses.
    _guide_chain: _GuideChain | None = None

    def __init__(self, config: SaccadeConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        c = self.config
        self.proxy_encoder = _conv_encoder(c.channels, c.proxy_size, c.conv_width, c.embed_dim)
        self.glimpse_encoder = _conv_encoder(c.channels, c.glimpse_size, c.conv_width, c.embed_dim)
        self.rnn = GRUCell(c.embed_dim + c.z_dim, c.hidden_dim)
        self.prior_net = mlp([c.hidden_dim, c.hidden_dim, 2 * c.z_dim])
        self.posterior_net = mlp([c.embed_dim + c.hidden_dim, c.hidden_dim, 2 * c.z_dim])
        self.proxy_decoder = mlp([c.z_dim + c.hidden_dim, c.hidden_dim, c.channels * c.proxy_size**2])
        self.where_head = None if c.where_attention else Dense(c.z_dim, 3)
        #: A learned offset of each step's (scale, x, y) logits, added to ``where_head(z_t)`` (or to
        #: ``z_t[:3]`` with ``where_attention``).
        self.where_offset = nn.Parameter(initial_where_offsets(c))
        self.classifier = mlp([c.embed_dim + c.hidden_dim, c.hidden_dim, c.num_outputs])
        if c.where_attention:
            #: Places the glimpses (``where_attention``); its own parameters, at its own rate.
            self.attention = ProxyAttention(
                c.channels,
                c.conv_width,
                c.hidden_dim,
                c.num_saccades,
                c.proxy_size,
                spread=c.spread_glimpses,
                saliency=c.attention_saliency,
                inhibition=c.inhibition_of_return,
                inhibition_sigma=c.max_scale / 2,
            )
        with torch.no_grad():
            self.posterior_net[-1].bias[c.z_dim :].fill_(inverse_positive(c.posterior_scale))
            if c.where_attention:  # the glimpses start at the offset's scale
                self.posterior_net[-1].weight[:1].zero_()
                self.posterior_net[-1].bias[:1].zero_()
            else:
                self.where_head.bias.zero_()  # the glimpses start where ``where_offset`` puts them
            if c.spread_glimpses and not c.where_attention:
                # ... and stay near there: glimpses that jump with the posterior's noise left the
                # classifier nothing steady to fit. ``where_init_scale`` > 0 lets them move a little
                # with ``z_t`` from the start, so the codes receive a gradient through the positions.
                self.where_head.weight.normal_(0.0, c.where_init_scale)

    def learning_rate_factors(self) -> dict[str, float]:
        """With ``where_attention``: the attention modules at ``config.attention_lr_factor``."""
        if not self.config.where_attention:
            return {}
        return {"attention": self.config.attention_lr_factor}

    # -- pieces shared by model, guide and parse ---------------------------------------------------
    def min_image_size(self) -> tuple[int, int]:
        return (4, 4)

    def make_proxy(self, x: Tensor) -> Tensor:
        """The default proxy: ``x`` resized to ``proxy_size x proxy_size`` by area averaging.

        With ``config.proxy_noise`` > 0, Gaussian noise of that sigma is added and the result clipped to
        [0, 1]; fresh noise in training mode, noise from a fixed seed in evaluation mode.
        """
        c = self.config
        proxy = F.adaptive_avg_pool2d(x, (c.proxy_size, c.proxy_size))
        if c.proxy_noise == 0:
            return proxy
        generator = None
        if not self.training:
            generator = torch.Generator(device=proxy.device).manual_seed(0)
        noise = torch.randn(proxy.shape, generator=generator, device=proxy.device, dtype=proxy.dtype)
        return (proxy + c.proxy_noise * noise).clamp(0.0, 1.0)

    def _inputs(self, x: Tensor, proxy: Tensor | None) -> tuple[Tensor, Tensor]:
        x = self.check_input(x)
        c = self.config
        if proxy is None:
            return x, self.make_proxy(x)
        shape = (x.shape[0], c.channels, c.proxy_size, c.proxy_size)
        if not isinstance(proxy, Tensor) or tuple(proxy.shape) != shape:
            raise ValueError(f"proxy must be a tensor of shape {shape}, got {getattr(proxy, 'shape', proxy)}")
        if not torch.isfinite(proxy).all():
            raise ValueError("proxy contains NaN or Inf values")
        return x, proxy

    def saccade_boxes(self, z: Tensor, image_size: tuple[int, int], t: int | None = None) -> Tensor:
        """Cxcywh glimpse boxes in pixels from ``z_t`` (square, inside the image's range).

        Args:
            z: ``[..., D]`` the codes of step ``t``, or ``[..., T, D]`` those of every step (``t=None``).
            image_size: ``(H, W)`` of the full images.
            t: the step, for the step's learned offset (:attr:`where_offset`).

        Returns:
            ``[..., 4]`` (or ``[..., T, 4]``).
        """
        c = self.config
        h, w = image_size
        offset = self.where_offset if t is None else self.where_offset[t]
        raw = (z[..., :3] if self.where_head is None else self.where_head(z)) + offset
        s = torch.sigmoid(raw)  # (scale, x, y); constants as cached 0-dim tensors, in the same order
        lo, span = scalar(c.min_scale, s), scalar(c.max_scale - c.min_scale, s)
        side = (lo + span * s[..., 0]) * scalar(min(h, w), s)
        centre = s[..., 1:] * _image_extent(w, h, s.device, s.dtype)
        return torch.cat((centre, side[..., None], side[..., None]), -1)

    def glimpse(self, x: Tensor, boxes: Tensor) -> Tensor:
        """``[B, C, g, g]`` glimpses of the full images at ``boxes`` (``[B, 4]`` cxcywh)."""
        cut = crop_localized if self.config.localized else crop
        size = (self.config.glimpse_size, self.config.glimpse_size)
        return cut(x, boxes[:, None], size)[:, 0]

    def advance(self, x: Tensor, z: Tensor, h: Tensor, t: int) -> tuple[Tensor, Tensor, Tensor]:
        """Saccade ``t``: ``(boxes, e_t, h_{t+1})`` for the code ``z_t`` and the state ``h_t``."""
        boxes = self.saccade_boxes(z, tuple(x.shape[-2:]), t)
        embedding = self.glimpse_encoder(self.glimpse(x, boxes))
        return boxes, embedding, self.rnn(torch.cat((embedding, z), -1), h)

    def _gaussian(self, out: Tensor, learned_scale: bool = True) -> tuple[Tensor, Tensor]:
        loc, raw = out.split(self.config.z_dim, -1)
        scale = positive(raw) if learned_scale else torch.full_like(loc, self.config.posterior_scale)
        return loc, scale

    def prior(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``p(z_t | h_t)``: loc and scale."""
        return self._gaussian(self.prior_net(h))

    def posterior(
        self,
        proxy_features: Tensor,
        h: Tensor,
        keys: Tensor | None = None,
        t: int = 0,
        visited: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``q(z_t | proxy, h_t)``: loc and scale (scale fixed unless ``learn_posterior_scale``).

        With ``where_attention``, ``keys`` is :attr:`attention`'s map of the proxy and the loc's
        position logits ``[1:3]`` are the logits of :attr:`attention`'s point for step ``t``
        (``visited``: the earlier glimpses' centres), so only the attention modules place glimpses.
        """
        out = self.posterior_net(torch.cat((proxy_features, h), -1))
        loc, scale = self._gaussian(out, self.config.learn_posterior_scale)
        if keys is None:
            return loc, scale
        centre = torch.logit(self.attention(keys, h, t, visited), eps=1e-4)
        return torch.cat((loc[..., :1], centre, loc[..., 3:]), -1), scale

    def decode_proxy(self, z: Tensor, h: Tensor) -> Tensor:
        """The VRNN's reconstruction of the proxy from ``z_t`` and ``h_t``, in [0, 1]."""
        c = self.config
        out = self.proxy_decoder(torch.cat((z, h), -1))
        return torch.sigmoid(out).view(-1, c.channels, c.proxy_size, c.proxy_size)

    def classify(self, embeddings: list[Tensor], h: Tensor) -> Tensor:
        """Logits from the glimpse embeddings pooled over the saccades (``config.pooling``) and the last
        state."""
        stacked = torch.stack(embeddings)
        pooled = stacked.amax(0) if self.config.pooling == "max" else stacked.mean(0)
        return self.classifier(torch.cat((pooled, h), -1))

    def label_distribution(self, logits: Tensor):
        """``p(y | glimpses)``: independent Bernoullis (identify) or a categorical (sum)."""
        if self.config.task == "identify":
            return dist.Bernoulli(logits=logits).to_event(1)
        return dist.Categorical(logits=logits)

    def _check_labels(self, y: Tensor | None, batch: int) -> Tensor | None:
        """``y`` checked (its values only under Pyro's validation, which the training step turns off:
        each value check reads back from the device) and as the label distribution takes it."""
        if y is None:
            return None
        c = self.config
        values = is_validation_enabled()
        if c.task == "identify":
            if tuple(y.shape) != (batch, c.num_classes) or (values and not ((y == 0) | (y == 1)).all()):
                raise ValueError(
                    f"y must be a multi-hot tensor [{batch}, {c.num_classes}] of 0/1 for 'identify'"
                )
            return y if y.dtype == torch.float32 else y.float()
        if tuple(y.shape) != (batch,) or (values and ((y < 0).any() or (y > c.max_sum).any())):
            raise ValueError(f"y must hold {batch} integer sums in [0, {c.max_sum}] for 'sum'")
        return y.long()

    # -- model and guide --------------------------------------------------------------------------
    def model(self, x: Tensor, y: Tensor | None = None, proxy: Tensor | None = None) -> Tensor:
        """``p(proxy, y, z_{0:T-1} | X)``; returns the classifier's logits."""
        pyro.module("saccade", self)
        x, proxy = self._inputs(x, proxy)
        b = x.shape[0]
        y = self._check_labels(y, b)
        c = self.config
        h = x.new_zeros(b, c.hidden_dim)
        embeddings = []
        chain, self._guide_chain = self._guide_chain, None
        with plate("data", b, device=x.device), summed_weight_gradients(self):
            for t in pyro.markov(range(c.num_saccades)):
                loc, scale = self.prior(h)
                with scaled(c.kl_weight, x):
                    z = pyro.sample(f"z_{t}", Normal(loc, scale).to_event(1))
                recon = self.decode_proxy(z, h)
                with scaled(c.proxy_weight, x):
                    pyro.sample(f"proxy_{t}", Normal(recon, c.obs_scale).to_event(3), obs=proxy)
                step = chain.follow(x, z, t) if chain is not None else None
                if step is None:
                    chain = None
                    step = self.advance(x, z, h, t)
                _, embedding, h = step
                embeddings.append(embedding)
            logits = self.classify(embeddings, h)
            pyro.sample("y", self.label_distribution(logits), obs=y)
        return logits

    def guide(self, x: Tensor, y: Tensor | None = None, proxy: Tensor | None = None) -> list[Tensor]:
        """``q(z_{0:T-1} | proxy)`` through the shared RNN; returns the saccade boxes ``[B, 4]`` per t."""
        pyro.module("saccade", self)
        x, proxy = self._inputs(x, proxy)

        def sample(t: int, loc: Tensor, scale: Tensor) -> Tensor:
            with scaled(self.config.kl_weight, x):  # as in the model: scales the KL
                return pyro.sample(f"z_{t}", Normal(loc, scale).to_event(1))

        with plate("data", x.shape[0], device=x.device):
            boxes, _, _ = self.posterior_saccades(x, proxy, sample)
        return boxes

    def posterior_saccades(self, x: Tensor, proxy: Tensor, draw) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """The guide's pass: at each ``t``, ``z_t = draw(t, loc, scale)`` from ``q(z_t | proxy, h_t)``.

        Returns:
            the glimpse boxes ``[B, 4]`` and embeddings of every ``t``, and the last RNN state.
        """
        h = x.new_zeros(x.shape[0], self.config.hidden_dim)
        features = self.proxy_encoder(proxy)
        keys = self.attention.keys(proxy) if self.config.where_attention else None
        size = torch.tensor(x.shape[:-3:-1], dtype=x.dtype, device=x.device)  # (W, H)
        boxes, embeddings = [], []
        self._guide_chain = chain = _GuideChain(x)
        with summed_weight_gradients(self):  # the MLPs' weight gradients: one product over the steps
            for t in pyro.markov(range(self.config.num_saccades)):
                visited = torch.stack([b[:, :2].detach() / size for b in boxes], 1) if boxes else None
                loc, scale = self.posterior(features, h, keys, t, visited)
                z = draw(t, loc, scale)
                box, embedding, h = chain.record(z, self.advance(x, z, h, t))
                boxes.append(box)
                embeddings.append(embedding)
        return boxes, embeddings, h

    # -- the library's surface ----------------------------------------------------------------------
    def evaluate(
        self,
        dataset,
        batch_size: int = 64,
        max_scenes: int | None = None,
        progress: bool = False,
        intervals: int = 0,
    ):
        """Accuracy of the prediction, and how much the saccades depend on the image.

        Returns :func:`ppl_scenes.metrics.scoring.evaluate_image_labels`'s scores plus
        ``glimpse_centre_std``, the standard deviation over the scenes of the glimpses' centres (pixels;
        the mean over ``t`` and over x and y), and ``glimpse_side``, their mean side (pixels). A
        centre spread near 0 means the model looks at the same places in every image: a fixed tiling,
        not saccades chosen from the proxy. When the targets hold ``boxes`` (the true objects), also
        ``objects_in_view``: the fraction of the objects of which some glimpse holds at least 90 % of
        the box; ``scenes_in_view``, the fraction of the scenes with every object so in view; and
        ``accuracy_in_view`` / ``accuracy_out_of_view``, the accuracy on those scenes and on the others
        (NaN where there are none): what the classifier and what the glimpses' places each cost.
        ``intervals`` > 0 adds the accuracy's 95 % bootstrap interval over that many resamples.
        """
        parses, targets, _ = parse_dataset(
            self, dataset, batch_size, max_scenes, progress=progress, keep_images=False
        )
        results = image_label_metrics(parses, targets, self.config.task, intervals)
        boxes = torch.cat([torch.stack(p.boxes) for p in parses]).cpu()  # [N, T, 4] xyxy
        centres = (boxes[..., :2] + boxes[..., 2:]) / 2
        spread = centres.std(0) if len(boxes) > 1 else torch.zeros_like(centres[0])
        results["glimpse_centre_std"] = float(spread.mean())
        results["glimpse_side"] = float((boxes[..., 2] - boxes[..., 0]).mean())
        if all("boxes" in t for t in targets):
            seen = [
                (covered_fraction(t["boxes"].float(), b).amax(-1) >= 0.9)
                if len(t["boxes"])
                else torch.ones(0, dtype=torch.bool)
                for t, b in zip(targets, boxes)
            ]
            results["objects_in_view"] = float(torch.cat(seen).float().mean()) if seen else float("nan")
            whole = torch.tensor([bool(s.all()) for s in seen], dtype=torch.bool)
            correct = image_label_correct(parses, targets, self.config.task)
            results["scenes_in_view"] = float(whole.float().mean()) if len(whole) else float("nan")
            for key, subset in (("accuracy_in_view", whole), ("accuracy_out_of_view", ~whole)):
                results[key] = float(correct[subset].float().mean()) if subset.any() else float("nan")
        return results

    def parse(self, x: Tensor, proxy: Tensor | None = None) -> SceneParse:
        """Saccades and prediction at the guide's means (no sampling).

        Returns:
            a :class:`SceneParse` whose ``boxes[i]`` are image ``i``'s ``T`` glimpse boxes (xyxy, in
            order of ``t``), ``scores`` ones, and ``image_labels`` the prediction: a multi-hot
            ``[B, num_classes]`` (classes with probability above 0.5) or the predicted sums ``[B]``.
        """
        with self.evaluating():
            x, proxy = self._inputs(x, proxy)
            logits, boxes = self.predict(x, proxy)
        prediction = predicted_labels(self.config.task, logits)
        per_image = cxcywh_to_xyxy(torch.stack(boxes, 1))
        return SceneParse(
            boxes=list(per_image),
            scores=[torch.ones(len(b)) for b in per_image],
            image_labels=prediction,
        )

    def predict(self, x: Tensor, proxy: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits and saccade boxes with every ``z_t`` at the guide's mean."""
        boxes, embeddings, h = self.posterior_saccades(x, proxy, lambda t, loc, scale: loc)
        return self.classify(embeddings, h), boxes


class _GuideChain:
    """The guide's saccades ``(boxes, e_t, h_{t+1})``, step by step, for the model to reuse (issue 36).

    The model's glimpse chain is the guide's: with the guide's ``z_t`` replayed into it, the boxes,
    glimpse embeddings and RNN states of the two passes are the same function of the same values.
    The model pass takes the guide's tensors instead of computing them again, so one SVI step
    crops, encodes and advances each glimpse once (same values, same gradients). A step is reused
    only where the model has the very tensors of the guide: the same image batch, the same ``z_t``
    object (a replayed sample), and every earlier step reused (so the state ``h_t`` is the guide's).
    """

    def __init__(self, x: Tensor) -> None:
        self.x = x
        self.steps: list[tuple[Tensor, tuple[Tensor, Tensor, Tensor]]] = []

    def record(self, z: Tensor, step: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Keep the guide's step for ``z``; returns ``step``."""
        self.steps.append((z, step))
        return step

    def follow(self, x: Tensor, z: Tensor, t: int) -> tuple[Tensor, Tensor, Tensor] | None:
        """The guide's step ``t`` when the model's ``x`` and ``z`` are the guide's tensors, else None."""
        if x is not self.x or t >= len(self.steps) or self.steps[t][0] is not z:
            return None
        return self.steps[t][1]


@cached_constant
def _image_extent(width: int, height: int, device, dtype) -> Tensor:
    """``(W, H)`` as a tensor: the factors from sigmoid outputs to pixel centres."""
    return torch.tensor([float(width), float(height)], device=device, dtype=dtype)
