"""MIST and its baselines: parses and training per variant, lifting stages, losses, evaluation, errors."""

from types import SimpleNamespace

import pytest
import torch

from ppl_scenes.baselines import ChannelwiseMIST, GridPatches
from ppl_scenes.infer import TRAINERS, fit
from ppl_scenes.infer.lifting import LiftingTrainer, TaskTrainer
from ppl_scenes.infer.trainer import TrainConfig
from ppl_scenes.metrics.scoring import evaluate_instances
from ppl_scenes.models import MIST, MODELS, MISTConfig, SceneParse
from ppl_scenes.models.mist import label_frequencies, multi_instance_loss
from ppl_scenes.ops import extract_top_k
from ppl_scenes.ops.heatmaps import count_mask
from ppl_scenes.runs import load, read_metrics
from ppl_scenes.scene import TargetedParse
from tests.helpers import MIST_TINY

TINY = {**MIST_TINY, "num_classes": 3}


def scenes(n=4, c=1, size=24):
    """``n`` scenes with two bright squares each, as (image, target) pairs with labels."""
    items = []
    for i in range(n):
        x = torch.zeros(c, size, size)
        a, b = 2 + i % 3, 12 + (i % 2)
        x[:, a : a + 6, a : a + 6] = 0.9
        x[:, b : b + 6, 4:10] = 0.6
        boxes = torch.tensor([[a - 1, a - 1, a + 7, a + 7], [3, b - 1, 11, b + 7]], dtype=torch.float32)
        labels = torch.tensor([i % 3, (i + 1) % 3])
        items.append((x, {"boxes": boxes, "patch_boxes": boxes, "labels": labels, "count": 2}))
    return items


VARIANTS = {
    "reconstruction": (MIST, {}),
    "classification": (MIST, {"task": "classification"}),
    "count_from_labels": (MIST, {"task": "classification", "count_from_labels": True}),
    "classification_with_reconstruction": (
        MIST,
        {"task": "classification", "recon_weight": 2.0, "task_jitter": 1.5},
    ),
    "two_scales": (MIST, {"heatmap_scales": (1.0, 0.5), "patch_side": 6.0}),
    "rgb": (MIST, {"channels": 3}),
    "grey_background": (MIST, {"background": 0.5}),
    "grid": (GridPatches, {"num_patches": 4}),
    "channelwise": (ChannelwiseMIST, {}),
    "channelwise_classification": (ChannelwiseMIST, {"task": "classification"}),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_parse_counts_shapes_and_labels(variant):
    """Each variant parses K patches (or the given counts), labels them, and reconstructs if it should."""
    cls, overrides = VARIANTS[variant]
    model = cls(**{**TINY, **overrides})
    x = torch.stack([im for im, _ in scenes(c=overrides.get("channels", 1))])
    k = model.config.num_patches
    counts = torch.tensor([2, 1, 2, 0]) if model.config.count_from_labels else None
    parse = model.parse(x, counts=counts)
    expected = counts.tolist() if counts is not None else [k] * 4
    assert [len(b) for b in parse.boxes] == expected
    for boxes, scores, what in zip(parse.boxes, parse.scores, parse.what):
        assert boxes.shape[1] == 4 and (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert scores.shape == boxes.shape[:1] and what.shape[0] == len(boxes)
    if model.config.task == "reconstruction":
        assert parse.reconstruction.shape == x.shape and parse.labels is None
    else:
        assert (parse.reconstruction is not None) == (model.config.recon_weight > 0)
        assert all(((lab >= 0) & (lab < 3)).all() for lab in parse.labels)


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_moves_the_task_network_and_the_heatmap_of_a_lifted_model(variant, tmp_path):
    cls, overrides = VARIANTS[variant]
    model = cls(**{**TINY, **overrides})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = scenes(c=overrides.get("channels", 1))
    fit(model, data, steps=2, batch_size=2, out=tmp_path / "run", progress=False, log_every=1)
    changed = {n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert "task_net" in changed
    assert ("heatmap_net" in changed) == (cls is not GridPatches)  # grid patches have no heatmap to lift
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2] and all("task_loss" in r for r in records)


def test_registered_under_their_cli_names():
    assert MODELS["mist"] is MIST
    assert MODELS["mist_grid"] is GridPatches and MODELS["mist_channelwise"] is ChannelwiseMIST
    assert TRAINERS[MIST().trainer] is LiftingTrainer
    assert TRAINERS[GridPatches(**{**TINY, "num_patches": 4}).trainer] is TaskTrainer


def _trainer(model, data):
    trainer = TRAINERS[model.trainer](model, TrainConfig(batch_size=len(data), lr=1e-2), progress=False)
    x = trainer.prepare_data(data)
    trainer.batch_index = torch.arange(len(x))
    trainer.setup(x)
    return trainer, x


@pytest.mark.parametrize("refine", [{"refine_lr": 1.0}, {"refine_optimizer": "gd", "refine_lr": 100.0}])
@pytest.mark.parametrize("task", ["reconstruction", "classification"])
def test_each_stage_of_a_lifting_iteration_lowers_its_own_loss(task, refine):
    torch.manual_seed(0)
    model = MIST(**{**TINY, "task": task, "refine_steps": 5, **refine})
    data = scenes()
    trainer, x = _trainer(model, data)
    targets, mask = trainer.batch_targets(x.device)
    # patches 2 px off the squares' centres (an untrained heatmap would put them in the corners)
    centres = [[[a + 3.0, a + 3.0], [7.0, b + 3.0]] for a, b in ((2 + i % 3, 12 + i % 2) for i in range(4))]
    found = SimpleNamespace(
        positions=torch.tensor(centres) + torch.tensor([2.0, -2.0]), scales=torch.full((4, 2), 8.0)
    )

    # (1) one step of tau on L_task, patches fixed
    before = model.task_loss(x, found.positions, found.scales, targets).mean()
    trainer.step_optimizer("task", before, trainer.task_params)
    with torch.no_grad():
        after = model.task_loss(x, found.positions, found.scales, targets).mean()
    assert after < before

    # (2) refining the patches with tau fixed lowers L_task further, and leaves tau alone
    tau = [p.detach().clone() for p in trainer.task_params]
    positions, scales, refined = trainer.refine(x, found.positions, found.scales, targets, mask)
    assert refined.mean() < after
    with torch.no_grad():  # never worse, image by image: the best patches seen are kept
        start = model.task_loss(x, found.positions, found.scales, targets)
        torch.testing.assert_close(refined, model.task_loss(x, positions, scales, targets))
    assert (refined <= start).all()
    assert not torch.equal(positions, found.positions)
    assert all(torch.equal(p, q) for p, q in zip(trainer.task_params, tau))
    assert ((positions >= 0) & (positions <= 24)).all()

    # (3) + (4) one step of eta on L_lift towards E_K^-1 of the refined patches
    from ppl_scenes.ops import target_heatmap

    target = target_heatmap(positions, scales, model.config.scale_values, (24, 24))
    assert target.sum().item() == pytest.approx(2 * len(x))
    lift = model.lift_loss(x, target).mean()
    trainer.step_optimizer("heatmap", lift, trainer.heatmap_params)
    with torch.no_grad():
        assert model.lift_loss(x, target).mean() < lift


@pytest.mark.parametrize("task", ["reconstruction", "classification"])
def test_refinement_leaves_masked_patches_where_they_were(task):
    """With count_from_labels the patches beyond a scene's count get no task gradient and stay put."""
    torch.manual_seed(0)
    model = MIST(**{**TINY, "task": task, "count_from_labels": True, "num_patches": 3, "refine_lr": 1.0})
    data = [(x, {**t, "labels": t["labels"][:1]}) for x, t in scenes()]  # one label: 2 patches masked
    trainer, x = _trainer(model, data)
    targets, mask = trainer.batch_targets(x.device)
    assert mask.tolist() == [[True, False, False]] * 4
    start = torch.tensor([[5.0, 5.0], [12.0, 14.0], [18.0, 6.0]]).repeat(4, 1, 1)
    positions, _, _ = trainer.refine(x, start, torch.full((4, 3), 8.0), targets, mask)
    assert torch.equal(positions[:, 1:], start[:, 1:]) and not torch.equal(positions[:, :1], start[:, :1])


def test_lift_target_holds_only_the_patches_in_play(monkeypatch):
    """With count_from_labels the target heatmap is E_K^-1 of each scene's own count of patches."""
    torch.manual_seed(0)
    model = MIST(**{**TINY, "task": "classification", "count_from_labels": True, "num_patches": 3})
    data = [(x, {**t, "labels": t["labels"][:1]}) for x, t in scenes()]  # one label: 2 patches unused
    trainer, x = _trainer(model, data)
    targets = []
    lift_loss = model.lift_loss
    monkeypatch.setattr(model, "lift_loss", lambda x, target: targets.append(target) or lift_loss(x, target))
    trainer.train_step(x)
    assert targets[0].sum((1, 2, 3)).tolist() == [1.0] * len(x)


def test_gradient_descent_refinement_moves_each_patch_by_its_own_gradient_up_to_the_longest_step():
    """With refine_optimizer="gd" a patch moves lr times its gradient, capped at refine_max_step px:
    a patch whose loss is nearly flat nearly stays (Adam would move it a whole step)."""
    torch.manual_seed(0)
    model = MIST(**{**TINY, "task": "classification", "refine_steps": 1, "refine_optimizer": "gd"})
    model.config.refine_lr, model.config.refine_max_step = 30.0, 0.4
    trainer, x = _trainer(model, scenes())
    targets, mask = trainer.batch_targets(x.device)
    start = torch.tensor([[[5.0, 5.0], [14.0, 13.0]]]).repeat(4, 1, 1)
    scales = torch.full((4, 2), 8.0)
    pos = start.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.task_loss(x, pos, scales, targets, mask).sum(), pos)
    want = -30.0 * grad
    length = want.norm(dim=-1, keepdim=True)
    want = torch.where(length > 0.4, want * 0.4 / length, want)
    positions, _, refined = trainer.refine(x, start, scales, targets, mask)
    moved = ~torch.isclose(refined, model.task_loss(x, start, scales, targets, mask).detach())
    assert moved.any()  # images whose step lowered the loss keep it; the others keep the start
    torch.testing.assert_close(positions[moved] - start[moved], want[moved])
    assert (positions - start).norm(dim=-1).max() <= 0.4 + 1e-6
    assert (want.norm(dim=-1) < 0.4).any()  # some patch took less than the longest step


def test_lifting_drives_the_heatmap_to_its_target_positions():
    """Lift steps on one target make E_K(H(I)) give back the target's positions and scales."""
    torch.manual_seed(0)
    overrides = {"heatmap_scales": (1.0, 0.5), "patch_side": 6.0, "heatmap_channels": 8, "heatmap_blocks": 2}
    model = MIST(**{**TINY, **overrides})
    trainer, x = _trainer(model, scenes(2))
    # the squares' centre pixels (a network sees content, not absolute places); A small, B large
    positions = torch.tensor([[[5.5, 5.5], [7.5, 15.5]], [[6.5, 6.5], [7.5, 16.5]]])
    scales = torch.tensor([[6.0, 10.0], [6.0, 10.0]])
    from ppl_scenes.ops import target_heatmap

    target = target_heatmap(positions, scales, model.config.scale_values, (24, 24))
    found, found_scales = extract_top_k(target, model.config.scale_values, 2, 3)
    order = found[..., 1].argsort(-1)  # compare as sets: sort by y
    torch.testing.assert_close(found.gather(1, order[..., None].expand(-1, -1, 2)), positions)
    torch.testing.assert_close(found_scales.gather(1, order), scales)
    for group in trainer.optimizers["heatmap"].param_groups:
        group["lr"] = 3e-3  # 1e-2 overshoots after ~150 steps on torch 2.14 (the loss jumps back up)
    first = model.lift_loss(x, target).mean().item()
    for _ in range(300):
        trainer.step_optimizer("heatmap", model.lift_loss(x, target).mean(), trainer.heatmap_params)
    with torch.no_grad():
        assert model.lift_loss(x, target).mean().item() < 0.2 * first
        got = model.locate(x)
    order = got.positions[..., 1].argsort(-1)
    torch.testing.assert_close(got.positions.gather(1, order[..., None].expand(-1, -1, 2)), positions)
    torch.testing.assert_close(got.scales.gather(1, order), scales, atol=1.5, rtol=0)


def test_recon_weight_adds_the_reconstruction_error_to_the_classification_loss():
    torch.manual_seed(0)
    both = MIST(**{**TINY, "task": "classification", "recon_weight": 3.0})
    plain = MIST(**{**TINY, "task": "classification"})
    plain.load_state_dict(both.state_dict(), strict=False)  # the same encoder, head and heatmap
    assert both.task_net.decoder is not None and plain.task_net.decoder is None
    x = torch.stack([im for im, _ in scenes()])
    targets = {"label_freq": torch.tensor([[0.5, 0.5, 0.0]]).repeat(4, 1)}
    positions, scales = torch.tensor([[[6.0, 6.0], [7.0, 15.0]]]).repeat(4, 1, 1), torch.full((4, 2), 8.0)
    with torch.no_grad():
        recon = both.compose(
            both.task_net.decoder(both.task_net.encoder(both.crop_patches(x, positions, scales))),
            positions,
            scales,
            (24, 24),
        )
        error = ((x - recon) ** 2).flatten(1).mean(1)
        expected = plain.task_loss(x, positions, scales, targets) + 3.0 * error
        torch.testing.assert_close(both.task_loss(x, positions, scales, targets), expected)
        parse = both.parse(x)
    assert parse.reconstruction.shape == x.shape and parse.labels is not None
    assert plain.parse(x).reconstruction is None


def test_task_jitter_fits_the_task_network_at_shifted_patches(monkeypatch):
    """The task step sees the extracted positions moved by at most task_jitter; the refinement starts
    from the unshifted ones."""
    torch.manual_seed(0)
    model = MIST(**{**TINY, "task_jitter": 2.0, "refine_steps": 0})
    trainer, x = _trainer(model, scenes())
    seen = []
    original = model.task_loss

    def spy(images, positions, *args, **kwargs):
        seen.append(positions.detach().clone())
        return original(images, positions, *args, **kwargs)

    monkeypatch.setattr(model, "task_loss", spy)
    with torch.no_grad():
        found = model.locate(x)
    trainer.train_step(x)
    shift = seen[0] - found.positions
    assert shift.abs().max() <= 2.0 and shift.abs().min() > 0 and shift.std() > 0.5
    torch.testing.assert_close(seen[1], found.positions)  # the refinement's start (no steps)


def test_losses_and_helpers_against_direct_computation():
    logits = torch.tensor([[[10.0, 0, 0], [0, 10.0, 0], [0, 0, 0]]])  # 3 patches, 3 classes
    freq = torch.tensor([[0.5, 0.5, 0.0]])
    probs = logits.softmax(-1)
    assert multi_instance_loss(logits, freq).item() == pytest.approx(
        ((freq - probs.mean(1)) ** 2).sum().item()
    )
    mask = torch.tensor([[True, True, False]])
    masked = multi_instance_loss(logits, freq, mask).item()
    assert masked == pytest.approx(((freq - probs[:, :2].mean(1)) ** 2).sum().item()) and masked < 1e-6
    freq = label_frequencies([torch.tensor([0, 0, 2]), torch.tensor([], dtype=torch.long)], 3)
    torch.testing.assert_close(freq, torch.tensor([[2 / 3, 0, 1 / 3], [0, 0, 0]]))
    torch.testing.assert_close(
        count_mask(torch.tensor([0, 2]), 3, 2), torch.tensor([[False, False, False], [True, True, False]])
    )
    with pytest.raises(ValueError, match="labels of image 0"):
        label_frequencies([torch.tensor([3])], 3)
    with pytest.raises(ValueError, match="one count per image"):
        count_mask(torch.tensor([1]), 3, 2)


def test_reconstruction_pastes_patches_onto_the_background():
    model = MIST(**{**TINY, "background": 0.5})
    positions = torch.tensor([[[4.0, 4.0], [16.0, 16.0]]])
    scales = torch.full((1, 2), 8.0)
    patches = torch.ones(1, 2, 1, 8, 8)
    canvas = model.compose(patches, positions, scales, (24, 24))
    assert canvas[0, 0, 4, 4] == 1.0 and canvas[0, 0, 16, 16] == 1.0 and canvas[0, 0, 4, 16] == 0.5
    masked = model.compose(patches, positions, scales, (24, 24), mask=torch.tensor([[True, False]]))
    assert masked[0, 0, 16, 16] == 0.5
    # a perfect patch at the right place reconstructs the image exactly
    x = torch.zeros(1, 1, 24, 24)
    x[..., 0:8, 0:8] = 0.7
    crops = model.crop_patches(x, torch.tensor([[[4.0, 4.0]]]), torch.tensor([[8.0]]))
    black = MIST(**TINY).compose(crops, torch.tensor([[[4.0, 4.0]]]), torch.tensor([[8.0]]), (24, 24))
    torch.testing.assert_close(black, x)


def test_grid_patches_are_the_cells():
    model = GridPatches(**{**TINY, "num_patches": 9})
    found = model.locate(torch.zeros(2, 1, 24, 24))
    assert found.positions.shape == (2, 9, 2)
    torch.testing.assert_close(found.positions[0, :3], torch.tensor([[4.0, 4.0], [12.0, 4.0], [20.0, 4.0]]))
    torch.testing.assert_close(found.scales, torch.full((2, 9), 8.0))
    with pytest.raises(ValueError, match="square images"):
        model.locate(torch.zeros(1, 1, 24, 30))
    with pytest.raises(ValueError, match="square num_patches"):
        GridPatches(**{**TINY, "num_patches": 5})


def test_channelwise_positions_are_differentiable():
    model = ChannelwiseMIST(**TINY)
    found = model.locate(torch.rand(1, 1, 24, 24))
    found.positions.sum().backward()
    assert model.heatmap_net.base[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="one scale"):
        ChannelwiseMIST(**{**TINY, "heatmap_scales": (1.0, 0.5)})


def test_evaluate_instances_scores_a_perfect_and_a_wrong_parse():
    data = scenes(2)

    class Oracle(TargetedParse):
        device = torch.device("cpu")
        config = MISTConfig(count_from_labels=True, task="classification")
        requires_targets = True

        def __init__(self, shift=0.0, wrong=False):
            self.shift, self.wrong = shift, wrong

        def parse_options(self, targets):
            return {"counts": torch.tensor([int(t["count"]) for t in targets])}

        def parse(self, x, counts):
            assert counts.tolist() == [2, 2]
            boxes = [t["patch_boxes"] + self.shift for _, t in data]
            labels = [(t["labels"] + int(self.wrong)) % 3 for _, t in data]
            return SceneParse(boxes=boxes, scores=[torch.ones(2)] * 2, labels=labels)

    perfect = evaluate_instances(Oracle(), data)
    assert perfect["detection_rate"] == 1.0 and perfect["classification_accuracy"] == 1.0
    assert perfect["detected_and_classified"] == 1.0 and perfect["num_objects"] == 4
    wrong = evaluate_instances(Oracle(wrong=True), data)
    assert wrong["detection_rate"] == 1.0 and wrong["classification_accuracy"] == 0.0
    missed = evaluate_instances(Oracle(shift=6.0), data)
    assert missed["detection_rate"] == 0.0 and missed["detected_and_classified"] == 0.0
    with pytest.raises(ValueError, match="no 'tight'"):
        evaluate_instances(Oracle(), data, box_key="tight")


def test_model_evaluate_reports_rmse_and_detection():
    model = MIST(**TINY)
    results = model.evaluate(scenes(3))
    assert set(results) >= {"rmse", "detection_rate", "ap50", "num_scenes"} and results["num_scenes"] == 3
    assert 0 <= results["detection_rate"] <= 1 and results["rmse"] > 0


def test_resumed_run_reproduces_the_uninterrupted_losses(tmp_path):
    data = scenes()
    torch.manual_seed(1)
    fit(MIST(**TINY), data, steps=4, batch_size=2, out=tmp_path / "whole", progress=False, log_every=1)
    torch.manual_seed(1)
    fit(MIST(**TINY), data, steps=2, batch_size=2, out=tmp_path / "part", progress=False, log_every=1)
    resumed = load(tmp_path / "part")
    fit(resumed, data, steps=4, batch_size=2, out=tmp_path / "part", resume=True, progress=False, log_every=1)
    a = [r["loss"] for r in read_metrics(tmp_path / "whole")]
    b = [r["loss"] for r in read_metrics(tmp_path / "part")]
    assert len(a) == 4 and a == pytest.approx(b, rel=1e-6)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"task": "segmentation"}, "task must be one of"),
        ({"softmax_window": 4}, "softmax_window must be odd"),
        ({"heatmap_scales": (0.5, 1.0)}, "strictly decreasing"),
        ({"heatmap_scales": (1.5,)}, r"\(0, 1\]"),
        ({"patch_size": 10, "task_levels": 2}, "divisible"),
        ({"background": 2.0}, "background"),
        ({"num_patches": 0}, "num_patches"),
        ({"recon_weight": 1.0}, "classification"),
        ({"task": "classification", "recon_weight": -1.0}, "recon_weight"),
        ({"task_jitter": float("nan")}, "task_jitter"),
        ({"task_jitter": True}, "task_jitter"),
        ({"refine_optimizer": "sgd"}, "refine_optimizer must be one of"),
        ({"refine_max_step": 0.0}, "refine_max_step"),
    ],
)
def test_bad_configs_are_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        MIST(**{**TINY, **overrides})


def test_bad_inputs_are_refused():
    model = MIST(**{**TINY, "task": "classification", "count_from_labels": True})
    with pytest.raises(ValueError, match="counts"):
        model.parse(torch.zeros(1, 1, 24, 24))
    with pytest.raises(ValueError, match="too small"):
        MIST(**TINY).parse(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="labels"):
        fit(MIST(**{**TINY, "task": "classification"}), torch.zeros(4, 1, 24, 24), steps=1, progress=False)
    with pytest.raises(ValueError, match="label_freq"):
        MIST(**{**TINY, "task": "classification"}).task_loss(
            torch.zeros(1, 1, 24, 24), torch.full((1, 2, 2), 8.0), torch.full((1, 2), 8.0)
        )
