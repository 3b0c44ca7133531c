"""Your own images: finding them, decoding every format, lazy crops, splits and every bad input."""

import pickle
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ppl_scenes.data import ImageFolderScenes, make_dataset
from ppl_scenes.data import images as images_module
from ppl_scenes.data.images import (
    ImageInputError,
    UnreadableImageError,
    find_images,
    read_image,
)


def gray(h, w, seed=0):
    return (np.random.default_rng(seed).random((h, w)) * 255).astype(np.uint8)


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    """Five gray PNGs (one in a subfolder), a text file and a .DS_Store."""
    root = tmp_path / "imgs"
    for i in range(4):
        save(root / f"img{i}.png", gray(60 + i, 70, seed=i))
    save(root / "sub" / "deep.png", gray(64, 64, seed=9))
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\x00\x01junk")
    return root


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ------------------------------------------------------------------------------------------ finding


def test_folder_is_searched_recursively_sorted_and_non_images_are_ignored(folder):
    with pytest.warns(UserWarning, match=r"ignored 2 files that are not images"):
        found = find_images(folder)
    assert found.names == [str(folder / f"img{i}.png") for i in range(4)] + [str(folder / "sub" / "deep.png")]
    assert sorted(found.ignored) == sorted([str(folder / ".DS_Store"), str(folder / "notes.txt")])
    assert found[0].size == (60, 70) and found[0].channels == 1
    assert len(found) == 5 and [e.name for e in found] == found.names


def test_glob_single_file_and_duplicates(folder):
    found = find_images(str(folder / "img[12].png"))
    assert found.names == [str(folder / "img1.png"), str(folder / "img2.png")]
    found = find_images(str(folder / "**" / "*.png"))
    assert len(found) == 5
    one = find_images(folder / "img3.png")
    assert one.names == [str(folder / "img3.png")]
    twice = find_images([str(folder / "img3.png"), str(folder / "img[3].png")])
    assert twice.names == [str(folder / "img3.png")]


def test_find_images_reads_headers_only(folder, monkeypatch):
    calls = []
    monkeypatch.setattr(images_module, "_decode", lambda e: calls.append(e) or np.zeros(1))
    quiet(find_images, folder)
    assert calls == []


# ----------------------------------------------------------------------------------------- decoding


def test_png_jpeg_bmp_webp_and_rgb(tmp_path):
    g = gray(20, 30)
    assert torch.allclose(read_image(save(tmp_path / "g.png", g)), torch.from_numpy(g / 255.0).float()[None])
    assert torch.allclose(read_image(save(tmp_path / "g.bmp", g)), torch.from_numpy(g / 255.0).float()[None])
    rgb = np.stack([g, 255 - g, np.full_like(g, 128)], -1)
    x = read_image(save(tmp_path / "c.webp", rgb))
    assert x.shape == (3, 20, 30) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    smooth = np.tile(np.linspace(0, 255, 30, dtype=np.uint8), (20, 1))
    jpeg = read_image(save(tmp_path / "s.jpg", np.stack([smooth] * 3, -1)))
    assert jpeg.shape == (3, 20, 30)
    assert (jpeg - torch.from_numpy(smooth / 255.0).float()).abs().mean() < 0.03
    rgba = np.concatenate([rgb, np.full_like(g, 7)[..., None]], -1)
    assert read_image(save(tmp_path / "a.png", rgba)).shape == (3, 20, 30)  # alpha dropped


def test_16_bit_tiff_and_png_scale_by_65535(tmp_path):
    deep = (np.arange(16 * 24).reshape(16, 24) * 150).astype(np.uint16)
    expected = torch.from_numpy(deep / 65535.0).float()[None]
    for name in ("deep.tif", "deep.tiff", "deep.png"):
        x = read_image(save(tmp_path / name, deep))
        assert x.shape == (1, 16, 24) and torch.allclose(x, expected, atol=1e-6), name
    dark = np.full((8, 8), 200, dtype=np.uint16)  # a dark 16-bit image is not taken as 8-bit
    assert torch.allclose(read_image(save(tmp_path / "dark.tif", dark)), torch.full((1, 8, 8), 200 / 65535))


def test_channels_convert_gray_and_rgb(tmp_path):
    g = gray(10, 12)
    path = save(tmp_path / "g.png", g)
    three = read_image(path, channels=3)
    assert three.shape == (3, 10, 12) and torch.equal(three[0], three[2])
    rgb = np.stack([np.full_like(g, 255), np.zeros_like(g), np.zeros_like(g)], -1)
    one = read_image(save(tmp_path / "red.png", rgb), channels=1)
    assert one.shape == (1, 10, 12) and torch.allclose(one, torch.full_like(one, 0.299))
    with pytest.raises(ImageInputError, match="channels must be 1"):
        read_image(path, channels=2)


def test_npy_layouts_and_stacks(tmp_path):
    rng = np.random.default_rng(0)
    hw = rng.random((9, 11)).astype(np.float32)
    np.save(tmp_path / "hw.npy", hw)
    assert torch.allclose(read_image(tmp_path / "hw.npy")[0], torch.from_numpy(hw))
    hwc = rng.random((9, 11, 3)).astype(np.float32)
    np.save(tmp_path / "hwc.npy", hwc)
    assert torch.allclose(read_image(tmp_path / "hwc.npy"), torch.from_numpy(hwc).permute(2, 0, 1))
    np.save(tmp_path / "chw.npy", hwc.transpose(2, 0, 1).copy())
    assert torch.allclose(read_image(tmp_path / "chw.npy"), torch.from_numpy(hwc).permute(2, 0, 1))
    stack = (rng.random((6, 9, 11)) * 255).astype(np.uint8)
    np.save(tmp_path / "stack.npy", stack)
    found = find_images(tmp_path / "stack.npy")
    assert found.names == [f"{tmp_path / 'stack.npy'}::{i}" for i in range(6)]
    assert torch.allclose(read_image(found.names[4])[0], torch.from_numpy(stack[4] / 255.0).float())
    with pytest.raises(ImageInputError, match="holds 6 images; name one"):
        read_image(tmp_path / "stack.npy")
    small = np.zeros((3, 9, 11, 1), dtype=np.uint16)  # a short stack keeps its axis with [N, H, W, 1]
    np.save(tmp_path / "short.npy", small)
    assert len(find_images(tmp_path / "short.npy")) == 3


def test_npz_entries_one_per_image(tmp_path):
    rng = np.random.default_rng(1)
    one, many = rng.random((8, 8)).astype(np.float32), rng.random((5, 8, 8, 3)).astype(np.float32)
    np.savez(tmp_path / "data.npz", frames=many, single=one)
    found = find_images(tmp_path / "data.npz")
    path = tmp_path / "data.npz"
    assert found.names == [f"{path}::frames[{i}]" for i in range(5)] + [f"{path}::single"]
    assert found[0].channels == 3 and found[-1].channels == 1
    assert torch.allclose(read_image(f"{path}::frames[3]"), torch.from_numpy(many[3]).permute(2, 0, 1))
    assert torch.allclose(read_image(f"{path}::single")[0], torch.from_numpy(one))
    with pytest.raises(ImageInputError, match="holds no image"):
        read_image(f"{path}::nothing")
    assert find_images(f"{path}::single").names == [f"{path}::single"]


def test_integer_and_float_ranges(tmp_path):
    np.save(tmp_path / "i16.npy", np.full((4, 4), 1000, dtype=np.int32))
    assert torch.allclose(read_image(tmp_path / "i16.npy"), torch.full((1, 4, 4), 1000 / 65535))
    np.save(tmp_path / "bright.npy", np.full((4, 4), 2.0, dtype=np.float32))
    with pytest.raises(UnreadableImageError, match=r"bright.npy.*outside \[0, 1\]"):
        read_image(tmp_path / "bright.npy")
    np.save(tmp_path / "neg.npy", np.full((4, 4), -3, dtype=np.int64))
    with pytest.raises(UnreadableImageError, match="integers in"):
        read_image(tmp_path / "neg.npy")


# ------------------------------------------------------------------------------------- the dataset


def test_registered_and_items_are_unlabelled_crops(folder):
    ds = quiet(make_dataset, "images", "train", paths=[folder], num_scenes=12, crop=32, seed=3)
    assert isinstance(ds, ImageFolderScenes) and len(ds) == 12 and ds.image_size == (32, 32)
    image, target = ds[0]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert int(target["count"]) == -1 and target["file"] in ds.files("train")
    x0, y0, x1, y1 = target["crop_box"].tolist()
    assert x1 - x0 == 32 and y1 - y0 == 32
    entry = next(e for e in ds.entries if e.name == target["file"])
    assert 0 <= x0 and x1 <= entry.size[1] and 0 <= y0 and y1 <= entry.size[0]
    pixels = read_image(target["file"])[:, int(y0) : int(y1), int(x0) : int(x1)]
    assert torch.equal(image, pixels) or torch.equal(image, pixels.flip(-1))


def test_crops_are_a_pure_function_of_seed_and_index(folder):
    def build(seed):
        return quiet(ImageFolderScenes, folder, num_scenes=10, crop=24, seed=seed)

    ds = build(0)
    forward = [ds[i] for i in range(10)]
    backward = [build(0)[i] for i in reversed(range(10))][::-1]
    for (a, ta), (b, tb) in zip(forward, backward):
        assert torch.equal(a, b) and torch.equal(ta["crop_box"], tb["crop_box"])
        assert ta["flipped"] == tb["flipped"]
    other = build(1)
    assert any(not torch.equal(ds[i][0], other[i][0]) for i in range(10))
    assert {t["flipped"] for _, t in forward} <= {"none", "h"}
    none = quiet(ImageFolderScenes, folder, num_scenes=10, crop=24, flips=False)
    assert {none[i][1]["flipped"] for i in range(10)} == {"none"}
    both = quiet(ImageFolderScenes, folder, num_scenes=40, crop=24, flips="both")
    assert any("v" in both[i][1]["flipped"] for i in range(40))


def test_lazy_decoding_one_file_at_a_time(tmp_path, monkeypatch):
    for i in range(30):
        save(tmp_path / "big" / f"f{i:02d}.png", gray(40, 40, seed=i))
    calls = []
    real = images_module._decode
    monkeypatch.setattr(images_module, "_decode", lambda e: calls.append(e.name) or real(e))
    ds = ImageFolderScenes(tmp_path / "big", num_scenes=300, crop=16)
    assert calls == []  # only headers were read
    ds[0]
    assert len(calls) == 1
    ds[1]  # the same file, from the cache
    assert len(calls) == 1
    for i in range(len(ds)):  # in order, every training file is decoded once
        ds[i]
    assert len(calls) == len(set(calls)) == len(ds.files("train"))
    uncached = ImageFolderScenes(tmp_path / "big", num_scenes=300, crop=16, cache_mb=0)
    calls.clear()
    uncached[0], uncached[1]
    assert len(calls) == 2


def test_crops_share_images_by_area(tmp_path):
    save(tmp_path / "d" / "big.png", gray(200, 200))
    save(tmp_path / "d" / "small.png", gray(50, 50))
    save(tmp_path / "d" / "val.png", gray(50, 50))
    ds = ImageFolderScenes(tmp_path / "d", num_scenes=170, crop=20, val_paths=[tmp_path / "d" / "val.png"])
    files = [ds[i][1]["file"] for i in range(len(ds))]
    assert (
        files.count(str(tmp_path / "d" / "big.png")) == 160 and str(tmp_path / "d" / "val.png") not in files
    )


def test_validation_files_are_fixed_and_never_trained_on(folder, tmp_path):
    for i in range(4, 12):
        save(folder / f"img{i}.png", gray(60, 70, seed=i))
    train = quiet(ImageFolderScenes, folder, num_scenes=200, crop=24, seed=0)
    val = quiet(ImageFolderScenes, folder, split="val", crop=24, seed=5)
    held = val.files("val")
    assert len(held) == 1 and held == train.files("val") and len(val) == 64
    assert set(held).isdisjoint(train.files("train"))
    assert {train[i][1]["file"] for i in range(len(train))}.isdisjoint(held)
    assert {val[i][1]["file"] for i in range(len(val))} == set(held)
    assert all(val[i][1]["flipped"] == "none" for i in range(5))
    moved = shutil.copytree(folder, tmp_path / "elsewhere")  # the choice does not depend on the folder
    again = quiet(ImageFolderScenes, moved, split="val", crop=24)
    assert [h.rsplit("/", 1)[-1] for h in again.files("val")] == [h.rsplit("/", 1)[-1] for h in held]
    twenty = quiet(ImageFolderScenes, folder, crop=24, val_fraction=0.25)
    assert len(twenty.files("val")) == 3
    two = ImageFolderScenes([folder / "img0.png", folder / "img1.png"], crop=24)
    assert len(two.files("val")) == 1 and len(two.files("train")) == 1
    explicit = quiet(ImageFolderScenes, folder, crop=24, val_paths=[folder / "img2.png"])
    assert explicit.files("val") == [str(folder / "img2.png")]
    assert str(folder / "img2.png") not in explicit.files("train")
    with pytest.raises(ImageInputError, match="no validation images"):
        quiet(ImageFolderScenes, folder, split="val", crop=24, val_fraction=0)


def test_one_image_holds_out_a_strip(tmp_path):
    path = save(tmp_path / "one.png", gray(100, 300))
    train = ImageFolderScenes(path, num_scenes=50, crop=32)
    val = ImageFolderScenes(path, split="val", num_scenes=50, crop=32)
    cut = 300 - 32  # 10 % of the width is 30 pixels: a crop's width is held out
    assert all(train[i][1]["crop_box"][2] <= cut for i in range(50))
    assert all(val[i][1]["crop_box"][0] >= cut for i in range(50))
    small = save(tmp_path / "small.png", gray(40, 40))
    with pytest.warns(UserWarning, match="too small to hold out"):
        same = ImageFolderScenes(small, split="val", crop=32)
    assert same[0][0].shape == (1, 32, 32)


def test_test_split_whole_images_and_channels(tmp_path):
    save(tmp_path / "m" / "a.png", gray(30, 40))
    save(tmp_path / "m" / "b.png", np.stack([gray(35, 45)] * 3, -1))
    test = ImageFolderScenes(tmp_path / "m", split="test")
    assert test.channels == 3 and len(test) == 2
    assert test[0][0].shape == (3, 30, 40) and test[1][0].shape == (3, 35, 45)
    assert ImageFolderScenes(tmp_path / "m", split="test", channels=1)[1][0].shape == (1, 35, 45)
    assert len(ImageFolderScenes(tmp_path / "m", split="test", num_scenes=1)) == 1


def test_default_crop_follows_object_size_and_the_smallest_image(folder):
    ds = quiet(ImageFolderScenes, folder, object_size=10)
    assert ds.crop_size == (40, 40)
    ds = quiet(ImageFolderScenes, folder, object_size=20)
    assert ds.crop_size == (60, 64)  # 80 reduced to the smallest image
    assert quiet(ImageFolderScenes, folder).crop_size == (60, 64)


def test_detection_metrics_refuse_unknown_counts(folder):
    from ppl_scenes.baselines import ConnComp
    from ppl_scenes.metrics import evaluate_detection

    val = quiet(ImageFolderScenes, folder, split="val", num_scenes=4, crop=24)
    with pytest.raises(ValueError, match="negative"):
        evaluate_detection(ConnComp(), val)


def test_pickles_without_its_cache(folder):
    ds = quiet(ImageFolderScenes, folder, num_scenes=5, crop=24)
    first = ds[0]
    copy = pickle.loads(pickle.dumps(ds))
    assert len(copy._cache) == 0 and torch.equal(copy[0][0], first[0])


# -------------------------------------------------------------------------------------- bad inputs


def test_missing_path_and_empty_folders(tmp_path):
    with pytest.raises(ImageInputError, match="does not exist"):
        find_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageInputError, match=r"holds no images \(looked for .png.*\.npz\)"):
        find_images(tmp_path / "empty")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "notes.txt").write_text("x")
    with pytest.raises(ImageInputError, match="holds no images"):
        find_images(tmp_path / "texts")
    with pytest.raises(ImageInputError, match="matches no file"):
        find_images(str(tmp_path / "*.png"))
    with pytest.raises(UnreadableImageError, match=r"notes.txt' is not an image"):
        find_images(tmp_path / "texts" / "notes.txt")
    with pytest.raises(ImageInputError, match="path or a non-empty list"):
        find_images([])


def test_undecodable_files_raise_or_are_skipped(folder):
    (folder / "broken.png").write_bytes(b"this is no PNG")
    with pytest.raises(UnreadableImageError, match=r"broken.png' is not a decodable image"):
        quiet(find_images, folder)
    with pytest.warns(UserWarning) as record:
        found = find_images(folder, skip_bad=True)
    assert any("skipped 1 files" in str(w.message) for w in record)
    assert len(found) == 5 and [p for p, _ in found.skipped] == [str(folder / "broken.png")]
    ds = quiet(ImageFolderScenes, folder, crop=24, skip_bad=True)
    assert len(ds.skipped) == 1
    (folder / "bad.npy").write_bytes(b"nope")
    with pytest.raises(UnreadableImageError, match="bad.npy"):
        find_images(folder / "bad.npy")


def test_sizes_that_do_not_fit(folder):
    with pytest.raises(ImageInputError, match=r"img0.png' is 60x70, smaller than the crop 65x65"):
        quiet(ImageFolderScenes, folder, crop=65)
    with pytest.raises(ImageInputError, match="smaller than the model's smallest input 48x48"):
        quiet(ImageFolderScenes, folder, crop=32, min_size=(48, 48))
    for bad in (0, -3, float("nan"), "10", True):
        with pytest.raises(ImageInputError, match="object_size must be a positive number"):
            quiet(ImageFolderScenes, folder, object_size=bad)
    with pytest.raises(ImageInputError, match=r"object_size 61 is larger than image .*img0.png"):
        quiet(ImageFolderScenes, folder, object_size=61)
    with pytest.raises(ImageInputError, match="larger than the crop"):
        quiet(ImageFolderScenes, folder, object_size=30, crop=24)


def test_bad_parameters_and_channels(folder, tmp_path):
    with pytest.raises(ImageInputError, match="split must be one of"):
        quiet(ImageFolderScenes, folder, split="validation")
    with pytest.raises(ImageInputError, match="flips must be one of"):
        quiet(ImageFolderScenes, folder, flips="diagonal")
    with pytest.raises(ImageInputError, match="channels must be 1"):
        quiet(ImageFolderScenes, folder, channels=4)
    np.save(tmp_path / "cube.npy", np.zeros((2, 8, 8, 8), dtype=np.float32))
    with pytest.raises(ImageInputError, match="cannot tell the channel axis"):
        find_images(tmp_path / "cube.npy")
    np.save(tmp_path / "five.npy", np.zeros((2, 2, 2, 2, 2), dtype=np.float32))
    with pytest.raises(ImageInputError, match="not an image or a stack"):
        find_images(tmp_path / "five.npy")
    np.save(tmp_path / "text.npy", np.array([["a"]]))
    with pytest.raises(UnreadableImageError, match="not an image"):
        find_images(tmp_path / "text.npy")


def test_gif_reads_its_first_frame(tmp_path):
    from PIL import Image

    g = gray(20, 30)
    frames = [Image.fromarray(g), Image.fromarray(255 - g)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    x = read_image(str(tmp_path / "a.gif"))
    assert x.shape[-2:] == (20, 30)
    assert torch.allclose(x.mean(0), torch.from_numpy(g / 255.0).float(), atol=1 / 255)
    assert [e.name for e in find_images(str(tmp_path)).entries] == [str(tmp_path / "a.gif")]
