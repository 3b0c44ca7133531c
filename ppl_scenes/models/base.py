"""The one surface every scene model shares: :class:`SceneModel` and the capabilities a model may add.

A model is a ``PyroModule`` with ``parse(x)`` and a ``config`` dataclass, and -- when it is a
variational model -- ``model(x)`` and ``guide(x)`` (Pyro's AIR and ``CompartmentalModel`` are the
pattern). Models register themselves by name so that ``ppl_scenes.load(run_dir)`` and the CLI can
rebuild any of them from a run directory, and name the trainer they need (:attr:`SceneModel.trainer`,
a key of :data:`ppl_scenes.infer.TRAINERS`).

What only some models can do is declared by inheriting a capability class, and read with
``isinstance`` -- never by probing attribute names or signatures:

======================  ==================================================================
:class:`Variational`    a Pyro ``model`` / ``guide`` pair trained by SVI
:class:`Supervised`     learns from the scenes' labels besides the images (``supervision``)
:class:`PresenceBoxes`  turns sampled ``z_pres`` / ``z_where`` into boxes (posterior figures)
:class:`PriorSampling`  ``model(None, batch_size=, image_size=)`` generates images from the prior
:class:`DetectorStage`  trains a supervised detector first, then freezes it (two-stage trainer)
:class:`RankedParse`    ``parse(x, score_threshold=t)`` keeps ranked candidates
:class:`TargetedParse`  ``parse`` takes inputs read from the targets (MIST's counts)
:class:`TiledParse`     large images are parsed in tiles (SSDIR's fixed input, MIST's K patches)
:class:`ImageLevel`     predicts per image: no objects to detect (saccades, ResNet-18)
:class:`Categorised`    each object carries a category in ``labels`` (cluster or class)
======================  ==================================================================

``docs/adding_a_model.md`` walks through adding a model.
"""

from __future__ import annotations

import weakref
from abc import ABCMeta, abstractmethod
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import pyro
import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin
from pyro.nn import PyroModule
from pyro.poutine.broadcast_messenger import BroadcastMessenger
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import SubsampleMessenger
from torch import Tensor

from ppl_scenes.checks import check_images
from ppl_scenes.config import replace_config
from ppl_scenes.metrics.scoring import evaluate_detection
from ppl_scenes.models.preset import Preset
from ppl_scenes.ops.constants import indices, multiply, scalar
from ppl_scenes.scene import Categorised, ImageLevel, RankedParse, SceneParse, TargetedParse, TiledParse

__all__ = [
    "MODELS",
    "Categorised",
    "ImageLevel",
    "TiledParse",
    "DetectorStage",
    "PresenceBoxes",
    "Preset",
    "PriorSampling",
    "RankedParse",
    "SceneModel",
    "SceneParse",
    "Supervised",
    "TargetedParse",
    "Variational",
    "plate",
    "scaled",
    "weighted",
]

MODELS: dict[str, type[SceneModel]] = {}


def plate(name: str, size: int, dim: int | None = None, device: torch.device | str = "cpu") -> pyro.plate:
    """``pyro.plate(name, size, dim=dim)`` over all of ``range(size)``, its indices built once per size
    and device: a bare plate builds a tensor to find its device and an ``arange`` each time it is
    entered (issue 36). The same sites, shapes and scales."""
    return _FullPlate(name, size, dim=dim, subsample=indices(size, device), device=torch.device(device))


class _FullPlate(pyro.plate):
    """``pyro.plate`` over all of its indices, without two of its per-site operations (issue 36).

    Pyro's plate multiplies each site's ``scale`` by ``size / subsample_size`` (here 1; a tensor scale
    of :func:`scaled` would take two operations and a wrapped-number conversion), and re-creates the
    site's distribution by ``expand`` even when its batch shape is already the plates' (one view per
    parameter, at every plate around the site). Neither changes anything here, so neither is done.
    """

    def _process_message(self, msg) -> None:
        kept, msg["scale"] = msg["scale"], 1.0
        SubsampleMessenger._process_message(self, msg)  # the plate's frame on the site
        msg["scale"] = kept
        if not _broadcast_already(msg):
            BroadcastMessenger._pyro_sample(msg)


def _broadcast_already(msg) -> bool:
    """Whether a sample site's distribution has every enclosing plate's size at the plate's dim, so that
    Pyro's broadcast would expand it to its own batch shape."""
    if msg["type"] != "sample" or msg["done"] or not isinstance(msg["fn"], TorchDistributionMixin):
        return False
    shape = msg["fn"].batch_shape
    return all(
        f.dim is None or f.size == -1 or (len(shape) >= -f.dim and shape[f.dim] == f.size)
        for f in msg["cond_indep_stack"]
    )


class _ScaleBy(Messenger):
    """Multiplies each sample site's ``scale`` by a 0-dim tensor (see :func:`scaled`)."""

    def __init__(self, factor: Tensor):
        super().__init__()
        self.factor = factor

    def _process_message(self, msg) -> None:
        msg["scale"] = multiply(self.factor, msg["scale"])


def weighted(weight: Tensor) -> Messenger:
    """Multiplies each sample site's ``scale`` by the tensor ``weight`` (broadcasting with the site's
    batch shape): ``poutine.scale`` and ``poutine.mask`` as one factor, e.g. a 0/1 mask times a
    weight, one multiplication per site where Pyro's mask takes a ``where`` and a zero tensor (issue
    36). Unlike Pyro's mask, a masked-out element whose log-density is not finite would make the sum
    NaN: use it where every element's density is finite."""
    return _ScaleBy(weight)


def scaled(factor: float, like: Tensor) -> Messenger:
    """``poutine.scale(scale=factor)`` with ``factor`` a cached 0-dim tensor of ``like``'s dtype and
    device: Pyro multiplies a number into each site's log-density as a wrapped scalar, converted at
    every site and in the backward pass again (issue 36). The same scales; ``factor`` must be > 0."""
    return _ScaleBy(scalar(factor, like))


#: The preset of a model whose class defaults are its paper's settings (at the library's scale).
_PAPER = Preset("paper", "the paper's settings at the library's scale: the class defaults")


class _SceneModelMeta(type(PyroModule), ABCMeta):
    """``PyroModule``'s metaclass with abstract methods enforced."""


#: The last batch :meth:`SceneModel.check_input` passed: (weak reference, version, requirements).
_LAST_CHECKED: list[tuple[Any, int, Any] | None] = [None]


class SceneModel(PyroModule, metaclass=_SceneModelMeta):
    """Base class of all scene models: the contract every model keeps.

    A subclass sets ``name`` (the CLI/registry name), ``config_class`` (a dataclass whose every field
    has a default), ``default_dataset`` and optionally ``default_data_kwargs``, ``default_train``
    (overrides of :class:`ppl_scenes.infer.TrainConfig` fields) and ``trainer`` (the name of its
    trainer; ``"svi"`` by default), and implements the abstract ``parse``. A Pyro model/guide pair
    trained by SVI also inherits :class:`Variational` (abstract ``model`` and ``guide``); other
    optional capabilities are the other classes of this module. The config has a ``channels`` field.

    Args:
        config: the model's config dataclass; defaults when None.
        **overrides: individual config fields to override.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    default_dataset: ClassVar[str] = ""
    default_data_kwargs: ClassVar[dict[str, Any]] = {}
    default_train: ClassVar[dict[str, Any]] = {}
    #: The trainer this model needs, by name (a key of :data:`ppl_scenes.infer.TRAINERS`).
    trainer: ClassVar[str] = "svi"
    #: The name of ``model``'s return value in posterior samples (``sample_posterior``).
    return_name: ClassVar[str] = "reconstruction"
    #: Named recipes (:class:`~ppl_scenes.models.preset.Preset`) of this class (not inherited: a
    #: subclass such as GMAIR has its own); ``"paper"`` is always there.
    presets: ClassVar[dict[str, Preset]] = {}
    #: Methods (dotted from the model, e.g. ``"encoder.encode"``) that are deterministic networks --
    #: no Pyro site, no random draw -- and that ``TrainConfig.compile`` hands to ``torch.compile``
    #: (:func:`ppl_scenes.infer.compiled.compile_model`). Empty: the model trains eagerly.
    compiled_methods: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            MODELS[cls.name] = cls

    @classmethod
    def preset(cls, name: str) -> Preset:
        """The named recipe ``name`` of this model (``ppl-scenes presets`` lists them all).

        Raises:
            ValueError: naming the known presets when ``name`` is not one of them.
        """
        known = cls.preset_names()
        if name not in known:
            raise ValueError(f"{cls.__name__} has no preset {name!r}; its presets: {', '.join(known)}")
        return cls._own_presets().get(name, _PAPER).bound(cls)

    @classmethod
    def preset_names(cls) -> list[str]:
        """The names of this model's presets, ``"paper"`` first."""
        return ["paper"] + sorted(n for n in cls._own_presets() if n != "paper")

    @classmethod
    def _own_presets(cls) -> dict[str, Preset]:
        return vars(cls).get("presets", {})

    def __init__(self, config=None, **overrides):
        super().__init__()
        if config is None:
            config = self.config_class()
        elif not isinstance(config, self.config_class):
            raise ValueError(
                f"{type(self).__name__} expects a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = replace_config(config, overrides) if overrides else config
        self.step = 0

    # -- the model's surface -------------------------------------------------------------------
    @abstractmethod
    def parse(self, x: Tensor) -> SceneParse:
        """Objects found in ``x`` (no gradient, eval mode, the guide's modes)."""

    @contextmanager
    def evaluating(self):
        """Eval mode without gradients for the block (``parse``), the training mode restored after."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    def min_image_size(self) -> tuple[int, int]:
        """Smallest ``(H, W)`` the model accepts."""
        return (1, 1)

    def check_input(self, x: Tensor, name: str = "images") -> Tensor:
        """Validate a batch of images for this model (see :func:`ppl_scenes.checks.check_images`).

        The batch the last call checked, unchanged since (same tensor, same version) and checked
        against the same requirements, is not checked again: model and guide of one SVI step see
        the same batch, and each value check is a host synchronisation.
        """
        rules = (self.config.channels, self.min_image_size())
        last = _LAST_CHECKED[0]
        if last is not None and last[0]() is x and last[1] == x._version and last[2] == rules:
            return x
        check_images(x, name=name, channels=rules[0], min_size=rules[1])
        _LAST_CHECKED[0] = (weakref.ref(x), x._version, rules)
        return x

    def set_step(self, step: int) -> dict[str, float]:
        """Tell the model the training step, so annealed quantities follow their schedules.

        Returns:
            the annealed values at this step (logged by the trainer).
        """
        self.step = int(step)
        return {}

    def loss_terms(self) -> dict[str, float]:
        """Named parts of the last training loss worth logging (empty by default)."""
        return {}

    def learning_rate_factors(self) -> dict[str, float]:
        """Module-path prefix -> factor of the base learning rate, for parts that must learn slower.

        The trainer applies them to the parameters that ``TrainConfig.lr_per_module`` does not name
        (the longest matching prefix wins). Empty by default: every parameter at the base rate.
        """
        return {}

    def evaluate(
        self,
        dataset,
        batch_size: int = 64,
        max_scenes: int | None = None,
        progress: bool = False,
        intervals: int = 0,
    ) -> dict[str, Any]:
        """Score the model on a dataset of ``(image, target)`` pairs; detection metrics by default
        (:func:`ppl_scenes.metrics.scoring.evaluate_detection`). ``intervals`` > 0 adds 95 %
        bootstrap intervals over that many resamples of the scenes (``results["intervals"]``)."""
        return evaluate_detection(
            self,
            dataset,
            batch_size=batch_size,
            max_scenes=max_scenes,
            progress=progress,
            intervals=intervals,
        )

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")


# -- capabilities ------------------------------------------------------------------------------------
class Variational(metaclass=ABCMeta):
    """Capability: a Pyro model/guide pair, trained by SVI on ``-ELBO`` (SPAIR, GMAIR, SSDIR, saccades).

    MIST (trained by lifting) and the supervised baselines are scene models without it.
    """

    @abstractmethod
    def model(self, x: Tensor) -> Any:
        """The generative model ``p(x, z)``; observes ``x`` when given."""

    @abstractmethod
    def guide(self, x: Tensor) -> Any:
        """The amortised posterior ``q(z | x)``."""


class Supervised(metaclass=ABCMeta):
    """Capability: the model learns from the scenes' labels besides the images.

    The trainer hands the training scenes' targets to :meth:`supervision` once and passes the rows of
    each batch to the model's loss as keyword arguments (the saccade model's ``y``, SSDIR's boxes).
    """

    @abstractmethod
    def supervision(self, targets: list[dict[str, Any]]) -> dict[str, Tensor]:
        """Per-scene label tensors (first dimension: the scenes) from the scenes' targets."""


class PresenceBoxes(metaclass=ABCMeta):
    """Capability: sampled ``z_pres`` and ``z_where`` convert to boxes (posterior box figures)."""

    #: The coordinates of ``z_where``'s last dimension, for ArviZ.
    where_coords: ClassVar[tuple[str, ...]] = ("y", "x", "h", "w")

    @abstractmethod
    def present_boxes(self, z_pres: Tensor, z_where: Tensor, image_size: tuple[int, int]) -> list[Tensor]:
        """Per image, the xyxy pixel boxes of the cells whose ``z_pres`` is on."""


class PriorSampling(Variational):
    """Capability: ``model(None, batch_size=B, image_size=(H, W))`` draws scenes from the prior."""

    @abstractmethod
    def model(self, x: Tensor | None, batch_size: int | None = None, image_size=None) -> Any:
        """The generative model; with ``x=None`` it samples ``batch_size`` images of ``image_size``."""


class DetectorStage(Supervised):
    """Capability: a supervised detector trains first, then is frozen while SVI trains the rest.

    Read by the two-stage trainer (:class:`ppl_scenes.infer.TwoStageTrainer`). :meth:`supervision`
    gives the detector's targets.
    """

    #: The detector module (its parameters have an optimiser of their own).
    detector: torch.nn.Module

    @property
    @abstractmethod
    def detector_steps(self) -> int:
        """Supervised detector steps before SVI starts."""

    @abstractmethod
    def detector_loss(self, x: Tensor, **targets: Tensor) -> tuple[Tensor, dict[str, float]]:
        """The detector's supervised loss of a batch and its named parts."""

    @abstractmethod
    def freeze_detector(self) -> None:
        """Fix the detector's weights and statistics for the SVI stage."""

    @abstractmethod
    def save_detector(self, path: Path) -> None:
        """Write the trained detector's weights."""

    def detector_lr_factor(self, step: int) -> float:
        """The factor on the detector's learning rate at ``step`` (1: none)."""
        return 1.0

    def calibration_batch_count(self) -> int:
        """How many of the last stage-1 batches :meth:`calibrate_detector` sees (0: no calibration)."""
        return 0

    def calibrate_detector(self, batches: Iterable[Tensor]) -> int:
        """Recompute what the detector estimates from data (e.g. batch-norm statistics); none by default."""
        return 0
