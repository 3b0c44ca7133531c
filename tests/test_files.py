"""Models on your own files: parse to COCO (whole or tiled), export, score against COCO truth, validate."""

import contextlib
import csv
import io
import json
import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from ppl_scenes.data import ImageFolderScenes
from ppl_scenes.data.images import ImageInputError, UnreadableImageError, find_images
from ppl_scenes.files import (
    AnnotationError,
    ImageLevelModelError,
    OutputPathError,
    draw_parses,
    evaluate_unlabelled,
    load_coco_annotations,
    parse_files,
    score_coco,
    score_detections,
    tile_parse,
    write_coco,
    write_codes,
    write_csv,
)
from ppl_scenes.models import MIST, MODELS, SPAIR, SSDIR, SceneParse
from ppl_scenes.scene import RankedParse, TiledParse
from ppl_scenes.sizing import object_size_overrides


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def squares_image(h, w, corners, side=6):
    """A black uint8 image with white squares at the given (x, y) corners, and their xyxy boxes."""
    image = np.zeros((h, w), dtype=np.uint8)
    for x, y in corners:
        image[y : y + side, x : x + side] = 255
    return image, [[x, y, x + side, y + side] for x, y in corners]


class SquareFinder(RankedParse, TiledParse):
    """Finds bright squares (connected components); like SSDIR it works at one input size only."""

    name = "squares"
    fixed_input = True
    training = False

    def __init__(self, size=(32, 32), score_threshold=0.5):
        self.config = SimpleNamespace(image_size=size, channels=1, score_threshold=score_threshold)
        self.device = torch.device("cpu")
        self.calls = []

    @property
    def parse_tile(self):
        return tuple(self.config.image_size)

    @property
    def presence_threshold(self):
        return self.config.score_threshold

    def min_image_size(self):
        return tuple(self.config.image_size)

    def train(self, mode=True):
        return self

    def parse(self, x, score_threshold=None):
        self.calls.append(tuple(x.shape))
        boxes, scores, what = [], [], []
        for image in x:
            labelled, _ = ndimage.label(image[0].numpy() > 0.5)
            found = ndimage.find_objects(labelled)
            b = [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in found]
            boxes.append(torch.tensor(b, dtype=torch.float32).reshape(-1, 4))
            scores.append(torch.full((len(b),), 0.9))
            what.append(boxes[-1][:, :2] + boxes[-1][:, 2:])
        return SceneParse(boxes=boxes, scores=scores, what=what, reconstruction=x.clone())


def tiny_spair():
    return SPAIR(
        cell_size=(8, 8),
        anchor=(10.0, 10.0),
        what_dim=4,
        hidden_dim=16,
        feature_dim=16,
        backbone_width=4,
        glimpse_size=(8, 8),
        object_size=(8, 8),
    )


def tiny_ssdir():
    small = {"detector_steps": 0, "backbone_widths": (4, 8, 8), "pyramid_channels": 8, "decoder_width": 8}
    return SSDIR(**object_size_overrides("ssdir", 8, image_size=32, overrides={**small, "what_dim": 4}))


def recording(model):
    """Wrap ``model.parse`` to record the shape of every batch it sees."""
    shapes, parse = [], model.parse

    def wrapped(x, **kwargs):
        shapes.append(tuple(x.shape))
        return parse(x, **kwargs)

    model.parse = wrapped
    return shapes


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.fixture
def folder(tmp_path):
    """Two 48x48 images, one 100x130 image larger than any training crop, and a text file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    save(root / "a.png", (rng.random((48, 48)) * 255).astype(np.uint8))
    save(root / "b.png", (rng.random((48, 48)) * 255).astype(np.uint8))
    save(root / "large" / "c.png", (rng.random((100, 130)) * 255).astype(np.uint8))
    (root / "notes.txt").write_text("x")
    return root


def check_coco(records):
    """The records follow the COCO detection schema."""
    assert set(records) >= {"images", "annotations", "categories"}
    images = {im["id"]: im for im in records["images"]}
    assert sorted(images) == list(range(1, len(images) + 1))
    for im in records["images"]:
        assert isinstance(im["file_name"], str) and im["width"] > 0 and im["height"] > 0
    categories = {c["id"] for c in records["categories"]}
    assert all(isinstance(c["name"], str) for c in records["categories"])
    ids = [a["id"] for a in records["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    for a in records["annotations"]:
        im = images[a["image_id"]]
        x, y, w, h = a["bbox"]
        assert all(isinstance(v, float) for v in a["bbox"]) and w > 0 and h > 0
        assert -1e-3 <= x and x + w <= im["width"] + 1e-2 and -1e-3 <= y and y + h <= im["height"] + 1e-2
        assert a["area"] == pytest.approx(w * h, rel=1e-3, abs=1e-2)
        assert 0 <= a["score"] and a["category_id"] in categories and a["iscrowd"] == 0
    json.dumps({k: records[k] for k in ("images", "annotations", "categories")})


def pycoco(dataset):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


# ------------------------------------------------------------------------------------------ parsing


def test_spair_parses_every_file_whole_and_exports(folder, tmp_path):
    model = tiny_spair()
    shapes = recording(model)
    figures = tmp_path / "figures"
    with pytest.warns(UserWarning, match="ignored 1 files"):
        records = parse_files(model, folder, progress=False, figures_dir=figures, keep_reconstructions=True)
    assert shapes == [(2, 1, 48, 48), (1, 1, 100, 130)]  # equal sizes batched, the large one whole
    check_coco(records)
    assert [im["file_name"] for im in records["images"]] == [
        str(folder / "a.png"),
        str(folder / "b.png"),
        str(folder / "large" / "c.png"),
    ]
    assert records["images"][2]["width"] == 130 and records["images"][2]["height"] == 100
    assert records["annotations"] and records["categories"] == [{"id": 1, "name": "object"}]
    assert set(records["codes"]) == {a["id"] for a in records["annotations"]}
    assert records["ignored"] == 1 and records["skipped"] == []
    assert sorted(p.name for p in figures.iterdir()) == ["00001_a.png", "00002_b.png", "00003_c.png"]
    assert records["reconstructions"][3].shape == (1, 100, 130)

    gt = pycoco({k: records[k] for k in ("images", "categories")} | {"annotations": []})
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(records["annotations"])
    assert len(dt.getAnnIds()) == len(records["annotations"])

    coco_path = write_coco(records, tmp_path / "det.json")
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        loaded = COCO(str(coco_path))
    assert len(loaded.getAnnIds()) == len(records["annotations"]) and len(loaded.getImgIds()) == 3
    codes = np.load(write_codes(records, tmp_path / "codes.npz"))
    assert set(codes.files) == {str(a["id"]) for a in records["annotations"]}
    assert codes["1"].shape == (4,) and codes["1"].dtype == np.float32
    with open(write_csv(records, tmp_path / "objects.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(records["annotations"]) and rows[0]["file_name"] == str(folder / "a.png")
    assert float(rows[0]["width"]) == records["annotations"][0]["bbox"][2]
    drawn = draw_parses(records, tmp_path / "again")
    assert [p.name for p in drawn] == ["00001_a.png", "00002_b.png", "00003_c.png"]


def test_threshold_changes_what_is_reported(folder):
    model = tiny_spair()
    own = quiet(parse_files, model, folder, progress=False)
    low = quiet(parse_files, model, folder, threshold=0.0, progress=False)
    none = quiet(parse_files, model, folder, threshold=1.01, progress=False)
    assert len(low["annotations"]) >= len(own["annotations"]) and none["annotations"] == []
    assert all(a["score"] >= 0.5 for a in own["annotations"])
    model.config.score_threshold = 0.99
    assert len(quiet(parse_files, model, folder, progress=False)["annotations"]) <= len(own["annotations"])


def test_fully_convolutional_model_tiles_when_asked(folder):
    model = tiny_spair()
    shapes = recording(model)
    records = quiet(parse_files, model, folder / "large", tile=64, progress=False)
    assert shapes and all(s[-2:] == (64, 64) for s in shapes)
    check_coco(records)
    assert records["images"][0]["width"] == 130


def test_ssdir_parses_in_tiles_of_its_input_size_and_pads_small_images(tmp_path):
    rng = np.random.default_rng(1)
    save(tmp_path / "d" / "large.png", (rng.random((80, 100)) * 255).astype(np.uint8))
    save(tmp_path / "d" / "small.png", (rng.random((20, 24)) * 255).astype(np.uint8))
    model = tiny_ssdir()
    shapes = recording(model)
    records = parse_files(model, tmp_path / "d", threshold=0.01, batch_size=4, progress=False)
    assert shapes and all(s[-2:] == (32, 32) for s in shapes)
    assert sum(s[0] for s in shapes) == 3 * 4 + 1  # 3x4 tiles of the large image, the small one padded
    check_coco(records)
    assert {im["file_name"].rsplit("/", 1)[-1]: (im["height"], im["width"]) for im in records["images"]} == {
        "large.png": (80, 100),
        "small.png": (20, 24),
    }
    with pytest.raises(ValueError, match=r"parses 32x32 inputs only"):
        parse_files(model, tmp_path / "d", tile=48, progress=False)


def test_tiles_merge_into_one_detection_per_object():
    corners = [(0, 0), (20, 3), (27, 27), (45, 50), (70, 8), (90, 70), (124, 94), (60, 30), (27, 60)]
    image, truth = squares_image(100, 130, corners)
    finder = SquareFinder()
    parse = tile_parse(finder, torch.from_numpy(image / 255.0).float()[None])
    assert finder.calls and all(c[-2:] == (32, 32) for c in finder.calls)
    found = sorted(parse.boxes[0].tolist())
    assert found == sorted(map(list, map(lambda b: [float(v) for v in b], truth)))
    assert torch.equal(parse.reconstruction[0, 0], torch.from_numpy(image / 255.0).float())
    assert parse.what[0].shape == (len(truth), 2)
    with pytest.raises(ValueError, match="overlap must be"):
        tile_parse(finder, torch.zeros(1, 50, 50), overlap=32)
    with pytest.raises(ValueError, match="needs a tile size"):
        tile_parse(tiny_spair(), torch.zeros(1, 50, 50))


def test_mist_is_tiled_at_four_patch_sides(tmp_path):
    save(tmp_path / "m.png", (np.random.default_rng(2).random((64, 80)) * 255).astype(np.uint8))
    model = MIST(**object_size_overrides("mist", 8, overrides={"heatmap_channels": 4, "task_width": 4}))
    shapes = recording(model)
    records = parse_files(model, tmp_path / "m.png", progress=False)
    assert shapes and all(s[-2:] == (32, 32) for s in shapes)
    check_coco(records)
    assert len(records["annotations"]) <= model.config.num_patches * 9


def test_arrays_stacks_and_entry_names(tmp_path):
    stack = np.random.default_rng(3).random((6, 24, 24)).astype(np.float32)
    np.save(tmp_path / "stack.npy", stack)
    model = tiny_spair()
    records = parse_files(model, [f"{tmp_path / 'stack.npy'}::4", tmp_path / "stack.npy"], progress=False)
    names = [im["file_name"] for im in records["images"]]
    assert names[0] == f"{tmp_path / 'stack.npy'}::0" and len(names) == 6  # deduplicated, in file order
    entries = find_images(tmp_path / "stack.npy").entries[:2]
    assert len(parse_files(model, entries, progress=False)["images"]) == 2


# ------------------------------------------------------------------------------------------ scoring


@pytest.fixture
def labelled(tmp_path):
    """Two images of squares and their COCO truth, named relative to the folder."""
    root = tmp_path / "scenes"
    first, boxes1 = squares_image(40, 40, [(2, 2), (20, 25)])
    second, boxes2 = squares_image(70, 90, [(5, 40), (33, 12), (60, 55), (80, 2)])
    save(root / "one.png", first)
    save(root / "sub" / "two.png", second)
    annotations = []
    for image_id, boxes in ((1, boxes1), (2, boxes2)):
        for x0, y0, x1, y1 in boxes:
            annotations.append({"image_id": image_id, "bbox": [x0, y0, x1 - x0, y1 - y0], "category_id": 7})
    truth = {
        "images": [{"id": 1, "file_name": "one.png"}, {"id": 2, "file_name": "sub/two.png"}],
        "annotations": annotations,
        "categories": [{"id": 7, "name": "square"}],
    }
    path = tmp_path / "truth.json"
    path.write_text(json.dumps(truth))
    return root, path, truth


def test_perfect_detections_score_one(labelled):
    root, path, truth = labelled
    scores = score_coco(SquareFinder(), root, path)
    assert scores["ap50"] == 1.0 and scores["ap_coco"] == 1.0
    assert scores["count_accuracy"] == 1.0 and scores["count_mae"] == 0.0
    assert scores["num_images"] == 2 and scores["num_objects"] == 6 and scores["num_detections"] == 6

    checked = load_coco_annotations(path, root)
    assert [im["path"] for im in checked["images"]] == [str(root / "one.png"), str(root / "sub" / "two.png")]
    perfect = {
        "images": [{"id": 10 + im["id"], "file_name": im["path"]} for im in checked["images"]],
        "annotations": [
            {"id": a["id"], "image_id": 10 + a["image_id"], "bbox": a["bbox"], "score": 1.0, "category_id": 1}
            for a in checked["annotations"]
        ],
    }
    assert score_detections(perfect, checked)["ap50"] == 1.0
    perfect["annotations"][0]["bbox"] = [20.0, 2.0, 6.0, 6.0]  # one box moved off its object
    worse = score_detections(perfect, checked)
    assert worse["ap50"] < 1.0 and worse["count_accuracy"] == 1.0
    perfect["annotations"] = perfect["annotations"][1:]
    assert score_detections(perfect, checked)["count_mae"] == 0.5


def test_a_model_scores_one_against_its_own_detections(folder, tmp_path):
    model = tiny_spair()
    records = quiet(parse_files, model, folder, progress=False)
    truth = write_coco(records, tmp_path / "self.json")
    scores = quiet(score_coco, model, folder, truth)
    assert scores["ap50"] == 1.0 and scores["count_accuracy"] == 1.0 and scores["num_images"] == 3


def test_truth_without_objects_gives_nan_ap(labelled, tmp_path):
    root, _, truth = labelled
    empty = {**truth, "annotations": []}
    scores = score_coco(SquareFinder(), root, empty)
    assert math.isnan(scores["ap50"]) and math.isnan(scores["ap_coco"]) and scores["count_mae"] == 3.0


# ------------------------------------------------------------------------------ validation, unlabelled


def test_evaluate_unlabelled_gives_elbo_and_counts(folder):
    val = quiet(ImageFolderScenes, folder, split="val", num_scenes=6, crop=32)
    model = tiny_spair()
    before = torch.random.get_rng_state()
    results = evaluate_unlabelled(model, val, batch_size=4)
    assert torch.equal(before, torch.random.get_rng_state())
    assert math.isfinite(results["elbo"]) and results["elbo"] < 0
    assert results["elbo_per_pixel"] == pytest.approx(results["elbo"] / (32 * 32))
    assert results["num_images"] == 6 and sum(results["count_histogram"]) == 6
    assert results["count_mean"] >= 0 and 0 <= results["rmse"] <= 1
    assert evaluate_unlabelled(model, val, batch_size=4) == results  # the ELBO's samples are seeded
    json.dumps(results)
    mist = MIST(**object_size_overrides("mist", 8, overrides={"heatmap_channels": 4, "task_width": 4}))
    mist_results = evaluate_unlabelled(mist, val, max_scenes=3)
    assert "elbo" not in mist_results and mist_results["count_mean"] == mist.config.num_patches


def test_evaluate_unlabelled_converts_colour_for_a_gray_model(tmp_path):
    rgb = (np.random.default_rng(4).random((40, 40, 3)) * 255).astype(np.uint8)
    save(tmp_path / "c" / "x.png", rgb)
    save(tmp_path / "c" / "y.png", rgb[::-1].copy())
    val = ImageFolderScenes(tmp_path / "c", split="val", num_scenes=2, crop=24)
    assert val.channels == 3 and evaluate_unlabelled(tiny_spair(), val)["num_images"] == 2


# -------------------------------------------------------------------------------------- bad inputs


def test_image_level_models_are_refused(folder, labelled):
    for name in ("saccade", "resnet"):
        model = MODELS[name]()
        with pytest.raises(ImageLevelModelError, match=f"'{name}' is an image-level model"):
            parse_files(model, folder)
        with pytest.raises(ImageLevelModelError):
            score_coco(model, labelled[0], labelled[1])
        with pytest.raises(ImageLevelModelError):
            evaluate_unlabelled(model, [])
    counted = MIST(count_from_labels=True)
    with pytest.raises(ValueError, match="count_from_labels"):
        parse_files(counted, folder)


def test_images_smaller_than_the_model_are_refused_before_parsing(tmp_path):
    save(tmp_path / "t" / "big.png", np.zeros((40, 40), dtype=np.uint8))
    save(tmp_path / "t" / "tiny.png", np.zeros((4, 30), dtype=np.uint8))
    model = tiny_spair()
    shapes = recording(model)
    with pytest.raises(
        ImageInputError, match=r"tiny.png' is 4x30, smaller than the model's smallest input 8x8"
    ):
        parse_files(model, tmp_path / "t", progress=False)
    assert shapes == []


def test_bad_files_raise_or_are_skipped(folder):
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    with pytest.raises(UnreadableImageError, match="broken.jpg"):
        quiet(parse_files, tiny_spair(), folder, progress=False)
    records = quiet(parse_files, tiny_spair(), folder, progress=False, skip_bad=True)
    assert records["skipped"] == [str(folder / "broken.jpg")] and len(records["images"]) == 3
    with pytest.raises(ImageInputError, match="does not exist"):
        parse_files(tiny_spair(), folder / "missing")


def test_outputs_in_missing_folders_write_nothing(folder, tmp_path):
    records = quiet(parse_files, SquareFinder(), folder, progress=False)
    missing = tmp_path / "missing" / "out"
    for write in (write_coco, write_codes, write_csv):
        with pytest.raises(OutputPathError, match="does not exist"):
            write(records, missing)
    assert not (tmp_path / "missing").exists()
    finder = SquareFinder()
    with pytest.raises(OutputPathError, match="does not exist"):
        parse_files(finder, folder, figures_dir=tmp_path / "missing" / "figs")
    assert finder.calls == [] and not (tmp_path / "missing").exists()
    with pytest.raises(OutputPathError, match="is a folder"):
        write_coco(records, tmp_path)
    with pytest.raises(ValueError, match="no codes"):
        write_codes({**records, "codes": {}}, tmp_path / "c.npz")


def test_bad_annotations(labelled, tmp_path):
    root, path, truth = labelled
    with pytest.raises(AnnotationError, match="does not exist"):
        load_coco_annotations(tmp_path / "nope.json", root)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(AnnotationError, match="is not JSON"):
        load_coco_annotations(tmp_path / "bad.json", root)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(AnnotationError, match="is not COCO: it needs 'images' and 'annotations'"):
        load_coco_annotations(tmp_path / "list.json", root)
    broken = {**truth, "annotations": [{"image_id": 1, "bbox": [0, 0, -3, 4]}]}
    with pytest.raises(AnnotationError, match=r"annotation 0 needs .*'bbox' \[x, y, w, h\]"):
        load_coco_annotations(broken, root)
    stray = {**truth, "annotations": [{"image_id": 9, "bbox": [0, 0, 3, 4]}]}
    with pytest.raises(AnnotationError, match="'image_id' of a listed image"):
        load_coco_annotations(stray, root)
    unnamed = {**truth, "images": [{"id": 1}]}
    with pytest.raises(AnnotationError, match="'file_name'"):
        load_coco_annotations(unnamed, root)
    other = {**truth, "images": [*truth["images"], {"id": 3, "file_name": "three.png"}]}
    with pytest.raises(AnnotationError, match="name files not given: 'three.png'"):
        load_coco_annotations(other, root)
    with pytest.raises(AnnotationError, match="name files not given"):
        score_coco(SquareFinder(), root / "one.png", path)
    twice = {"images": [truth["images"][0], {"id": 5, "file_name": "./one.png"}], "annotations": []}
    with pytest.raises(AnnotationError, match="one.png' twice"):
        load_coco_annotations(twice, root)
    sized = {**truth, "images": [{"id": 1, "file_name": "one.png", "width": 41}, truth["images"][1]]}
    with pytest.raises(AnnotationError, match="one.png' is 40x40 but the annotations say"):
        load_coco_annotations(sized, root)
