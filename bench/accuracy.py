"""Few-shot accuracy on held-out test data: every candidate, and the tool's own choice.

    .venv/bin/python -m bench.accuracy                                # everything (long)
    .venv/bin/python -m bench.accuracy --sets sst2 trec6 --sizes 8 16 # a piece
    .venv/bin/python -m bench.accuracy --sets banking77 --sizes 64 --seeds 0 1 2
    .venv/bin/python -m bench.accuracy --report                       # table from saved results only
    .venv/bin/python -m bench.accuracy --sets sst2 trec6 --sizes 8 --backbone all-mpnet-base-v2
    .venv/bin/python -m bench.accuracy --sets sst2 trec6 agnews --sizes 8 --stronger

For each data set, size (examples per class) and seed, a stratified draw of the training split
(`common.draw`) is the whole training set. On it:

- every candidate of `smalldata.train.candidates(modality, default backbone)` (the baseline, then
  the heads) is fit once on all of the draw (`candidate.make_estimator()`, features embedded once per
  draw) and scored on the test split;
- the tool's own choice: `smalldata.train.train(draw, seed=seed)` (cross-validation picks the
  candidate, which is refit on the whole draw), scored with `Model.evaluate` on the test split. At 1
  example per class cross-validation is impossible, so `train(draw, evaluate=False)` is used: it fits
  the default head (logistic regression) without choosing.

With --stronger, the candidates include the heads on the stronger backbone (`smalldata.stronger`:
all-mpnet-base-v2 for texts, EfficientNet-Lite2 for images), and the tool's choice is
`train(draw, budget="5m", finetune="never")` on the default backbone, so that the stronger one may
join its folds.

Test splits are capped at 2000 examples (`common.capped`, one fixed sample). Image sizes default to
1, 5, 10, 20 per class, text sizes to 8, 16, 64; seeds to 0..4. Each (set, size) is saved to
bench/results/accuracy/SET-SIZE.json, merged seed by seed with what is already there, so a benchmark
can be run in pieces; the markdown table is computed from all saved files.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.common import IMAGE_SETS, TEXT_SETS, capped, draw, load_split, machine
from smalldata.backbones import DEFAULT_BACKBONE, get_backbone, installed
from smalldata.evaluate import single_threaded_math
from smalldata.features import embed
from smalldata.backbones import RAW_TEXT
from smalldata.train import DEFAULT_HEAD, candidates, frozen_heads, train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "accuracy"
BACKBONE = dict(DEFAULT_BACKBONE)  # modality -> backbone; --backbone changes one (results then go elsewhere)
SIZES = {"image": (1, 5, 10, 20), "text": (8, 16, 64)}
SEEDS = (0, 1, 2, 3, 4)
STRONGER_BUDGET = None  # --stronger: the budget the tool's choice gets, so that the stronger encoder may join
# The reference: frozen-embedding logistic regression, mean of 5 draws.
REFERENCE_LR = {("flowers12", 10): 94.4, ("clothing10", 10): 80.6,
                ("sst2", 8): 59.2, ("trec6", 8): 53.9, ("agnews", 8): 76.2, ("banking77", 8): 80.3}
# From here on the tool's choice should beat the baseline (images, texts).
BEAT_BASELINE_FROM = {"image": 5, "text": 8}
SHORT = {
    "baseline: colour/texture + random forest": "baseline (colour/texture + RF)",
    "baseline: tf-idf + logistic regression": "baseline (TF-IDF + LR)",
    "logistic-regression": "LR",
    "linear: cross-entropy": "linear CE",
    "linear: cosine loss": "linear cosine",
    "linear: cosine + cross-entropy": "linear cos+CE",
}


def short(name: str) -> str:
    """A table's name for a candidate: "LR", or "LR [all-mpnet-base-v2]" for a head on the stronger encoder."""
    head, _, backbone = name.partition(" on ")
    return f"{SHORT.get(head, head)} [{backbone}]" if backbone else SHORT.get(name, name)


def features(dataset, name: str):
    if name == RAW_TEXT:
        return list(dataset.inputs)
    return embed(dataset.inputs, name, keys=dataset.keys)


def accuracy(true, predicted) -> float:
    return float(np.mean(np.asarray(true) == np.asarray(predicted)))


def fit_and_score(candidate, X, y, X_test, y_test) -> dict:
    from sklearn.base import clone

    start = time.perf_counter()
    estimator = clone(candidate.make_estimator()).fit(X, y)
    fitted = time.perf_counter() - start
    return {"accuracy": accuracy(y_test, estimator.predict(X_test)), "fit_seconds": round(fitted, 3)}


def run_draw(train_split, test, test_features, options, size: int, seed: int) -> dict:
    sample = draw(train_split, size, seed)
    y, y_test = np.asarray(sample.labels), np.asarray(test.labels)
    start = time.perf_counter()
    X = {name: features(sample, name) for name in {c.features for c in options}}
    embed_seconds = time.perf_counter() - start

    # Candidates fit side by side, one BLAS/torch thread each (as smalldata's own cross-validation does).
    with single_threaded_math(), ThreadPoolExecutor(max_workers=2) as pool:
        jobs = [pool.submit(fit_and_score, c, X[c.features], y, test_features[c.features], y_test) for c in options]
        per_candidate = {c.name: job.result() for c, job in zip(options, jobs)}

    evaluate = size >= 2
    start = time.perf_counter()
    if STRONGER_BUDGET:
        model = train(sample, seed=seed, evaluate=evaluate)  # every installed backbone, frozen
    else:
        model = train(sample, seed=seed, evaluate=evaluate, backbone=BACKBONE[sample.modality])
    train_seconds = time.perf_counter() - start
    result = model.evaluate(test)
    choice = {
        "name": model.head_name,
        "accuracy": result.accuracy,
        "evaluate": evaluate,
        "train_seconds": round(train_seconds, 2),
        # every fold's accuracy, so another selection rule can be judged on these draws without a rerun
        "cv": {s.name: {"mean": round(s.mean, 4), "folds": [round(a, 4) for a in s.fold_accuracies]}
               for s in model.comparison.scores} if model.comparison else None,
        "cv_protocol": model.comparison.to_dict()["protocol"] if model.comparison else None,
    }
    return {"seed": seed, "n_train": len(sample), "embed_seconds": round(embed_seconds, 2),
            "candidates": per_candidate, "choice": choice}


def save(name: str, size: int, modality: str, n_test: int, draws: list[dict]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{size}.json"
    previous = json.loads(path.read_text())["draws"] if path.exists() else []
    merged = {d["seed"]: d for d in previous}
    merged.update({d["seed"]: d for d in draws})
    document = {
        "set": name, "size": size, "modality": modality, "n_test": n_test,
        "backbone": BACKBONE[modality], "machine": machine(),
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "draws": [merged[s] for s in sorted(merged)],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def run(sets, sizes, seeds) -> None:
    for name in sets:
        modality = "image" if name in IMAGE_SETS else "text"
        options = candidates(modality, BACKBONE[modality])
        if STRONGER_BUDGET:  # the other installed networks' heads too
            options += [h for n in installed(modality) if n != BACKBONE[modality] for h in frozen_heads(n, named_by_backbone=True)]
        train_split = load_split(name, "train")
        test = capped(load_split(name, "test"))
        start = time.perf_counter()
        test_features = {f: features(test, f) for f in {c.features for c in options}}
        print(f"[{name}] {len(train_split)} train, {len(test)} test; test features in "
              f"{time.perf_counter() - start:.1f}s", flush=True)
        for size in sizes or SIZES[modality]:
            draws = []
            started = time.perf_counter()
            for seed in seeds:
                record = run_draw(train_split, test, test_features, options, size, seed)
                draws.append(record)
                save(name, size, modality, len(test), draws)  # after every draw: a killed run keeps its work
                accs = ", ".join(f"{short(k)} {100 * v['accuracy']:.1f}" for k, v in record["candidates"].items())
                c = record["choice"]
                print(f"  {name} {size}/class seed {seed}: {accs}; choice {short(c['name'])} "
                      f"{100 * c['accuracy']:.1f} (train {c['train_seconds']}s)", flush=True)
            print(f"done {name} at {size}/class, seeds {list(seeds)}, in {time.perf_counter() - started:.0f}s", flush=True)


# ---------------------------------------------------------------------------------------------- report

def summarise(document: dict) -> dict:
    draws = document["draws"]
    names = list(draws[0]["candidates"])
    stats = {}
    for n in names:
        values = 100 * np.array([d["candidates"][n]["accuracy"] for d in draws])
        stats[n] = (float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0)
    choice = 100 * np.array([d["choice"]["accuracy"] for d in draws])
    chosen: dict[str, int] = {}
    for d in draws:
        chosen[d["choice"]["name"]] = chosen.get(d["choice"]["name"], 0) + 1
    heads = [n for n in names if not n.startswith("baseline")]
    baseline = next(n for n in names if n.startswith("baseline"))
    best = max(names, key=lambda n: stats[n][0])
    choice_stats = (float(choice.mean()), float(choice.std(ddof=1)) if len(choice) > 1 else 0.0)
    return {
        "set": document["set"], "size": document["size"], "modality": document["modality"],
        "n_test": document["n_test"], "seeds": [d["seed"] for d in draws], "stats": stats, "choice": choice_stats,
        "chosen": chosen, "best": best, "baseline": baseline, "heads": heads,
        "evaluate": all(d["choice"]["evaluate"] for d in draws),
        "train_seconds": float(np.mean([d["choice"]["train_seconds"] for d in draws])),
    }


def load_all() -> list[dict]:
    order = {n: i for i, n in enumerate(IMAGE_SETS + TEXT_SETS)}
    documents = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    documents.sort(key=lambda d: (order.get(d["set"], 99), d["size"]))
    return [summarise(d) for d in documents if d["draws"]]


def report(summaries: list[dict]) -> str:
    out = []
    for modality in ("image", "text"):
        rows = [s for s in summaries if s["modality"] == modality]
        if not rows:
            continue
        names = list(rows[0]["stats"])
        header = ["set", "per class", "draws", *[short(n) for n in names], "tool's choice", "chosen (times)",
                  "train() s", "choice within 1 std of best?", f"choice > baseline?"]
        out += [f"### {modality} sets (test accuracy %, mean ± std over draws)", "",
                "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for s in rows:
            cells = [s["set"], str(s["size"]), str(len(s["seeds"]))]
            for n in names:
                mean, std = s["stats"][n]
                text = f"{mean:.1f} ± {std:.1f}"
                cells.append(f"**{text}**" if n == s["best"] else text)
            mean, std = s["choice"]
            cells.append(f"{mean:.1f} ± {std:.1f}" + ("" if s["evaluate"] else " (no CV: default LR)"))
            cells.append(", ".join(f"{short(k)} {v}" for k, v in sorted(s["chosen"].items(), key=lambda kv: -kv[1])))
            cells.append(f"{s['train_seconds']:.1f}")
            best_mean, best_std = s["stats"][s["best"]]
            gap = best_mean - mean
            cells.append(("yes" if gap <= best_std else "**no**") + f" ({-gap:+.1f} vs {short(s['best'])}, std {best_std:.1f})")
            base_mean = s["stats"][s["baseline"]][0]
            if s["size"] >= BEAT_BASELINE_FROM[modality]:
                cells.append(("yes" if mean > base_mean else "**no**") + f" ({mean - base_mean:+.1f})")
            else:
                cells.append(f"n/a ({mean - base_mean:+.1f})")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    reference = [s for s in summaries if (s["set"], s["size"]) in REFERENCE_LR]
    if reference:
        out += ["### logistic regression on frozen embeddings vs the issue's reference", "",
                "| set | per class | LR here | reference | difference |", "|---|---|---|---|---|"]
        for s in reference:
            mean, std = s["stats"][DEFAULT_HEAD]
            ref = REFERENCE_LR[(s["set"], s["size"])]
            out.append(f"| {s['set']} | {s['size']} | {mean:.1f} ± {std:.1f} | {ref:.1f} | {mean - ref:+.1f} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy",
                                     description="Few-shot accuracy of every candidate and of the tool's choice.")
    parser.add_argument("--sets", nargs="+", choices=IMAGE_SETS + TEXT_SETS, default=list(IMAGE_SETS + TEXT_SETS))
    parser.add_argument("--sizes", nargs="+", type=int, help="examples per class (default: 1 5 10 20 for images, 8 16 64 for texts)")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--report", action="store_true", help="print the table from saved results; run nothing")
    parser.add_argument("--backbone", help="another backbone for its modality, e.g. all-mpnet-base-v2; "
                                           "results go to bench/results/accuracy-BACKBONE/")
    parser.add_argument("--stronger", action="store_true", help="heads on the stronger backbone too, and the tool's "
                        "choice with a 5 min budget (fine-tuning off); results go to bench/results/accuracy-stronger/")
    args = parser.parse_args()
    global RESULTS, STRONGER_BUDGET
    if args.stronger:
        STRONGER_BUDGET = "5m"
        RESULTS = RESULTS.parent / "accuracy-stronger"
    if args.backbone:
        BACKBONE[get_backbone(args.backbone).modality] = args.backbone
        RESULTS = RESULTS.parent / f"accuracy-{args.backbone}"
    if not args.report:
        run(args.sets, args.sizes, args.seeds)
    summaries = load_all()
    table = report(summaries)
    (RESULTS.parent / f"{RESULTS.name}.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
