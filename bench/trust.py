"""Predictions a person can act on: calibration, "unknown" answers, uneven classes.

    .venv/bin/python -m bench.trust calibration --sets flowers12 clothing10 --sizes 5 10
    .venv/bin/python -m bench.trust calibration --sets sst2 trec6 agnews banking77 --sizes 8 16
    .venv/bin/python -m bench.trust calibration --sets cifar10 fashion-mnist --sizes 5 10     # confirmation
    .venv/bin/python -m bench.trust calibration --sets mr clinc150 --sizes 8 16                # confirmation
    .venv/bin/python -m bench.trust unknown --sets flowers12 clothing10 --sizes 10 --seeds 0
    .venv/bin/python -m bench.trust unknown --sets trec6 agnews --sizes 8 --seeds 0
    .venv/bin/python -m bench.trust unknown --sets cifar10 fashion-mnist --sizes 10 --seeds 0  # confirmation
    .venv/bin/python -m bench.trust unknown --sets clinc150 --sizes 8                          # out-of-scope queries
    .venv/bin/python -m bench.trust uneven --sets flowers12 clothing10 trec6 agnews             # 40 / 10 / 4 per class
    .venv/bin/python -m bench.trust uneven --sets cifar10 fashion-mnist clinc150 clinc150-imbalanced  # confirmation
    .venv/bin/python -m bench.trust report

Every model is trained by the library as `smalldata train --budget 0` trains it (the frozen
candidates, no fine-tuning: calibration and the floor are made the same way for a fine-tune, from
its own folds) on a seeded draw of the train split (`common.draw`), and scored on the test split
(capped at 2000, `common.capped`). Not timed: no CPU lock needed.

- calibration: the expected calibration error (ECE, 10 bins) of the test probabilities as the head
  gives them and as the model gives them (calibrated), and the test accuracy of both (the same by
  construction: a temperature never changes the top class).
- unknown: each class in turn is left out of the draw; the model's familiarity (where its head reads
  embeddings; else its calibrated confidence) scores the left-out class's test examples against the
  others' (AUROC), and at the saved floor we count the share of unknown inputs answered `unknown`
  and of known inputs still answered; beside it, the same for the calibrated confidence and its
  own floor (what folders from before familiarity ship). clinc150: trained on its 150 intents,
  scored on its 1,000 out-of-scope test queries against the in-scope test.
- uneven: draws of 40 / 10 / 4 per class (the counts rotate over the classes with the seed), and
  clinc150's real uneven `train_imbalanced.csv`: the test's balanced accuracy of the model against
  unweighted logistic regression on the strongest backbone of the same draw.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from bench.choice import BACKBONES, IMAGE, load
from bench.common import DATASETS, capped, draw, machine
from smalldata import train
from smalldata.calibration import expected_calibration_error
from smalldata.data import load_text_csv
from smalldata.features import embed
from smalldata.train import CORE_C, WEIGHTED, core_candidates

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "trust"
SEEDS = range(5)
UNEVEN_COUNTS = (40, 10, 4)


def _save(kind: str, key: str, value) -> None:
    out = RESULTS / f"{kind}.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    results[key] = value
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))


def _done(kind: str, key: str) -> bool:
    out = RESULTS / f"{kind}.json"
    return out.exists() and key in json.loads(out.read_text())


def _truth(model, labels) -> np.ndarray:
    return np.searchsorted(model.classes, np.asarray(labels))


def calibration(name: str, size: int, seeds) -> None:
    pool, test = load(name, "train"), capped(load(name, "test"))
    for seed in seeds:
        key = f"{name}-{size}-{seed}"
        if _done("calibration", key):
            continue
        model = train(draw(pool, size, seed), budget=0, curve=False, seed=seed)
        calibrated = model.predict_proba(test.inputs)
        raw = replace(model, calibration=None).predict_proba(test.inputs)  # as the head gives them
        truth = _truth(model, test.labels)
        found = {"head": model.head_name, "temperature": model.calibration.temperature, "kept": model.calibration.kept,
                 "ece_before": expected_calibration_error(raw, truth),
                 "ece_after": expected_calibration_error(calibrated, truth),
                 "folds_ece_before": model.calibration.ece_before, "folds_ece_after": model.calibration.ece_after,
                 "accuracy_before": float(np.mean(raw.argmax(1) == truth)),
                 "accuracy_after": float(np.mean(calibrated.argmax(1) == truth)), "machine": machine()}
        _save("calibration", key, found)
        print(f"{key}: ECE {found['ece_before']:.3f} -> {found['ece_after']:.3f} (T {found['temperature']:.2f}), "
              f"accuracy {100 * found['accuracy_after']:.1f}%", flush=True)


def _at_floor(known: np.ndarray, unknown: np.ndarray, floor: float) -> dict:
    auroc = roc_auc_score(np.r_[np.ones(len(known)), np.zeros(len(unknown))], np.r_[known, unknown])
    return {"auroc": float(auroc), "floor": floor, "known_answered": float(np.mean(known >= floor)),
            "unknown_caught": float(np.mean(unknown < floor))}


def _unknown_scores(model, known, unknown_inputs) -> dict:
    """What the model ships (its familiarity and floor where it has them, else the top probability
    and its floor), beside the top probability alone with its floor."""
    known_scored, unknown_scored = model.scored(known.inputs), model.scored(unknown_inputs)
    confidence = _at_floor(known_scored.proba.max(axis=1), unknown_scored.proba.max(axis=1), model.unknown.floor)
    found = {"head": model.head_name, "score": "confidence", "confidence": confidence, **confidence}
    if known_scored.familiarity is not None:
        found.update(score="familiarity", **_at_floor(known_scored.familiarity, unknown_scored.familiarity,
                                                      model.unknown.familiarity_floor))
    return found


def unknown(name: str, size: int, seeds) -> None:
    pool, test = load(name, "train"), capped(load(name, "test"))
    if name == "clinc150":
        out_of_scope = load_text_csv(DATASETS / "clinc150" / "oos_test.csv")
        for seed in seeds:
            key = f"{name}-{size}-{seed}-oos"
            if not _done("unknown", key):
                model = train(draw(pool, size, seed), budget=0, curve=False, seed=seed)
                _save("unknown", key, {**_unknown_scores(model, test, out_of_scope.inputs), "machine": machine()})
                print(key, json.loads((RESULTS / "unknown.json").read_text())[key], flush=True)
        return
    for seed in seeds:
        sample = draw(pool, size, seed)
        for left_out in sample.classes:
            key = f"{name}-{size}-{seed}-without-{left_out}"
            if _done("unknown", key):
                continue
            kept = sample.subset([i for i, label in enumerate(sample.labels) if label != left_out])
            model = train(kept, budget=0, curve=False, seed=seed)
            known = test.subset([i for i, label in enumerate(test.labels) if label != left_out])
            unknown_inputs = [x for x, label in zip(test.inputs, test.labels) if label == left_out]
            found = {**_unknown_scores(model, known, unknown_inputs), "machine": machine()}
            _save("unknown", key, found)
            print(f"{key}: AUROC {found['auroc']:.3f}, known answered {100 * found['known_answered']:.0f}%, "
                  f"unknown caught {100 * found['unknown_caught']:.0f}%", flush=True)


def _uneven_draw(pool, seed: int):
    """40 / 10 / 4 examples per class, the counts rotating over the classes with the seed."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(pool.labels)
    chosen = []
    for index, label in enumerate(pool.classes):
        rows = np.flatnonzero(labels == label)
        count = UNEVEN_COUNTS[(index + seed) % len(UNEVEN_COUNTS)]
        chosen += rng.choice(rows, size=min(count, len(rows)), replace=False).tolist()
    return pool.subset(sorted(chosen))


def _unweighted_twin(model, sample, test, modality: str) -> float:
    """Balanced accuracy on test of the chosen head without class weights, on the same draw: what
    the weighting itself added."""
    twins = {c.name: c for c in core_candidates(modality, list(BACKBONES[modality]))}
    twin = twins[model.head_name.replace(WEIGHTED, "")]
    features = lambda data: np.hstack([embed(data.inputs, b, keys=data.keys) for b in twin.features.split("+")])  # noqa: E731
    fitted = twin.make_estimator().fit(features(sample), sample.labels)
    return balanced_accuracy_score(test.labels, fitted.predict(features(test)))


def uneven(name: str, seeds) -> None:
    real = name == "clinc150-imbalanced"
    base = "clinc150" if real else name
    pool = load_text_csv(DATASETS / "clinc150" / "train_imbalanced.csv") if real else load(base, "train")
    test = capped(load(base, "test"))
    modality = "image" if base in IMAGE else "text"
    strongest = BACKBONES[modality][-1]
    for seed in ([0] if real else seeds):
        key = f"{name}-{seed}"
        if _done("uneven", key):
            continue
        sample = pool if real else _uneven_draw(pool, seed)
        model = train(sample, budget=0, curve=False, seed=seed)
        plain = LogisticRegression(C=CORE_C[modality], max_iter=3000).fit(
            embed(sample.inputs, strongest, keys=sample.keys), sample.labels)
        plain_predicted = plain.predict(embed(test.inputs, strongest, keys=test.keys))
        found = {"head": model.head_name, "balanced": model.comparison.balanced,
                 "balanced_accuracy": balanced_accuracy_score(test.labels, model.predict(test.inputs)),
                 "plain_balanced_accuracy": balanced_accuracy_score(test.labels, plain_predicted),
                 "unweighted_twin_balanced_accuracy": _unweighted_twin(model, sample, test, modality),
                 "counts": sorted(set(sample.counts().values())), "machine": machine()}
        _save("uneven", key, found)
        print(f"{key}: balanced accuracy {100 * found['balanced_accuracy']:.1f}% against "
              f"{100 * found['plain_balanced_accuracy']:.1f}% (plain logistic regression on {strongest}); {model.head_name}",
              flush=True)


def report() -> None:
    def grouped(kind: str) -> dict[str, list[dict]]:
        """Results by set and size: the key without its seed (and left-out class)."""
        out = RESULTS / f"{kind}.json"
        groups: dict[str, list[dict]] = {}
        for key, value in (json.loads(out.read_text()) if out.exists() else {}).items():
            groups.setdefault(re.sub(r"-\d+(-without-.*|-oos)?$", "", key), []).append(value)
        return groups

    print("| set, per class | draws | ECE as the head gives it | ECE calibrated (worst draw) | accuracy before / after |")
    print("|---|---|---|---|---|")
    for group, rows in grouped("calibration").items():
        before, after = [r["ece_before"] for r in rows], [r["ece_after"] for r in rows]
        accuracy = [100 * r["accuracy_before"] for r in rows], [100 * r["accuracy_after"] for r in rows]
        print(f"| {group} | {len(rows)} | {np.mean(before):.3f} | {np.mean(after):.3f} ({max(after):.3f}) | "
              f"{np.mean(accuracy[0]):.1f} / {np.mean(accuracy[1]):.1f} |")
    print("\n| set, per class | models | score shipped | AUROC mean (lowest) | known answered at the floor | "
          "unknown answered 'unknown' | confidence alone: AUROC, known answered, unknown caught |")
    print("|---|---|---|---|---|---|---|")
    for group, rows in grouped("unknown").items():
        auroc = [r["auroc"] for r in rows]
        shipped = sorted({r.get("score", "confidence") for r in rows})
        alone = [r.get("confidence", r) for r in rows]
        print(f"| {group} | {len(rows)} | {', '.join(shipped)} | {np.mean(auroc):.3f} ({min(auroc):.3f}) | "
              f"{100 * np.mean([r['known_answered'] for r in rows]):.0f}% | "
              f"{100 * np.mean([r['unknown_caught'] for r in rows]):.0f}% | "
              f"{np.mean([a['auroc'] for a in alone]):.3f}, {100 * np.mean([a['known_answered'] for a in alone]):.0f}%, "
              f"{100 * np.mean([a['unknown_caught'] for a in alone]):.0f}% |")
    print("\n| set | draws | balanced accuracy: smalldata | plain logistic regression | difference (spread) | "
          "the chosen head unweighted | weighted head chosen |")
    print("|---|---|---|---|---|---|---|")
    for group, rows in grouped("uneven").items():
        ours, plain = np.array([r["balanced_accuracy"] for r in rows]), np.array([r["plain_balanced_accuracy"] for r in rows])
        twin = np.array([r.get("unweighted_twin_balanced_accuracy", np.nan) for r in rows])
        weighted = sum("class-weighted" in r["head"] for r in rows)
        print(f"| {group} | {len(rows)} | {100 * ours.mean():.1f}% | {100 * plain.mean():.1f}% | "
              f"{100 * (ours - plain).mean():+.1f} (±{100 * (ours - plain).std():.1f}) | {100 * np.nanmean(twin):.1f}% | "
              f"{weighted} of {len(rows)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("calibration", "unknown", "uneven", "report"))
    parser.add_argument("--sets", nargs="+", default=[])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    args = parser.parse_args()
    if args.what == "report":
        report()
        return
    for name in args.sets:
        if args.what == "uneven":
            uneven(name, args.seeds)
            continue
        for size in args.sizes:
            (calibration if args.what == "calibration" else unknown)(name, size, args.seeds)


if __name__ == "__main__":
    main()
