"""SSDIR: Single-Shot Detect, Infer, Repeat (Zieliński & Kajdanowicz), as a Pyro model/guide.

Two stages share one convolutional backbone with a feature pyramid:

1. **Detector.** A single-shot detector (torchvision's SSD over :class:`~ppl_scenes.nn.PyramidBackbone`,
   no pretrained weights) is trained with supervision on the scenes' true boxes (classes: the
   digits, or one "object" class). :class:`~ppl_scenes.infer.TwoStageTrainer` runs this stage for
   ``config.detector_steps`` steps, saves ``detector.safetensors`` in the run directory, then
   freezes the backbone and the detector's heads.

2. **SSDIR** (paper §3). For every default box ``i`` of the pyramid ("cell"):

   * ``z_where_i`` = the detector's decoded box (eq. 3), deterministic;
   * ``z_pres_i ~ Bernoulli(beta_i)`` (eq. 4), ``beta_i`` the best class confidence where the detector
     keeps a detection (score threshold, then non-maximum suppression) and 0 elsewhere; it is
     observed -- the detections -- in the model and not sampled by the guide;
   * ``z_what_i ~ N(0, I)``, ``z_depth_i ~ N(0, 1)`` a priori; the guide is
     ``N(mu_what_i, sigma_what)`` and ``N(mu_depth_i, sigma_depth)`` (eqs. 5-6), the means from
     convolutional what/depth encoders on the pyramid maps, the scales fixed hyperparameters.

   Every latent of every cell comes from one parallel pass: no glimpses, no loop over objects (the
   paper's "parallel encoding"). The encoders' convolutions are evaluated only where the detector
   kept an object (the other cells' codes are masked out of the objective and get the prior's
   mean), so their cost grows with the objects rather than with the pyramid. The decoder keeps the
   present objects, decodes each ``z_what`` to a ``patch_size`` patch with transposed
   convolutions, places it at its box with the spatial transformer and merges the objects by a
   per-pixel softmax over the ``z_depth`` of the objects covering the pixel
   (:func:`ppl_scenes.ops.composite`); an optional background, decoded from its
   own code ``z_bg``, lies behind every object.

   The objective is the paper's eq. 7, written as Pyro sites scaled with ``poutine.scale``:
   ``alpha_obj * log p(x | z)`` (site ``x``) ``+ alpha_rec * mean_i log p(x_i | z_i)`` (site
   ``x_objects``: each detected object's crop of the input against its decoded patch, averaged over
   the image's detections) ``- alpha_what * KL_what - alpha_depth * KL_depth``. What and depth of the
   cells without a detection are masked out: they explain no pixel.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import batched_nms, box_convert, clip_boxes_to_image

from ppl_scenes.checks import check_choice, check_int_fields, check_lr_schedule, lr_factor
from ppl_scenes.distributions import Bernoulli, Normal
from ppl_scenes.models.base import (
    Categorised,
    DetectorStage,
    PresenceBoxes,
    RankedParse,
    SceneModel,
    SceneParse,
    TiledParse,
    Variational,
    plate,
    scaled,
    weighted,
)
from ppl_scenes.models.preset import Preset
from ppl_scenes.nn.mlp import Dense
from ppl_scenes.nn.ssd import AnchorEncoder, CodeDecoder, anchor_encodings, build_ssd
from ppl_scenes.ops import clip, composite, crop, indices, paste_with_support, scalar, vector, xyxy_to_cxcywh
from ppl_scenes.rundir import load_tensors, save_tensors

__all__ = ["Detections", "SSDIR", "SSDIRConfig"]

LIKELIHOODS = ("normal", "bernoulli")


@dataclass
class SSDIRConfig:
    """SSDIR's settings (defaults: the multi-scale scattered-MNIST experiment at CPU scale, 128x128).

    The defaults are the CPU-scale recipe of BENCHMARKS.md's SSDIR section (its probe accuracy is
    recorded there beside the paper's: the mean of three seeds meets the issue's bar of 0.95 with no
    margin, the paper's 0.979 is not reached): a 16/32/64-channel backbone with batch normalisation,
    8,000 detector steps then 1,500 at a tenth of the rate, a 32-dimensional ``z_what``, 2,000 SVI
    steps -- with a stream of fresh training scenes (e.g. ``MultiScaleDigits(200_000)``, generated
    batch by batch): on a fixed 10,000 the detector overfits and the probe stays lower (BENCHMARKS.md, SSDIR).

    Attributes:
        channels: image channels (1 or 3).
        image_size: ``(H, W)`` of the images (the detector works at this size; other sizes are refused).
        detector_classes: object classes the detector tells apart: 10 for the digits, 1 for a single
            "object" class (the scenes' ``labels`` are then ignored).
        backbone_widths: channels of the backbone's stages before the first pyramid level (stride 8).
        backbone_norm: batch normalisation after every backbone convolution. Its running
            statistics are recomputed at the end of stage 1 (``calibration_batches``): the moving
            averages of the last training steps once left a much worse detector (BENCHMARKS.md, SSDIR).
        calibration_batches: training batches over which the batch-norm statistics are recomputed
            (a plain average) when stage 1 ends; unused without ``backbone_norm``.
        pyramid_levels: levels of the feature pyramid (strides 8, 16, 32, ...).
        pyramid_channels: channels of every pyramid level.
        aspect_ratios: extra aspect ratios of the default boxes (each adds ``r:1`` and ``1:r``).
        min_ratio, max_ratio: default-box scale of the finest and coarsest level (fraction of the side).
        score_threshold: class confidence above which a detection is kept (``beta > 0``).
        nms_threshold: IoU above which non-maximum suppression drops the weaker of two detections
            (class-agnostic: one object, one representation).
        max_objects: most detections kept per image.
        detector_steps: supervised steps of stage 1 before SSDIR trains (0: the detector is given,
            e.g. with :meth:`SSDIR.load_detector`). BENCHMARKS.md (SSDIR) records the detector's AP
            after 8,000 steps of 32 scenes and after 1,500 more at a tenth of the rate.
        detector_lr_schedule: ``(step, factor)`` pairs: from detector step ``step`` on, the
            detector's learning rate is its configured one times ``factor`` (the last pair reached
            wins); empty keeps it constant. Like SSD's own schedule, the default drops the rate
            tenfold for the last 1,500 steps; ``((0, 0.1),)`` fine-tunes a given detector gently.
        what_dim: size of ``z_what`` (32 rather than 16 raised the probe on two detectors;
            BENCHMARKS.md, SSDIR).
        what_hidden: channels of the hidden layer of the what-encoder (0: one 3x3 convolution of the
            pyramid maps, a linear function of the detector's features). The depth encoder is always
            one convolution. On one measured detector the hidden layer barely changed the probe of
            ``z_what`` (BENCHMARKS.md, SSDIR): the detector's features matter more.
        what_scale, depth_scale: the guide's fixed standard deviations ``sigma_what``, ``sigma_depth``.
        patch_size: side of each decoded object patch (``4 * 2**k``; the paper's 64 by default).
        decoder_width: channels of the patch decoder's first map.
        likelihood: ``normal`` (fixed ``obs_scale``) or ``bernoulli`` (a pseudo-likelihood on gray levels).
        obs_scale: sigma of the ``normal`` likelihood.
        obj_weight, rec_weight, what_weight, depth_weight: eq. 7's ``alpha_obj``, ``alpha_rec``,
            ``alpha_what``, ``alpha_depth``.
        background: also decode a background image from a code ``z_bg`` (behind every object).
        background_dim: size of ``z_bg``.
    """

    channels: int = 1
    image_size: tuple[int, int] = (128, 128)
    detector_classes: int = 10
    backbone_widths: tuple[int, int, int] = (16, 32, 64)
    backbone_norm: bool = True
    calibration_batches: int = 50
    pyramid_levels: int = 4
    pyramid_channels: int = 64
    aspect_ratios: tuple[int, ...] = (2,)
    min_ratio: float = 0.08
    max_ratio: float = 0.45
    score_threshold: float = 0.5
    nms_threshold: float = 0.45
    max_objects: int = 24
    detector_steps: int = 9500
    detector_lr_schedule: tuple[tuple[int, float], ...] = ((8000, 0.1),)
    what_dim: int = 32
    what_hidden: int = 0
    what_scale: float = 0.1
    depth_scale: float = 0.1
    patch_size: int = 64
    decoder_width: int = 64
    likelihood: str = "normal"
    obs_scale: float = 0.1
    obj_weight: float = 1.0
    rec_weight: float = 1.0
    what_weight: float = 1.0
    depth_weight: float = 1.0
    background: bool = False
    background_dim: int = 8

    def __post_init__(self):
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        check_choice(self.likelihood, LIKELIHOODS, "likelihood")
        check_int_fields(
            self,
            ("detector_classes", "pyramid_levels", "pyramid_channels", "max_objects", "what_dim")
            + ("patch_size", "decoder_width", "background_dim"),
        )
        ups = self.patch_size // 4
        if self.patch_size < 8 or self.patch_size % 4 or ups & (ups - 1):
            raise ValueError(
                f"patch_size must be 4 * 2**k with k >= 1 (8, 16, 32, 64, ...), got {self.patch_size}"
            )
        check_int_fields(self, ("detector_steps", "what_hidden", "calibration_batches"), minimum=0)
        self.detector_lr_schedule = check_lr_schedule(self.detector_lr_schedule)
        smallest = 2 ** (len(self.backbone_widths) + self.pyramid_levels - 1)
        if min(self.image_size) < smallest:
            raise ValueError(
                f"image_size {self.image_size} is too small for {self.pyramid_levels} pyramid levels: "
                f"at least {smallest}x{smallest}"
            )
        if not 0 < self.min_ratio < self.max_ratio < 1:
            raise ValueError(f"need 0 < min_ratio < max_ratio < 1, got {self.min_ratio}, {self.max_ratio}")
        if not 0 < self.score_threshold < 1 or not 0 < self.nms_threshold <= 1:
            raise ValueError("score_threshold must lie in (0, 1) and nms_threshold in (0, 1]")
        for name in ("what_scale", "depth_scale", "obs_scale"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("obj_weight", "rec_weight", "what_weight", "depth_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")


@dataclass
class Detections:
    """What the frozen detector says about a batch, per cell and per kept object.

    Attributes:
        features: the pyramid's maps (what the what/depth encoders read).
        boxes: ``[B, A, 4]`` decoded boxes of every cell (xyxy pixels, clipped to the image).
        beta: ``[B, A]`` presence probability: the best class confidence of kept detections, else 0.
        classes: ``[B, A]`` the detector's best class per cell (0-based; 0 for a single class).
        index: ``[B, M]`` cell of each kept object, by decreasing score (padding points at cell 0);
            ``M`` is the most objects any image of the batch holds (at least 1, at most
            ``config.max_objects``).
        present: ``[B, M]`` which of the ``M`` slots hold an object.
    """

    features: list[Tensor]
    boxes: Tensor
    beta: Tensor
    classes: Tensor
    index: Tensor
    present: Tensor

    @functools.cached_property
    def cell_boxes(self) -> Tensor:
        """``[B, A, 4]`` every cell's box, cxcywh pixels (computed once per detection)."""
        return xyxy_to_cxcywh(self.boxes)

    @functools.cached_property
    def object_boxes(self) -> Tensor:
        """``[B, M, 4]`` the kept objects' boxes, cxcywh pixels (rows of :attr:`cell_boxes`)."""
        return self.gather(self.cell_boxes)

    @functools.cached_property
    def cell_weight(self) -> Tensor:
        """:attr:`cell_present` as 0/1 numbers of the boxes' dtype (the cells' sites' mask)."""
        return self.cell_present.to(self.boxes.dtype)

    @property
    def cell_present(self) -> Tensor:
        """``[B, A]`` boolean: the cells holding a kept detection."""
        return self.beta > 0

    def gather(self, per_cell: Tensor) -> Tensor:
        """Rows of a per-cell tensor ``[B, A, ...]`` for the kept objects: ``[B, M, ...]``."""
        idx = self.index.reshape(*self.index.shape, *([1] * (per_cell.dim() - 2)))
        return per_cell.gather(1, idx.expand(-1, -1, *per_cell.shape[2:]))

    def scatter(self, per_object: Tensor) -> Tensor:
        """The inverse of :meth:`gather` for the present objects: ``[B, M, ...]`` to ``[B, A, ...]``,
        zero in the cells holding no kept object."""
        out = per_object.new_zeros(*self.beta.shape, *per_object.shape[2:])
        b, m = self.index.shape
        image = indices(b, out.device)[:, None].expand(b, m)
        kept = self.present.reshape(b, m, *([1] * (per_object.dim() - 2)))
        # an empty slot (pointing at cell 0) adds a zero: no host read of which slots are full
        return out.index_put_((image, self.index), per_object * kept, accumulate=True)


class SSDIR(SceneModel, Variational, DetectorStage, PresenceBoxes, RankedParse, TiledParse, Categorised):
    """SSDIR (Zieliński & Kajdanowicz); see the module docstring for the generative story.

    ``model(x)`` / ``guide(x)`` need the detector trained (stage 1); :meth:`detector_loss` is stage
    1's objective. ``parse(x)`` reports the detections (boxes, confidences, the detector's classes as
    ``labels``), the guide's mean ``z_what`` of each, and the reconstruction.

    Args:
        config: an :class:`SSDIRConfig` (defaults when None).
        **overrides: individual config fields.
    """

    name: ClassVar[str] = "ssdir"
    config_class: ClassVar[type] = SSDIRConfig
    default_dataset: ClassVar[str] = "multiscale"
    #: The detector's supervised stage, then SVI (:class:`ppl_scenes.infer.TwoStageTrainer`).
    trainer: ClassVar[str] = "two_stage"
    #: ``z_where`` is a box in pixels (the posterior helpers name its coordinates so).
    where_coords: ClassVar[tuple[str, ...]] = ("cx", "cy", "w", "h")
    #: 9,500 detector steps (``config.detector_steps``), then 2,000 SVI steps.
    default_train: ClassVar[dict[str, Any]] = {"steps": 11_500, "batch_size": 32, "lr": 1e-3}
    presets: ClassVar[dict[str, Preset]] = {
        "paper": Preset(
            "paper",
            "SSDIR's design at CPU scale: the class defaults (the paper's 300-px VGG/ResNet detector "
            "is not reproduced)",
        ),
        "multiscale": Preset(
            "multiscale",
            "128x128 multi-scale digits, a stream of fresh scenes: 9,500 detector steps, then 2,000 SVI "
            "steps (about 110 CPU minutes)",
            dataset="multiscale",
            num_train=200_000,
        ),
    }

    def __init__(self, config: SSDIRConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        c = self.config
        self.detector = build_ssd(
            c.channels,
            c.image_size,
            c.detector_classes + 1,
            widths=c.backbone_widths,
            level_channels=(c.pyramid_channels,) * c.pyramid_levels,
            aspect_ratios=c.aspect_ratios,
            min_ratio=c.min_ratio,
            max_ratio=c.max_ratio,
            score_threshold=c.score_threshold,
            nms_threshold=c.nms_threshold,
            max_detections=c.max_objects,
            norm=c.backbone_norm,
        )
        levels = [c.pyramid_channels] * c.pyramid_levels
        per_level = self.detector.anchor_generator.num_anchors_per_location()
        self.what_encoder = AnchorEncoder(levels, per_level, c.what_dim, c.what_hidden)
        self.depth_encoder = AnchorEncoder(levels, per_level, 1)
        self.decoder = CodeDecoder(c.what_dim, c.channels, c.patch_size, c.decoder_width)
        if c.background:
            self.background_encoder = Dense(levels[-1], c.background_dim)
            self.background_decoder = CodeDecoder(c.background_dim, c.channels, c.patch_size, c.decoder_width)
        self._cache: tuple[Tensor, int, Detections] | None = None

    @property
    def detector_steps(self) -> int:
        """Stage 1's length: ``config.detector_steps``."""
        return int(self.config.detector_steps)

    def detector_lr_factor(self, step: int) -> float:
        """The factor of ``config.detector_lr_schedule`` in force at detector step ``step``."""
        return lr_factor(self.config.detector_lr_schedule, step)

    def calibration_batch_count(self) -> int:
        """``config.calibration_batches``: the last stage-1 batches the batch-norm statistics are
        recomputed over."""
        return int(self.config.calibration_batches)

    #: The detector works at ``config.image_size`` only.
    fixed_input = True

    @property
    def parse_tile(self) -> tuple[int, int]:
        """``config.image_size``: larger images are parsed in tiles, smaller ones padded."""
        return int(self.config.image_size[0]), int(self.config.image_size[1])

    @property
    def num_categories(self) -> int:
        """``config.detector_classes``: the detector's classes."""
        return int(self.config.detector_classes)

    @property
    def presence_threshold(self) -> float:
        """``config.score_threshold``: the confidence from which a detection is reported."""
        return float(self.config.score_threshold)

    def min_image_size(self) -> tuple[int, int]:
        return tuple(self.config.image_size)

    def check_input(self, x: Tensor, name: str = "images") -> Tensor:
        super().check_input(x, name)
        if tuple(x.shape[-2:]) != tuple(self.config.image_size):
            raise ValueError(
                f"{name} are {x.shape[-2]}x{x.shape[-1]} but this SSDIR works at "
                f"{self.config.image_size[0]}x{self.config.image_size[1]} (config.image_size)"
            )
        return x

    # -- stage 1: the detector -------------------------------------------------------------------
    def supervision(self, targets: list[dict[str, Any]]) -> dict[str, Tensor]:
        """The detector's training targets, padded: ``boxes [N, K, 4]`` and ``labels [N, K]`` (-1: none).

        Labels are shifted by one (0 is torchvision's background); with ``detector_classes == 1``
        every object is class 1.
        """
        if any("boxes" not in t for t in targets):
            raise ValueError("SSDIR's detector trains on scenes whose targets hold 'boxes' (and 'labels')")
        k = max(1, max(len(t["boxes"]) for t in targets))
        boxes = torch.zeros(len(targets), k, 4)
        labels = torch.full((len(targets), k), -1, dtype=torch.long)
        for i, t in enumerate(targets):
            n = len(t["boxes"])
            boxes[i, :n] = torch.as_tensor(t["boxes"], dtype=torch.float32)
            labels[i, :n] = self._detector_labels(t, n)
        return {"boxes": boxes, "labels": labels}

    def _detector_labels(self, target: dict[str, Any], n: int) -> Tensor:
        if self.config.detector_classes == 1:
            return torch.ones(n, dtype=torch.long)
        if "labels" not in target:
            raise ValueError("detector_classes > 1 needs targets with 'labels' (or set detector_classes=1)")
        labels = torch.as_tensor(target["labels"], dtype=torch.long)
        if len(labels) and (labels.min() < 0 or labels.max() >= self.config.detector_classes):
            raise ValueError(
                f"labels must lie in [0, {self.config.detector_classes}) for detector_classes="
                f"{self.config.detector_classes}, got {labels.tolist()}"
            )
        return labels + 1

    def detector_loss(self, x: Tensor, boxes: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        """SSD's supervised loss (box regression + classification with hard negatives) on a batch.

        Args:
            x: images ``[B, C, H, W]``; boxes ``[B, K, 4]`` xyxy; labels ``[B, K]`` (-1: padding),
                as :meth:`supervision` gives them.

        Returns:
            the loss and its two parts.
        """
        self.check_input(x)
        targets = [{"boxes": b[lab >= 0], "labels": lab[lab >= 0]} for b, lab in zip(boxes, labels)]
        was_training = self.detector.training
        self.detector.train()
        try:
            parts = self.detector(list(x), targets)
        finally:
            self.detector.train(was_training)
        loss = parts["bbox_regression"] + parts["classification"]
        return loss, {k: float(v.detach()) for k, v in parts.items()}

    @torch.no_grad()
    def calibrate_detector(self, batches) -> int:
        """Recompute the backbone's batch-norm statistics as plain averages over ``batches`` of images.

        The running averages kept during training weigh the last few batches most; measured on a
        different mix of scenes they can be far off (BENCHMARKS.md). Nothing else changes.

        Returns:
            the number of batches used (0 without batch normalisation: nothing to do).
        """
        norms = [m for m in self.detector.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return 0
        modes = [m.training for m in norms]
        momenta = [m.momentum for m in norms]
        used = 0
        try:
            for x in batches:  # one batch in memory at a time
                if used == 0:  # statistics are reset only once there is a batch to replace them
                    for m in norms:
                        m.reset_running_stats()
                        m.momentum = None  # a cumulative average
                        m.train()
                self.detector.backbone(self.detector.transform.normalize(self.check_input(x)))
                used += 1
        finally:
            for m, mode, momentum in zip(norms, modes, momenta):
                m.momentum = momentum
                m.train(mode)
        self._cache = None
        return used

    def freeze_detector(self) -> None:
        """Stop training the backbone and the detector's heads (stage 2)."""
        self.detector.requires_grad_(False)
        self.detector.eval()
        self._cache = None

    def load_detector(self, path) -> None:
        """Load a detector's weights (``detector.safetensors`` of an SSDIR run, or :meth:`save_detector`'s).

        The ``detector.pt`` of a run from before safetensors (torch's zip format) is read with
        ``torch.load(weights_only=True)``, which loads tensors and nothing else.
        """
        with open(path, "rb") as f:
            legacy = f.read(2) == b"PK"
        if legacy:
            state = torch.load(path, map_location=self.device, weights_only=True)
        else:
            state = load_tensors(path, self.device)
        self.detector.load_state_dict(state)
        self._cache = None

    def save_detector(self, path) -> None:
        """Write the detector's weights to ``path`` (safetensors, atomically)."""
        save_tensors(path, self.detector.state_dict())

    def train(self, mode: bool = True):
        """Training or eval mode, as ``nn.Module.train``; a frozen detector always stays in eval mode."""
        super().train(mode)
        if not any(p.requires_grad for p in self.detector.parameters()):
            self.detector.eval()  # a frozen detector stays in eval mode
        return self

    # -- the detector's view of a batch ----------------------------------------------------------
    def detect(self, x: Tensor, score_threshold: float | None = None) -> Detections:
        """Run the detector on ``x``: every cell's box and confidence, and the kept detections.

        The result is cached for the last batch while the detector is frozen, so the model and the
        guide of one ELBO step share one pass through the backbone.
        """
        threshold = self.config.score_threshold if score_threshold is None else float(score_threshold)
        frozen = not torch.is_grad_enabled() or not any(p.requires_grad for p in self.detector.parameters())
        key = (x, x._version, threshold)
        if frozen and self._cache is not None and self._cache[0] is x and self._cache[1:3] == key[1:]:
            return self._cache[3]
        det = self._detect(x, threshold)
        self._cache = (*key, det) if frozen else None
        return det

    def _detect(self, x: Tensor, threshold: float) -> Detections:
        ssd = self.detector
        features = list(ssd.backbone(ssd.transform.normalize(x)).values())
        head = ssd.head(features)
        b, size = x.shape[0], tuple(x.shape[-2:])
        # the default boxes depend on the map sizes only: generate them for one image, not for each
        anchors = ssd.anchor_generator(ImageList(x[:1], [size]), [f[:1] for f in features])[0]
        reg = head["bbox_regression"]
        boxes = ssd.box_coder.decode_single(reg.reshape(-1, 4), anchors.repeat(b, 1)).reshape(reg.shape)
        boxes = clip_boxes_to_image(boxes, size)
        # softmax over a leading dimension: over the last one (11 classes) it ran 6x slower on a CPU
        confidence, classes = F.softmax(head["cls_logits"].transpose(1, 2), dim=1)[:, 1:].max(1)
        index, present = self._keep(boxes, confidence, threshold)
        beta = torch.zeros_like(confidence)
        beta.scatter_(1, index, torch.where(present, confidence.gather(1, index), 0.0))
        return Detections(features, boxes, beta, classes, index, present)

    def _keep(self, boxes: Tensor, confidence: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
        """Per image: cells above ``threshold``, class-agnostic NMS, the best ``max_objects``.

        One NMS call serves the whole batch (boxes of different images never suppress each other),
        so the cost does not grow with a Python loop over images.
        """
        m = self.config.max_objects
        b, a = confidence.shape
        top_conf, top_cell = confidence.topk(min(a, 4 * m), dim=1)  # the candidates worth an NMS
        top_boxes = boxes.gather(1, top_cell[..., None].expand(-1, -1, 4))
        wide = (top_boxes[..., 2:] > top_boxes[..., :2]).all(-1)  # clipping can flatten a box
        image, slot = torch.nonzero((top_conf > threshold) & wide, as_tuple=True)
        kept = batched_nms(top_boxes[image, slot], top_conf[image, slot], image, self.config.nms_threshold)
        # ``kept`` is by decreasing score; a stable sort by image keeps that order within each image.
        kept = kept[torch.sort(image[kept], stable=True).indices]
        kept_image, kept_cell = image[kept], top_cell[image[kept], slot[kept]]
        counts = torch.bincount(kept_image, minlength=b)
        rank = torch.arange(len(kept), device=boxes.device) - (counts.cumsum(0) - counts)[kept_image]
        fits = rank < m
        used = max(1, int(counts.clamp(max=m).max())) if len(kept) else 1
        index = torch.zeros(b, used, dtype=torch.long, device=boxes.device)
        present = torch.zeros(b, used, dtype=torch.bool, device=boxes.device)
        index[kept_image[fits], rank[fits]] = kept_cell[fits]
        present[kept_image[fits], rank[fits]] = True
        return index, present

    # -- encoders and decoder ----------------------------------------------------------------------
    def encode(self, x: Tensor, det: Detections) -> dict[str, Tensor]:
        """The guide's means: ``what [B, A, D]``, ``depth [B, A, 1]`` (and ``background [B, D_bg]``).

        The what and depth encoders are evaluated only at the cells of the kept detections
        (:meth:`AnchorEncoder.at <ppl_scenes.nn.AnchorEncoder.at>`, equal to the full convolution
        there); the other cells, whose codes explain no pixel, get the prior's mean, 0.
        """
        both = anchor_encodings((self.what_encoder, self.depth_encoder), det.features, det.index)
        what, depth = det.scatter(torch.cat(both, -1)).split((both[0].shape[-1], 1), -1)  # one scatter
        out = {"what": what, "depth": depth}
        if self.config.background:
            out["background"] = self.background_encoder(det.features[-1].mean(dim=(-2, -1)))
        return out

    def decode(self, det: Detections, z_what: Tensor, z_depth: Tensor, z_bg: Tensor | None = None):
        """Render the kept objects from per-cell latents.

        Returns:
            ``(canvas [B, C, H, W], patches [B, M, C, S, S])``: the merged image and each kept
            object's decoded patch.
        """
        patches = self.decoder(det.gather(z_what))
        canvas = self.render(patches, det.object_boxes, det.gather(z_depth).squeeze(-1), det.present, z_bg)
        return canvas, patches

    def render(
        self, patches: Tensor, boxes: Tensor, depth: Tensor, present: Tensor, z_bg: Tensor | None = None
    ) -> Tensor:
        """Place object patches at their boxes and merge them by a softmax over depth.

        Where several present objects cover a pixel, their values are mixed with weights
        ``softmax(z_depth)`` over those objects (the higher depth in front); a pixel no object covers
        shows the background (0, or the decoded ``z_bg``).

        Args:
            patches: ``[B, M, C, S, S]``; boxes: ``[B, M, 4]`` cxcywh pixels; depth: ``[B, M]``;
                present: ``[B, M]`` (bool or 0/1); z_bg: ``[B, D_bg]`` when the config has a background.
        """
        size = tuple(self.config.image_size)
        placed, support = paste_with_support(patches, boxes, size)
        alpha = support * present.to(patches.dtype)[:, :, None, None, None]
        background: Tensor | float = 0.0
        if z_bg is not None:
            background = F.interpolate(
                self.background_decoder(z_bg), size=size, mode="bilinear", align_corners=False
            )
        return composite(placed, alpha, depth, background)

    def likelihood(self, mean: Tensor):
        """Per-pixel observation distribution around ``mean`` (event dims C, H, W)."""
        if self.config.likelihood == "bernoulli":
            return Bernoulli(probs=clip(mean, 1e-4, 1 - 1e-4), validate_args=False).to_event(3)
        return Normal(mean, scalar(self.config.obs_scale, mean)).to_event(3)

    # -- model and guide ---------------------------------------------------------------------------
    def model(self, x: Tensor) -> Tensor:
        """``p(x, z)`` given the detections; returns the rendered canvas ``[B, C, H, W]``."""
        c = self.config
        self.check_input(x)
        det = self.detect(x)
        b, a = det.beta.shape
        dev = x.device
        with plate("data", b, dim=-2, device=dev):
            with plate("cells", a, dim=-1, device=dev):
                pyro.deterministic("z_where", det.cell_boxes, event_dim=1)
                pyro.sample("z_pres", dist.Bernoulli(det.beta), obs=det.cell_weight)
                with weighted(det.cell_weight):  # the mask as a 0/1 factor: every density is finite
                    with scaled(c.what_weight, x):
                        prior = Normal(vector([0.0] * c.what_dim, dev), vector([1.0] * c.what_dim, dev))
                        z_what = pyro.sample("z_what", prior.expand([b, a, c.what_dim]).to_event(1))
                    with scaled(c.depth_weight, x):
                        prior = Normal(vector([0.0], dev), vector([1.0], dev))
                        z_depth = pyro.sample("z_depth", prior.expand([b, a, 1]).to_event(1))
            z_bg = None
            if c.background:
                prior = Normal(vector([0.0] * c.background_dim, dev), vector([1.0] * c.background_dim, dev))
                z_bg = pyro.sample("z_bg", prior.expand([b, 1, c.background_dim]).to_event(1)).squeeze(1)
            canvas, patches = self.decode(det, z_what, z_depth, z_bg)
            with scaled(c.obj_weight, x):
                pyro.sample("x", self.likelihood(canvas.unsqueeze(1)), obs=x.unsqueeze(1))
            crops = crop(x, det.object_boxes, (c.patch_size, c.patch_size))
            per_image = scalar(c.rec_weight, x) / det.present.sum(1, keepdim=True).clamp(min=1)
            with plate("objects", det.present.shape[1], dim=-1, device=dev):
                with weighted(det.present.to(x.dtype) * per_image):  # mask and scale in one factor
                    pyro.sample("x_objects", self.likelihood(patches), obs=crops)
        return canvas

    def guide(self, x: Tensor) -> dict[str, Tensor]:
        """``q(z_what, z_depth | x)``: one convolutional pass over the frozen detector's pyramid."""
        c = self.config
        self.check_input(x)
        det = self.detect(x)
        enc = self.encode(x, det)
        b, a = det.beta.shape
        with plate("data", b, dim=-2, device=x.device):
            with plate("cells", a, dim=-1, device=x.device), weighted(det.cell_weight):
                with scaled(c.what_weight, x):
                    pyro.sample("z_what", Normal(enc["what"], scalar(c.what_scale, x)).to_event(1))
                with scaled(c.depth_weight, x):
                    pyro.sample("z_depth", Normal(enc["depth"], scalar(c.depth_scale, x)).to_event(1))
            if c.background:
                pyro.sample(
                    "z_bg", Normal(enc["background"].unsqueeze(1), scalar(c.what_scale, x)).to_event(1)
                )
        return enc

    def present_boxes(self, z_pres: Tensor, z_where: Tensor, image_size: tuple[int, int]) -> list[Tensor]:
        """Boxes of the present cells of each scene of a batch of latents (for posterior draws).

        Args:
            z_pres: ``[..., A]`` 0/1; z_where: ``[..., A, 4]`` cxcywh pixels (any leading dims,
                flattened in order); image_size: unused (SSDIR's boxes are already in pixels), kept
                for the signature the posterior helpers share.

        Returns:
            one ``[K_i, 4]`` xyxy tensor per scene.
        """
        boxes = box_convert(z_where.reshape(-1, z_where.shape[-2], 4), "cxcywh", "xyxy")
        return [b[p > 0.5] for b, p in zip(boxes, z_pres.reshape(-1, z_pres.shape[-1]))]

    # -- parse -------------------------------------------------------------------------------------
    def parse(self, x: Tensor, score_threshold: float | None = None) -> SceneParse:
        """Detections, their mean ``z_what`` and the reconstruction from the guide's means.

        Args:
            x: images ``[B, C, H, W]`` of ``config.image_size``.
            score_threshold: report detections whose confidence is at least this (default
                ``config.score_threshold``; a lower value gives ranked candidates for average
                precision). The reconstruction always draws the detections above the config's
                threshold -- the model's objects.
        """
        self.check_input(x)
        c = self.config
        with self.evaluating():
            det = self.detect(x, score_threshold)
            enc = self.encode(x, det)
            model_objects = det.present & (det.gather(det.beta) > c.score_threshold)
            own = Detections(det.features, det.boxes, det.beta, det.classes, det.index, model_objects)
            recon = self.decode(own, enc["what"], enc["depth"], enc.get("background"))[0]
            boxes, scores = det.gather(det.boxes), det.gather(det.beta)
            what, labels = det.gather(enc["what"]), det.gather(det.classes)
        keep = det.present
        return SceneParse(
            boxes=[boxes[i][keep[i]] for i in range(len(x))],
            scores=[scores[i][keep[i]] for i in range(len(x))],
            what=[what[i][keep[i]] for i in range(len(x))],
            labels=[labels[i][keep[i]] for i in range(len(x))],
            reconstruction=recon,
        )
