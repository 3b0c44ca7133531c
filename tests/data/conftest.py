"""Fixtures of the data tests: an empty data root, so generators run on the offline digit fallback."""

import warnings

import pytest

from ppl_scenes.data import DigitFallbackWarning


@pytest.fixture(scope="session")
def fallback_root(tmp_path_factory):
    """An empty data root: with ``download=False`` the generators use scikit-learn's digits."""
    return str(tmp_path_factory.mktemp("no_mnist"))


@pytest.fixture
def offline(fallback_root):
    """Keyword arguments making a digit generator use the fallback, with its warning silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DigitFallbackWarning)
        yield {"root": fallback_root, "download": False}
