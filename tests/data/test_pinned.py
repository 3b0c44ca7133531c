"""Every generator's scenes are pinned: a checksum of the first scenes of each, per configuration.

The checksums were measured on the generators before they were refactored to share their placement
and validation code (issue 31), so a refactor that changes one drawn number, pixel or target shows up
here. Images and float targets are rounded to 1/65536 before hashing, so that a last-bit difference of
floating-point arithmetic on another machine does not count. A deliberate change of a generator's
output updates its checksum here, and says so in the commit.
"""

import hashlib

import pytest
import torch

from ppl_scenes.data import make_dataset

DIGITLESS = {"gabor", "shapes"}

#: name -> (generator, parameters); the scenes are those of seed 3, split "train".
CASES = {
    "scattered": ("scattered", {}),
    "scattered_wide": ("scattered", {"canvas_size": (40, 56), "num_digits": (2, 6), "max_overlap": 0.2}),
    "large-scattered": ("large-scattered", {"num_digits": (1, 8)}),
    "scattered-crops": ("scattered-crops", {}),
    "multimnist": ("multimnist", {"canvas_size": 64, "num_digits": (1, 5)}),
    "multiscale": ("multiscale", {"canvas_size": 64, "min_size": 8, "max_size": 32}),
    "multiscale_wide": (
        "multiscale",
        {"canvas_size": (48, 72), "grid_size": 3, "min_size": 8, "max_size": 20},
    ),
    "cluttered": ("cluttered", {"canvas_size": 60}),
    "cluttered_wide": ("cluttered", {"canvas_size": (60, 84), "num_clutter": 5, "max_overlap": 0.1}),
    "cluttered-large": ("cluttered-large", {"canvas_size": 60, "size": 96}),
    "mist-easy": ("mist-easy", {}),
    "mist-easy_wide": ("mist-easy", {"canvas_size": (60, 72), "digit_size": 16}),
    "mist-hard": ("mist-hard", {}),
    "mist-hard_wide": ("mist-hard", {"canvas_size": (60, 72), "num_digits": 4, "min_distance": 10}),
    "gabor": ("gabor", {"canvas_size": 48}),
    "gabor_wide": ("gabor", {"canvas_size": (40, 56), "kernel_size": 9, "num_impulses": (2, 5)}),
    "shapes": ("shapes", {"canvas_size": 48}),
    "shapes_wide": ("shapes", {"canvas_size": (40, 56), "shapes": ("circle", "cross"), "max_overlap": 0.0}),
}

#: name -> sha256 of the first four scenes, measured before the refactor.
PINNED = {
    "scattered": "1714371ef28c60596d75044baca48e2892a102b142338f2e9fca45e4f42b9122",
    "scattered_wide": "60eef2c10f319118eac61e5d385dd7096058549c53960ce44e4499ea0603e6d4",
    "large-scattered": "1eee21e092fe64e1b5079da1b8b92ea5d4a973992273dda48d850e902dcdcb65",
    "scattered-crops": "76fdd8a7223265ef1933b4d1487789e8d6bbf532c04fa3f42c071379b1ae0329",
    "multimnist": "3cccb675c66c638db65b0b761e2cb2524825ed6bebea05bc9aec7482d0d0c576",
    "multiscale": "6776a5175f2dce7f1eab4e3e96f4256a2fd539cddeea775d77b984a8fa76df99",
    "multiscale_wide": "08da3f3e4f69162f4c46a5f7415ded7c7197504fa2125491efe38aff784f7867",
    "cluttered": "ea666b73b5877f1016e8a8d077cb66559928639fd8c3ff5549dd69d6d9b3ebc2",
    "cluttered_wide": "42bc9a817f0685917b8f3e9f0f04ffb758e53dccae7cb493200a2ef8224f95a8",
    "cluttered-large": "c80395ae91496c8241e052e55f00f647f3602f157a617c336d3c449e6cebca84",
    "mist-easy": "504865dc55644e02e1340509a2ab8f26b1c95a3cd59ab9e11cafe5eb5e193bbe",
    "mist-easy_wide": "1fb10abf9198c5e41cf1fdb363a89934362a3e91e3d136fd4df6a5bb1728813c",
    "mist-hard": "3907b0322523f2e9b2088bfdba0ac23a3ba55b82849adc52ab3862df4a3f441d",
    "mist-hard_wide": "bad659a80ad3ea184fb5cc6b0b4a599f8b23fe45ead63b70acf98f7c23f21975",
    "gabor": "b363fef448d9addd806da4922e54b53a5781b47264e64f92cae30a0955a0b875",
    "gabor_wide": "b3bda7f2ba9de58e9a1957ce1b7d2406ce5a549bc504c8ea21b7e222662764bc",
    "shapes": "b6ed98cbc9161b240276d7319ce0005de2c0f7c90285e993dc63494ac51a6818",
    "shapes_wide": "8a18ecaa9e4c8d448fa695a5ce506a03ab67f96c620a2660148e9af1095c8fcf",
}


def _quantized(t: torch.Tensor) -> bytes:
    t = torch.as_tensor(t)
    if t.is_floating_point():
        t = t.double().mul(65536).round()
    return t.to(torch.int64).contiguous().numpy().tobytes()


def checksum(name: str, offline: dict, num_scenes: int = 4) -> str:
    generator, params = CASES[name]
    extra = {} if generator in DIGITLESS else offline
    ds = make_dataset(generator, num_scenes=num_scenes, seed=3, **params, **extra)
    h = hashlib.sha256()
    for i in range(num_scenes):
        image, target = ds[i]
        h.update(repr(tuple(image.shape)).encode())
        h.update(_quantized(image))
        for key in sorted(target):
            h.update(f"{key}{tuple(torch.as_tensor(target[key]).shape)}".encode())
            h.update(_quantized(target[key]))
    return h.hexdigest()


@pytest.mark.parametrize("name", sorted(CASES))
def test_generated_scenes_are_unchanged(name, offline):
    assert checksum(name, offline) == PINNED[name]
