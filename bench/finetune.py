"""Fine-tuning against frozen embeddings, and the tool's automatic choice under a time budget.

    flock /tmp/smalldata-cpu.lock .venv/bin/python -m bench.finetune --sets sst2 --sizes 8 --seeds 0 1
    flock /tmp/smalldata-cpu.lock .venv/bin/python -m bench.finetune --sets trec6 --sizes 8 --seeds 0 --auto 300
    flock /tmp/smalldata-cpu.lock .venv/bin/python -m bench.finetune --sets clothing10 --sizes 20 --auto 300 --only-auto
    flock /tmp/smalldata-cpu.lock .venv/bin/python -m bench.finetune --sets clothing10 --sizes 20 --backbone efficientnet-lite2
    .venv/bin/python -m bench.finetune --report                          # table from saved results

For each set, size (examples per class) and seed, the draw of `common.draw` is the whole training set:

- frozen: every frozen head of `smalldata.train.candidates` fit on the draw's embeddings, scored on
  the test split; "best frozen" is the best of them on the test split (an optimistic reference);
- fine-tune: the fine-tune candidate (texts: `ContrastiveTextClassifier`; images:
  `FineTunedImageClassifier`) fit on the draw, its fit wall time, its test accuracy;
- with ``--auto SECONDS``: `smalldata.train(draw, budget=SECONDS)`, what it kept, its accuracy and
  wall time (this is the slow part: it cross-validates the fine-tune within the budget).

For texts each draw and the test split are also written to bench/results/finetune/draws/, which
bench/setfit_reference.py (run in a separate venv with the setfit library) trains on.
Results merge seed by seed into bench/results/finetune/SET-SIZE.json, so runs can be split up.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench.common import IMAGE_SETS, capped, draw, load_split, machine
from smalldata.backbones import DEFAULT_BACKBONE
from smalldata.evaluate import single_threaded_math
from smalldata.features import embed
from smalldata.finetune_choice import fine_tune_candidate
from smalldata.train import candidates, train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "finetune"
DRAWS = RESULTS / "draws"
SIZES = {"image": (5, 10, 20), "text": (8, 16)}


def accuracy(true, predicted) -> float:
    return float(np.mean(np.asarray(true) == np.asarray(predicted)))


def frozen_scores(sample, test, backbone: str) -> dict:
    X, X_test = embed(sample.inputs, backbone, keys=sample.keys), embed(test.inputs, backbone, keys=test.keys)
    scores = {}
    with single_threaded_math():
        for candidate in candidates(sample.modality, backbone):
            if candidate.is_baseline:
                continue
            start = time.perf_counter()
            fitted = candidate.make_estimator().fit(X, sample.labels)
            scores[candidate.name] = {"accuracy": accuracy(test.labels, fitted.predict(X_test)),
                                      "fit_seconds": round(time.perf_counter() - start, 2)}
    return scores


def run_draw(name: str, train_split, test, size: int, seed: int, chosen: str | None, auto: float | None) -> dict:
    """`chosen`: the --backbone asked for; None lets train() pick (for texts its budget may try the stronger one)."""
    sample = draw(train_split, size, seed)
    backbone = chosen or DEFAULT_BACKBONE[sample.modality]
    if sample.modality == "text":
        save_draw(name, size, seed, sample)
    result = {"seed": seed, "n_train": len(sample), "frozen": frozen_scores(sample, test, backbone)}
    candidate = fine_tune_candidate(sample.modality, backbone)
    start = time.perf_counter()
    tuned = candidate.make_estimator().fit(list(sample.inputs), np.asarray(sample.labels))
    fit_seconds = time.perf_counter() - start
    result["fine_tune"] = {"name": candidate.name, "accuracy": accuracy(test.labels, tuned.predict(list(test.inputs))),
                           "fit_seconds": round(fit_seconds, 1),
                           # images: whether early stopping kept a tuned state, the rate used, held-out losses
                           "epochs_kept": getattr(tuned, "epochs_kept_", None), "lr_used": getattr(tuned, "lr_used_", None),
                           "lr_suggested": getattr(tuned, "lr_suggested_", None),
                           "held_out": getattr(tuned, "history_", None)}
    print(f"{name} {size}/class seed {seed}: frozen LR {result['frozen']['logistic-regression']['accuracy']:.3f}, "
          f"fine-tune {result['fine_tune']['accuracy']:.3f} in {fit_seconds:.0f} s", flush=True)
    if result["fine_tune"]["held_out"]:
        print(f"  rate {result['fine_tune']['lr_used']:.1e} (range test: {result['fine_tune']['lr_suggested'] or 0:.1e}), epoch kept {result['fine_tune']['epochs_kept']}, held-out "
              "accuracy by epoch " + " ".join(f"{h['held_out_accuracy']:.3f}" for h in result["fine_tune"]["held_out"]), flush=True)
    if auto:
        result["auto"] = run_auto(sample, test, seed, auto, chosen)
    return result


def run_auto(sample, test, seed: int, budget: float, backbone: str | None = None) -> dict:
    """The tool's own choice on the draw, `train(budget=...)`: what it kept, its accuracy, its wall time."""
    start = time.perf_counter()
    model = train(sample, backbone=backbone, seed=seed, budget=budget, curve=False)
    wall = time.perf_counter() - start
    result = {"budget_seconds": budget, "chosen": model.head_name, "wall_seconds": round(wall, 1),
              "accuracy": model.evaluate(test).accuracy, "fine_tuning": model.fine_tuning and model.fine_tuning.to_dict()}
    print(f"  auto ({budget:.0f} s budget): {model.head_name} {result['accuracy']:.3f} in {wall:.0f} s; "
          f"{model.fine_tuning and model.fine_tuning.reason}", flush=True)
    return result


def saved_or_frozen(name: str, sample, test, size: int, seed: int, backbone: str | None) -> dict:
    """The draw's saved result, or (where none was saved, e.g. in a fresh checkout) its frozen scores
    alone: the reference the automatic choice is judged against, without the slow fine-tune alone."""
    path = result_path(name, size, backbone)
    saved = {d["seed"]: d for d in json.loads(path.read_text())["draws"]} if path.exists() else {}
    if seed in saved:
        return saved[seed]
    return {"seed": seed, "n_train": len(sample),
            "frozen": frozen_scores(sample, test, backbone or DEFAULT_BACKBONE[sample.modality])}


def save_draw(name: str, size: int, seed: int, sample) -> None:
    DRAWS.mkdir(parents=True, exist_ok=True)
    rows = {"texts": list(sample.inputs), "labels": list(sample.labels)}
    (DRAWS / f"{name}-{size}-{seed}.json").write_text(json.dumps(rows))


def result_path(name: str, size: int, backbone: str | None = None) -> Path:
    """One file per set and size; a backbone other than the default gets its own."""
    return RESULTS / (f"{name}-{size}.json" if backbone is None else f"{name}-{size}-{backbone}.json")


def save(name: str, size: int, draws: list[dict], backbone: str | None = None) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = result_path(name, size, backbone)
    previous = json.loads(path.read_text())["draws"] if path.exists() else []
    merged = {d["seed"]: d for d in previous} | {d["seed"]: d for d in draws}
    path.write_text(json.dumps({"set": name, "size": size, "backbone": backbone, "machine": machine(),
                                "draws": [merged[k] for k in sorted(merged)]}, indent=1))


def report() -> str:
    lines = ["| set | per class | draws | best frozen head | frozen LR | fine-tune | fine-tune fit s (median) | setfit library | setfit train s (median) | auto: kept (accuracy, wall s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        draws = data["draws"]
        seeds = [d["seed"] for d in draws]
        best = np.mean([max(v["accuracy"] for v in d["frozen"].values()) for d in draws])
        lr = np.mean([d["frozen"]["logistic-regression"]["accuracy"] for d in draws])
        alone = [d["fine_tune"] for d in draws if "fine_tune" in d]  # --only-auto on a fresh draw: none
        tuned = f"{100 * np.mean([f['accuracy'] for f in alone]):.1f} ({len(alone)} draws)" if alone else "-"
        tuned_s = f"{np.median([f['fit_seconds'] for f in alone]):.0f}" if alone else "-"
        setfit = _setfit(data["set"], data["size"], seeds)
        autos = [d["auto"] for d in draws if "auto" in d]
        auto = "; ".join(f"{a['chosen']} ({100 * a['accuracy']:.1f}, {a['wall_seconds']:.0f} s of {a['budget_seconds']:.0f})"
                         for a in autos) or "-"
        label = data["set"] + (f" ({data['backbone']})" if data.get("backbone") else "")
        lines.append(f"| {label} | {data['size']} | {len(draws)} | {100 * best:.1f} | {100 * lr:.1f} | "
                     f"{tuned} | {tuned_s} | {setfit} | {auto} |")
    return "\n".join(lines)


def _setfit(name: str, size: int, seeds: list[int]) -> str:
    path = RESULTS / "setfit" / f"{name}-{size}.json"
    if not path.exists():
        return "- | -"
    runs = {d["seed"]: d for d in json.loads(path.read_text())["draws"]}
    same = [runs[s] for s in seeds if s in runs]
    if not same:
        return "- | -"
    return (f"{100 * np.mean([r['accuracy'] for r in same]):.1f} ({len(same)} draws) | "
            f"{np.median([r['train_seconds'] for r in same]):.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.finetune",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["sst2", "trec6", "agnews", "flowers12", "clothing10"])
    parser.add_argument("--sizes", nargs="+", type=int)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--backbone", help="fine-tune and embed with this backbone (default: the modality's default)")
    parser.add_argument("--auto", type=float, help="also run train(budget=AUTO seconds) on each draw")
    parser.add_argument("--only-auto", action="store_true",
                        help="with --auto: add the automatic choice to draws already saved, skipping the rest")
    parser.add_argument("--test-cap", type=int, default=1000, help="test examples per set (a fixed sample)")
    parser.add_argument("--report", action="store_true", help="print the table from saved results only")
    args = parser.parse_args()
    if args.report:
        print(report())
        return
    print(f"machine: {machine()}")
    for name in args.sets:
        modality = "image" if name in IMAGE_SETS else "text"
        train_split, test = load_split(name, "train"), capped(load_split(name, "test"), args.test_cap)
        if modality == "text":
            DRAWS.mkdir(parents=True, exist_ok=True)
            (DRAWS / f"{name}-test.json").write_text(json.dumps({"texts": list(test.inputs), "labels": list(test.labels)}))
        for size in args.sizes or SIZES[modality]:
            for seed in args.seeds:  # saved draw by draw: a long run stopped halfway keeps what it measured
                if args.only_auto:
                    sample = draw(train_split, size, seed)
                    result = saved_or_frozen(name, sample, test, size, seed, args.backbone)
                    result["auto"] = run_auto(sample, test, seed, args.auto, args.backbone)
                else:
                    result = run_draw(name, train_split, test, size, seed, args.backbone, args.auto)
                save(name, size, [result], args.backbone)


if __name__ == "__main__":
    main()
