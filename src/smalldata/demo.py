"""The README's first command: few-shot Fashion-MNIST from Debian's `dataset-fashion-mnist` package.

Writes 10 training images per class as PNG files into CLASS folders, then runs the real commands a
user would: `smalldata train`, `smalldata evaluate` on the official 10,000-image test set, and
`smalldata predict` on a few images.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def read_fashion_mnist(split: str, folder: Path = FASHION_MNIST) -> tuple[np.ndarray, np.ndarray]:
    """(images as uint8 N x 28 x 28, labels as ints) from the IDX files of the Debian package."""
    images_file, labels_file = (folder / name for name in FILES[split])
    if not images_file.exists():
        raise FileNotFoundError(f"{images_file} is missing: install it with `apt-get install dataset-fashion-mnist`")
    with gzip.open(images_file) as handle:
        images = np.frombuffer(handle.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(labels_file) as handle:
        labels = np.frombuffer(handle.read(), dtype=np.uint8, offset=8)
    return images, labels


def write_png_folder(images: np.ndarray, labels: np.ndarray, root: Path, indices) -> Path:
    """root/CLASS/NNNNN.png for each index: the layout users have."""
    for index in indices:
        folder = root / CLASSES[labels[index]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[index]).save(folder / f"{index:05d}.png")
    return root


def sample_per_class(labels: np.ndarray, per_class: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    return sorted(i for c in range(len(CLASSES)) for i in rng.choice(np.flatnonzero(labels == c), per_class, replace=False))


def run(*args: str) -> None:
    print(f"\n$ smalldata {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "smalldata", *args], check=True)


def main(out: Path = Path("demo-output")) -> None:
    train_dir, test_dir, model_dir = out / "fashion-mnist" / "train", out / "fashion-mnist" / "test", out / "fashion-model"
    images, labels = read_fashion_mnist("train")
    if not train_dir.exists():
        write_png_folder(images, labels, train_dir, sample_per_class(labels, 10))
    test_images, test_labels = read_fashion_mnist("test")
    if not test_dir.exists():
        write_png_folder(test_images, test_labels, test_dir, range(len(test_labels)))
    run("train", str(train_dir), "--out", str(model_dir))
    run("evaluate", str(model_dir), str(test_dir), "--json-out", str(out / "test-results.json"))
    examples = [str(next((test_dir / name).iterdir())) for name in CLASSES[:3]]
    run("predict", str(model_dir), *examples)
    print(f"\nmodel folder: {model_dir.resolve()} (model.json says what it is and how it scored)")
    print(f"test results: {(out / 'test-results.json').resolve()}")


if __name__ == "__main__":
    main()
