"""What an unlabeled pool adds: the tool's choice with and without `train(..., unlabeled=pool)`.

    flock /tmp/smalldata-cpu.lock .venv/bin/python -m bench.unlabeled --sets flowers12 --seeds 0 1 2 3 4
    .venv/bin/python -m bench.unlabeled --report          # the table from saved results only

Images (flowers12, clothing10): 5 labeled examples per class (`common.draw`), the rest of the
training split as the pool. Texts (sst2, trec6, agnews): 8 per class, and 2000 other training texts
(a seeded draw) as the pool. The test split is never in the pool; `pool_from` also drops any pool
item identical to a labeled example. For each seed:

- `train(draw, seed=seed, curve=False)`, the labeled-only choice, scored on the test split;
- `train(draw, seed=seed, curve=False, unlabeled=pool)`, scored the same way; the paired difference
  is what the pool contributed;
- self-training and label spreading fitted directly on the whole draw and pool (no choosing), for
  reference (label spreading is not a candidate of `train`: see `smalldata.unlabeled.pool_candidates`).

Embeddings come from the cache (filled by a first run), so the train() times compare the work of
learning only; the pool's embedding cost is its size over the throughput in BENCHMARKS.md.
Results: bench/results/unlabeled/SET.json, merged seed by seed. The report applies the current
choice rule to the saved folds (`chosen_accuracy`), so a change of rule is scored without a rerun.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.common import IMAGE_SETS, capped, draw, load_split, machine
from smalldata.backbones import DEFAULT_BACKBONE
from smalldata.evaluate import CandidateScore, Comparison, single_threaded_math
from smalldata.features import embed
from smalldata.train import train
from smalldata.unlabeled import LABEL_SPREADING, SELF_TRAINING, PoolHead, pool_from

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "unlabeled"
SETS = ("flowers12", "clothing10", "sst2", "trec6", "agnews")
PER_CLASS = {"image": 5, "text": 8}
TEXT_POOL = 2000
SEEDS = (0, 1, 2, 3, 4)


def pool_indices(train_split, sample, modality: str, seed: int) -> np.ndarray:
    """Rows of the training split outside the labeled draw: all of them (images), or 2000 (texts)."""
    taken = set(sample.keys)
    rest = np.array([i for i, key in enumerate(train_split.keys) if key not in taken])
    if modality == "text" and len(rest) > TEXT_POOL:
        rest = np.sort(np.random.default_rng(1000 + seed).choice(rest, size=TEXT_POOL, replace=False))
    return rest


def accuracy(model, test) -> float:
    return model.evaluate(test).accuracy


def run_seed(name: str, modality: str, train_split, test, test_X, seed: int) -> dict:
    backbone = DEFAULT_BACKBONE[modality]
    sample = draw(train_split, PER_CLASS[modality], seed)
    pool = pool_from([train_split.inputs[i] for i in pool_indices(train_split, sample, modality, seed)], sample)
    embed(pool.inputs, backbone, keys=pool.keys)  # fills the cache: the timings below are of learning only

    start = time.perf_counter()
    plain = train(sample, seed=seed, curve=False)
    plain_seconds = time.perf_counter() - start
    start = time.perf_counter()
    pooled = train(sample, seed=seed, curve=False, unlabeled=pool)
    pooled_seconds = time.perf_counter() - start

    direct = {}
    X = embed(sample.inputs, backbone, keys=sample.keys)
    with single_threaded_math():
        pool_X = embed(pool.inputs, backbone, keys=pool.keys)
        for name, method in ((SELF_TRAINING, "self-training"), (LABEL_SPREADING, "label-spreading")):
            fitted = PoolHead(pool=pool_X, method=method).fit(X, np.asarray(sample.labels))
            direct[name] = float(np.mean(fitted.predict(test_X) == np.asarray(test.labels)))
    comparison = pooled.comparison
    return {
        "seed": seed, "n_labeled": len(sample), "n_pool": len(pool),
        "labeled_only": {"name": plain.head_name, "accuracy": accuracy(plain, test), "train_seconds": round(plain_seconds, 2)},
        "with_pool": {"name": pooled.head_name, "accuracy": accuracy(pooled, test), "train_seconds": round(pooled_seconds, 2),
                      "contributions": comparison.to_dict()["contributions"]},
        "direct": direct,
        # every fold's accuracy, so another choice rule can be judged without a rerun
        "cv": {s.name: [round(a, 4) for a in s.fold_accuracies] for s in comparison.scores},
    }


def save(name: str, modality: str, n_test: int, records: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    merged = {d["seed"]: d for d in (json.loads(path.read_text())["draws"] if path.exists() else [])}
    merged.update({d["seed"]: d for d in records})
    path.write_text(json.dumps({
        "set": name, "modality": modality, "per_class": PER_CLASS[modality], "n_test": n_test,
        "machine": machine(), "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "draws": [merged[s] for s in sorted(merged)],
    }, indent=2) + "\n")


def run(sets, seeds) -> None:
    for name in sets:
        modality = "image" if name in IMAGE_SETS else "text"
        train_split, test = load_split(name, "train"), capped(load_split(name, "test"))
        test_X = embed(test.inputs, DEFAULT_BACKBONE[modality], keys=test.keys)
        records = []
        for seed in seeds:
            record = run_seed(name, modality, train_split, test, test_X, seed)
            records.append(record)
            save(name, modality, len(test), records)
            a, b = record["labeled_only"], record["with_pool"]
            print(f"{name} seed {seed}: labeled-only {100 * a['accuracy']:.1f} ({a['name']}, {a['train_seconds']}s); "
                  f"with pool {100 * b['accuracy']:.1f} ({b['name']}, {b['train_seconds']}s); "
                  + ", ".join(f"{k.split(':')[0]} {100 * v:.1f}" for k, v in record["direct"].items()), flush=True)


def chosen_accuracy(record: dict) -> tuple[str, float]:
    """The choice `train(..., unlabeled=pool)` makes under the current rule, from the saved folds,
    and its test accuracy: the pool candidate's direct fit (what train() refits), else the
    labeled-only choice. Exact, as fits and folds are seeded; lets a rule change be re-scored."""
    scores = [CandidateScore(name, "", "", name.startswith("baseline"), folds) for name, folds in record["cv"].items()]
    comparison = Comparison(scores, 0, 0, record["n_labeled"], informed=[n for n in record["cv"] if n in record["direct"]])
    name = comparison.chosen.name
    if name in record["direct"]:
        return name, record["direct"][name]
    assert name == record["labeled_only"]["name"], "the labeled-only choice must not depend on the pool"
    return name, record["labeled_only"]["accuracy"]


def report() -> str:
    rows, gains = [], []
    header = ["set", "labeled / pool", "seeds", "labeled-only", "with pool", "gain (paired)", "worse by > spread?",
              "pool candidate kept", "self-training alone", "label spreading alone", "train() s without / with pool"]
    for name in SETS:
        path = RESULTS / f"{name}.json"
        if not path.exists():
            continue
        document = json.loads(path.read_text())
        draws = document["draws"]
        plain = 100 * np.array([d["labeled_only"]["accuracy"] for d in draws])
        choices = [chosen_accuracy(d) for d in draws]
        pooled = 100 * np.array([accuracy for _, accuracy in choices])
        gain = pooled - plain
        gains.append(gain.mean())
        spread = plain.std(ddof=1) if len(plain) > 1 else 0.0
        kept = sum(name in d["direct"] for (name, _), d in zip(choices, draws))
        direct = {k: 100 * np.array([d["direct"][k] for d in draws]) for k in draws[0]["direct"]}
        cells = [name, f"{document['per_class']}/class / {draws[0]['n_pool']}", str(len(draws)),
                 f"{plain.mean():.1f} ± {spread:.1f}", f"{pooled.mean():.1f} ± {pooled.std(ddof=1) if len(pooled) > 1 else 0:.1f}",
                 f"{gain.mean():+.1f} ± {gain.std(ddof=1) if len(gain) > 1 else 0:.1f}",
                 "**yes**" if gain.mean() < -spread else "no", f"{kept}/{len(draws)}"]
        cells += [f"{v.mean():.1f} ({(v - plain).mean():+.1f})" for v in direct.values()]
        cells.append(f"{np.mean([d['labeled_only']['train_seconds'] for d in draws]):.1f} / "
                     f"{np.mean([d['with_pool']['train_seconds'] for d in draws]):.1f}")
        rows.append("| " + " | ".join(cells) + " |")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows]
    if gains:
        lines += ["", f"mean gain over the {len(gains)} sets: {np.mean(gains):+.1f} points"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.unlabeled",
                                     description="Accuracy with and without an unlabeled pool.")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--report", action="store_true", help="print the table from saved results; run nothing")
    args = parser.parse_args()
    if not args.report:
        run(args.sets, args.seeds)
    table = report()
    (RESULTS.parent / "unlabeled.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
