"""Test-wide fixtures: a clean Pyro param store, validation on, and every test seeded."""

import os

import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def _clean_pyro_state():
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    torch.set_num_threads(1)  # tiny tensors: one intra-op thread is fastest, and immune to busy CPUs
    yield
    pyro.clear_param_store()


@pytest.fixture
def data_root():
    """The MNIST root CI provides (``$PPL_SCENES_DATA``); tests that need real MNIST skip without it."""
    root = os.environ.get("PPL_SCENES_DATA")
    if not root or not os.path.isdir(os.path.join(root, "MNIST", "raw")):
        pytest.skip("PPL_SCENES_DATA does not point at an MNIST copy")
    return root
