"""How often the training report flags a clean example: suspected label errors and outliers on
draws nobody corrupted (issue 30 asks for at most 1 in 50, for the report and the page alike; the
page shows the same findings).

    .venv/bin/python -m bench.false_alarms --sets flowers12 clothing10 --sizes 5 10
    .venv/bin/python -m bench.false_alarms --sets sst2 trec6 agnews --sizes 8 16
    .venv/bin/python -m bench.false_alarms --report

For each set, size and seed (0-4) a stratified draw of the train split (`common.draw`), taken as
clean (the datasets' own labels), is trained as `smalldata train --budget 0` trains it and given to
`report.training_report`: every example it lists as a suspected label error or an outlier is a
false alarm. Not timed. Results: bench/results/false_alarms.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.choice import load
from bench.common import draw, machine
from smalldata import train
from smalldata.report import training_report

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "false_alarms.json"


def measure(name: str, size: int, seeds) -> None:
    pool = load(name, "train")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for seed in seeds:
        key = f"{name}-{size}-{seed}"
        if key in results:
            continue
        sample = draw(pool, size, seed)
        model = train(sample, budget=0, curve=False, seed=seed)
        findings = training_report(model, sample).findings
        results[key] = {"n": len(sample), "label_issues": len(findings["label_issues"].issues),
                        "outliers": len(findings["outliers"].outliers), "machine": machine()}
        print(key, results[key], flush=True)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1))


def report() -> None:
    results = json.loads(RESULTS.read_text())
    groups: dict[str, list[dict]] = {}
    for key, value in results.items():
        groups.setdefault(key.rsplit("-", 1)[0], []).append(value)
    print("| set, per class | draws | examples | flagged as label errors | flagged as outliers | share flagged (target <= 2%) |")
    print("|---|---|---|---|---|---|")
    for group, rows in groups.items():
        n = sum(r["n"] for r in rows)
        errors, far = sum(r["label_issues"] for r in rows), sum(r["outliers"] for r in rows)
        print(f"| {group} | {len(rows)} | {n} | {errors} | {far} | {100 * (errors + far) / n:.1f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=[])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(5)))
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if args.report:
        report()
        return
    for name in args.sets:
        for size in args.sizes:
            measure(name, size, args.seeds)


if __name__ == "__main__":
    main()
