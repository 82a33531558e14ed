"""Outliers: the report's own rule (`explain.outliers`) against cleanlab's Datalab on the same
embeddings, on clean draws and on draws with examples of another dataset planted in them.

    .venv/bin/python -m pip install "cleanlab[datalab]"     # Datalab's extra packages, once
    .venv/bin/python -m bench.outliers                      # every set below, seeds 0-4
    .venv/bin/python -m bench.outliers --sets flowers12 --seeds 0

For each set, size and seed: a stratified draw of the train split (`common.draw`), plus 3 examples
of another dataset (images: clothing10 among flowers, flowers elsewhere; texts: questions among
reviews, headlines among questions, reviews among headlines and queries), each given one of the
draw's classes at random. Both rules see the embeddings the report uses for the default choice
(Lite0 and Lite2 side by side for images, all-mpnet-base-v2 for texts). Datalab runs its
feature-based outlier check (`issue_types={"outlier": {}}`, its defaults: 10 nearest neighbours,
an example flagged when its mean distance passes the third quartile plus 1.7 interquartile
ranges, labels not used). A clean example flagged is a false alarm (issue 30: at most 1 in 50); a
planted one flagged is a hit. Development sets: flowers12, clothing10, sst2, trec6, agnews;
confirmation sets: cifar10, fashion-mnist, mr, clinc150. Not timed. Results:
bench/results/outliers.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.choice import CONFIRMATION, load
from bench.common import draw, machine
from smalldata.data import Dataset
from smalldata.explain import outliers
from smalldata.features import embed

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "outliers.json"
SIZES = {"image": (5, 10), "text": (8, 16)}
FOREIGN = {"flowers12": "clothing10", "clothing10": "flowers12", "cifar10": "flowers12", "fashion-mnist": "flowers12",
           "sst2": "trec6", "trec6": "agnews", "agnews": "sst2", "mr": "trec6", "clinc150": "sst2"}
BACKBONE = {"image": "efficientnet-lite0+efficientnet-lite2", "text": "all-mpnet-base-v2"}
PLANTED = 3


def with_foreign(sample: Dataset, foreign: Dataset, seed: int) -> tuple[Dataset, list[int]]:
    """`sample` followed by PLANTED examples of `foreign`, each under one of sample's classes."""
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(foreign), size=PLANTED, replace=False)
    labels = rng.choice(sample.classes, size=PLANTED).tolist()
    inputs = list(sample.inputs) + [foreign.inputs[i] for i in picked]
    keys = list(sample.keys) + [foreign.keys[i] for i in picked]
    return Dataset(inputs, list(sample.labels) + labels, sample.modality, keys), list(range(len(sample), len(inputs)))


def datalab_outliers(dataset: Dataset, embeddings: np.ndarray) -> set[int]:
    from cleanlab import Datalab

    lab = Datalab(data={"label": list(dataset.labels)}, label_name="label", verbosity=0)
    lab.find_issues(features=np.asarray(embeddings, dtype=np.float32), issue_types={"outlier": {}})
    return set(np.flatnonzero(lab.get_issues("outlier")["is_outlier_issue"].to_numpy()).tolist())


def ours(dataset: Dataset, embeddings: np.ndarray) -> set[int]:
    return {o.index for o in outliers(dataset, embeddings).outliers}


def run(name: str, size: int, seed: int, foreign: Dataset) -> dict:
    sample = draw(load(name, "train"), size, seed)
    planted, truth = with_foreign(sample, foreign, seed)
    embeddings = embed(planted.inputs, BACKBONE[sample.modality], keys=planted.keys)
    clean_rows = embeddings[: len(sample)]
    record = {"n": len(sample), "planted": len(truth), "machine": machine()}
    for rule, find in (("smalldata", ours), ("datalab", datalab_outliers)):
        record[rule] = {"clean_flagged": len(find(sample, clean_rows)),
                        "planted_found": len(find(planted, embeddings) & set(truth)),
                        "planted_draw_clean_flagged": len(find(planted, embeddings) - set(truth))}
    return record


def report(results: dict) -> None:
    groups: dict[str, list[dict]] = {}
    for key, value in results.items():
        groups.setdefault(key.rsplit("-", 1)[0], []).append(value)
    print("| set, per class | confirmation | draws | rule | clean draws: flagged | planted: found |")
    print("|---|---|---|---|---|---|")
    for group, rows in groups.items():
        n, planted = sum(r["n"] for r in rows), sum(r["planted"] for r in rows)
        confirmation = "yes" if group.rsplit("-", 1)[0] in CONFIRMATION else ""
        for rule in ("smalldata", "datalab"):
            flagged = sum(r[rule]["clean_flagged"] for r in rows)
            found = sum(r[rule]["planted_found"] for r in rows)
            print(f"| {group} | {confirmation} | {len(rows)} | {rule} | {100 * flagged / n:.1f}% ({flagged}/{n}) | "
                  f"{found}/{planted} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=list(FOREIGN))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(5)))
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if not args.report:
        for name in args.sets:
            foreign = load(FOREIGN[name], "test")
            for size in SIZES[foreign.modality]:
                for seed in args.seeds:
                    key = f"{name}-{size}-{seed}"
                    if key not in results:
                        results[key] = run(name, size, seed, foreign)
                        print(key, results[key], flush=True)
                        RESULTS.parent.mkdir(parents=True, exist_ok=True)
                        RESULTS.write_text(json.dumps(results, indent=1))
    report(results)


if __name__ == "__main__":
    main()
