"""When to call an example a suspected label error at a few examples per class: the rule is chosen
on clean and planted draws of the development sets and confirmed on the confirmation sets.

    .venv/bin/python -m bench.label_error_rules collect --sets flowers12 clothing10 --sizes 5 10
    .venv/bin/python -m bench.label_error_rules collect --sets sst2 trec6 agnews --sizes 8 16
    .venv/bin/python -m bench.label_error_rules rules [--sets ...]     # offline, from saved draws

`collect`: for each set, size and seed (0-4) a stratified draw of the train split (`common.draw`)
is trained twice as `smalldata train --budget 0` trains it: once clean (the datasets' own labels;
every example flagged is a false alarm) and once with 10% of its labels flipped to another class
(at least one; `bench.label_errors.with_flipped_labels`), where flagging a flipped example is a
hit. The chosen candidate's out-of-fold probabilities, the given labels and the flipped indices
are saved, so `rules` can score any rule offline without training again. Not timed. Results:
bench/results/label_error_rules/ (a file per draw, so several
collections can run at once).

`rules` prints, per set and size, the share of clean examples flagged (issue 30: at most 1 in 50)
and the recall and precision on the planted flips, for cleanlab's filter as the report used it
and for each rule tried (see RULES).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.choice import CONFIRMATION, load
from bench.common import draw, machine
from bench.label_errors import with_flipped_labels
from smalldata import train
from smalldata.calibration import PRIOR_CENTER, fit_temperature, temper
from smalldata.data import Dataset
from smalldata.explain import label_issues

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "label_error_rules"
NOISE = 0.1


def _saved() -> dict:
    return {path.stem: json.loads(path.read_text()) for path in sorted(RESULTS.glob("*.json"))}


def _record(dataset: Dataset, seed: int) -> dict:
    model = train(dataset, budget=0, curve=False, seed=seed)
    chosen = model.comparison.chosen
    return {"given": [dataset.classes.index(label) for label in dataset.labels],
            "classes": dataset.classes, "chosen": chosen.name,
            "probabilities": np.round(np.asarray(model.comparison.out_of_fold[chosen.name]), 5).tolist()}


def collect(name: str, size: int, seeds) -> None:
    pool = load(name, "train")
    for seed in seeds:
        path = RESULTS / f"{name}-{size}-{seed}.json"
        if path.exists():
            continue
        clean = draw(pool, size, seed)
        fraction = max(NOISE, 1.0 / len(clean))
        noisy, flipped = with_flipped_labels(clean, fraction, seed)
        record = {"clean": _record(clean, seed), "planted": {**_record(noisy, seed), "flipped": flipped.tolist()},
                  "machine": machine()}
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
        print(path.stem, "done", flush=True)


# ------------------------------------------------------------------------------------------ the rules

def _flags(record: dict, rule) -> set[int]:
    probabilities = np.asarray(record["probabilities"])
    given = np.asarray(record["given"])
    dataset = Dataset([str(i) for i in range(len(given))], [record["classes"][g] for g in given], "text")
    found = label_issues(dataset, probabilities, classes=record["classes"], ceiling=1.0).issues  # the filter's whole list
    if getattr(rule, "needs_record", False):
        return {issue.index for issue in found if rule(probabilities, given, issue.index, record)}
    return {issue.index for issue in found if rule(probabilities, given, issue.index)}


def cleanlab_alone(probabilities, given, index) -> bool:
    return True


def accuracy_at_least(floor: float):
    def rule(probabilities, given, index) -> bool:
        return float(np.mean(probabilities.argmax(axis=1) == given)) >= floor
    rule.__name__ = f"out-of-fold accuracy >= {floor}"
    return rule


def per_class_at_least(count: int):
    def rule(probabilities, given, index) -> bool:
        return int(np.bincount(given).min()) >= count
    rule.__name__ = f"every class >= {count}"
    return rule


def given_below(cut: float):
    def rule(probabilities, given, index) -> bool:
        return float(probabilities[index, given[index]]) < cut
    rule.__name__ = f"p(given label) < {cut}"
    return rule


def posterior_wrong(noise: float):
    """The given label is more likely wrong than right, with `noise` as the prior share of wrong
    labels spread evenly over the other classes: the folds' probability alone ignores how rare a
    wrong label is in data a person labelled with care."""
    def rule(probabilities, given, index) -> bool:
        p = probabilities[index]
        n_classes = len(p)
        right = p[given[index]] * (1 - noise)
        wrong = (1 - p[given[index]]) * noise / (n_classes - 1)
        return wrong > right
    rule.__name__ = f"posterior of a wrong label > 1/2 (prior {noise})"
    return rule


def given_below_and_suggested_above(cut: float, suggested: float):
    def rule(probabilities, given, index) -> bool:
        row = probabilities[index].copy()
        below = row[given[index]] < cut
        row[given[index]] = -1
        return bool(below and row.max() > suggested)
    rule.__name__ = f"p(given label) < {cut} and p(suggested) > {suggested}"
    return rule


def calibrated_below(cut: float):
    """The given label's probability after the temperature the model ships with (fit on the same
    out-of-fold predictions, `smalldata.calibration`): sharpened where the folds are strong, softened
    where they are weak, so one cut can mean the same on both."""
    def rule(probabilities, given, index, record=None) -> bool:
        return float(_calibrated(record)[index, given[index]]) < cut
    rule.__name__ = f"calibrated p(given label) < {cut}"
    rule.needs_record = True
    return rule


def _calibrated(record: dict) -> np.ndarray:
    if "_calibrated" not in record:
        probabilities, given = np.asarray(record["probabilities"]), np.asarray(record["given"])
        logistic = record["chosen"].startswith(("logistic regression", "average of logistic"))
        temperature = fit_temperature(probabilities, given, n_examples=len(given),
                                      center=PRIOR_CENTER["logistic" if logistic else "other"])
        record["_calibrated"] = temper(probabilities, temperature)
    return record["_calibrated"]


RULES = [cleanlab_alone, accuracy_at_least(0.8), accuracy_at_least(0.9), per_class_at_least(20),
         given_below(0.1), given_below(0.05), posterior_wrong(0.1), posterior_wrong(0.2),
         calibrated_below(0.05), calibrated_below(0.02), calibrated_below(0.01),
         given_below(0.02), given_below(0.01), given_below_and_suggested_above(0.05, 0.8), posterior_wrong(0.15)]


def rules(sets) -> None:
    results = _saved()
    groups: dict[str, list[dict]] = {}
    for key, value in results.items():
        group = key.rsplit("-", 1)[0]
        if not sets or group.rsplit("-", 1)[0] in sets:
            groups.setdefault(group, []).append(value)
    for rule in RULES:
        print(f"\n### {rule.__name__}\n")
        print("| set, per class | draws | confirmation set | clean flagged | planted: recall | planted: precision |")
        print("|---|---|---|---|---|---|")
        for group, rows in sorted(groups.items()):
            n = sum(len(r["clean"]["given"]) for r in rows)
            false = sum(len(_flags(r["clean"], rule)) for r in rows)
            found = [_flags(r["planted"], rule) for r in rows]
            truth = [set(r["planted"]["flipped"]) for r in rows]
            hits = sum(len(f & t) for f, t in zip(found, truth))
            flagged, planted = sum(len(f) for f in found), sum(len(t) for t in truth)
            precision = f"{hits / flagged:.2f}" if flagged else "-"
            confirmation = "yes" if group.rsplit("-", 1)[0] in CONFIRMATION else ""
            print(f"| {group} | {len(rows)} | {confirmation} | {100 * false / n:.1f}% ({false}/{n}) | "
                  f"{hits / planted:.2f} ({hits}/{planted}) | {precision} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["collect", "rules"])
    parser.add_argument("--sets", nargs="+", default=[])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(5)))
    args = parser.parse_args()
    if args.action == "rules":
        rules(args.sets)
        return
    for name in args.sets:
        for size in args.sizes:
            collect(name, size, args.seeds)


if __name__ == "__main__":
    main()
