"""Active learning: does labeling what `smalldata suggest` ranks first beat labeling at random?

    .venv/bin/python -m bench.active_learning                          # all five sets, seeds 0..4
    .venv/bin/python -m bench.active_learning --sets trec6 --seeds 0 1 # a piece
    .venv/bin/python -m bench.active_learning --report                 # table from saved results only

For each data set and seed: the training split, capped at 3000 examples (one fixed sample, seed 0,
the same for every seed and strategy), is the pool. 2 examples of every class are drawn from it
with the seed (the same draw for every strategy) and labeled; then 5 rounds each label
2 x (number of classes) more examples of the rest of the pool, chosen by

- suggest: `smalldata.suggest.rank_for_labeling` on the current model's probabilities and the
  embeddings (the already labeled ones passed as `labeled_embeddings`);
- random: uniformly at random (seeded by seed and round);
- uncertainty: the largest 1 - margin alone, for reference (what the issue says not to do).

After the draw and after every round the tool's default head (`logistic_regression_head()` on
`embed()` outputs of the default backbone) is fit on the labeled examples and scored on the test
split, capped at 2000 (`common.capped`). Results: bench/results/active_learning.json (merged set
by set, so a run can be done in pieces) and the markdown table in bench/results/active_learning.md.
The target: suggest reaches random's round-5 mean accuracy by round 3 or 4 on at least 3 sets.
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
from smalldata.backbones import DEFAULT_BACKBONE
from smalldata.evaluate import single_threaded_math
from smalldata.features import embed
from smalldata.heads import logistic_regression_head
from smalldata.suggest import rank_for_labeling, uncertainty

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "active_learning.json"
SETS = ("flowers12", "clothing10", "sst2", "trec6", "agnews")
SEEDS = (0, 1, 2, 3, 4)
POOL_CAP = 3000
START_PER_CLASS = 2
PER_CLASS_PER_ROUND = 2
ROUNDS = 5
STRATEGIES = ("suggest", "random", "uncertainty")


def initial_draw(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """`per_class` indices of every class, drawn without replacement (as `common.draw` does)."""
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False) for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def choose(strategy: str, X: np.ndarray, model, labeled: np.ndarray, rest: np.ndarray, batch: int,
           seed: int, round_: int) -> np.ndarray:
    """Indices (into the pool) of the next `batch` examples to label."""
    if strategy == "random":
        return np.random.default_rng([seed, round_]).choice(rest, size=batch, replace=False)
    proba = model.predict_proba(X[rest])
    if strategy == "uncertainty":
        return rest[np.argsort(-uncertainty(proba), kind="stable")[:batch]]
    return rest[rank_for_labeling(X[rest], proba, n=batch, labeled_embeddings=X[labeled], seed=seed)]


def run_seed(X, y, X_test, y_test, seed: int, strategies) -> dict:
    n_classes = len(np.unique(y))
    batch = PER_CLASS_PER_ROUND * n_classes
    start = initial_draw(y, START_PER_CLASS, seed)
    record = {"seed": seed, "batch": batch, "strategies": {}}
    for strategy in strategies:
        labeled = start.copy()
        accuracies, sizes, seconds = [], [], []
        for round_ in range(ROUNDS + 1):
            with single_threaded_math():
                model = logistic_regression_head().fit(X[labeled], y[labeled])
                accuracies.append(float(np.mean(model.predict(X_test) == y_test)))
            sizes.append(int(len(labeled)))
            if round_ == ROUNDS:
                break
            rest = np.setdiff1d(np.arange(len(X)), labeled)
            started = time.perf_counter()
            picks = choose(strategy, X, model, labeled, rest, batch, seed, round_)
            seconds.append(time.perf_counter() - started)
            labeled = np.concatenate([labeled, picks])
        record["strategies"][strategy] = {"accuracy": accuracies, "n_labeled": sizes,
                                          "choose_seconds": round(float(np.mean(seconds)), 3)}
    return record


def run(sets, seeds, strategies) -> None:
    for name in sets:
        modality = "image" if name in IMAGE_SETS else "text"
        backbone = DEFAULT_BACKBONE[modality]
        full = load_split(name, "train")
        pool = capped(full, POOL_CAP, seed=0)
        test = capped(load_split(name, "test"))
        started = time.perf_counter()
        X = embed(pool.inputs, backbone, keys=pool.keys)
        X_test = embed(test.inputs, backbone, keys=test.keys)
        y, y_test = np.asarray(pool.labels), np.asarray(test.labels)
        print(f"[{name}] pool {len(pool)} of {len(full)} train, {len(test)} test, {len(pool.classes)} classes; "
              f"embeddings in {time.perf_counter() - started:.1f}s", flush=True)
        records = []
        for seed in seeds:
            records.append(run_seed(X, y, X_test, y_test, seed, strategies))
            save(name, modality, backbone, len(full), len(pool), len(test), records)
            line = "; ".join(f"{s} " + " ".join(f"{100 * a:.1f}" for a in r["accuracy"])
                             for s, r in records[-1]["strategies"].items())
            print(f"  {name} seed {seed}: {line}", flush=True)


def save(name, modality, backbone, n_train, n_pool, n_test, records) -> None:
    document = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"sets": {}}
    previous = document["sets"].get(name, {}).get("seeds", [])
    merged = {r["seed"]: r for r in previous}
    for record in records:  # a rerun of some strategies keeps the others' results for that seed
        old = merged.get(record["seed"], {"strategies": {}})
        merged[record["seed"]] = {**record, "strategies": {**old["strategies"], **record["strategies"]}}
    document["sets"][name] = {
        "modality": modality, "backbone": backbone, "n_train": n_train, "n_pool": n_pool, "n_test": n_test,
        "start_per_class": START_PER_CLASS, "per_class_per_round": PER_CLASS_PER_ROUND, "rounds": ROUNDS,
        "machine": machine(), "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seeds": [merged[s] for s in sorted(merged)],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------- report

def summarise(entry: dict) -> dict:
    """Mean and std (over seeds) of accuracy per strategy and round, in percent."""
    out = {}
    for strategy in STRATEGIES:
        runs = [r["strategies"][strategy] for r in entry["seeds"] if strategy in r["strategies"]]
        if not runs:
            continue
        values = 100 * np.array([r["accuracy"] for r in runs])
        std = values.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(values.shape[1])
        out[strategy] = {"mean": values.mean(axis=0), "std": std, "n_labeled": runs[0]["n_labeled"],
                         "seeds": len(runs), "choose_seconds": float(np.mean([r["choose_seconds"] for r in runs]))}
    return out


def target_round(stats: dict) -> int | None:
    """The first round at which suggest's mean reaches random's round-5 mean (None if never)."""
    goal = stats["random"]["mean"][-1]
    reached = np.flatnonzero(stats["suggest"]["mean"] >= goal - 1e-9)
    return int(reached[0]) if len(reached) else None


def report(document: dict) -> str:
    entries = [(name, document["sets"][name]) for name in SETS if name in document["sets"]]
    out = ["### accuracy per round (test %, mean ± std over seeds)", ""]
    rounds = range(ROUNDS + 1)
    header = ["set", "strategy", *[f"round {r}" for r in rounds]]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    summary = []
    for name, entry in entries:
        stats = summarise(entry)
        for strategy, s in stats.items():
            cells = [f"{name} ({s['n_labeled'][0]}→{s['n_labeled'][-1]} labeled)" if strategy == "suggest" else "",
                     f"{strategy} ({s['seeds']} seeds)"]
            cells += [f"{m:.1f} ± {d:.1f}" for m, d in zip(s["mean"], s["std"])]
            out.append("| " + " | ".join(cells) + " |")
        if "suggest" in stats and "random" in stats:
            summary.append((name, entry, stats, target_round(stats)))
    out += ["", "### does suggest reach random's round-5 accuracy by round 3 or 4?", "",
            "| set | pool | random, round 5 | suggest, round 3 | suggest, round 4 | suggest, round 5 | "
            "first round suggest ≥ random's round 5 | met? | suggest s/round |",
            "|---|---|---|---|---|---|---|---|---|"]
    met = 0
    for name, entry, stats, first in summary:
        ok = first is not None and first <= 4
        met += ok
        s, r = stats["suggest"], stats["random"]
        out.append(f"| {name} | {entry['n_pool']} of {entry['n_train']} | {r['mean'][-1]:.1f} | {s['mean'][3]:.1f} | "
                   f"{s['mean'][4]:.1f} | {s['mean'][5]:.1f} | {first if first is not None else 'never'} | "
                   f"{'yes' if ok else 'no'} | {s['choose_seconds']:.2f} |")
    out += ["", f"Target met on {met} of {len(summary)} sets (goal: at least 3 of 5).", ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.active_learning",
                                     description="Active learning with smalldata's suggest vs random selection.")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--report", action="store_true", help="print the table from saved results; run nothing")
    args = parser.parse_args()
    if not args.report:
        run(args.sets, args.seeds, args.strategies)
    if not RESULTS.exists():
        sys.exit(f"no results in {RESULTS}: run the benchmark first")
    table = report(json.loads(RESULTS.read_text()))
    RESULTS.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
