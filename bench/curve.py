"""Learning-curve extrapolation: fit on draws of up to 5 (images) or 16 (texts) examples per class,
predict the accuracy at 20 (images) or 64 (texts) per class, and measure it.

    .venv/bin/python -m bench.curve [--sets flowers12 sst2 ...] [--seeds 0 1 2 3 4] [--report]

Two protocols, both with logistic regression on frozen embeddings (the default head):
- "draws from the pool" (the issue's benchmark): smalldata's learning curve over the train split
  (capped at 3000 with a fixed sample), at 1, 2, 4, ... up to 5 or 16 per class, each draw scored
  on the rest of the pool; extrapolated to 20 or 64 per class.
- "only the small draw" (what a user who has just 5 or 16 per class gets): the curve is measured on
  one draw of 5 or 16 per class alone, each size scored on the few examples that draw leaves out.
The measured accuracy: the same head trained on a draw of 20 or 64 per class (same seed), scored on
the test split (capped at 2000 with a fixed sample). Results: bench/results/curve.json.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.common import IMAGE_SETS, capped, draw, load_split, machine
from smalldata.backbones import DEFAULT_BACKBONE
from smalldata.curve import learning_curve, project
from smalldata.evaluate import single_threaded_math
from smalldata.features import embed
from smalldata.heads import logistic_regression_head

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "curve.json"
SETS = ("flowers12", "clothing10", "sst2", "trec6", "agnews")
FIT_AT = {"image": 5, "text": 16}
PREDICT_AT = {"image": 20, "text": 64}
POOL_CAP = 3000
POOL, SMALL = "draws from the pool", "only the small draw"


def run_set(name: str, seeds) -> list[dict]:
    modality = "image" if name in IMAGE_SETS else "text"
    backbone = DEFAULT_BACKBONE[modality]
    train_split, test = load_split(name, "train"), capped(load_split(name, "test"))
    X_test = embed(test.inputs, backbone, keys=test.keys)
    pool = capped(train_split, POOL_CAP)
    X_pool = embed(pool.inputs, backbone, keys=pool.keys)
    fit_at, target = FIT_AT[modality], PREDICT_AT[modality]
    rows = []
    for seed in seeds:
        large = draw(train_split, target, seed)
        with single_threaded_math():
            head = logistic_regression_head().fit(embed(large.inputs, backbone, keys=large.keys), large.labels)
        measured = float(np.mean(head.predict(X_test) == np.asarray(test.labels)))
        small = draw(train_split, fit_at, seed)
        curves = {
            POOL: learning_curve(X_pool, pool.labels, logistic_regression_head, max_per_class=fit_at, seed=seed),
            SMALL: learning_curve(embed(small.inputs, backbone, keys=small.keys), small.labels,
                                  logistic_regression_head, seed=seed),
        }
        for protocol, curve in curves.items():
            predicted = project(curve.points, curve.fit, [target], current_per_class=fit_at, seed=seed)[0]
            rows.append({"set": name, "protocol": protocol, "seed": seed, "fit_at": fit_at, "predict_at": target,
                         "points": {str(p.per_class): round(p.mean, 4) for p in curve.points},
                         "draws": {str(p.per_class): p.accuracies for p in curve.points},
                         "predicted": round(predicted.accuracy, 4), "low": round(predicted.low, 4),
                         "high": round(predicted.high, 4), "measured": round(measured, 4)})
            print(f"{name} seed {seed} ({protocol}): predicted {100 * predicted.accuracy:.1f} "
                  f"({100 * predicted.low:.1f}-{100 * predicted.high:.1f}), measured {100 * measured:.1f}", flush=True)
    return rows


def report(rows: list[dict]) -> str:
    lines = []
    for protocol in (POOL, SMALL):
        lines += [f"\n**{protocol}**\n",
                  "| set | fit up to (per class) | predict at | predicted (mean of seeds) | measured | mean abs. error (points) | measured inside the 80% band |",
                  "|---|---|---|---|---|---|---|"]
        errors = []
        chosen = [r for r in rows if r["protocol"] == protocol]
        for name in dict.fromkeys(r["set"] for r in chosen):
            mine = [r for r in chosen if r["set"] == name]
            error = [abs(r["predicted"] - r["measured"]) * 100 for r in mine]
            errors.extend(error)
            inside = sum(r["low"] <= r["measured"] <= r["high"] for r in mine)
            lines.append(f"| {name} | {mine[0]['fit_at']} | {mine[0]['predict_at']} | "
                         f"{100 * np.mean([r['predicted'] for r in mine]):.1f} | {100 * np.mean([r['measured'] for r in mine]):.1f} | "
                         f"{np.mean(error):.1f} | {inside}/{len(mine)} |")
        lines.append(f"\nMean absolute error over all sets and seeds ({len(errors)} predictions): "
                     f"**{np.mean(errors):.1f} points** (target: within 4).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.curve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--report", action="store_true", help="print the markdown table of saved results only")
    args = parser.parse_args()
    if not args.report:
        previous = json.loads(RESULTS.read_text())["rows"] if RESULTS.exists() else []
        fresh = [row for name in args.sets for row in run_set(name, args.seeds)]
        redone = {(f["set"], f["seed"]) for f in fresh}
        keep = [r for r in previous if "protocol" in r and (r["set"], r["seed"]) not in redone]
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"machine": machine(), "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                       "rows": keep + fresh}, indent=2) + "\n")
    print(report(json.loads(RESULTS.read_text())["rows"]))


if __name__ == "__main__":
    main()
