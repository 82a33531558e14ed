"""Nearest class mean on centred, L2-normalised embeddings ("SimpleShot", CL2N), alone and averaged
with the automatic choice's logistic regression: measured offline, not shipped.

    .venv/bin/python -m bench.class_means --sets flowers12 clothing10 sst2 trec6 agnews banking77   # development
    .venv/bin/python -m bench.class_means --sets cifar10 fashion-mnist mr clinc150                  # confirmation
    .venv/bin/python -m bench.class_means --report                                                  # the tables again

Sizes: images 5 and 10 per class, texts 8 and 16 (`--sizes` overrides both); seeds 0-4.
For each set, size and seed, a stratified draw of the train split (`common.draw`) is the training
set and the test split capped at 2000 (`common.capped`) the test set. Methods:

1. `LR`: logistic regression as the automatic choice's core candidate (images: LogisticRegression(C=1,
   max_iter=3000) on EfficientNet-Lite0 and on Lite2 embeddings, probabilities averaged; texts:
   C=10 on all-mpnet-base-v2). Its probabilities are taken from bench/results/choice/SET-SIZE-SEED.npz
   (`bench.choice collect`, the same draws, folds and fits) when that file's labels and folds match
   the draw; otherwise fit here.
2. `NCM`: subtract the mean of the training embeddings, L2-normalise every row, cosine similarity
   to each class's normalised mean (images: the two networks' cosines averaged); predicts the
   nearest class (no temperature matters for accuracy).
3. `LR+NCM`: the average of LR's probabilities and softmax(cosine / T) of NCM, T in `TEMPERATURES`.

T is chosen on the development sets only (flowers12, clothing10, sst2, trec6, agnews, banking77):
the T with the highest mean test accuracy of method 3 over every development set and size
(`chosen_temperature`); the confirmation sets (cifar10, fashion-mnist, mr, clinc150 in-scope)
are read only at that T. The tool's own folds (`evaluate.cv_folds(labels, seed=seed)`) score
methods 1 and 3 out of fold on every draw; `folds choose` is the test accuracy of whichever of the
two had the higher mean fold accuracy (LR kept on a tie).

Measured 2026-12-07 (LR's probabilities all from bench.choice's files): every T loses on the
development mean (0.02: -1.13 points, 0.1: -0.46, 0.5: -0.05); at the chosen T=0.5 the
confirmation sets gain +0.10. NCM alone loses 1.50 points (development) and 0.76 (confirmation),
most on trec6 and banking77. Not shipped: it fails the development half of the bar.

Results: bench/results/class_means.json (per draw: test accuracies, fold accuracies); a markdown
table is printed. Not timed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from bench.choice import CONFIRMATION, DEVELOPMENT, IMAGE, RESULTS as CHOICE_RESULTS, load
from bench.common import capped, draw, machine
from smalldata.evaluate import cv_folds, single_threaded_math
from smalldata.features import embed

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "class_means.json"
BACKBONES = {"image": ("efficientnet-lite0", "efficientnet-lite2"), "text": ("all-mpnet-base-v2",)}
C = {"image": 1.0, "text": 10.0}
SIZES = {"image": (5, 10), "text": (8, 16)}
TEMPERATURES = (0.02, 0.05, 0.1, 0.2, 0.5)  # the brief asked for 0.02-0.1; 0.1 won at the edge, so 0.2 and 0.5 were added (development only)


def _modality(name: str) -> str:
    return "image" if name in IMAGE else "text"


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def class_mean_cosines(parts, y, classes, test_parts) -> np.ndarray:
    """CL2N nearest class mean: cosine of each test row to each class mean, averaged over networks."""
    cosines = []
    for X, T in zip(parts, test_parts):
        centre = X.mean(axis=0)
        Xn, Tn = _unit(X - centre), _unit(T - centre)
        means = _unit(np.stack([Xn[y == c].mean(axis=0) for c in classes]))
        cosines.append(Tn @ means.T)
    return np.mean(cosines, axis=0)


def _lr_proba(parts, y, classes, test_parts, modality) -> np.ndarray:
    out = []
    for X, T in zip(parts, test_parts):
        model = LogisticRegression(C=C[modality], max_iter=3000).fit(X, y)
        proba = np.zeros((len(T), len(classes)))
        proba[:, np.searchsorted(classes, model.classes_)] = model.predict_proba(T)
        out.append(proba)
    return np.mean(out, axis=0)


def _saved_lr(name, size, seed, y, y_test, folds, modality):
    """LR's test and per-repeat out-of-fold probabilities from bench.choice's file, if it is the same draw."""
    file = CHOICE_RESULTS / f"{name}-{size}-{seed}.npz"
    if not file.exists():
        return None
    saved = np.load(file, allow_pickle=True)
    same = (np.array_equal(saved["y"], y) and np.array_equal(saved["y_test"], y_test)
            and int(saved["n_splits"]) == folds.n_splits
            and len(saved["fold_test"]) == len(folds.splits)
            and all(np.array_equal(np.asarray(a, dtype=int), b) for a, (_, b) in zip(saved["fold_test"], folds.splits)))
    if not same:
        return None
    keys = [f"lr-C{C[modality]:g}@{b}" for b in BACKBONES[modality]]
    return (np.mean([saved[f"{k}|test"] for k in keys], axis=0).astype(np.float64),
            np.mean([saved[f"{k}|oof"] for k in keys], axis=0).astype(np.float64))


def run_draw(name, size, seed, pool, test, test_parts) -> dict:
    modality = _modality(name)
    sample = draw(pool, size, seed)
    y, y_test = np.asarray(sample.labels), np.asarray(test.labels)
    classes = np.unique(y)
    truth_test = np.searchsorted(classes, y_test)
    parts = [np.asarray(embed(sample.inputs, b, keys=sample.keys), dtype=np.float64) for b in BACKBONES[modality]]
    folds = cv_folds(y, seed=seed)

    saved = _saved_lr(name, size, seed, y, y_test, folds, modality)
    with single_threaded_math():
        if saved is None:
            lr_test = _lr_proba(parts, y, classes, test_parts, modality)
            lr_oof = np.zeros((folds.n_repeats, len(y), len(classes)))
            for index, (fit, held) in enumerate(folds.splits):
                lr_oof[index // folds.n_splits, held] = _lr_proba([X[fit] for X in parts], y[fit], classes,
                                                                  [X[held] for X in parts], modality)
        else:
            lr_test, lr_oof = saved
    cos_test = class_mean_cosines(parts, y, classes, test_parts)
    cos_oof = np.zeros((folds.n_repeats, len(y), len(classes)))
    for index, (fit, held) in enumerate(folds.splits):
        cos_oof[index // folds.n_splits, held] = class_mean_cosines([X[fit] for X in parts], y[fit], classes,
                                                                    [X[held] for X in parts])

    def test_acc(proba):
        return 100 * float(np.mean(proba.argmax(1) == truth_test))

    truth = np.searchsorted(classes, y)

    def fold_accs(oof):
        return [100 * float(np.mean(oof[i // folds.n_splits, held].argmax(1) == truth[held]))
                for i, (_, held) in enumerate(folds.splits)]

    result = {"LR": test_acc(lr_test), "NCM": test_acc(cos_test),
              "folds": {"LR": fold_accs(lr_oof), "NCM": fold_accs(cos_oof)},
              "LR source": "bench.choice file" if saved is not None else "fit here"}
    for T in TEMPERATURES:
        result[f"LR+NCM T={T:g}"] = test_acc((lr_test + _softmax(cos_test / T)) / 2)
        result["folds"][f"LR+NCM T={T:g}"] = fold_accs((lr_oof + _softmax(cos_oof / T)) / 2)
    return result


def run_set(name: str, sizes, seeds) -> dict:
    modality = _modality(name)
    pool, test = load(name, "train"), capped(load(name, "test"))
    test_parts = [np.asarray(embed(test.inputs, b, keys=test.keys), dtype=np.float64) for b in BACKBONES[modality]]
    found = {}
    for size in sizes or SIZES[modality]:
        found[str(size)] = {str(seed): run_draw(name, size, seed, pool, test, test_parts) for seed in seeds}
        row = found[str(size)]
        print(f"{name} {size}/class: LR {np.mean([d['LR'] for d in row.values()]):.1f}, "
              f"NCM {np.mean([d['NCM'] for d in row.values()]):.1f}, "
              + ", ".join(f"T={T:g} {np.mean([d[f'LR+NCM T={T:g}'] for d in row.values()]):.1f}" for T in TEMPERATURES),
              flush=True)
    return found


def chosen_temperature(results: dict) -> float:
    """The T with the highest mean test accuracy of LR+NCM over every development set and size."""
    rows = [draws for name in DEVELOPMENT if name in results for draws in results[name]["sizes"].values()]
    if not rows:
        raise SystemExit("no development set measured yet: run the development sets first")
    return max(TEMPERATURES, key=lambda T: np.mean([np.mean([d[f"LR+NCM T={T:g}"] for d in draws.values()]) for draws in rows]))


def table(results: dict) -> None:
    T = chosen_temperature(results)
    mix = f"LR+NCM T={T:g}"
    print(f"T = {T:g}, chosen on the development sets ({', '.join(n for n in DEVELOPMENT if n in results)})\n")
    print("| T | " + " | ".join(n for n in DEVELOPMENT if n in results) + " | mean (development) |")
    print("|---" * (sum(n in results for n in DEVELOPMENT) + 2) + "|")
    for t in TEMPERATURES:
        cells = [np.mean([np.mean([d[f"LR+NCM T={t:g}"] - d["LR"] for d in draws.values()])
                          for draws in results[n]["sizes"].values()]) for n in DEVELOPMENT if n in results]
        print(f"| {t:g} | " + " | ".join(f"{c:+.2f}" for c in cells) + f" | {np.mean(cells):+.2f} |")
    print("\n(LR+NCM minus LR, points, mean over sizes and draws)\n")
    print("| group | set | per class | draws | LR | NCM | LR+NCM | LR+NCM − LR (mean ± std over draws) | "
          "folds choose | folds picked LR+NCM | LR+NCM better on test |")
    print("|---" * 11 + "|")
    groups = {"development": [], "confirmation": []}
    for group, names in (("development", DEVELOPMENT), ("confirmation", CONFIRMATION)):
        for name in names:
            if name not in results:
                continue
            for size, draws in results[name]["sizes"].items():
                d = list(draws.values())
                lr, ncm, avg = (np.array([x[k] for x in d]) for k in ("LR", "NCM", mix))
                picks = np.array([np.mean(x["folds"][mix]) > np.mean(x["folds"]["LR"]) for x in d])
                folds_choose = np.where(picks, avg, lr)
                diff = avg - lr
                groups[group].append((diff.mean(), np.mean(folds_choose - lr), lr.std(ddof=1), np.mean(ncm - lr)))
                print(f"| {group} | {name} | {size} | {len(d)} | {lr.mean():.1f} ± {lr.std(ddof=1):.1f} | {ncm.mean():.1f} | {avg.mean():.1f} | "
                      f"{diff.mean():+.2f} ± {diff.std(ddof=1):.2f} | {folds_choose.mean():.1f} | {picks.sum()}/{len(d)} | "
                      f"{(diff > 0).sum()}/{len(d)} (ties {(diff == 0).sum()}) |")
    print()
    for group, rows in groups.items():
        if rows:
            rows = np.array(rows)
            worst = rows[:, 0] + rows[:, 2]
            print(f"{group}: LR+NCM − LR {rows[:, 0].mean():+.2f} points on average over {len(rows)} rows "
                  f"(NCM alone {rows[:, 3].mean():+.2f}; folds choosing {rows[:, 1].mean():+.2f}); "
                  f"rows losing more than the draws' spread (LR's std over draws): {int((worst < 0).sum())}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.class_means", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=[])
    parser.add_argument("--sizes", nargs="+", type=int, default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--report", action="store_true", help="print the tables from the saved results only")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if not args.report:
        for name in args.sets:
            results[name] = {"sizes": run_set(name, args.sizes, args.seeds), "machine": machine(),
                             "group": "development" if name in DEVELOPMENT else "confirmation"}
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=1))
    table(results)


if __name__ == "__main__":
    main()
