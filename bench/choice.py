"""The frozen candidates of the automatic choice, saved draw by draw, so that rules can be compared
offline: which one to ship, or how to average them.

    .venv/bin/python -m bench.choice collect --sets flowers12 clothing10 --sizes 5 10 20
    .venv/bin/python -m bench.choice collect --sets sst2 trec6 agnews banking77 --sizes 8 16
    .venv/bin/python -m bench.choice collect --sets cifar10 fashion-mnist --sizes 10     # confirmation
    .venv/bin/python -m bench.choice collect --sets mr clinc150 --sizes 8               # confirmation
    .venv/bin/python -m bench.choice report --sets flowers12 clothing10 sst2 trec6 agnews banking77 --sizes 5 8 10 16 20
    .venv/bin/python -m bench.choice targets --sets cifar10 fashion-mnist mr clinc150 --sizes 5 8 10 16 20

For each set, size and seed (0-4), a stratified draw of the train split (`common.draw`) is the
training set. Every frozen candidate (logistic regression at each C in `CS` on each installed
backbone of the modality, and for images on the two backbones side by side) is scored on the
tool's own folds (`evaluate.cv_folds`, out-of-fold probabilities kept per repeat) and fit on the
whole draw and scored on the test split (capped at 2000, `common.capped`). Everything goes to
bench/results/choice/SET-SIZE-SEED.npz; `report` applies each rule of `RULES` to those files and
prints test accuracy per set (mean over draws), never refitting anything.

Sets: the six development sets, and the confirmation sets cifar10, mr, clinc150 (in-scope only)
and Debian's Fashion-MNIST (`fashion-mnist`, a pool of 100 per class from its train split and 2000
test images, written once as PNG folders under bench/results/).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench.common import DATASETS, capped, draw, load_split
from smalldata.data import load_image_folder, load_text_csv
from smalldata.evaluate import cv_folds, single_threaded_math
from smalldata.features import embed
from smalldata.progress import Progress

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "choice"
BACKBONES = {"image": ("efficientnet-lite0", "efficientnet-lite2"), "text": ("all-MiniLM-L6-v2", "all-mpnet-base-v2")}
PAIR = "efficientnet-lite0+efficientnet-lite2"
CS = (1.0, 10.0)
IMAGE = ("flowers12", "clothing10", "cifar10", "fashion-mnist")
DEVELOPMENT = ("flowers12", "clothing10", "sst2", "trec6", "agnews", "banking77")
CONFIRMATION = ("cifar10", "fashion-mnist", "mr", "clinc150")


def load(name: str, split: str):
    if name == "fashion-mnist":
        return _fashion_mnist(split)
    if name == "cifar10":
        return load_image_folder(DATASETS / name / split)
    if name in ("mr", "clinc150"):
        return load_text_csv(DATASETS / name / f"{split}.csv")
    return load_split(name, split)


def _fashion_mnist(split: str):
    from smalldata.demo import read_fashion_mnist, sample_per_class, write_png_folder

    folder = ROOT / "bench" / "results" / "fashion-mnist" / split
    if not folder.exists():
        images, labels = read_fashion_mnist(split)
        write_png_folder(images, labels, folder, sample_per_class(labels, 100 if split == "train" else 200, seed=0))
    return load_image_folder(folder)


def candidate_features(train, test, modality: str, progress) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (train rows, test rows) for every frozen feature set."""
    out = {}
    for name in BACKBONES[modality]:
        out[name] = (embed(train.inputs, name, keys=train.keys, progress=progress),
                     embed(test.inputs, name, keys=test.keys, progress=progress))
    if modality == "image":
        out[PAIR] = tuple(np.hstack([out[b][i] for b in BACKBONES["image"]]) for i in (0, 1))
    return out


def collect(name: str, size: int, seeds, progress) -> None:
    from joblib import Parallel, delayed
    from sklearn.linear_model import LogisticRegression

    pool, test = load(name, "train"), capped(load(name, "test"))
    modality = "image" if name in IMAGE else "text"
    for seed in seeds:
        out = RESULTS / f"{name}-{size}-{seed}.npz"
        if out.exists():
            continue
        sample = draw(pool, size, seed)
        y, y_test = np.asarray(sample.labels), np.asarray(test.labels)
        classes = np.unique(y)
        folds = cv_folds(y, seed=seed)
        features = candidate_features(sample, test, modality, progress)
        saved = {"classes": classes, "y": y, "y_test": y_test, "n_splits": folds.n_splits,
                 "fold_test": np.array([t for _, t in folds.splits], dtype=object)}
        started = time.perf_counter()

        def fit(X, train_rows, C):
            return LogisticRegression(C=C, max_iter=3000).fit(X[train_rows], y[train_rows])

        for feature, (X, X_test) in features.items():
            for C in CS:
                key = f"lr-C{C:g}@{feature}"
                with single_threaded_math():
                    fitted = Parallel(n_jobs=2, prefer="threads")(delayed(fit)(X, train, C) for train, _ in folds.splits)
                    oof = np.zeros((folds.n_repeats, len(y), len(classes)))
                    accuracies = []
                    for index, ((_, held), model) in enumerate(zip(folds.splits, fitted)):
                        proba = np.zeros((len(held), len(classes)))
                        proba[:, np.searchsorted(classes, model.classes_)] = model.predict_proba(X[held])
                        oof[index // folds.n_splits, held] = proba
                        accuracies.append(float(np.mean(classes[proba.argmax(1)] == y[held])))
                    whole = fit(X, np.arange(len(y)), C)
                saved[f"{key}|oof"] = oof.astype(np.float32)
                saved[f"{key}|folds"] = np.array(accuracies)
                saved[f"{key}|test"] = whole.predict_proba(X_test).astype(np.float32)
        RESULTS.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out, **saved)
        best = max((k for k in saved if k.endswith("|test")), key=lambda k: np.mean(classes[saved[k].argmax(1)] == y_test))
        print(f"{name} {size}/class seed {seed}: {len(y)} examples, {time.perf_counter() - started:.0f} s of fits; "
              f"best on test {best[:-5]} {100 * np.mean(classes[saved[best].argmax(1)] == y_test):.1f}", flush=True)


# ---- rules, applied offline to the saved files ----------------------------------------------

def _accuracy(saved, proba) -> float:
    return float(np.mean(saved["classes"][proba.argmax(1)] == saved["y_test"]))


def _keys(saved) -> list[str]:
    return [k[:-5] for k in saved.files if k.endswith("|test")]


def _strongest(modality: str) -> str:
    return BACKBONES[modality][-1]


def anchor(backbone_index: int):
    def rule(saved, modality):
        return saved[f"lr-C1@{BACKBONES[modality][backbone_index]}|test"]
    return rule


def one_se(pool):
    """The one-standard-error rule over `pool(modality)` keys, in order (earlier preferred)."""
    def rule(saved, modality):
        keys = pool(modality)
        scores = [saved[f"{k}|folds"] for k in keys]
        means = [s.mean() for s in scores]
        best = int(np.argmax(means))
        bar = means[best] - scores[best].std() / np.sqrt(len(scores[best]))
        chosen = next(k for k, m in zip(keys, means) if m >= bar)
        return saved[f"{chosen}|test"]
    return rule


def average(pool):
    def rule(saved, modality):
        return np.mean([saved[f"{k}|test"] for k in pool(modality)], axis=0)
    return rule


def greedy(pool, rounds: int = 20):
    """Caruana's ensemble selection with replacement on out-of-fold log loss (as AutoGluon does)."""
    def rule(saved, modality):
        keys = pool(modality)
        y = np.searchsorted(saved["classes"], saved["y"])
        oof = {k: saved[f"{k}|oof"].mean(axis=0) for k in keys}
        total, picks = np.zeros_like(next(iter(oof.values()))), []
        for _ in range(rounds):
            losses = [(-np.log(((total + oof[k]) / (len(picks) + 1))[np.arange(len(y)), y] + 1e-9).mean(), k) for k in keys]
            _, k = min(losses)
            picks.append(k)
            total = total + oof[k]
        return np.mean([saved[f"{k}|test"] for k in picks], axis=0)
    return rule


def singles(C="1"):
    return lambda modality: [f"lr-C{C}@{b}" for b in reversed(BACKBONES[modality])]


def with_pair(C="1"):
    return lambda modality: ([f"lr-C{C}@{PAIR}"] if modality == "image" else []) + singles(C)(modality)


def all_lr(modality):
    return [k for C in ("1", "10") for k in with_pair(C)(modality)]


def _fold_scores_of_average(saved, keys) -> np.ndarray:
    """Per-fold accuracy of the average of `keys`' out-of-fold probabilities."""
    y = np.searchsorted(saved["classes"], saved["y"])
    oof = np.mean([saved[f"{k}|oof"] for k in keys], axis=0)  # repeats x rows x classes
    n_splits = int(saved["n_splits"])
    held_out = [np.asarray(held, dtype=int) for held in saved["fold_test"]]
    return np.array([np.mean(oof[i // n_splits, held].argmax(1) == y[held]) for i, held in enumerate(held_out)])


def ordered(order: str, C: str = "1"):
    """The one-standard-error rule over candidates in `order`, a string of "avg" (the average of
    logistic regressions on every backbone), "strong", "weak": earlier ones preferred."""
    def rule(saved, modality):
        keys = singles(C)(modality)  # strongest first
        named = {"strong": keys[0], "weak": keys[-1]}
        scores, tests = [], []
        for item in order.split(","):
            if item == "avg":
                scores.append(_fold_scores_of_average(saved, keys))
                tests.append(average(singles(C))(saved, modality))
            else:
                scores.append(saved[f"{named[item]}|folds"])
                tests.append(saved[f"{named[item]}|test"])
        means = [s.mean() for s in scores]
        best = int(np.argmax(means))
        bar = means[best] - scores[best].std() / np.sqrt(len(scores[best]))
        return tests[next(i for i, m in enumerate(means) if m >= bar)]
    return rule


def tools_rule(saved, modality):
    """What `smalldata.train.core_candidates` does: its C and its place for the average, by modality."""
    from smalldata.train import AVERAGE_FIRST, CORE_C

    order = "avg,strong,weak" if AVERAGE_FIRST[modality] else "strong,avg,weak"
    return ordered(order, f"{CORE_C[modality]:g}")(saved, modality)


RULES = {
    "LR weaker (anchor)": anchor(0),
    "LR stronger (anchor)": anchor(1),
    "LR C=10 stronger": lambda s, m: s[f"lr-C10@{_strongest(m)}|test"],
    "one-SE: pair, stronger, weaker (C=1)": one_se(with_pair()),
    "one-SE over C=1 and C=10": one_se(all_lr),
    "average LR C=1 of backbones": average(singles()),
    "the tool's rule (images: C=1, average first; texts: C=10, stronger first)": tools_rule,
    "one-SE: average, stronger, weaker (C=1)": ordered("avg,strong,weak"),
    "one-SE: average, stronger, weaker (C=10)": ordered("avg,strong,weak", "10"),
    "one-SE: stronger, average, weaker (C=1)": ordered("strong,avg,weak"),
    "one-SE: stronger, average, weaker (C=10)": ordered("strong,avg,weak", "10"),
    "average LR C=10 of backbones": average(singles("10")),
    "average C=1 and C=10": average(lambda m: singles("1")(m) + singles("10")(m)),
    "greedy ensemble, C=1": greedy(with_pair()),
    "greedy ensemble, all": greedy(all_lr),
}


def accuracies(sets, sizes, rules):
    """(set, size, draws, rule -> test accuracies in %) for every saved set and size."""
    for name in sets:
        modality = "image" if name in IMAGE else "text"
        for size in sizes:
            files = sorted(RESULTS.glob(f"{name}-{size}-*.npz"))
            if not files:
                continue
            scores = {rule: [] for rule in rules}
            for file in files:
                saved = np.load(file, allow_pickle=True)
                for rule in rules:
                    scores[rule].append(100 * _accuracy(saved, RULES[rule](saved, modality)))
            yield name, size, len(files), scores


def targets(sets, sizes) -> None:
    """One row per set and size: the two plain anchors and the tool's rule, as the targets read."""
    anchors = ("LR weaker (anchor)", "LR stronger (anchor)")
    tool = next(rule for rule in RULES if rule.startswith("the tool's rule"))
    print("| set | per class | draws | LR on the weaker backbone | LR on the stronger | the tool's frozen choice | "
          "vs better anchor | vs LR stronger |")
    print("|---|---|---|---|---|---|---|---|")
    gains = []
    for name, size, draws, scores in accuracies(sets, sizes, (*anchors, tool)):
        mean = {rule: np.mean(v) for rule, v in scores.items()}
        spread = {rule: np.std(v, ddof=1) for rule, v in scores.items()}
        better = max(anchors, key=mean.get)
        gains.append(mean[tool] - mean[anchors[1]])
        print(f"| {name} | {size} | {draws} | " + " | ".join(f"{mean[r]:.1f} ± {spread[r]:.1f}" for r in (*anchors, tool))
              + f" | {mean[tool] - mean[better]:+.1f} (std {spread[better]:.1f}) | {gains[-1]:+.1f} |")
    print(f"\nmean gain over LR on the stronger backbone: {np.mean(gains):+.2f} points over {len(gains)} rows")


def report(sets, sizes) -> None:
    rows = [(name, size, draws, {r: (np.mean(a), np.std(a, ddof=1) if len(a) > 1 else 0.0) for r, a in scores.items()})
            for name, size, draws, scores in accuracies(sets, sizes, tuple(RULES))]
    print("| rule | " + " | ".join(f"{n} {s} ({k})" for n, s, k, _ in rows) + " | mean | mean gain over LR stronger |")
    print("|---" * (len(rows) + 3) + "|")
    for rule in RULES:
        means = [r[3][rule][0] for r in rows]
        gains = [r[3][rule][0] - r[3]["LR stronger (anchor)"][0] for r in rows]
        print(f"| {rule} | " + " | ".join(f"{r[3][rule][0]:.1f} ± {r[3][rule][1]:.1f}" for r in rows)
              + f" | {np.mean(means):.1f} | {np.mean(gains):+.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.choice",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("collect", "report", "targets"))
    parser.add_argument("--sets", nargs="+", default=list(DEVELOPMENT))
    parser.add_argument("--sizes", nargs="+", type=int, default=[10])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    if args.action in ("report", "targets"):
        (report if args.action == "report" else targets)(args.sets, args.sizes)
        return
    for name in args.sets:
        for size in args.sizes:
            collect(name, size, args.seeds, Progress())


if __name__ == "__main__":
    main()
