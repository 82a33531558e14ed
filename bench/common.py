"""Shared helpers for the benchmarks: the datasets beside the project, seeded few-shot draws."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np

from smalldata.data import Dataset, load_image_folder, load_text_csv

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
IMAGE_SETS = ("flowers12", "clothing10")
TEXT_SETS = ("sst2", "trec6", "agnews", "banking77")
TEST_CAP = 2000


def load_split(name: str, split: str) -> Dataset:
    folder = DATASETS / name
    if not folder.exists():
        sys.exit(f"{folder} is missing: the benchmarks need ../shared/datasets beside the project")
    if name in IMAGE_SETS:
        return load_image_folder(folder / split)
    return load_text_csv(folder / f"{split}.csv")


def draw(dataset: Dataset, per_class: int, seed: int) -> Dataset:
    """`per_class` examples of every class, drawn without replacement with a fixed seed."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(dataset.labels)
    chosen = []
    for label in dataset.classes:
        indices = np.flatnonzero(labels == label)
        chosen.extend(rng.choice(indices, size=min(per_class, len(indices)), replace=False).tolist())
    return dataset.subset(sorted(chosen))


def capped(dataset: Dataset, cap: int = TEST_CAP, seed: int = 0) -> Dataset:
    """At most `cap` examples, a fixed sample, so big test splits stay affordable on 2 cores."""
    if len(dataset) <= cap:
        return dataset
    rng = np.random.default_rng(seed)
    return dataset.subset(sorted(rng.choice(len(dataset), size=cap, replace=False).tolist()))


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
