"""What a training job does, in the worker process: the library's `train()`, a summary for the page,
and the report's findings mapped back to example ids.

This is the service's only call to `smalldata.train`: keep it so, and adapt it here when `train()`
gains options (fine-tuning, unlabeled data, ...).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix

from smalldata.data import DataError, Dataset, as_inputs, require_evaluable
from smalldata.explain import most_confused
from smalldata.model import Model
from smalldata.progress import Progress
from smalldata.report import training_report, write_report
from smalldata.train import train
from smalldata.unlabeled import Pool, pool_from


def fit(dataset: Dataset, progress: Progress, *, budget: float | None, unlabeled: Pool | None = None) -> Model:
    """The automatic choice `smalldata train` makes with the same `budget` (seconds; the project's,
    by default the CLI's): every installed backbone, costlier candidates and fine-tuning as the
    budget allows, refit on everything; with unlabeled examples, self-training on them is one more
    candidate on the same folds. No learning curve: it costs about as much as the cross-validation
    again, and the service retrains often (see bench/HISTORY.md)."""
    return train(dataset, evaluate=True, curve=False, seed=0, unlabeled=unlabeled, budget=budget, progress=progress)


def unlabeled_pool(inputs: list, dataset: Dataset, progress: Progress) -> Pool | None:
    """The project's unlabeled examples less any identical to a labeled one (relabeling can make
    one so); None when there are none left."""
    if not inputs:
        return None
    inputs = as_inputs(inputs, dataset.modality)
    try:
        return pool_from(inputs, dataset, source="unlabeled examples of the project")
    except DataError:  # every one is also a labeled example
        progress.log("every unlabeled example is also a labeled one: training without them")
        return None


def prepare_serving(model: Model) -> None:
    """Export what predictions will run (here, where torch is loaded anyway), so the service
    answers its first request without exporting anything."""
    from smalldata.backbones import (
        REGISTRY,
        ImageBackbone,
        TextBackbone,
        get_backbone,
        networks_of,
    )
    from smalldata.onnx_text import exported

    if model.features in REGISTRY:
        for part in networks_of(get_backbone(model.features)):
            if isinstance(part, TextBackbone):
                exported(part)
            elif isinstance(part, ImageBackbone):
                part.onnx_path()


def check_trainable(dataset: Dataset) -> None:
    """Raise DataError (with what to do) when training would fail on these examples."""
    require_evaluable(dataset, drop_small_classes=False)


def summarize(model: Model, dataset: Dataset) -> dict:
    """What the page shows of a version: accuracy against the baseline with its spread, the
    out-of-fold confusion matrix and the most confused pairs."""
    comparison = model.comparison
    chosen, baseline = comparison.chosen, comparison.baseline
    probabilities = np.asarray(comparison.out_of_fold[chosen.name])
    predicted = [model.classes[i] for i in probabilities.argmax(axis=1)]
    confusion = confusion_matrix(dataset.labels, predicted, labels=model.classes).tolist()
    return {
        "modality": model.modality,
        "labels": model.classes,
        "counts": dataset.counts(),
        "n_examples": len(dataset),
        "chosen": chosen.name,
        "features": model.features,
        "accuracy": {"mean": chosen.mean, "std": chosen.std, "standard_error": chosen.standard_error},
        "baseline": {"name": baseline.name, "mean": baseline.mean, "std": baseline.std} if baseline else None,
        "protocol": comparison.to_dict()["protocol"],
        "candidates": [{"name": s.name, "mean": s.mean, "std": s.std, "is_baseline": s.is_baseline}
                       for s in comparison.scores],
        "confusion": confusion,
        "confusion_source": "cross-validation (out-of-fold)",
        "most_confused": most_confused(confusion, model.classes).to_dict()["pairs"],
        # What a candidate using the unlabeled examples added over the labeled-only choice, in points.
        "contributions": comparison.to_dict().get("contributions", {}),
        "n_unlabeled": model.data.n_unlabeled,
        # Whether fine-tuning was tried and kept, and why, as `smalldata train` says it.
        "fine_tuning": model.fine_tuning.to_dict() if model.fine_tuning else None,
        # When predictions say `unknown`, and what that did on the folds, as `smalldata train` says it.
        "unknown": model.unknown.sentence() if model.unknown else None,
    }


SUGGESTED = 10  # unlabeled examples offered for labeling after each training: a page's worth


def suggestions(model: Model, dataset: Dataset, inputs: list, ids: list[int], *, n: int = SUGGESTED) -> list[dict]:
    """The project's unlabeled examples most worth labeling next (`smalldata suggest`'s ranking:
    uncertain for this model, unlike each other and unlike the labeled ones), by id, best first."""
    from smalldata.suggest import suggest

    if not inputs:
        return []
    by_item = {str(item): i for i, item in zip(ids, inputs)}
    return [{"unlabeled_id": by_item[str(s.item)], "predicted_label": s.predicted, "probability": s.probability}
            for s in suggest(model, inputs, n=n, labeled=dataset.inputs)]


def learning_curve_findings(model: Model, dataset: Dataset) -> dict:
    """How much more data would help, in a sentence and the points to plot. The service's training
    draws no curve (the model is served sooner); this runs after, while the report is written: the
    curve of logistic regression on the modality's default backbone (`smalldata curve`'s default),
    or the chosen model's own where training drew one."""
    from smalldata.backbones import DEFAULT_BACKBONE
    from smalldata.defaults import DEFAULT_HEAD
    from smalldata.train import curve_of

    if model.curve is not None:
        curve, of = model.curve, model.head_name
    else:
        curve = curve_of(dataset)
        of = f"{DEFAULT_HEAD} on {DEFAULT_BACKBONE[dataset.modality]}"
    return {"of": of, "summary": curve.summary,
            "points": [{"per_class": p.per_class, "mean": p.mean, "std": p.std} for p in curve.points]}


def report_findings(model: Model, dataset: Dataset, example_ids: list[int], path) -> dict:
    """Write the HTML report to `path`; return its findings with example ids in place of paths."""
    report = training_report(model, dataset)
    write_report(report, path)
    findings = {}
    if "label_issues" in report.findings:
        findings["label_issues"] = [
            {"example_id": example_ids[i.index], "given_label": i.given_label, "suggested_label": i.suggested_label,
             "given_probability": i.given_probability} for i in report.findings["label_issues"].issues]
    findings["near_duplicates"] = [
        {"example_ids": [example_ids[p.first_index], example_ids[p.second_index]],
         "labels": [p.first_label, p.second_label], "similarity": p.similarity}
        for p in report.findings["near_duplicates"].pairs]
    findings["outliers"] = [
        {"example_id": example_ids[o.index], "label": o.label, "nearest_class": o.nearest_class, "score": o.score}
        for o in report.findings["outliers"].outliers]
    return findings
