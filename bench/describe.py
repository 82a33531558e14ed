"""What class descriptions add: texts at 0, 1, 2 and 4 examples per class, with and without them.

    flock /tmp/smalldata-cpu.lock .venv/bin/python -m bench.describe --sets trec6 --sizes 0 1 2 4
    .venv/bin/python -m bench.describe --report          # the table from saved results only

Descriptions: `bench/descriptions.py` (each set's label names, lightly expanded by hand). For each
set, size and seed (`common.draw`; test split capped at 2000, `common.capped`):

- 0 per class: `zero_shot_model(descriptions)`, and plain nearest-description matching computed
  here directly (argmax of cosine similarity to the embedded descriptions), the reference to match;
- 1 per class (no cross-validation possible): `train(draw, evaluate=False)` with and without
  descriptions;
- 2 and 4 per class: `train(draw, seed=seed, curve=False)` with and without descriptions, so the
  described head must win its place in cross-validation.

Results: bench/results/describe/SET-SIZE.json, merged seed by seed.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.common import capped, draw, load_split, machine
from bench.descriptions import descriptions
from smalldata.backbones import DEFAULT_BACKBONE
from smalldata.describe import DESCRIBED_HEAD, embedded_descriptions, zero_shot_model
from smalldata.features import embed
from smalldata.train import train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "describe"
SETS = ("trec6", "agnews", "banking77")
SIZES = (0, 1, 2, 4)
SEEDS = (0, 1, 2, 3, 4)
BACKBONE = DEFAULT_BACKBONE["text"]


def nearest_description(described: dict[str, str], classes, test_X) -> np.ndarray:
    labels, prototypes = embedded_descriptions(described, classes, BACKBONE)
    unit = lambda A: A / np.linalg.norm(A, axis=1, keepdims=True)  # noqa: E731
    return np.array(labels)[(unit(test_X) @ unit(prototypes).T).argmax(axis=1)]


def run_size(name: str, train_split, test, test_X, size: int, seeds) -> list[dict]:
    described = descriptions(name, train_split.classes)
    truth = np.asarray(test.labels)
    if size == 0:  # no draw: one result, whatever the seed
        zero = zero_shot_model(described)
        return [{"seed": 0, "with": float(np.mean(np.asarray(zero.predict(test.inputs)) == truth)),
                 "nearest_description": float(np.mean(nearest_description(described, train_split.classes, test_X) == truth))}]
    records = []
    for seed in seeds:
        sample = draw(train_split, size, seed)
        evaluate = size >= 2
        record = {"seed": seed, "evaluate": evaluate}
        for key, given in (("without", None), ("with", described)):
            start = time.perf_counter()
            model = train(sample, seed=seed, curve=False, evaluate=evaluate, descriptions=given)
            record[f"{key}_seconds"] = round(time.perf_counter() - start, 2)
            record[key] = model.evaluate(test).accuracy
            record[f"{key}_chosen"] = model.head_name
        records.append(record)
        print(f"{name} {size}/class seed {seed}: without {100 * record['without']:.1f} ({record['without_chosen']}), "
              f"with {100 * record['with']:.1f} ({record['with_chosen']})", flush=True)
    return records


def save(name: str, size: int, n_test: int, records: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{size}.json"
    merged = {d["seed"]: d for d in (json.loads(path.read_text())["draws"] if path.exists() else [])}
    merged.update({d["seed"]: d for d in records})
    path.write_text(json.dumps({
        "set": name, "size": size, "n_test": n_test, "backbone": BACKBONE, "machine": machine(),
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "draws": [merged[s] for s in sorted(merged)],
    }, indent=2) + "\n")


def run(sets, sizes, seeds) -> None:
    for name in sets:
        train_split, test = load_split(name, "train"), capped(load_split(name, "test"))
        test_X = embed(test.inputs, BACKBONE, keys=test.keys)
        for size in sizes:
            records = run_size(name, train_split, test, test_X, size, seeds)
            save(name, size, len(test), records)
            if size == 0:
                print(f"{name} 0/class: zero-shot model {100 * records[0]['with']:.1f}, "
                      f"nearest description {100 * records[0]['nearest_description']:.1f}", flush=True)


def report() -> str:
    lines = ["| set | per class | draws | without descriptions | with descriptions | gain (paired) | "
             "described head chosen | nearest description (0/class) |", "|---|---|---|---|---|---|---|---|"]
    for name in SETS:
        for size in SIZES:
            path = RESULTS / f"{name}-{size}.json"
            if not path.exists():
                continue
            draws = json.loads(path.read_text())["draws"]
            with_ = 100 * np.array([d["with"] for d in draws])
            if size == 0:
                reference = 100 * draws[0]["nearest_description"]
                lines.append(f"| {name} | 0 | - | - | {with_.mean():.1f} | - | always | {reference:.1f} |")
                continue
            without = 100 * np.array([d["without"] for d in draws])
            gain = with_ - without
            sd = (lambda v: v.std(ddof=1) if len(v) > 1 else 0.0)
            chosen = sum(d["with_chosen"] == DESCRIBED_HEAD for d in draws)
            lines.append(f"| {name} | {size} | {len(draws)} | {without.mean():.1f} ± {sd(without):.1f} | "
                         f"{with_.mean():.1f} ± {sd(with_):.1f} | {gain.mean():+.1f} ± {sd(gain):.1f} | "
                         f"{chosen}/{len(draws)}{'' if draws[0]['evaluate'] else ' (no CV)'} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.describe",
                                     description="Accuracy with and without class descriptions.")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--report", action="store_true", help="print the table from saved results; run nothing")
    args = parser.parse_args()
    if not args.report:
        run(args.sets, args.sizes, args.seeds)
    table = report()
    (RESULTS.parent / "describe.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
