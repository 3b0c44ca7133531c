"""The contract every registered generator keeps: shapes, dtypes, ranges, determinism, indexing."""

import pickle

import pytest
import torch
from torch.utils.data import DataLoader

from ppl_scenes.data import DATASETS, collate_scenes, make_dataset

DIGITLESS = {"gabor", "shapes"}
# Tiny but representative sizes, so the whole matrix runs in a second or two.
SMALL = {
    "scattered": {},
    "large-scattered": {"num_digits": (1, 8)},
    "scattered-crops": {},
    "multimnist": {"canvas_size": 64, "num_digits": (1, 5)},
    "multiscale": {"canvas_size": 64, "min_size": 8, "max_size": 32},
    "cluttered": {"canvas_size": 60},
    "cluttered-large": {"canvas_size": 60, "size": 96},
    "mist-easy": {},
    "mist-hard": {},
    "gabor": {"canvas_size": 48},
    "shapes": {"canvas_size": 48},
}


def build(name, offline, **kwargs):
    extra = {} if name in DIGITLESS else dict(offline)
    return make_dataset(name, **{"num_scenes": 6, "seed": 3, **SMALL[name], **extra, **kwargs})


def assert_same(a, b):
    assert torch.equal(a[0], b[0])
    assert a[1].keys() == b[1].keys()
    for key in a[1]:
        assert torch.equal(a[1][key], b[1][key]), key


def test_registry_names():
    # "images" reads the user's own files, without truth: tests/data/test_images.py covers it
    assert set(DATASETS) == set(SMALL) | {"images"}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_item_shapes_dtypes_ranges(name, offline):
    ds = build(name, offline)
    assert len(ds) == 6
    channels = 3 if name == "shapes" else 1
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.dtype == torch.float32 and image.dim() == 3 and image.shape[0] == channels
        assert tuple(image.shape[1:]) == tuple(ds.image_size)
        assert 0.0 <= image.min() and image.max() <= 1.0 and torch.isfinite(image).all()
        boxes, labels, count = target["boxes"], target["labels"], target["count"]
        assert boxes.dtype == torch.float32 and boxes.shape == (len(labels), 4)
        assert labels.dtype == torch.int64
        assert count.dtype == torch.int64 and count.dim() == 0 and int(count) == len(labels)
        h, w = image.shape[1:]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        for key in getattr(ds, "object_keys", ()):
            if key in target:
                assert target[key].shape[0] == len(labels), key


@pytest.mark.parametrize("name", sorted(SMALL))
def test_deterministic_whatever_the_order(name, offline):
    ds = build(name, offline)
    forward = [ds[i] for i in range(len(ds))]
    backward = [item for item in (build(name, offline)[i] for i in reversed(range(len(ds))))][::-1]
    for a, b in zip(forward, backward):
        assert_same(a, b)
    assert_same(ds[2], ds[2])
    assert_same(ds[-1], forward[-1])
    other = build(name, offline, seed=4)
    assert any(not torch.equal(ds[i][0], other[i][0]) for i in range(len(ds)))
    assert not torch.equal(ds[0][0], ds[1][0])


@pytest.mark.parametrize("name", sorted(SMALL))
def test_index_out_of_range(name, offline):
    ds = build(name, offline)
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(IndexError):
        ds[-len(ds) - 1]


def test_train_and_test_streams_differ(offline):
    train = make_dataset("scattered", split="train", num_scenes=3, **offline)
    test = make_dataset("scattered", split="test", num_scenes=3, **offline)
    assert not torch.equal(train[0][0], test[0][0])


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="known datasets: .*scattered"):
        make_dataset("cifar")


def test_collate_with_dataloader(offline):
    ds = make_dataset("scattered", num_scenes=5, **offline)
    images, targets = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate_scenes)))
    assert images.shape == (4, 1, 48, 48) and images.dtype == torch.float32
    assert isinstance(targets, list) and len(targets) == 4
    assert torch.equal(targets[1]["boxes"], ds[1][1]["boxes"])
    with pytest.raises(ValueError, match="empty"):
        collate_scenes([])
    with pytest.raises(ValueError, match="shapes"):
        collate_scenes([ds[0], (torch.zeros(1, 8, 8), ds[1][1])])


def test_pickle_drops_the_digit_bank(offline):
    ds = make_dataset("scattered", num_scenes=3, **offline)
    blob = pickle.dumps(ds)
    assert len(blob) < 10_000
    assert_same(pickle.loads(blob)[1], ds[1])
