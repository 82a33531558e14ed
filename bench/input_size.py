"""Frozen logistic regression accuracy of EfficientNet-Lite by input size (issue 6 exploration).

Chooses on dev data, reports on test: a size that only wins on the test split is not a default.
Dev data is what no draw saw: clothing10's validation split; for flowers12, which has none, the
training images left out of each draw.

    python -m bench.input_size --configs lite0@224 lite0@280 lite2@260 --sets flowers12 clothing10

Writes bench/results/input-size/<set>-<net>-<px>.json with dev and test accuracy by draw.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench.common import capped, draw, load_split
from smalldata.backbones import ImageBackbone, _lite0_weights, _lite2_weights
from smalldata.features import embed
from smalldata.heads import logistic_regression_head

RESULTS = Path(__file__).resolve().parent / "results" / "input-size"
WEIGHTS = {"lite0": _lite0_weights, "lite2": _lite2_weights}


def embedded(dataset, backbone):
    return embed(list(dataset.inputs), backbone, keys=list(dataset.keys))


def accuracy(head, X, labels) -> float:
    return float(np.mean(head.predict(X) == np.asarray(labels)))


def sweep(name: str, net: str, px: int, sizes, seeds) -> dict:
    backbone = ImageBackbone(f"efficientnet-{net}", px, WEIGHTS[net])
    train, test = load_split(name, "train"), capped(load_split(name, "test"))
    dev = load_split(name, "validation") if name == "clothing10" else None
    started = time.perf_counter()
    X_test = embedded(test, backbone)
    X_pool = embedded(dev if dev is not None else train, backbone)
    print(f"{name} {net}@{px}: embedded test and dev in {time.perf_counter() - started:.0f} s")
    results = {}
    for k in sizes:
        for seed in seeds:
            drawn = draw(train, k, seed)
            head = logistic_regression_head().fit(embedded(drawn, backbone), drawn.labels)
            if dev is not None:
                dev_acc = accuracy(head, X_pool, dev.labels)
            else:  # flowers12: the training images this draw left out
                inside = set(drawn.keys)
                rest = [i for i, key in enumerate(train.keys) if key not in inside]
                dev_acc = accuracy(head, X_pool[rest], np.asarray(train.labels)[rest])
            results[f"{k}|{seed}"] = {"dev": dev_acc, "test": accuracy(head, X_test, test.labels)}
        dev_mean = np.mean([results[f"{k}|{s}"]["dev"] for s in seeds])
        test_mean = np.mean([results[f"{k}|{s}"]["test"] for s in seeds])
        print(f"  {k}/class: dev accuracy {100 * dev_mean:.1f}%, test accuracy {100 * test_mean:.1f}% "
              f"(mean of {len(seeds)} draws)", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.input_size", description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["lite0@224", "lite0@280", "lite2@260"],
                        help="backbone@pixels, e.g. lite0@256")
    parser.add_argument("--sets", nargs="+", default=["flowers12", "clothing10"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[5, 10, 20])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(5)))
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in args.sets:
        for config in args.configs:
            net, px = config.split("@")
            results = sweep(name, net, int(px), args.sizes, args.seeds)
            (RESULTS / f"{name}-{net}-{px}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
