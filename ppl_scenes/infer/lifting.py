"""Training MIST by lifting its top-K (Angles et al., §4 and Algorithm 1), and its baselines.

The top-K extractor ``E_K`` has no gradient with respect to the heatmap, so MIST is trained by
alternating optimisation over a lifted problem, per batch:

1. fit the task network ``tau`` on ``L_task`` at the patches ``E_K(H_eta(I))`` (shifted at random by
   up to ``config.task_jitter`` pixels when that is set);
2. with ``tau`` fixed, optimise the patch positions (and scales) on ``L_task`` with a few gradient
   steps (``config.refine_steps`` steps of ``config.refine_optimizer``, restarted per batch);
3. build the target heatmap ``h_bar = E_K^{-1}(x*)`` of the optimised patches
   (:func:`ppl_scenes.ops.target_heatmap`); with ``count_from_labels`` only each scene's own
   number of patches, those the task used, enter it (``K`` = the scene's count);
4. fit the heatmap network ``eta`` on ``L_lift = ||h_bar - H_eta(I)||^2``.

``tau`` and ``eta`` have separate Adam optimisers (both at ``TrainConfig.lr`` unless
``lr_per_module`` says otherwise, e.g. ``{"heatmap_net": 3e-4}``). Everything else -- batches,
progress bar, ``metrics.jsonl``, checkpoints, exact resume -- is the shared
:class:`ppl_scenes.infer.trainer.Trainer`. Data-parallel (torchrun), both losses are means over the
batch and each optimiser's gradients are averaged over the ranks before it steps, so the task and
lift steps are the whole batch's (the refinement is per image).

The baselines whose patches are differentiable in their parameters (the channel-wise soft-argmax) or
fixed (the grid) train end to end on ``L_task`` with :class:`TaskTrainer`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ppl_scenes.infer.trainer import NonFiniteStep, Trainer
from ppl_scenes.ops.heatmaps import count_mask, target_heatmap


class PatchTaskTrainer(Trainer):
    """What MIST's trainers share: the batch's labels as the task needs them.

    The labels come through the shared supervision mechanism (:meth:`Trainer.prepare_data` and
    :meth:`ppl_scenes.models.MIST.supervision`): the mean one-hot of each scene's labels for
    classification (eq. 3), their number for ``count_from_labels``.
    """

    def batch_targets(self, device) -> tuple[dict[str, Tensor] | None, Tensor | None]:
        """``(targets, mask)`` of the current batch: ``{"label_freq"}`` and the ``[B, K]`` patch mask."""
        labels = self.batch_supervision(device)
        if not labels:
            return None, None
        mask = None
        if self.model.config.count_from_labels:
            counts = labels["counts"]
            mask = count_mask(counts, self.model.config.num_patches, len(counts), device)
        return {"label_freq": labels["label_freq"]}, mask


class LiftingTrainer(PatchTaskTrainer):
    """Algorithm 1 of MIST: task step, patch refinement, target heatmap, lift step (module docstring).

    Logged per step: ``loss`` and ``task_loss`` (``L_task`` at the extracted patches, jittered if
    ``task_jitter`` is set, before the task step), ``refined_task_loss`` (after the refinement of
    the positions), ``lift_loss`` (``L_lift`` before the heatmap step), ``shift`` (mean distance
    in pixels the refinement moved a patch) and the gradient norms. A stage whose loss or gradient
    is not finite raises :class:`NonFiniteStep` before its optimiser steps; the stages before it in
    that batch keep their step.
    """

    def setup(self, example_batch: Tensor) -> None:
        names = self.parameter_names()
        self.task_params = list(self.model.task_net.parameters())
        self.heatmap_params = list(self.model.heatmap_net.parameters())
        self.optimizers = {
            "task": self.make_optimizer(self.task_params, names),
            "heatmap": self.make_optimizer(self.heatmap_params, names),
        }

    def refine(
        self, x: Tensor, positions: Tensor, scales: Tensor, targets, mask
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Algorithm 1, line 4: optimise the patches on ``L_task`` with the task network fixed.

        ``refine_steps`` steps of ``config.refine_optimizer`` (Adam steps of ``refine_lr`` pixels, or
        gradient descent, :func:`descend`); positions stay inside the image and scales inside the
        heatmap's scale range. Adam's first steps move every coordinate by about the step size
        whatever the gradient, so near an optimum a step can overshoot: each image keeps the patches
        of the lowest loss seen (the starting ones included), and refining never makes an image's
        task loss worse.

        Returns:
            ``(positions, scales, loss)``: the kept patches and their task loss ``[B]``.
        """
        cfg = self.model.config
        values = cfg.scale_values
        height, width = x.shape[-2:]
        pos = positions.detach().clone().requires_grad_(True)
        free = [pos]
        sc = scales.detach().clone()
        if cfg.refine_scales and len(values) > 1:
            sc.requires_grad_(True)
            free.append(sc)
        best_pos, best_sc = pos.detach().clone(), sc.detach().clone()
        best = torch.full((len(x),), float("inf"), device=x.device)
        adam = cfg.refine_optimizer == "adam" and cfg.refine_steps
        inner = torch.optim.Adam(free, lr=cfg.refine_lr) if adam else None
        for step in range(cfg.refine_steps + 1):
            last = step == cfg.refine_steps
            with torch.set_grad_enabled(not last):
                loss = self.model.task_loss(x, pos, sc, targets, mask)
            with torch.no_grad():  # masks by torch.where: no host synchronisation
                better = loss.detach() < best
                best = torch.where(better, loss.detach(), best)
                best_pos = torch.where(better.view(-1, *[1] * (pos.dim() - 1)), pos, best_pos)
                best_sc = torch.where(better.view(-1, *[1] * (sc.dim() - 1)), sc, best_sc)
            if last:
                break
            grads = torch.autograd.grad(loss.sum(), free)
            if not torch.stack([torch.isfinite(g).all() for g in grads]).all():  # one read-back
                raise NonFiniteStep("non-finite gradient of the patch positions")
            if inner is not None:
                for p, g in zip(free, grads):
                    p.grad = g
                inner.step()
            else:
                descend(free, grads, cfg.refine_lr, cfg.refine_max_step)
            with torch.no_grad():
                pos[..., 0].clamp_(0, width)
                pos[..., 1].clamp_(0, height)
                sc.clamp_(values[0], values[-1])
        return best_pos, best_sc, best

    def train_step(self, batch: Tensor) -> dict[str, Any]:
        model, cfg = self.model, self.model.config
        targets, mask = self.batch_targets(batch.device)
        with torch.no_grad():
            found = model.locate(batch)

        fit_at = found.positions
        if cfg.task_jitter:
            fit_at = fit_at + cfg.task_jitter * (2 * torch.rand_like(fit_at) - 1)
        task_loss = model.task_loss(batch, fit_at, found.scales, targets, mask).mean()
        task_norm = self.step_optimizer("task", task_loss, self.task_params)

        # Masked patches get no task gradient, so the refinement leaves them where they were found.
        try:
            positions, scales, refined = self.refine(batch, found.positions, found.scales, targets, mask)
        except NonFiniteStep:
            if self.distributed is None:
                raise
            self.step_optimizer("heatmap", None, self.heatmap_params)  # every rank skips the lift step
            raise
        # Only the patches in play are targets: E_K^{-1} of each image's own K (its count of labels).
        # With all K patches, the unused ones (left where they were found, on anything) would be
        # peaks of the target as strong as the refined ones, and the heatmap could not learn which
        # of its maxima to rank first.
        target = target_heatmap(positions, scales, cfg.scale_values, tuple(batch.shape[-2:]), mask)

        lift_loss = model.lift_loss(batch, target).mean()
        lift_norm = self.step_optimizer("heatmap", lift_loss, self.heatmap_params)

        shift = (positions - found.positions).norm(dim=-1).mean()
        logged = torch.stack((task_loss.detach(), refined.mean(), lift_loss.detach(), shift.detach()))
        task_value, refined_value, lift_value, shift_value = logged.tolist()  # one read-back
        return {
            "loss": task_value,
            "task_loss": task_value,
            "refined_task_loss": refined_value,
            "lift_loss": lift_value,
            "shift": shift_value,
            "grad_norm": task_norm,
            "heatmap_grad_norm": lift_norm,
        }


@torch.no_grad()
def descend(params: list[Tensor], grads: list[Tensor], lr: float, max_step: float) -> None:
    """One gradient-descent step in place: ``p -= lr * g``, each patch's step at most ``max_step`` long.

    ``params[0]`` are positions ``[B, K, 2]`` (a patch's step is a 2-vector); any further tensors
    (scales ``[B, K]``) are clamped element-wise.
    """
    for p, g in zip(params, grads):
        step = lr * g
        if p.dim() == 3:
            length = step.norm(dim=-1, keepdim=True)
            step = step * (max_step / length.clamp(min=max_step))
        else:
            step = step.clamp(-max_step, max_step)
        p -= step


class TaskTrainer(PatchTaskTrainer):
    """End-to-end gradient descent on ``L_task`` for models whose patches need no lifting.

    The channel-wise baseline's soft-argmax positions are differentiable in its heatmap network, and
    the grid baseline's patches are fixed, so one Adam step on ``L_task`` per batch trains them
    (their ``locate`` is called with gradients on).
    """

    def setup(self, example_batch: Tensor) -> None:
        self.params = list(self.model.parameters())
        self.optimizers = {"adam": self.make_optimizer(self.params, self.parameter_names())}

    def train_step(self, batch: Tensor) -> dict[str, Any]:
        targets, mask = self.batch_targets(batch.device)
        found = self.model.locate(batch)
        loss = self.model.task_loss(batch, found.positions, found.scales, targets, mask).mean()
        norm = self.step_optimizer("adam", loss, self.params)
        return {"loss": self.last_loss, "task_loss": self.last_loss, "grad_norm": norm}
