"""Suspected label errors: how many planted label flips `smalldata.explain.label_issues` finds.

    .venv/bin/python -m bench.label_errors                         # flowers12 and sst2, seeds 0 1 2
    .venv/bin/python -m bench.label_errors --sets flowers12 --seeds 0
    .venv/bin/python -m bench.label_errors --report                # table from saved results only

For each set and seed, 10% of the training examples (all of flowers12's training split, 719 images
after the exact duplicate is dropped; for sst2 a fixed sample of 2000 of its 6920 training sentences,
`common.capped` with seed 0, to keep the run short on 2 cores) get a different label, drawn at random
with the seed. `smalldata.train(noisy, seed=seed)` then runs as a user would: the out-of-fold
probabilities of the candidate it chooses (`model.comparison.out_of_fold[model.comparison.chosen.name]`)
go to `label_issues`, and the flagged set is scored against the flipped one: precision (flagged that
were flipped) and recall (flipped that were flagged). The same probabilities are also given to
cleanlab's other filters, so the choice of the default can be checked without a rerun.

Results: bench/results/label_errors.json (merged seed by seed with what is already there).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.common import IMAGE_SETS, capped, load_split, machine
from smalldata.data import Dataset
from smalldata.explain import label_issues
from smalldata.train import train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "label_errors.json"
SETS = ("flowers12", "sst2")
SEEDS = (0, 1, 2)
TEXT_CAP = 2000
NOISE = 0.1
DEFAULT_FILTER = "prune_by_noise_rate"
FILTERS = (DEFAULT_FILTER, "prune_by_class", "both", "confident_learning", "predicted_neq_given")


def training_set(name: str) -> Dataset:
    dataset = load_split(name, "train")
    return dataset if name in IMAGE_SETS else capped(dataset, TEXT_CAP, seed=0)


def with_flipped_labels(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, np.ndarray]:
    """A copy with `fraction` of its labels changed to another class, each drawn uniformly."""
    rng = np.random.default_rng(seed)
    classes = dataset.classes
    given = np.array([classes.index(label) for label in dataset.labels])
    flipped = np.sort(rng.choice(len(dataset), size=round(fraction * len(dataset)), replace=False))
    noisy = given.copy()
    noisy[flipped] = (given[flipped] + rng.integers(1, len(classes), size=len(flipped))) % len(classes)
    labels = [classes[c] for c in noisy]
    return Dataset(list(dataset.inputs), labels, dataset.modality, list(dataset.keys), source=dataset.source), flipped


def precision_recall(flagged: set[int], truth: set[int]) -> dict:
    hits = len(flagged & truth)
    return {"n_flagged": len(flagged), "hits": hits,
            "precision": hits / len(flagged) if flagged else 0.0, "recall": hits / len(truth) if truth else 0.0}


def run_seed(dataset: Dataset, seed: int, noise: float) -> dict:
    noisy, flipped = with_flipped_labels(dataset, noise, seed)
    start = time.perf_counter()
    model = train(noisy, seed=seed)
    train_seconds = time.perf_counter() - start
    chosen = model.comparison.chosen
    probabilities = np.asarray(model.comparison.out_of_fold[chosen.name])
    truth = set(flipped.tolist())
    start = time.perf_counter()
    found = label_issues(noisy, probabilities)
    seconds = time.perf_counter() - start
    by_filter = {f: precision_recall({i.index for i in label_issues(noisy, probabilities, filter_by=f).issues}, truth)
                 for f in FILTERS}
    true_labels = np.array([dataset.classes.index(label) for label in dataset.labels])
    return {
        "seed": seed, "n": len(dataset), "n_flipped": len(truth), "chosen": chosen.name,
        "cv_accuracy_on_noisy_labels": round(chosen.mean, 4),
        "out_of_fold_accuracy_on_true_labels": round(float(np.mean(probabilities.argmax(axis=1) == true_labels)), 4),
        "train_seconds": round(train_seconds, 1), "label_issues_seconds": round(seconds, 3),
        **precision_recall({i.index for i in found.issues}, truth),
        "by_filter": by_filter,
        # cleanlab's list before the ceiling on the given label's probability (explain.LABEL_ERROR_CEILING)
        "without_ceiling": precision_recall({i.index for i in label_issues(noisy, probabilities, ceiling=1.0).issues}, truth),
    }


def save(name: str, records: list[dict], noise: float) -> None:
    document = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"sets": {}}
    entry = document["sets"].get(name, {"runs": []})
    merged = {r["seed"]: r for r in entry["runs"]} if entry.get("noise") == noise else {}  # other noise: start over
    merged.update({r["seed"]: r for r in records})
    document["sets"][name] = {
        "noise": noise, "n": records[0]["n"],
        "sample": "all of the training split" if name in IMAGE_SETS else f"{TEXT_CAP} training sentences, fixed sample (seed 0)",
        "runs": [merged[s] for s in sorted(merged)],
    }
    document.update(machine=machine(), updated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    default_filter=DEFAULT_FILTER)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")


def run(sets, seeds, noise: float) -> None:
    for name in sets:
        dataset = training_set(name)
        records = []
        for seed in seeds:
            record = run_seed(dataset, seed, noise)
            records.append(record)
            save(name, records, noise)  # after every seed: a killed run keeps its work
            print(f"{name} seed {seed}: chosen {record['chosen']} (cv {record['cv_accuracy_on_noisy_labels']:.3f}); "
                  f"flagged {record['n_flagged']} of {record['n']}, {record['n_flipped']} flipped: "
                  f"precision {record['precision']:.2f} recall {record['recall']:.2f} (train {record['train_seconds']}s)",
                  flush=True)


# ---------------------------------------------------------------------------------------------- report

def _mean_std(values) -> str:
    values = np.asarray(values, dtype=float)
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.2f} ± {std:.2f}"


def report(document: dict) -> str:
    out = [f"### suspected label errors: {int(100 * next(iter(document['sets'].values()))['noise'])}% of training labels flipped, "
           f"flagged by `label_issues` (filter {document['default_filter']}) on the chosen candidate's out-of-fold probabilities", "",
           "| set | examples | flipped | seeds | chosen (times) | CV accuracy on noisy labels | "
           "out-of-fold accuracy on true labels | flagged | precision | recall |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for name, entry in document["sets"].items():
        runs = entry["runs"]
        chosen: dict[str, int] = {}
        for r in runs:
            chosen[r["chosen"]] = chosen.get(r["chosen"], 0) + 1
        out.append(f"| {name} | {entry['n']} | {runs[0]['n_flipped']} | {len(runs)} | "
                   + ", ".join(f"{k} {v}" for k, v in chosen.items()) + " | "
                   + f"{_mean_std([r['cv_accuracy_on_noisy_labels'] for r in runs])} | "
                   + f"{_mean_std([r['out_of_fold_accuracy_on_true_labels'] for r in runs])} | "
                   + f"{np.mean([r['n_flagged'] for r in runs]):.0f} | "
                   + f"{_mean_std([r['precision'] for r in runs])} | {_mean_std([r['recall'] for r in runs])} |")
    out += [""] + [f"{name}: {entry['sample']}." for name, entry in document["sets"].items()]
    out += ["", "### the same probabilities through cleanlab's other filters (precision / recall, mean ± std over seeds)", "",
            "| set | " + " | ".join(FILTERS) + " |", "|---|" + "---|" * len(FILTERS)]
    for name, entry in document["sets"].items():
        cells = []
        for f in FILTERS:
            runs = [r["by_filter"][f] for r in entry["runs"]]
            cells.append(f"{_mean_std([r['precision'] for r in runs])} / {_mean_std([r['recall'] for r in runs])}")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.label_errors",
                                     description="Precision and recall of suspected label errors on planted label flips.")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--noise", type=float, default=NOISE, help="fraction of labels flipped (default 0.1)")
    parser.add_argument("--report", action="store_true", help="print the table from saved results; run nothing")
    args = parser.parse_args()
    if not args.report:
        run(args.sets, args.seeds, args.noise)
    if not RESULTS.exists():
        sys.exit(f"{RESULTS} does not exist: run the benchmark first")
    print(report(json.loads(RESULTS.read_text())))


if __name__ == "__main__":
    main()
