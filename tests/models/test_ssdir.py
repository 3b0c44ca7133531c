"""SSDIR: sites and parses per variant, the detector stage feeding SSDIR, depth merge, frozen detector."""

import math
import types

import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO
from torchvision.ops import box_convert, box_iou

import ppl_scenes.infer.trainer as trainer_mod
from ppl_scenes.infer import TRAINERS, TrainConfig, fit
from ppl_scenes.infer.two_stage import DETECTOR_FILE, TwoStageTrainer
from ppl_scenes.models import MODELS, SSDIR, SSDIRConfig
from ppl_scenes.rundir import load_tensors
from ppl_scenes.runs import load, read_metrics
from tests.helpers import SSDIR_TINY

TINY = {**SSDIR_TINY, "detector_classes": 2, "detector_steps": 2}


def tiny(**overrides):
    return SSDIR(**{**TINY, **overrides})


def scenes(n=4, c=1):
    """``n`` 32x32 scenes with a bright square (class 0) and a dim one (class 1)."""
    items = []
    for i in range(n):
        x = torch.zeros(c, 32, 32)
        o = i % 3
        x[:, 2 + o : 12 + o, 3:13] = 1.0
        x[:, 18:28, 16 + o : 26 + o] = 0.5
        boxes = torch.tensor([[3.0, 2 + o, 13, 12 + o], [16 + o, 18, 26 + o, 28]])
        items.append((x, {"boxes": boxes, "labels": torch.tensor([0, 1]), "count": 2}))
    return items


def confident(model):
    """Make the untrained detector call every cell an object of class 0, so SSDIR has objects."""
    with torch.no_grad():
        for conv in model.detector.head.classification_head.module_list:
            conv.weight.zero_()
            bias = conv.bias.view(-1, model.config.detector_classes + 1)
            bias.zero_()
            bias[:, 1] = 5.0
    return model


VARIANTS = {
    "default": {},
    "one_class": {"detector_classes": 1},
    "background": {"background": True},
    "bernoulli": {"likelihood": "bernoulli"},
    "rgb": {"channels": 3},
    "norm_hidden": {"backbone_norm": True, "what_hidden": 8},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_sites_and_parse_shapes(variant):
    """Each variant's sites at the detections, and a parse of the confident detector's objects."""
    overrides = VARIANTS[variant]
    data = scenes(c=overrides.get("channels", 1))
    x = torch.stack([im for im, _ in data])
    model = confident(tiny(**overrides))
    with torch.no_grad():
        trace = poutine.trace(model.model).get_trace(x)
    a = trace.nodes["z_what"]["value"].shape[1]
    assert trace.nodes["z_what"]["value"].shape == (4, a, 4)
    assert trace.nodes["z_depth"]["value"].shape == (4, a, 1)
    assert trace.nodes["z_where"]["value"].shape == (4, a, 4)
    assert trace.nodes["x"]["is_observed"] and trace.nodes["z_pres"]["is_observed"]
    assert trace.nodes["x_objects"]["value"].shape == (4, 4, model.config.channels, 8, 8)
    model.freeze_detector()  # stage two: the variant's likelihood and encoders score the data
    assert torch.isfinite(Trace_ELBO().differentiable_loss(model.model, model.guide, x))
    parse = model.parse(x)
    assert parse.reconstruction.shape == x.shape
    for boxes, scores, what, labels in zip(parse.boxes, parse.scores, parse.what, parse.labels):
        n = len(boxes)
        assert (
            boxes.shape == (n, 4) and scores.shape == (n,) and what.shape == (n, 4) and labels.shape == (n,)
        )
        assert (scores > model.config.score_threshold).all()


def test_registered_with_its_trainer():
    assert MODELS["ssdir"] is SSDIR
    assert TRAINERS[SSDIR().trainer] is TwoStageTrainer


def test_detector_learns_and_its_boxes_feed_ssdir():
    torch.manual_seed(0)
    model = tiny(score_threshold=0.3)
    data = scenes(6)
    x = torch.stack([im for im, _ in data])
    sup = model.supervision([t for _, t in data])
    opt = torch.optim.Adam(model.detector.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss, _ = model.detector_loss(x, **sup)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.5 * first
    model.freeze_detector()
    det = model.detect(x)
    assert det.present.any(1).all(), "the trained detector finds something in every scene"
    trace = poutine.trace(model.model).get_trace(x)
    torch.testing.assert_close(trace.nodes["z_where"]["value"], box_convert(det.boxes, "xyxy", "cxcywh"))
    torch.testing.assert_close(trace.nodes["z_pres"]["value"], det.cell_present.float())
    parse = model.parse(x)
    truth = torch.cat([t["boxes"] for _, t in data])
    found = torch.cat(parse.boxes)
    assert box_iou(truth, found).amax(1).mean() > 0.5, "detections lie on the true squares"


def test_supervision_pads_boxes_and_shifts_labels():
    model = tiny()
    targets = [
        {"boxes": torch.tensor([[1.0, 2, 5, 6]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    sup = model.supervision(targets)
    assert sup["boxes"].shape == (2, 1, 4) and sup["labels"].tolist() == [[2], [-1]]
    assert tiny(detector_classes=1).supervision(targets)["labels"].tolist() == [[1], [-1]]
    with pytest.raises(ValueError, match="labels must lie"):
        model.supervision([{"boxes": torch.tensor([[1.0, 2, 5, 6]]), "labels": torch.tensor([7])}])
    with pytest.raises(ValueError, match="boxes"):
        model.supervision([{"labels": torch.tensor([1])}])


def test_depth_softmax_merge_of_two_known_patches():
    model = tiny()
    patches = torch.stack([torch.full((1, 8, 8), 0.2), torch.full((1, 8, 8), 0.8)])[None]  # [1, 2, 1, 8, 8]
    boxes = torch.tensor([[[10.0, 16, 16, 16], [22.0, 16, 16, 16]]])  # overlap on columns 14..18
    depth = torch.tensor([[0.0, 1.0]])
    present = torch.tensor([[True, True]])
    canvas = model.render(patches, boxes, depth, present)[0, 0]
    w = torch.softmax(depth[0], 0)
    assert canvas[16, 5].item() == pytest.approx(0.2, abs=1e-5)  # only the first object
    assert canvas[16, 26].item() == pytest.approx(0.8, abs=1e-5)  # only the second
    assert canvas[16, 16].item() == pytest.approx(float(w[0] * 0.2 + w[1] * 0.8), abs=1e-5)
    assert canvas[2, 16].item() == 0.0  # no object: background
    absent = model.render(patches, boxes, depth, torch.tensor([[True, False]]))[0, 0]
    assert absent[16, 16].item() == pytest.approx(0.2, abs=1e-5) and absent[16, 26].item() == 0.0


def test_frozen_detector_gets_no_gradient_and_encoders_do():
    model = confident(tiny())
    model.freeze_detector()
    x = torch.stack([im for im, _ in scenes()])
    loss = Trace_ELBO().differentiable_loss(model.model, model.guide, x)
    loss.backward()
    assert all(p.grad is None for p in model.detector.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.what_encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())


@pytest.mark.parametrize("hidden", [0, 8])
def test_guide_means_are_the_encoders_at_the_detections_and_the_prior_mean_elsewhere(hidden):
    model = confident(tiny(what_hidden=hidden, max_objects=3))
    model.freeze_detector()
    x = torch.stack([im for im, _ in scenes()])
    with torch.no_grad():
        det = model.detect(x)
        enc = model.encode(x, det)
        full = {"what": model.what_encoder(det.features), "depth": model.depth_encoder(det.features)}
    kept = det.cell_present
    assert int(kept.sum()) == 4 * 3 == int(det.present.sum())
    for key in ("what", "depth"):
        torch.testing.assert_close(enc[key][kept], full[key][kept])
        assert (enc[key][~kept] == 0).all()
        torch.testing.assert_close(det.gather(det.scatter(det.gather(full[key]))), det.gather(full[key]))


@pytest.mark.parametrize("norm", [False, True])
def test_trainer_switches_stage_and_freezes(tmp_path, norm):
    model = confident(tiny(detector_steps=3, backbone_norm=norm))
    data = scenes()
    before = {k: v.clone() for k, v in model.detector.state_dict().items()}
    fit(model, data, steps=3, batch_size=2, out=tmp_path / "a", progress=False, log_every=1)
    moved = any(not torch.equal(before[k], v) for k, v in model.detector.state_dict().items())
    assert moved, "stage 1 trains the detector"
    assert not (tmp_path / "a" / DETECTOR_FILE).exists()
    model = confident(tiny(detector_steps=1, backbone_norm=norm))
    fit(model, data, steps=4, batch_size=2, out=tmp_path / "b", progress=False, log_every=1)
    saved = load_tensors(tmp_path / "b" / DETECTOR_FILE)
    for k, v in model.detector.state_dict().items():
        torch.testing.assert_close(saved[k], v)  # unchanged by the SVI steps after it was saved
    assert [r["stage"] for r in read_metrics(tmp_path / "b")] == [1, 2, 2, 2]


def test_a_given_detector_keeps_its_batch_norm_statistics(tmp_path):
    model = confident(tiny(detector_steps=0, backbone_norm=True))
    with torch.no_grad():  # statistics of some earlier training, far from these scenes'
        for m in model.detector.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(0.5)
                m.running_var.fill_(2.0)
    before = {k: v.clone() for k, v in model.detector.state_dict().items()}
    fit(model, scenes(), steps=2, batch_size=2, out=tmp_path, progress=False, log_every=1)
    for k, v in model.detector.state_dict().items():
        assert torch.equal(before[k], v), k  # neither the trainer's setup trace nor SVI moved them


@pytest.mark.parametrize("legacy", [False, True])
def test_load_detector_round_trip(tmp_path, legacy):
    a, b = tiny(), tiny()
    if legacy:  # the detector.pt of a run from before safetensors
        torch.save(a.detector.state_dict(), tmp_path / "detector.pt")
    else:
        a.save_detector(tmp_path / "detector.safetensors")
    b.load_detector(tmp_path / ("detector.pt" if legacy else "detector.safetensors"))
    for v, w in zip(a.detector.state_dict().values(), b.detector.state_dict().values()):
        torch.testing.assert_close(v, w)


def test_bad_inputs_are_refused():
    model = tiny()
    with pytest.raises(ValueError, match="works at 32x32"):
        model.parse(torch.zeros(1, 1, 40, 40))
    with pytest.raises(ValueError, match="channels"):
        model.parse(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="patch_size"):
        tiny(patch_size=12)
    with pytest.raises(ValueError, match="too small"):
        tiny(image_size=(8, 8))
    with pytest.raises(ValueError, match="min_ratio"):
        tiny(min_ratio=0.6)
    with pytest.raises(ValueError, match="what_hidden"):
        tiny(what_hidden=-1)


def test_calibration_recomputes_batch_norm_statistics_as_plain_averages():
    model = tiny(backbone_norm=True)
    x = torch.stack([im for im, _ in scenes()])
    norms = [m for m in model.detector.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:  # statistics far from the data's, as moving averages of odd batches leave them
            m.running_mean.fill_(5.0)
            m.running_var.fill_(50.0)
    assert model.calibrate_detector([]) == 0  # no batches: the statistics are left alone
    assert float(norms[0].running_mean[0]) == 5.0
    assert model.calibrate_detector([x[:2], x[2:]]) == 2
    first = norms[0]
    conv = model.detector.backbone.stem[0][0]
    with torch.no_grad():
        pre = conv(model.detector.transform.normalize(x))
    # the plain average of the two batches' means (equal batch sizes), not a moving average
    expected = (pre[:2].mean((0, 2, 3)) + pre[2:].mean((0, 2, 3))) / 2
    torch.testing.assert_close(first.running_mean, expected)
    assert first.momentum == 0.1 and first.training  # momentum and mode restored
    model.eval()  # a calibration in evaluation mode recomputes the statistics all the same
    model.calibrate_detector([x])
    assert not first.training
    torch.testing.assert_close(first.running_mean, pre.mean((0, 2, 3)))
    assert tiny(backbone_norm=False).calibrate_detector([x]) == 0  # nothing to do without batch norm


@pytest.mark.parametrize("lazy", [False, True])
def test_trainer_calibrates_the_detector_when_stage_one_ends(tmp_path, monkeypatch, lazy):
    if lazy:  # a training set too large to stack: its batches are generated on demand
        monkeypatch.setattr("ppl_scenes.data.loading.MAX_IN_MEMORY_BYTES", 1)
    model = confident(tiny(detector_steps=2, backbone_norm=True, calibration_batches=2))
    calls = []
    original = model.calibrate_detector
    model.calibrate_detector = lambda batches: calls.append(original(batches))
    fit(model, scenes(), steps=3, batch_size=2, out=tmp_path / "run", progress=False, log_every=1)
    assert calls == [2]


def test_detector_learning_rate_follows_its_schedule_across_a_resume(tmp_path, monkeypatch):
    rates = []
    original = TwoStageTrainer.step_optimizer

    def record(self, name, loss, params):
        if name == "detector":
            rates.append(self.optimizers[name].param_groups[0]["lr"])
        return original(self, name, loss, params)

    monkeypatch.setattr(TwoStageTrainer, "step_optimizer", record)
    model = tiny(detector_steps=4, detector_lr_schedule=((2, 0.1), (3, 0.01)))
    kwargs = dict(batch_size=2, lr=1e-3, out=tmp_path / "run", progress=False, checkpoint_every=1)
    fit(model, scenes(), steps=3, **kwargs)
    resumed = tiny(detector_steps=4, detector_lr_schedule=[[2, 0.1], [3, 0.01]])  # as JSON stores it
    fit(resumed, scenes(), steps=5, resume=True, **kwargs)
    assert rates == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5])  # steps 0-1, 2, then 3 after the resume
    assert load(tmp_path / "run").config.detector_lr_schedule == ((2, 0.1), (3, 0.01))
    for bad in (((2, 0.1), (1, 0.5)), ((-1, 0.1),), ((2, 0.0),), (2, 0.1), ((2.5, 0.1),)):
        with pytest.raises(ValueError, match="detector_lr_schedule"):
            tiny(detector_lr_schedule=bad)


# -- a minutes budget shared between the stages ----------------------------------------------------
def fake_clock(monkeypatch, seconds):
    """The trainer's clock, read once at the start and once after each step: each reading ``seconds``
    later than the one before (a number, or an iterator of them)."""
    clock = {"t": 0.0}

    def perf_counter():
        clock["t"] += seconds if isinstance(seconds, int | float) else next(seconds)
        return clock["t"]

    monkeypatch.setattr(trainer_mod, "time", types.SimpleNamespace(perf_counter=perf_counter))


def test_stage_one_gets_its_steps_share_of_the_minutes():
    model = tiny(detector_steps=6)
    trainer = TwoStageTrainer(model, TrainConfig(steps=10, minutes=1.0), progress=False)
    assert trainer.svi_steps == 4 and trainer.detector_seconds() == pytest.approx(36.0)  # 60 * 6 / 10
    alone = TwoStageTrainer(model, TrainConfig(steps=0, minutes=10.0), progress=False)
    svi = SSDIR.default_train["steps"] - SSDIRConfig().detector_steps  # the default run's 2,000
    assert alone.svi_steps == svi and alone.detector_seconds() == pytest.approx(600 * 6 / (6 + svi))
    assert TwoStageTrainer(model, TrainConfig(steps=6, minutes=1.0)).detector_seconds() == 60.0  # no SVI
    assert TwoStageTrainer(model, TrainConfig(steps=10)).detector_seconds() == math.inf
    assert TwoStageTrainer(tiny(detector_steps=0), TrainConfig(steps=4, minutes=1.0)).detector_seconds() == 0


def test_a_minutes_budget_alone_gives_the_svi_stage_its_share(tmp_path, monkeypatch):
    """``ssdir --minutes M``: stage 1 stops at its share and the SVI stage trains the rest."""
    fake_clock(monkeypatch, 6.0)
    model = confident(tiny(detector_steps=1000))
    share = 60 * 1000 / (1000 + SSDIR.default_train["steps"] - SSDIRConfig().detector_steps)  # 20 s
    out = tmp_path / "run"
    fit(model, scenes(), minutes=1.0, batch_size=2, out=out, progress=False, log_every=1)
    records = read_metrics(out)
    cut = [r for r in records if "stage_stop_reason" in r]
    assert len(cut) == 1 and cut[0]["stage"] == 1 and cut[0]["seconds"] >= share > cut[0]["seconds"] - 6
    assert [r["step"] for r in records] == [1, 2, 3, 4, *range(1001, 1007)]  # 24 s of 60, then SVI
    assert [r["stage"] for r in records] == [1] * 4 + [2] * 6
    assert records[-1]["stop_reason"] == "minutes" and records[-1]["seconds"] == pytest.approx(60.0)
    assert (out / DETECTOR_FILE).is_file()  # the detector was frozen and saved: the codes trained


def test_stages_split_steps_and_minutes_across_a_resume(tmp_path, monkeypatch):
    fake_clock(monkeypatch, 12.0)
    out = tmp_path / "run"
    kw = dict(steps=10, batch_size=2, out=out, progress=False, log_every=1)
    # 30 s, 18 of them stage 1's (6 of 10 steps): steps 1 (12 s), 2 (24 s: share used), then SVI step 7
    fit(confident(tiny(detector_steps=6)), scenes(), minutes=0.5, **kw)
    assert [(r["step"], r["stage"]) for r in read_metrics(out)] == [(1, 1), (2, 1), (7, 2)]
    assert read_metrics(out)[-1]["stop_reason"] == "minutes"
    # a minute in all: the SVI stage goes on from its step 7 (36 s) to 60 s
    fit(tiny(detector_steps=6), scenes(), minutes=1.0, resume=True, **kw)
    records = read_metrics(out)
    assert [(r["step"], r["stage"]) for r in records] == [(1, 1), (2, 1), (7, 2), (8, 2), (9, 2)]
    assert records[-1]["stop_reason"] == "minutes" and records[-1]["seconds"] == pytest.approx(60.0)
    # the steps come first: the run ends at step 10 having done all it was asked
    fit(tiny(detector_steps=6), scenes(), minutes=10.0, resume=True, **kw)
    assert read_metrics(out)[-1]["step"] == 10 and read_metrics(out)[-1]["stop_reason"] == "steps"


def test_stage_one_that_finishes_its_steps_leaves_its_time_to_stage_two(tmp_path, monkeypatch):
    # stage 1's steps take a second, the SVI steps ten (the start's reading first)
    fake_clock(monkeypatch, iter([0.0, 1.0, 1.0] + [10.0] * 20))
    out = tmp_path / "run"
    model = confident(tiny(detector_steps=2))
    fit(model, scenes(), steps=10, minutes=1.0, batch_size=2, out=out, progress=False, log_every=1)
    records = read_metrics(out)  # stage 1's share is 12 s (2 of 10 steps) but its steps end at 2 s
    assert [r["stage"] for r in records] == [1] * 2 + [2] * 6  # stage 2 trains 58 s, past its 48
    assert not any("stage_stop_reason" in r for r in records)
    assert records[-1]["step"] == 8 and records[-1]["stop_reason"] == "minutes"
