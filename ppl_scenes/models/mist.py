"""MIST: the multiple-instance spatial transformer.

Angles et al., "MIST: Multiple Instance Spatial Transformer" (CVPR 2021). MIST is not a generative
model and is not trained by SVI; it keeps the library's surface (a config dataclass, ``parse ->
SceneParse``, save/load, ``ppl-scenes train mist``) and brings its own trainer,
:class:`ppl_scenes.infer.lifting.LiftingTrainer`.

The forward pass (§3), for an image ``I``:

1. a multiscale heatmap network ``H_eta`` scores every pixel at ``S`` scales (the image resized by
   each factor of ``heatmap_scales``, one network with shared weights, maps resized back);
2. a local spatial softmax (``softmax_window``) sharpens each map and a scale pooling without an
   exponential relates the scales (:func:`ppl_scenes.ops.local_spatial_softmax`,
   :func:`ppl_scenes.ops.scale_pool`);
3. the top-K extractor ``E_K`` keeps the ``K`` strongest local maxima after non-maximum suppression,
   each with its scale as the first moment of the per-scale responses
   (:func:`ppl_scenes.ops.extract_top_k`); a patch found on the map of resize factor ``f`` covers
   ``patch_side / f`` pixels;
4. the sampler ``S`` crops each patch bilinearly to ``patch_size`` pixels, and a task network
   ``T_tau`` works on the patches: an auto-encoder whose outputs are pasted back onto an empty canvas
   and summed (reconstruction, eq. 2: ``||I - sum_k S^{-1}(P_k, x_k)||^2``), or a classifier whose
   mean softmax over the patches should equal the mean one-hot of the image's labels
   (multiple-instance classification, eq. 3).

``E_K`` has no gradient with respect to the heatmap; training lifts it (§4, Algorithm 1): the task
network is fitted at the extracted patches, the patch positions are then optimised with the task
network fixed, and the heatmap network is regressed onto the target heatmap ``E_K^{-1}`` of the
optimised positions.

CPU-scale defaults: a 3-level patch auto-encoder of one residual block per level (the paper: 5 levels
of 3 blocks), one heatmap scale (the digits of MNIST easy/hard all have one size), 20-pixel patches on
80x80 canvases (the authors' ``image_size = 80`` with patches of a quarter of the side).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ppl_scenes.checks import check_choice, check_int_fields, check_non_negative, check_positive
from ppl_scenes.data.images import default_crop
from ppl_scenes.metrics.scoring import evaluate_instances
from ppl_scenes.models.base import Categorised, SceneModel, SceneParse, Supervised, TargetedParse, TiledParse
from ppl_scenes.models.preset import Preset
from ppl_scenes.nn.mist import MultiscaleHeatmapNet, PatchAutoEncoder, PatchClassifier
from ppl_scenes.ops.boxes import cxcywh_to_xyxy
from ppl_scenes.ops.heatmaps import BORDERS, count_mask, extract_top_k, local_spatial_softmax, scale_pool
from ppl_scenes.ops.transformer import crop, paste

TASKS = ("reconstruction", "classification")
#: How Algorithm 1's line 4 moves the patches (see ``MISTConfig.refine_optimizer``).
REFINE_OPTIMIZERS = ("adam", "gd")


def _odd_window(config: Any, name: str) -> None:
    check_int_fields(config, (name,))
    if getattr(config, name) % 2 == 0:
        raise ValueError(f"{name} must be odd (a window centred on its pixel), got {getattr(config, name)}")


@dataclass
class MISTConfig:
    """Settings of :class:`MIST` (and of its baselines in :mod:`ppl_scenes.baselines.mist`).

    Attributes:
        channels: image channels.
        task: ``"reconstruction"`` (patch auto-encoder, eq. 2) or ``"classification"`` (patch
            classifier, eq. 3).
        num_patches: ``K``, patches extracted per image (9 in the paper's MNIST experiments).
        num_classes: classes of the classification task.
        count_from_labels: use only as many patches per image as it has labelled instances (the
            "minimal supervision (i.e. the number of instances)" of §3.2 for classification); the
            top-scoring ones are kept. ``parse`` then takes the counts as an argument.
        heatmap_scales: resize factors of the multiscale heatmap network, strictly decreasing in
            ``(0, 1]``; the map of factor ``f`` finds patches of ``patch_side / f`` pixels.
        patch_side: side in pixels of a patch found at factor 1.
        patch_size: side of the resampled patch the task network sees (32 in the paper).
        softmax_window: side of the local spatial softmax window (15 in the paper).
        softmax_border: how that window treats the image border (the paper names no convention):
            ``"replicate"`` (default) repeats the border pixels so that a flat map is flat after the
            softmax; ``"clip"`` sums in-image pixels only, which favours the border so strongly that
            an untrained heatmap puts every patch there, on empty background, and training can stall
            (see :func:`ppl_scenes.ops.local_spatial_softmax`).
        nms_window: side of the non-maximum-suppression window of ``E_K``.
        heatmap_channels, heatmap_blocks: width and residual blocks of ``H_eta`` (32 and 4 in the paper).
        task_levels, task_blocks, task_width: down/up-sampling levels, residual blocks per level and
            base width of the patch networks (paper: 5 levels of 3 blocks; ``patch_size`` must be
            divisible by ``2 ** task_levels``).
        background: value of the empty canvas the patches are pasted onto; each pasted patch adds
            its difference from it (0 for digits on black, 0.5 for Gabor noise on grey).
        refine_steps: inner gradient steps on the patch positions per batch (Algorithm 1, line 4).
        refine_optimizer: how those steps move the patches. ``"adam"`` (default): Adam, restarted
            for every batch, steps of about ``refine_lr`` pixels. Adam scales each coordinate's step
            by its own gradient's size, so a patch whose task loss is flat still moves about
            ``refine_lr``, in a direction set by noise. ``"gd"``: plain gradient descent, a step of
            ``refine_lr`` times the gradient, at most ``refine_max_step`` pixels per patch, so a patch
            moves in proportion to what moving it gains. The paper names no optimiser; Adam
            reaches its Table 2 (BENCHMARKS.md, MIST).
        refine_lr: Adam's step size in pixels, or gradient descent's rate (pixels per unit of
            gradient of an image's task loss).
        refine_max_step: ``"gd"`` only: the longest step a patch may take, in pixels (and in
            patch-side pixels for its scale).
        refine_scales: also optimise the patch scales (only meaningful with several heatmap scales).
        recon_weight: classification only: weight of eq. 2's reconstruction error (per-pixel mean)
            added to eq. 3, with a patch decoder on the classifier's encoder. 0 (default) is the
            paper's loss, which reaches the paper's Table 2 on its own (BENCHMARKS.md, MIST). Added
            while the lift target still held unused patches and eq. 3's patches drifted off the
            digits; reconstructing the image needs each patch on its digit. Uses no labels beyond
            eq. 3's.
        task_jitter: shift each patch the task network is fitted on (Algorithm 1, step 1) by a
            uniform random offset of up to this many pixels per coordinate, so that the task network
            tolerates off-centre patches (0, the default, is the paper).
    """

    channels: int = 1
    task: str = "reconstruction"
    num_patches: int = 9
    num_classes: int = 10
    count_from_labels: bool = False
    heatmap_scales: tuple[float, ...] = (1.0,)
    patch_side: float = 20.0
    patch_size: int = 20
    softmax_window: int = 15
    softmax_border: str = "replicate"
    nms_window: int = 9
    heatmap_channels: int = 16
    heatmap_blocks: int = 4
    task_levels: int = 2
    task_blocks: int = 1
    task_width: int = 16
    background: float = 0.0
    refine_steps: int = 5
    refine_optimizer: str = "adam"
    refine_lr: float = 0.5
    refine_max_step: float = 1.0
    refine_scales: bool = True
    recon_weight: float = 0.0
    task_jitter: float = 0.0

    def __post_init__(self):
        check_choice(self.channels, (1, 3), "channels")
        check_choice(self.task, TASKS, "task")
        names = ("num_patches", "num_classes", "patch_size", "heatmap_channels", "task_levels")
        check_int_fields(self, (*names, "task_blocks", "task_width"))
        check_int_fields(self, ("heatmap_blocks", "refine_steps"), minimum=0)
        _odd_window(self, "softmax_window")
        check_choice(self.softmax_border, BORDERS, "softmax_border")
        _odd_window(self, "nms_window")
        self.heatmap_scales = tuple(float(f) for f in self.heatmap_scales)
        factors = self.heatmap_scales
        if not factors or any(not 0 < f <= 1 for f in factors):
            raise ValueError(f"heatmap_scales must be resize factors in (0, 1], got {factors}")
        if any(b >= a for a, b in zip(factors, factors[1:])):
            raise ValueError(f"heatmap_scales must be strictly decreasing, got {factors}")
        if self.patch_size % 2**self.task_levels:
            raise ValueError(
                f"patch_size {self.patch_size} must be divisible by 2**task_levels = {2**self.task_levels}"
            )
        self.patch_side = check_positive(self.patch_side, "patch_side")
        self.refine_lr = check_positive(self.refine_lr, "refine_lr")
        check_choice(self.refine_optimizer, REFINE_OPTIMIZERS, "refine_optimizer")
        self.refine_max_step = check_positive(self.refine_max_step, "refine_max_step")
        self.recon_weight = check_non_negative(self.recon_weight, "recon_weight")
        self.task_jitter = check_non_negative(self.task_jitter, "task_jitter")
        if self.recon_weight and self.task != "classification":
            raise ValueError(
                "recon_weight adds reconstruction to the classification task; use task='classification'"
            )
        if not 0 <= self.background <= 1:
            raise ValueError(f"background must lie in [0, 1], got {self.background!r}")

    @property
    def scale_values(self) -> tuple[float, ...]:
        """Patch side in pixels attached to each heatmap scale (increasing)."""
        return tuple(self.patch_side / f for f in self.heatmap_scales)


def multi_instance_loss(logits: Tensor, label_freq: Tensor, mask: Tensor | None = None) -> Tensor:
    """Eq. 3: squared l2 distance between the mean one-hot label and the mean softmax over patches.

    Args:
        logits: ``[B, K, C]`` class scores of the ``K`` patches.
        label_freq: ``[B, C]`` mean one-hot of each image's ``L`` labels (``(1/L) sum_l y_l``).
        mask: ``[B, K]`` patches that take part (default all).

    Returns:
        ``[B]`` losses.
    """
    probs = logits.softmax(-1)
    if mask is None:
        mean = probs.mean(1)
    else:
        weights = mask.to(probs.dtype)
        mean = (probs * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)
    return ((label_freq - mean) ** 2).sum(-1)


def label_frequencies(labels: list[Tensor], num_classes: int) -> Tensor:
    """``[N, C]`` mean one-hot of each image's labels (zeros for an image without any)."""
    out = torch.zeros(len(labels), num_classes)
    for i, lab in enumerate(labels):
        lab = torch.as_tensor(lab, dtype=torch.long).reshape(-1)
        if len(lab) and (lab.min() < 0 or lab.max() >= num_classes):
            raise ValueError(f"labels of image {i} must lie in [0, {num_classes}), got {lab.tolist()}")
        if len(lab):
            out[i] = torch.bincount(lab, minlength=num_classes).float() / len(lab)
    return out


@dataclass
class Patches:
    """Where the patches of a batch are: ``positions [B, K, 2]`` (x, y), ``scales [B, K]`` (side in
    pixels) and ``scores [B, K]`` (heatmap response), strongest first."""

    positions: Tensor
    scales: Tensor
    scores: Tensor


class MIST(SceneModel, Supervised, TargetedParse, TiledParse, Categorised):
    """The multiple-instance spatial transformer (Angles et al.); see the module docstring.

    Args:
        config: a :class:`MISTConfig` (defaults when None).
        **overrides: individual config fields.

    Attributes:
        heatmap_net: ``H_eta`` (:class:`ppl_scenes.nn.MultiscaleHeatmapNet`).
        task_net: ``T_tau``: :class:`ppl_scenes.nn.PatchAutoEncoder` or
            :class:`ppl_scenes.nn.PatchClassifier`.
    """

    name: ClassVar[str] = "mist"
    config_class: ClassVar[type] = MISTConfig
    default_dataset: ClassVar[str] = "mist-hard"
    default_train: ClassVar[dict[str, Any]] = {"steps": 3000, "batch_size": 16, "lr": 1e-3}
    presets: ClassVar[dict[str, Preset]] = {
        "mnist-hard": Preset(
            "mnist-hard",
            "MNIST hard, classification from each scene's bag of labels (Table 2): one patch per "
            "labelled digit; 3,000 steps (about 25 CPU minutes)",
            ("task=classification", "count_from_labels=true", "train.steps=3000"),
            dataset="mist-hard",
        ),
    }

    #: Algorithm 1's alternating loop (:class:`ppl_scenes.infer.LiftingTrainer`); the baselines, whose
    #: patches are fixed or differentiable, train end to end on the task loss (``"task"``).
    trainer: ClassVar[str] = "lifting"

    def __init__(self, config: MISTConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        cfg = self.config
        self.heatmap_net = self.build_heatmap_net()
        net = dict(
            patch_size=cfg.patch_size,
            levels=cfg.task_levels,
            blocks_per_level=cfg.task_blocks,
            width=cfg.task_width,
        )
        if cfg.task == "reconstruction":
            self.task_net = PatchAutoEncoder(cfg.channels, **net)
        else:
            self.task_net = PatchClassifier(
                cfg.channels, cfg.num_classes, decoder=cfg.recon_weight > 0, **net
            )

    def build_heatmap_net(self) -> torch.nn.Module | None:
        """``H_eta``: one map per scale."""
        cfg = self.config
        return MultiscaleHeatmapNet(
            cfg.channels, cfg.heatmap_scales, cfg.heatmap_channels, cfg.heatmap_blocks
        )

    def supervision(self, targets: list[dict[str, Any]]) -> dict[str, Tensor]:
        """What the task learns from besides the images, per training scene (read by the trainer once).

        Classification: ``label_freq``, the mean one-hot of the scene's labels (eq. 3), and with
        ``count_from_labels`` also ``counts``, their number; reconstruction without
        ``count_from_labels``: nothing.

        Raises:
            ValueError: when the labels are needed and a target has none (e.g. a bare image tensor).
        """
        cfg = self.config
        if cfg.task != "classification" and not cfg.count_from_labels:
            return {}
        if not targets or any(not isinstance(t, dict) or "labels" not in t for t in targets):
            what = "classification" if cfg.task == "classification" else "count_from_labels"
            raise ValueError(
                f"MIST's {what} needs the scenes' labels: give a dataset of (image, target) "
                "pairs whose targets hold 'labels'"
            )
        labels = [torch.as_tensor(t["labels"]).reshape(-1) for t in targets]
        return {
            "label_freq": label_frequencies(labels, cfg.num_classes),
            "counts": torch.tensor([len(lab) for lab in labels]),
        }

    def min_image_size(self) -> tuple[int, int]:
        side = int(max(self.config.scale_values) + 0.999)
        return (side, side)

    # -- forward pass ---------------------------------------------------------------------------
    def heatmap(self, x: Tensor) -> Tensor:
        """``h'_s``: per-scale heatmaps after the local softmax and the scale pooling, ``[B, S, H, W]``."""
        logits = self.heatmap_net(x)
        sharp = local_spatial_softmax(logits, self.config.softmax_window, self.config.softmax_border)
        return scale_pool(sharp)[0]

    def locate(self, x: Tensor) -> Patches:
        """``E_K(H_eta(I))``: the ``K`` patches of each image (no gradient in the positions)."""
        heat = self.heatmap(x)
        positions, scales = extract_top_k(
            heat, self.config.scale_values, self.config.num_patches, self.config.nms_window
        )
        return Patches(positions, scales, _values_at(heat.sum(1), positions))

    def patch_boxes(self, positions: Tensor, scales: Tensor) -> Tensor:
        """``[B, K, 4]`` cxcywh boxes of square patches centred on ``positions``."""
        return torch.cat((positions, scales[..., None], scales[..., None]), dim=-1)

    def crop_patches(self, x: Tensor, positions: Tensor, scales: Tensor) -> Tensor:
        """The sampler ``S``: ``[B, K, C, p, p]`` bilinear patches."""
        size = (self.config.patch_size, self.config.patch_size)
        return crop(x, self.patch_boxes(positions, scales), size)

    def compose(
        self,
        patches: Tensor,
        positions: Tensor,
        scales: Tensor,
        size: tuple[int, int],
        mask: Tensor | None = None,
    ) -> Tensor:
        """``sum_k S^{-1}(P_k, x_k)``: each patch pasted at its box onto an empty canvas, summed.

        The canvas is ``config.background`` and each patch adds its difference from it, so for a
        black background this is eq. 2's plain sum. ``mask [B, K]`` leaves patches out.
        """
        bg = self.config.background
        layers = paste(patches - bg, self.patch_boxes(positions, scales), size)
        if mask is not None:
            layers = layers * mask[:, :, None, None, None].to(layers.dtype)
        return bg + layers.sum(1)

    def task_loss(
        self,
        x: Tensor,
        positions: Tensor,
        scales: Tensor,
        targets: dict[str, Tensor] | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """``L_task`` of each image, ``[B]``, for patches at ``positions`` / ``scales``.

        Reconstruction: the mean squared error of eq. 2 (its sum divided by the pixel count).
        Classification: eq. 3 (:func:`multi_instance_loss`); ``targets["label_freq"]`` is needed.
        With ``config.recon_weight``, classification adds that weight times eq. 2's error.
        """
        cfg = self.config
        patches = self.crop_patches(x, positions, scales)
        if cfg.task == "reconstruction":
            return self._reconstruction_error(x, self.task_net(patches), positions, scales, mask)
        if targets is None or "label_freq" not in targets:
            raise ValueError("the classification task needs targets['label_freq'] (the images' labels)")
        features = self.task_net.encoder(patches)
        loss = multi_instance_loss(self.task_net.logits(features), targets["label_freq"], mask)
        if cfg.recon_weight:
            decoded = self.task_net.decoder(features)
            loss = loss + cfg.recon_weight * self._reconstruction_error(x, decoded, positions, scales, mask)
        return loss

    def _reconstruction_error(self, x, decoded, positions, scales, mask) -> Tensor:
        recon = self.compose(decoded, positions, scales, tuple(x.shape[-2:]), mask)
        return ((x - recon) ** 2).flatten(1).mean(1)

    def lift_loss(self, x: Tensor, target: Tensor) -> Tensor:
        """``L_lift = ||h_bar - H_eta(I)||^2`` per image ``[B]``, for a target heatmap ``[B, S, H, W]``."""
        return ((self.heatmap(x) - target) ** 2).flatten(1).sum(1)

    # -- the library's surface ------------------------------------------------------------------
    def parse(self, x: Tensor, counts: Tensor | None = None) -> SceneParse:
        """The patches MIST finds in ``x``: square boxes, heatmap scores, codes, classes, synthesis.

        Args:
            x: images ``[B, C, H, W]``.
            counts: objects per image; only that many (top-scoring) patches are reported. Required
                when ``config.count_from_labels``; otherwise optional (default: all ``K``).

        Returns:
            a :class:`SceneParse` with ``what`` (the task network's patch codes), ``labels`` (the
            classifier's class per patch; None for reconstruction) and ``reconstruction`` (eq. 2's
            synthesis from the reported patches; None for classification without ``recon_weight``).
        """
        x = self.check_input(x)
        if self.config.count_from_labels and counts is None:
            raise ValueError("this MIST uses one patch per labelled instance: give parse(x, counts=...)")
        with self.evaluating():
            found = self.locate(x)
            mask = count_mask(counts, self.config.num_patches, len(x), x.device)
            patches = self.crop_patches(x, found.positions, found.scales)
            features = self.task_net.encoder(patches)
            recon = labels = None
            if self.task_net.decoder is not None:
                out = self.task_net.decoder(features)
                recon = self.compose(out, found.positions, found.scales, tuple(x.shape[-2:]), mask)
            if self.config.task == "classification":
                labels = self.task_net.logits(features).argmax(-1)
            codes = features.flatten(2)
        boxes = cxcywh_to_xyxy(self.patch_boxes(found.positions, found.scales))
        keep = list(mask)
        return SceneParse(
            boxes=[b[k] for b, k in zip(boxes, keep)],
            scores=[s[k] for s, k in zip(found.scores, keep)],
            what=[c[k] for c, k in zip(codes, keep)],
            labels=None if labels is None else [lab[k] for lab, k in zip(labels, keep)],
            reconstruction=recon,
        )

    @property
    def requires_targets(self) -> bool:
        """With ``count_from_labels`` a scene is parsed with its true count only."""
        return bool(self.config.count_from_labels)

    @property
    def parse_tile(self) -> tuple[int, int]:
        """Tiles of a few patch sides (:func:`ppl_scenes.data.images.default_crop`), K patches each."""
        side = default_crop(float(self.config.patch_side))
        return side, side

    @property
    def num_categories(self) -> int:
        """The classifier's classes (classification), else 1."""
        return int(self.config.num_classes) if self.config.task == "classification" else 1

    def parse_options(self, targets: list[dict[str, Any]]) -> dict[str, Any]:
        """With ``count_from_labels``, each scene's true ``count`` (one patch per instance); else none."""
        if self.config.count_from_labels:
            return {"counts": torch.tensor([int(t["count"]) for t in targets])}
        return {}

    def evaluate(
        self,
        dataset,
        batch_size: int = 64,
        max_scenes: int | None = None,
        progress: bool = False,
        intervals: int = 0,
    ) -> dict[str, Any]:
        """RMSE of the synthesis, detection rate at IoU 0.5, classification of the detections.

        See :func:`ppl_scenes.metrics.scoring.evaluate_instances` (``intervals``: bootstrap resamples).
        """
        return evaluate_instances(
            self,
            dataset,
            batch_size=batch_size,
            max_scenes=max_scenes,
            progress=progress,
            intervals=intervals,
        )


def _values_at(maps: Tensor, positions: Tensor) -> Tensor:
    """``[B, K]`` values of ``maps [B, H, W]`` at the pixels containing ``positions [B, K, 2]``."""
    w = maps.shape[-1]
    cols = positions[..., 0].floor().long().clamp(0, w - 1)
    rows = positions[..., 1].floor().long().clamp(0, maps.shape[-2] - 1)
    return maps.flatten(1).gather(1, rows * w + cols)
