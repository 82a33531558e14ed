"""Shared fixtures: a private embedding cache, real Fashion-MNIST images, a small real text set, a model
trained on it, and synthetic clusters of embeddings."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import smalldata

DATA = Path(__file__).parent / "data"
os.environ["COLUMNS"] = "200"  # wide Rich tables, so assertions see unwrapped cells


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Tests never read or write the user's cache (set before any embedding is made)."""
    folder = tmp_path_factory.mktemp("smalldata-cache")
    os.environ["SMALLDATA_CACHE"] = str(folder)
    os.environ["HF_HUB_OFFLINE"] = "1"
    return folder


@pytest.fixture(scope="session")
def fashion():
    from smalldata.demo import FASHION_MNIST, read_fashion_mnist

    if not FASHION_MNIST.exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (`make test` installs it)")
    return read_fashion_mnist("train")


@pytest.fixture(scope="session")
def fashion_folder(fashion, tmp_path_factory) -> Path:
    """train/CLASS/*.png: 8 real Fashion-MNIST images of each of 3 well-separated classes."""
    from smalldata.demo import CLASSES, write_png_folder

    images, labels = fashion
    root = tmp_path_factory.mktemp("fashion") / "train"
    wanted = [CLASSES.index(name) for name in ("trouser", "bag", "sneaker")]
    indices = [i for c in wanted for i in (labels == c).nonzero()[0][:8]]
    return write_png_folder(images, labels, root, indices)


@pytest.fixture(scope="session")
def fashion_test_folder(fashion, tmp_path_factory) -> Path:
    """Other images of the same 3 classes, for scoring."""
    from smalldata.demo import CLASSES, write_png_folder

    images, labels = fashion
    root = tmp_path_factory.mktemp("fashion") / "test"
    wanted = [CLASSES.index(name) for name in ("trouser", "bag", "sneaker")]
    indices = [i for c in wanted for i in (labels == c).nonzero()[0][100:110]]
    return write_png_folder(images, labels, root, indices)


@pytest.fixture
def topics_csv(tmp_path) -> Path:
    path = tmp_path / "topics.csv"
    shutil.copy(DATA / "topics.csv", path)
    return path


def three_clusters(n_per_class=10, dim=32, seed=0):
    """Three Gaussian clusters of float32 embeddings, labelled a, b, c: a head should separate them."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, dim)) * 3
    X = np.concatenate([c + rng.normal(size=(n_per_class, dim)) for c in centres]).astype(np.float32)
    y = np.repeat(np.array(["a", "b", "c"]), n_per_class)
    return X, y


@pytest.fixture(scope="session")
def text_model():
    """The automatic choice on the topics set (8 sentences a class), trained once for every test file."""
    return smalldata.train(smalldata.load_dataset(DATA / "topics.csv"))
