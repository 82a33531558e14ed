"""Which score tells inputs of no known class from known ones: the top-class probability (what the
model uses today) against distances in embedding space, on the same leave-one-class-out draws as
`bench.trust unknown`, without training a model per draw (the frozen default is refit here).

    .venv/bin/python -m bench.unknown_scores --sets flowers12 clothing10 trec6 agnews      # development
    .venv/bin/python -m bench.unknown_scores --sets cifar10 fashion-mnist clinc150         # confirmation

For each set, seed (0-2) and left-out class: a draw of 10 images or 8 texts a class (`common.draw`)
without that class; logistic regression as the default choice fits it (images: the average of
Lite0's and Lite2's, C=1; texts: all-mpnet-base-v2, C=10); every score is computed for the test
split's known and left-out examples, and the AUROC says how well it ranks known above unknown
(clinc150: its 150 intents kept, the 1,000 out-of-scope test queries as the unknown ones). Scores:

- `top probability`: the largest class probability;
- `nearest example`: the cosine similarity to the closest training example (each backbone's, averaged);
- `nearest class mean`: the cosine similarity to the closest class's mean embedding;
- `relative Mahalanobis`: the distance to the closest class mean minus the distance to the mean of
  all training examples, with one shared covariance shrunk by Ledoit-Wolf (Ren et al. 2021),
  negated so that higher means more familiar (with `--mahalanobis`: slow);
- `A + B`: the sum of the two scores' ranks within the test set (an upper bound: a model cannot
  rank against its test inputs);
- `blend against held-out scores`: what a model could ship (`held_out_floor`): each of the two
  scores as the share of the training examples' held-out scores (5 folds) below it, averaged, and
  a floor at a low percentile (10th, 15th, 20th: `QUANTILES`) of the held-out examples' own
  averages; at that floor, and at the top probability's own floor at the same percentile (what
  folders from before familiarity ship), the share of known test inputs answered and of unknown
  ones caught.

Not timed. Results: bench/results/unknown_scores.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import rankdata
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import normalize

from bench.choice import BACKBONES, IMAGE, load
from bench.common import DATASETS, capped, draw, machine
from smalldata.data import load_text_csv
from smalldata.features import embed

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "unknown_scores.json"
SIZE = {"image": 10, "text": 8}
C = {"image": 1.0, "text": 10.0}
# Relative Mahalanobis costs four covariance fits a case (minutes for an image set on 2 cores) and
# ranked worst on flowers12 (0.625 against 0.857 for the top probability): off unless asked for.
MAHALANOBIS = False


def _backbones(name: str) -> tuple[str, ...]:
    return BACKBONES["image"] if name in IMAGE else ("all-mpnet-base-v2",)


def _embedded(dataset, name: str) -> list[np.ndarray]:
    return [normalize(np.asarray(embed(dataset.inputs, b, keys=dataset.keys), dtype=np.float64)) for b in _backbones(name)]


def _top_and_class_mean(train_parts, labels, test_parts, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """The top probability of the default head, and the cosine similarity to the nearest class mean."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    proba = np.mean([LogisticRegression(C=C[modality], max_iter=3000).fit(X, labels).predict_proba(T)
                     for X, T in zip(train_parts, test_parts)], axis=0)
    means = [np.stack([normalize(X[labels == c].mean(axis=0, keepdims=True))[0] for c in classes]) for X in train_parts]
    return proba.max(axis=1), np.mean([(T @ M.T).max(axis=1) for M, T in zip(means, test_parts)], axis=0)


def scores(train_parts, labels, test_parts, modality: str) -> dict[str, np.ndarray]:
    labels = np.asarray(labels)
    classes = np.unique(labels)
    top, class_mean = _top_and_class_mean(train_parts, labels, test_parts, modality)
    nearest = np.mean([(T @ X.T).max(axis=1) for X, T in zip(train_parts, test_parts)], axis=0)
    found = {"top probability": top, "nearest example": nearest, "nearest class mean": class_mean,
             "top probability + nearest example": rankdata(top) + rankdata(nearest),
             "top probability + nearest class mean": rankdata(top) + rankdata(class_mean)}
    if MAHALANOBIS:
        found["relative Mahalanobis"] = np.mean([_relative_mahalanobis(X, labels, classes, T)
                                                 for X, T in zip(train_parts, test_parts)], axis=0)
    return found


def _relative_mahalanobis(X, labels, classes, T) -> np.ndarray:
    centred = np.concatenate([X[labels == c] - X[labels == c].mean(axis=0) for c in classes])
    precision = LedoitWolf().fit(centred).precision_
    background = LedoitWolf().fit(X)

    def distance(points, mean, prec):
        d = points - mean
        return np.einsum("ij,jk,ik->i", d, prec, d)

    per_class = np.stack([distance(T, X[labels == c].mean(axis=0), precision) for c in classes], axis=1).min(axis=1)
    return -(per_class - distance(T, background.location_, background.precision_))


QUANTILES = (0.10, 0.15, 0.20)  # the floor's quantiles compared (`smalldata.unknown.FLOOR_QUANTILE` ships one)


def held_out_floor(train_parts, labels, top: np.ndarray, class_mean: np.ndarray, modality: str,
                   quantiles=QUANTILES) -> dict:
    """What a model could ship: each score of a test input turned into its share of held-out training
    examples (5 stratified folds) scoring lower, the two shares averaged, and a floor at `quantile`
    of the held-out examples' own averages; beside it, the top probability alone with its floor at
    the same quantile (what models ship today). `top` and `class_mean`: the test inputs' scores
    under the models fit on all of the training examples (`scores` gives them)."""
    labels = np.asarray(labels)
    folds = StratifiedKFold(min(5, int(np.bincount(np.unique(labels, return_inverse=True)[1]).min())),
                            shuffle=True, random_state=0)
    held_top, held_mean = np.zeros(len(labels)), np.zeros(len(labels))
    for fit, held in folds.split(train_parts[0], labels):
        held_top[held], held_mean[held] = _top_and_class_mean([X[fit] for X in train_parts], labels[fit],
                                                              [X[held] for X in train_parts], modality)

    def share_below(reference, values):
        return np.searchsorted(np.sort(reference), values, side="left") / len(reference)

    blend = (share_below(held_top, top) + share_below(held_mean, class_mean)) / 2
    held_blend = (share_below(held_top, held_top) + share_below(held_mean, held_mean)) / 2
    return {"blend": blend, "top": top,
            **{f"blend floor {q:g}": float(np.quantile(held_blend, q)) for q in quantiles},
            **{f"top floor {q:g}": float(np.quantile(held_top, q)) for q in quantiles}}


def _at_floor(values: np.ndarray, floor: float, n_known: int) -> dict:
    return {"known answered": float(np.mean(values[:n_known] >= floor)),
            "unknown caught": float(np.mean(values[n_known:] < floor))}


def _auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    return float(roc_auc_score(np.r_[np.ones(len(known)), np.zeros(len(unknown))], np.r_[known, unknown]))


def run(name: str, seeds) -> dict:
    pool, test = load(name, "train"), capped(load(name, "test"))
    modality = "image" if name in IMAGE else "text"
    found = {}
    for seed in seeds:
        sample = draw(pool, SIZE[modality], seed)
        if name == "clinc150":
            oos = load_text_csv(DATASETS / "clinc150" / "oos_test.csv")
            cases = [(None, sample, test, oos)]
        else:
            cases = [(c, sample.subset([i for i, y in enumerate(sample.labels) if y != c]),
                      test.subset([i for i, y in enumerate(test.labels) if y != c]),
                      test.subset([i for i, y in enumerate(test.labels) if y == c])) for c in sample.classes]
        for left_out, kept, known, unknown in cases:
            train_parts, known_parts, unknown_parts = _embedded(kept, name), _embedded(known, name), _embedded(unknown, name)
            both = [np.vstack([k, u]) for k, u in zip(known_parts, unknown_parts)]
            result = scores(train_parts, kept.labels, both, modality)
            n = len(known)
            found[f"{seed}-{left_out}"] = {score: _auroc(values[:n], values[n:]) for score, values in result.items()}
            shipped = held_out_floor(train_parts, kept.labels, result["top probability"], result["nearest class mean"],
                                     modality)
            found[f"{seed}-{left_out}"]["blend against held-out scores"] = _auroc(shipped["blend"][:n], shipped["blend"][n:])
            for q in QUANTILES:
                found[f"{seed}-{left_out}"].update({
                    f"blend at its floor ({q:g})": _at_floor(shipped["blend"], shipped[f"blend floor {q:g}"], n),
                    f"top probability at its floor ({q:g})": _at_floor(shipped["top"], shipped[f"top floor {q:g}"], n)})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--mahalanobis", action="store_true")
    args = parser.parse_args()
    global MAHALANOBIS
    MAHALANOBIS = args.mahalanobis
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in args.sets:
        results[name] = {"cases": run(name, args.seeds), "machine": machine()}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1))
    first = next(iter(results[args.sets[0]]["cases"].values()))
    aurocs = [k for k, v in first.items() if not isinstance(v, dict)]
    floors = [k for k, v in first.items() if isinstance(v, dict)]
    print("| set | cases | " + " | ".join(aurocs) + " | " + " | ".join(f"{k}: known answered / unknown caught" for k in floors) + " |")
    for name in args.sets:
        cases = list(results[name]["cases"].values())
        auroc = [f"{np.mean([c[k] for c in cases]):.3f}" for k in aurocs]
        at_floor = [f"{100 * np.mean([c[k]['known answered'] for c in cases]):.0f}% / "
                    f"{100 * np.mean([c[k]['unknown caught'] for c in cases]):.0f}%" for k in floors]
        print(f"| {name} | {len(cases)} | " + " | ".join(auroc + at_floor) + " |")


if __name__ == "__main__":
    main()
