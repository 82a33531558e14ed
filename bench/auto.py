"""The automatic choice end to end, as `smalldata train` runs it: accuracy, wall time, budget overrun,
and the same choice on a quiet and a busy machine.

    flock /tmp/smalldata-cpu.lock .venv/bin/python -m bench.auto --sets flowers12 clothing10 --sizes 10
    flock /tmp/smalldata-cpu.lock .venv/bin/python -m bench.auto --sets sst2 trec6 agnews --sizes 8
    flock /tmp/smalldata-cpu.lock .venv/bin/python -m bench.auto --sets flowers12 --sizes 10 --busy   # 2 busy processes beside it
    .venv/bin/python -m bench.auto --report

For each set, size and seed (0-4) a stratified draw (`common.draw`, the same draws as
bench/choice.py) is given to `smalldata.train(draw, budget=DEFAULT_BUDGET, seed=seed)`, the
defaults of the CLI. The draws' embeddings are usually cached already (bench/choice.py embeds the
same draws), as on a user's second run; the run is timed and its model scored on the test split
(capped at 2000). `--busy` runs two processes spinning on the CPU beside each run, to check that the choice
does not depend on load. Results go to bench/results/auto/SET-SIZE[-busy].json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np

from bench.choice import load
from bench.common import capped, draw, machine
from smalldata import train
from smalldata.deadline import DEFAULT_BUDGET, parse_budget

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "auto"


def _spin(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10000))


def run(name: str, size: int, seeds, *, busy: bool, budget: str) -> None:
    pool, test = load(name, "train"), capped(load(name, "test"))
    out = RESULTS / f"{name}-{size}{'-busy' if busy else ''}.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    for seed in seeds:
        sample = draw(pool, size, seed)
        stop = multiprocessing.Event()
        spinners = [multiprocessing.Process(target=_spin, args=(stop,)) for _ in range(2 if busy else 0)]
        for process in spinners:
            process.start()
        start = time.perf_counter()
        model = train(sample, seed=seed, budget=budget)
        wall = time.perf_counter() - start
        stop.set()
        for process in spinners:
            process.join()
        accuracy = model.evaluate(test).accuracy
        results[str(seed)] = {"chosen": model.head_name, "features": model.features, "accuracy": accuracy,
                              "wall_seconds": round(wall, 1), "budget_seconds": parse_budget(budget),
                              "fine_tuning": model.fine_tuning and model.fine_tuning.reason,
                              "fine_tuning_seconds": model.fine_tuning and {
                                  k: getattr(model.fine_tuning, k) for k in ("estimated_fold_seconds", "measured_fold_seconds")},
                              "curve": model.curve is not None, "machine": machine()}
        print(f"{name} {size}/class seed {seed}{' (busy)' if busy else ''}: {model.head_name} "
              f"{100 * accuracy:.1f}% in {wall:.0f} s; fine-tuning: {results[str(seed)]['fine_tuning']}", flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))


def report() -> None:
    print("| set | per class | load | draws | accuracy | chosen (times) | wall s, median (max) | largest overrun s | fine-tunes kept |")
    print("|---|---|---|---|---|---|---|---|---|")
    for file in sorted(RESULTS.glob("*.json")):
        results = json.loads(file.read_text())
        name, size, *busy = file.stem.split("-") if not file.stem.startswith("fashion") else ["fashion-mnist", *file.stem.split("-")[2:]]
        accuracy = [100 * r["accuracy"] for r in results.values()]
        walls = [r["wall_seconds"] for r in results.values()]
        overrun = max(w - r["budget_seconds"] for w, r in zip(walls, results.values()))
        chosen = {}
        for r in results.values():
            chosen[r["chosen"]] = chosen.get(r["chosen"], 0) + 1
        kept = sum(bool(r["fine_tuning"] and r["fine_tuning"].startswith("kept")) for r in results.values())
        if busy:  # the same draws on a quiet machine: the same model?
            quiet = json.loads((RESULTS / f"{name}-{size}.json").read_text())
            same = sum(quiet[seed]["chosen"] == r["chosen"] and quiet[seed]["accuracy"] == r["accuracy"]
                       for seed, r in results.items() if seed in quiet)
            kept = f"{kept} (same model as quiet on {same} of {len(results)})"
        print(f"| {name} | {size} | {'busy' if busy else 'quiet'} | {len(results)} | {np.mean(accuracy):.1f} ± "
              f"{np.std(accuracy, ddof=1) if len(accuracy) > 1 else 0:.1f} | "
              + ", ".join(f"{k} {v}" for k, v in chosen.items())
              + f" | {np.median(walls):.0f} ({max(walls):.0f}) | {overrun:+.0f} | {kept} |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.auto",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["flowers12"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--budget", default=DEFAULT_BUDGET)
    parser.add_argument("--busy", action="store_true", help="two processes spinning on the CPU beside each run")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if args.report:
        report()
        return
    for name in args.sets:
        for size in args.sizes:
            run(name, size, args.seeds, busy=args.busy, budget=args.budget)


if __name__ == "__main__":
    main()
