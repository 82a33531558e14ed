"""What a fine-tuning step costs on this machine: measured once per backbone, kept on disk.

The budget decides whether fine-tuning is tried, and that decision must not depend on how busy
the machine happens to be during one run (the same data must give the same model on a busy
machine and a quiet one). So a step is timed once, on a fixed probe batch (seeded noise images at
the backbone's resolution; fixed sentences), the first time a budget could allow fine-tuning, and
the figure is kept in the cache folder under this machine's description, the device that trains
included (a GPU's figure is never used for a run on the CPU, or the reverse). Every later run
estimates from it without spending anything. `smalldata.finetune_choice` turns it into seconds per fit.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from smalldata.backbones import cache_dir
from smalldata.devices import device_name, synchronize, torch_device

COSTS_FILE = "costs.json"
# Probe sentences of a typical short-text length (about 70 characters); a user's texts scale the
# figure by their mean length (`text_length_factor`).
PROBE_TEXTS = [f"sentence {i}: the service was quick and the staff were friendly, would come back again"
               for i in range(16)]
PROBE_CLASSES = 4
# Seconds per step that few CPUs beat: a quarter of what this project's quiet 2-core CPU took
# (Lite0 1.07, Lite2 2.44, mpnet 1.40, MiniLM 0.23; BENCHMARKS.md, "Training time"). Where
# fine-tuning cannot fit even at this pace nothing is measured, so a run does not spend its budget
# timing what could never fit; elsewhere the first run on a machine measures it once.
OPTIMISTIC_STEP_SECONDS = {"efficientnet-lite0": 0.27, "efficientnet-lite2": 0.6,
                           "all-MiniLM-L6-v2": 0.06, "all-mpnet-base-v2": 0.35}


def fastest_step_seconds(step: Callable[[], object], repeats: int = 5) -> float:
    """Seconds `step()` takes here: the fastest of `repeats` timed calls after one untimed call (the
    first pays for allocation). The figure is kept for every later run, so it must not carry the
    load of the moment it was taken: a median of three once came out 3.4 times a quiet machine's
    figure, and every later run would have skipped fine-tuning (BENCHMARKS.md, "Training time").
    The fastest call is what the machine can do; what a real fit adds is in the estimate."""
    step()
    seconds = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        step()
        synchronize()  # a GPU step has ended only once its queued kernels have run
        seconds.append(time.perf_counter() - start)
    return float(min(seconds))


def machine_key() -> str:
    """This machine, as far as speed goes: processor, core count, torch version, and the GPU when
    fine-tuning runs on one (`devices.torch_device`). A CPU run's key names no device, as it did
    before GPUs were supported, so figures kept then still serve."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), model)
    except OSError:
        pass
    key = f"{model} | {os.cpu_count()} cores | torch {torch.__version__}"
    return key if torch_device() == "cpu" else f"{key} | {device_name(modality_uses_torch=True)}"


def _path() -> Path:
    return cache_dir() / COSTS_FILE


def _read() -> dict:
    try:
        return json.loads(_path().read_text())
    except (OSError, ValueError):
        return {}


def known_step_seconds(estimator) -> float | None:
    """The kept figure for `estimator`'s kind of step on this machine, or None if never measured."""
    return _read().get(machine_key(), {}).get(_key(estimator))


def optimistic_step_seconds(estimator) -> float:
    """A lower bound on `step_seconds(estimator)`, known without measuring anything. The fixed
    bounds are a CPU's: a GPU beats them, so there the bound is 0 until a figure is kept."""
    known = known_step_seconds(estimator)
    if known is not None:
        return known
    return OPTIMISTIC_STEP_SECONDS.get(estimator.backbone, 0.0) if torch_device() == "cpu" else 0.0


def step_seconds(estimator) -> float:
    """Seconds one training step of `estimator` (a fine-tune candidate's estimator) takes on this
    machine: the kept figure, or measured now on the probe batch and kept."""
    known = known_step_seconds(estimator)
    if known is not None:
        return known
    with tempfile.TemporaryDirectory() as folder:
        X, y = _probe(estimator, Path(folder))
        seconds = float(estimator.time_step(X, y))
    data = _read()
    data.setdefault(machine_key(), {})[_key(estimator)] = round(seconds, 4)
    path = _path()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)
    return seconds


def text_length_factor(texts) -> float:
    """How much longer a step on `texts` takes than on the probe: the square root of their mean
    length against the probe's, within 0.5 and 3. A step's fixed costs weigh most on short texts:
    timed fits of trec6 questions (0.6 times the probe's length) and agnews articles (2.2 times)
    cost 1.4 and 2.6 times the probe's step figure, not 0.6 and 2.2 times (BENCHMARKS.md,
    "Training time")."""
    probe = np.mean([len(t) for t in PROBE_TEXTS])
    return float(np.clip(np.sqrt(np.mean([len(str(t)) for t in texts]) / probe), 0.5, 3.0))


def _key(estimator) -> str:
    return f"{type(estimator).__name__}:{estimator.backbone}:batch {estimator.batch_size}"


def _probe(estimator, folder: Path):
    labels = [f"class-{i % PROBE_CLASSES}" for i in range(estimator.batch_size)]
    if not hasattr(estimator, "flip"):  # a text fine-tune
        return (PROBE_TEXTS * (1 + estimator.batch_size // len(PROBE_TEXTS)))[: estimator.batch_size], labels
    from PIL import Image

    from smalldata.backbones import get_backbone

    size = get_backbone(estimator.backbone).image_size
    rng = np.random.default_rng(0)
    paths = []
    for i in range(estimator.batch_size):
        path = folder / f"probe-{i}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths, labels
