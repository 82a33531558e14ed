"""Does a mirrored view of each image help the frozen average? Feature-level augmentation (each
training image's mirror image embedded as one more example of its class) and test-time averaging
(each test image's probabilities averaged with its mirror image's).

    .venv/bin/python -m bench.mirrored_views --sets flowers12 clothing10 --sizes 5 10 20     # development
    .venv/bin/python -m bench.mirrored_views --sets cifar10 fashion-mnist --sizes 10         # confirmation

On the draws of bench/choice.py (same seeds), with the automatic choice's average of logistic
regressions on Lite0 and Lite2 (`smalldata.ensemble`), fit once on the draw and scored on the test
split: plain; with mirrored training views; with test-time averaging; with both. The mirrored
embeddings are computed here from the decoded pixels (not cached). Prints a table; results go to
bench/results/mirrored/SET-SIZE.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.choice import BACKBONES, load
from bench.common import capped, draw
from smalldata.backbones import get_backbone
from smalldata.ensemble import AveragedLogisticRegression
from smalldata.evaluate import single_threaded_math
from smalldata.features import embed

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "mirrored"
VARIANTS = ("plain", "mirrored training views", "test-time mirror", "both")


def mirrored(inputs) -> np.ndarray:
    """Each backbone's embedding of each image's mirror image, side by side."""
    parts = []
    for name in BACKBONES["image"]:
        backbone = get_backbone(name)
        rows = [backbone.embed_pixels(np.ascontiguousarray(backbone.pixels(inputs[i:i + 64])[:, :, ::-1]))
                for i in range(0, len(inputs), 64)]
        parts.append(np.vstack(rows))
    return np.hstack(parts)


def plain(dataset) -> np.ndarray:
    return np.hstack([embed(dataset.inputs, name, keys=dataset.keys) for name in BACKBONES["image"]])


def run(name: str, size: int, seeds) -> dict:
    pool, test = load(name, "train"), capped(load(name, "test"))
    X_test, X_test_mirror = plain(test), mirrored(test.inputs)
    y_test = np.asarray(test.labels)
    widths = tuple(get_backbone(n).dim for n in BACKBONES["image"])
    results = {variant: [] for variant in VARIANTS}
    for seed in seeds:
        sample = draw(pool, size, seed)
        X, X_mirror, y = plain(sample), mirrored(sample.inputs), np.asarray(sample.labels)
        with single_threaded_math():
            base = AveragedLogisticRegression(widths=widths).fit(X, y)
            augmented = AveragedLogisticRegression(widths=widths).fit(np.vstack([X, X_mirror]), np.r_[y, y])
        for variant, model, tta in (("plain", base, False), ("mirrored training views", augmented, False),
                                    ("test-time mirror", base, True), ("both", augmented, True)):
            proba = model.predict_proba(X_test)
            if tta:
                proba = (proba + model.predict_proba(X_test_mirror)) / 2
            results[variant].append(float(np.mean(model.classes_[proba.argmax(1)] == y_test)))
        print(f"{name} {size}/class seed {seed}: " + ", ".join(f"{v} {100 * a[-1]:.1f}" for v, a in results.items()), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}-{size}.json").write_text(json.dumps(results))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mirrored_views",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["flowers12", "clothing10"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--report", action="store_true", help="the table from saved results only")
    args = parser.parse_args()
    rows = []
    for name in args.sets:
        for size in args.sizes:
            file = RESULTS / f"{name}-{size}.json"
            results = json.loads(file.read_text()) if args.report and file.exists() else None
            rows.append((name, size, results or run(name, size, args.seeds)))
    print("| set | per class | " + " | ".join(VARIANTS) + " |")
    print("|---|---|" + "---|" * len(VARIANTS))
    for name, size, results in rows:
        print(f"| {name} | {size} | " + " | ".join(f"{100 * np.mean(results[v]):.1f} ± {100 * np.std(results[v], ddof=1):.1f}"
                                               for v in VARIANTS) + " |")


if __name__ == "__main__":
    main()
