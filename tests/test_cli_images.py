"""``ppl-scenes`` on your own images: ``train --images``, ``parse`` and ``eval --images``, run in-process.

A folder of six 40x40 PNG files with bright squares is made once per module and a tiny SPAIR run is
trained on it for two steps; the other tests parse with it, score it, resume copies of it, and feed
every command bad input (exit status 2, one error line, nothing written).
"""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ppl_scenes
from ppl_scenes.cli import EVAL_IMAGES_FILE, main
from ppl_scenes.runs import RunSpec

SMALL = ["what_dim=4", "feature_dim=8", "backbone_width=4", "hidden_dim=16", "train.batch_size=4"]
# Where the squares of the first two images lie ([x, y, w, h]): the hand-made ground truth.
SQUARES = {"im0.png": [[4, 6, 8, 8], [24, 20, 8, 8]], "im1.png": [[14, 2, 8, 8]]}


def make_folder(folder: Path, n: int = 6) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        pixels = np.zeros((40, 40), np.uint8)
        boxes = SQUARES.get(f"im{i}.png") or [[*rng.integers(0, 32, 2).tolist(), 8, 8]]
        for x, y, w, h in boxes:
            pixels[y : y + h, x : x + w] = 255
        Image.fromarray(pixels).save(folder / f"im{i}.png")
    return folder


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> content hash of every file (and folder) under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def train_args(folder, out, *extra):
    return ["train", "spair", "--images", str(folder), "--object-size", "8", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("own") / "images")


@pytest.fixture(scope="module")
def trained(folder, tmp_path_factory):
    """A 2-step tiny SPAIR run on the folder (trained once; tests copy it before changing it)."""
    out = tmp_path_factory.mktemp("cli-images") / "run"
    args = train_args(folder, out, "--steps", "2", "--num-test", "4", "--no-progress", *SMALL)
    assert main([*args, "data.num_scenes=8"]) == 0
    return out


@pytest.fixture
def run_copy(trained, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(trained, dst)
    return dst


def assert_clean_error(capsys, code, *needles):
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("ppl-scenes"), err
    for needle in needles:
        assert needle in errors[0], err
    return errors[0]


# -- train ----------------------------------------------------------------------------------------
def test_train_on_images_records_an_images_run(trained, folder):
    config = json.loads((trained / "config.json").read_text())
    assert config["data"]["name"] == "images"
    kwargs = config["data"]["kwargs"]
    assert kwargs["paths"] == [str(folder.resolve())]  # absolute: eval and resume work from anywhere
    assert kwargs["crop"] == [32, 32] and kwargs["object_size"] == 8.0 and kwargs["channels"] == 1
    assert kwargs["flips"] is True and kwargs["skip_bad"] is False and kwargs["num_scenes"] == 8
    model_config = config["model_config"]
    assert model_config["cell_size"] == [6, 6] and model_config["anchor"] == [9.6, 9.6]
    assert model_config["object_size"] == [8, 8] and model_config["what_dim"] == 4
    evaluation = json.loads((trained / "eval.json").read_text())
    assert evaluation["dataset"] == "images" and evaluation["step"] == 2
    assert evaluation["num_images"] == 4 and sum(evaluation["count_histogram"]) == 4
    assert {"elbo", "elbo_per_pixel", "count_mean", "count_std"} <= set(evaluation)


def test_overrides_right_after_images_are_overrides(folder, tmp_path, capsys):
    # nargs="+" of --images takes them; they are given back (a bad one stops before any work).
    code = main(train_args(folder, tmp_path / "run", "cell_size=8,8", "nosuchkey=1"))
    assert_clean_error(capsys, code, "nosuchkey")
    assert not (tmp_path / "run").exists()


def test_explicit_overrides_win_over_the_object_size(folder):
    messages = []
    spec = RunSpec.for_images("spair", folder, ["cell_size=8,8"], object_size=8, info=messages.append)
    assert spec.model_config["cell_size"] == (8, 8) and spec.model_config["anchor"] == (9.6, 9.6)
    assert messages == ["object size 8 px sets anchor=9.6,9.6 object_size=8,8 glimpse_size=8,8"]
    assert spec.num_test == 64 and spec.dataset == "images"
    colour = RunSpec.for_images("gmair", folder, object_size=10, crop=40, channels=3, flips=False)
    assert colour.model_config["channels"] == 3 and colour.data_kwargs["crop"] == (40, 40)
    assert colour.data_kwargs["flips"] is False


def test_ssdir_trains_on_images_only_without_detector_steps(folder):
    spec = RunSpec.for_images("ssdir", folder, ["detector_steps=0"], object_size=8)
    assert spec.model_config["image_size"] == (32, 32) and spec.model_config["detector_classes"] == 1
    with pytest.raises(ValueError, match="detector_steps=0"):
        RunSpec.for_images("ssdir", folder, object_size=8)


def test_resume_of_an_images_run_from_another_directory(run_copy, folder, tmp_path, monkeypatch, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    before = snapshot(run_copy)
    code = main(
        ["train", "spair", "--images", str(folder), "--object-size", "9", "--out", str(run_copy), "--resume"]
    )
    assert_clean_error(capsys, code, "object_size=9.0 (the run has 8.0)")
    code = main(["train", "spair", "--out", str(run_copy), "--resume", "--object-size", "8"])
    assert_clean_error(capsys, code, "--object-size applies to image files")
    assert snapshot(run_copy) == before
    assert main(["train", "spair", "--out", str(run_copy), "--resume", "--steps", "3", "--no-progress"]) == 0
    assert json.loads((run_copy / "eval.json").read_text())["step"] == 3
    # the run's own settings repeated are not an error
    assert main([*train_args(folder, run_copy, "--resume", "--steps", "4", "--no-progress"), *SMALL]) == 0
    assert json.loads((run_copy / "eval.json").read_text())["step"] == 4


# -- parse ----------------------------------------------------------------------------------------
def test_parse_writes_coco_codes_csv_and_figures(trained, folder, tmp_path, capsys):
    from pycocotools.coco import COCO

    det, figs, codes, rows = tmp_path / "det.json", tmp_path / "figs", tmp_path / "c.npz", tmp_path / "o.csv"
    args = ["parse", str(trained), str(folder), "--out", str(det), "--figures", str(figs)]
    capsys.readouterr()
    assert main([*args, "--codes", str(codes), "--csv", str(rows), "--no-progress"]) == 0
    summary = capsys.readouterr().out
    records = json.loads(det.read_text())
    assert f"parsed 6 images: {len(records['annotations'])} objects" in summary and str(det) in summary
    truth = COCO(str(det))  # the detections load as a COCO file, and as results on themselves
    assert len(truth.getImgIds()) == 6
    if records["annotations"]:
        results = truth.loadRes(records["annotations"])
        assert len(results.getAnnIds()) == len(records["annotations"])
    with np.load(codes) as z:
        assert sorted(map(int, z.files)) == [a["id"] for a in records["annotations"]]
    assert len(rows.read_text().splitlines()) == 1 + len(records["annotations"])
    assert len(list(figs.glob("*.png"))) == 6


def test_parse_files_from_python(trained, folder):
    assert ppl_scenes.ImageFolderScenes is ppl_scenes.data.ImageFolderScenes
    records = ppl_scenes.parse_files(ppl_scenes.load(trained), folder, progress=False)
    assert [im["file_name"] for im in records["images"]] == [str(folder / f"im{i}.png") for i in range(6)]


# -- eval -----------------------------------------------------------------------------------------
def write_truth(path: Path) -> Path:
    images = [{"id": k + 1, "file_name": name} for k, name in enumerate(SQUARES)]
    annotations = [
        {"image_id": k + 1, "bbox": box, "category_id": 1}
        for k, name in enumerate(SQUARES)
        for box in SQUARES[name]
    ]
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def test_eval_against_coco_truth(run_copy, folder, tmp_path, capsys):
    truth = write_truth(tmp_path / "truth.json")
    before = (run_copy / "eval.json").read_text()
    capsys.readouterr()
    assert main(["eval", str(run_copy), "--images", str(folder), "--annotations", str(truth), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["num_images"] == 2 and metrics["num_objects"] == 3 and metrics["step"] == 2
    assert {"ap50", "ap_coco", "count_accuracy", "count_mae"} <= set(metrics)
    assert json.loads((run_copy / EVAL_IMAGES_FILE).read_text()) == metrics
    assert (run_copy / "eval.json").read_text() == before
    assert main(["eval", str(run_copy), "--images", str(folder), "--annotations", str(truth)]) == 0
    assert "AP@0.5" in capsys.readouterr().out


def test_eval_of_an_images_run_scores_its_validation_crops(run_copy, capsys):
    capsys.readouterr()
    assert main(["eval", str(run_copy), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["dataset"] == "images" and metrics["num_images"] == 4 and "elbo" in metrics


# -- bad input: exit status 2, one error line, nothing written -------------------------------------
@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "spair", "--images", "{tmp}/nowhere", "--steps", "1"], "does not exist"),
        (["train", "spair", "--images", "{tmp}/empty", "--steps", "1"], "holds no images"),
        (
            ["train", "spair", "--images", "{folder}", "--object-size", "0"],
            "--object-size: must be a positive",
        ),
        (["train", "spair", "--images", "{folder}", "--object-size", "-3"], "--object-size"),
        (["train", "spair", "--images", "{folder}", "--object-size", "nan"], "--object-size"),
        (["train", "spair", "--images", "{folder}", "--object-size", "50"], "larger than"),
        (["train", "spair", "--images", "{folder}", "--crop", "64"], "smaller than the crop"),
        (["train", "spair", "--images", "{folder}", "--channels", "2"], "--channels"),
        (["train", "spair", "--images", "{folder}", "data.paths=x"], "data.paths"),
        (["train", "ssdir", "--images", "{folder}", "--object-size", "8"], "detector_steps=0"),
        (["train", "saccade", "--images", "{folder}", "--steps", "1"], "image-level model"),
        (["train", "resnet", "--images", "{folder}", "--object-size", "8"], "image-level model"),
        (["train", "spair", "--object-size", "8", "--steps", "1"], "give --images"),
        (["train", "spair", "--images", "{folder}", "--dataset", "shapes"], "do not apply to --images"),
        (["parse", "{run}", "{folder}", "--out", "{tmp}/nodir/det.json"], "does not exist"),
        (["parse", "{run}", "{folder}", "--out", "{tmp}/det.json", "--codes", "{tmp}/nodir/c.npz"], "nodir"),
        (["parse", "{run}", "{folder}", "--out", "{tmp}/det.json", "--csv", "{tmp}/nodir/o.csv"], "nodir"),
        (["parse", "{run}", "{folder}", "--out", "{tmp}/det.json", "--figures", "{tmp}/nodir/f"], "nodir"),
        (["parse", "{run}", "{folder}", "--out", "{tmp}/det.json", "--csv", "{tmp}/det.json"], "different"),
        (["parse", "{run}", "{tmp}/nowhere", "--out", "{tmp}/det.json"], "does not exist"),
        (["parse", "{run}", "{tmp}/empty", "--out", "{tmp}/det.json"], "holds no images"),
        (["parse", "{tmp}/norun", "{folder}", "--out", "{tmp}/det.json"], "does not exist"),
        (["parse", "{run}", "{folder}", "--out", "{tmp}/det.json", "--batch-size", "0"], "--batch-size"),
        (["eval", "{run}", "--images", "{folder}", "--annotations", "{tmp}/notes.txt"], "not JSON"),
        (["eval", "{run}", "--images", "{folder}", "--annotations", "{tmp}/other.json"], "is not COCO"),
        (
            ["eval", "{run}", "--images", "{folder}", "--annotations", "{tmp}/stranger.json"],
            "files not given",
        ),
        (["eval", "{run}", "--images", "{folder}", "--annotations", "{tmp}/none.json"], "does not exist"),
        (["eval", "{run}", "--images", "{folder}"], "--annotations"),
        (
            ["eval", "{run}", "--images", "{tmp}/nowhere", "--annotations", "{tmp}/truth.json"],
            "does not exist",
        ),
    ],
)
def test_bad_input(args, needle, run_copy, folder, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not json")
    (tmp_path / "other.json").write_text('{"images": 3}')
    stranger = {"images": [{"id": 1, "file_name": "zebra.png"}], "annotations": []}
    (tmp_path / "stranger.json").write_text(json.dumps(stranger))
    write_truth(tmp_path / "truth.json")
    args = [a.format(tmp=tmp_path, folder=folder, run=run_copy) for a in args]
    if args[0] == "train":
        args += ["--out", str(tmp_path / "new")]
    before, images = snapshot(tmp_path), snapshot(folder)
    assert_clean_error(capsys, main(args), needle)
    assert snapshot(tmp_path) == before and snapshot(folder) == images  # nothing written
