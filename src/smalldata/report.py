"""A self-contained HTML report: how good the model is, why it errs, how much more data would help.

Compute first, draw separately: `training_report` and `test_report` gather result objects into a
`Report` (which is also written as JSON); the plot functions take a result and a matplotlib axes;
`write_report` renders everything into one HTML file with images inlined, so it can be mailed.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix

from smalldata.calibration import Calibration
from smalldata.curve import LearningCurve
from smalldata.data import DataError, Dataset, load_dataset
from smalldata.evaluate import Comparison, TestResult, score
from smalldata.explain import LABEL_ERROR_CEILING, leakage, label_issues, most_confused, most_wrong, near_duplicates, outliers
from smalldata.features import embed
from smalldata.model import Model
from smalldata.progress import QUIET, Progress
from smalldata.suggest import diversity_backbone
from smalldata.unknown import CutOff

SHOWN = 12  # examples per table: the worst first
THUMBNAIL = 96


@dataclass
class Report:
    title: str
    model: dict  # labels, chosen head, backbone, data counts
    confusion_source: str  # "cross-validation (out-of-fold)" or "test set"
    confusion_labels: list[str]
    confusion: list[list[int]]
    comparison: Comparison | None = None
    curve: LearningCurve | None = None
    test: TestResult | None = None
    training_loss: list[float] | None = None
    findings: dict = field(default_factory=dict)  # name -> explain result (to_dict-able)
    calibration: Calibration | None = None
    unknown_sentence: str | None = None

    def to_dict(self) -> dict:
        return {
            "title": self.title, "model": self.model, "confusion_source": self.confusion_source,
            "confusion_labels": self.confusion_labels, "confusion": self.confusion,
            "comparison": self.comparison.to_dict() if self.comparison else None,
            "learning_curve": self.curve.to_dict() if self.curve else None,
            "test": self.test.to_dict() if self.test else None,
            "training_loss": self.training_loss,
            "findings": {name: finding.to_dict() for name, finding in self.findings.items()},
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "unknown": self.unknown_sentence,
        }


def training_report(model: Model, dataset: Dataset, *, progress: Progress = QUIET) -> Report:
    """What cross-validation saw: out-of-fold confusion and errors, label problems, the curve."""
    data = dataset.subset([i for i, label in enumerate(dataset.labels) if label in model.classes])
    embeddings = _embeddings(model, data, progress)
    findings = {"near_duplicates": near_duplicates(data, embeddings), "outliers": outliers(data, embeddings)}
    confusion, labels = [], model.classes
    comparison = model.comparison
    if comparison is not None and comparison.out_of_fold:
        probabilities = np.asarray(comparison.out_of_fold[comparison.chosen.name])
        predicted = [model.classes[i] for i in probabilities.argmax(axis=1)]
        confusion = confusion_matrix(data.labels, predicted, labels=labels).tolist()
        findings["label_issues"] = label_issues(data, probabilities, classes=labels)
        findings["most_confused"] = most_confused(confusion, labels)
        findings["most_wrong"] = most_wrong(data, probabilities, classes=labels, limit=SHOWN)
    return Report(f"smalldata: training report ({data.source})", _model_summary(model),
                  "cross-validation (out-of-fold)", labels, confusion, comparison=comparison,
                  curve=model.curve, training_loss=getattr(model.estimator, "loss_curve_", None),
                  findings=findings, **_trust(model))


def test_report(model: Model, dataset: Dataset, *, threshold: float | None = None, unknown: bool = True,
                progress: Progress = QUIET) -> Report:
    """How the model does on a labeled test set (and at its cut-off for `unknown`, see
    `Model.evaluate`), and whether the test set leaks training examples."""
    if dataset.modality != model.modality:
        raise DataError(f"this model classifies {model.modality}s, but the test data are {dataset.modality}s")
    scored = model.scored(dataset.inputs, progress=progress)
    probabilities = scored.proba
    result = score(dataset.labels, model.answer(scored, unknown=False), model.classes)
    result.with_cut_off(dataset.labels, model.answer(scored, threshold=threshold, unknown=unknown),
                        model.cut_off(threshold, unknown=unknown))
    findings = {"most_confused": most_confused(result.confusion, result.labels),
                "most_wrong": most_wrong(dataset, probabilities, classes=model.classes, limit=SHOWN)}
    training = _training_data(model)
    if training is not None:  # the training folder or file is still where it was: look for leaks
        findings["leakage"] = leakage(training, _embeddings(model, training, progress),
                                      dataset, _embeddings(model, dataset, progress))
    return Report(f"smalldata: test report ({dataset.source})", _model_summary(model), "test set",
                  result.labels, result.confusion, comparison=model.comparison, curve=model.curve,
                  test=result, findings=findings, **_trust(model))


def write_report(report: Report, path: str | Path) -> Path:
    """The HTML file at `path`, and the same results as JSON beside it (``.json``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")
    path.with_suffix(".json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return path


# ------------------------------------------------------------------------------------------ plots

def plot_comparison(comparison: Comparison, ax) -> None:
    names = [s.name for s in comparison.scores]
    means = [100 * s.mean for s in comparison.scores]
    spreads = [100 * s.std for s in comparison.scores]
    colours = ["#999999" if s.is_baseline else "#1f77b4" for s in comparison.scores]
    chosen = comparison.chosen
    ax.barh(names, means, xerr=spreads, color=colours, capsize=3)
    ax.barh([chosen.name], [100 * chosen.mean], color="#2ca02c")
    ax.invert_yaxis()
    ax.set_xlabel("cross-validated accuracy, % (bar: mean, line: ± std over folds)")
    ax.set_title("candidates on the same folds (green: chosen, grey: baseline)")


def plot_curve(curve: LearningCurve, ax) -> None:
    n = [p.per_class for p in curve.points]
    ax.errorbar(n, [100 * p.mean for p in curve.points], yerr=[100 * p.std for p in curve.points],
                fmt="o", capsize=3, label="measured (mean ± std over draws)")
    if curve.fit is not None:
        grid = np.geomspace(1, max(p.per_class for p in curve.projections), 200)
        ax.plot(grid, 100 * curve.fit(grid), label="fitted curve (mean of three shapes)")
        targets = [p.per_class for p in curve.projections]
        ax.fill_between(targets, [100 * p.low for p in curve.projections], [100 * p.high for p in curve.projections],
                        alpha=0.25, label="80% band of the extrapolation")
    ax.axvline(curve.current_per_class, color="grey", linestyle=":", label="your data now")
    ax.set_xscale("log")
    ax.set_xlabel("examples per class (log scale)")
    ax.set_ylabel("accuracy, %")
    ax.set_title("learning curve")
    ax.legend(fontsize=8)


def plot_confusion(labels: list[str], confusion: list[list[int]], ax, *, source: str) -> None:
    matrix = np.asarray(confusion)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    if len(labels) <= 20:  # beyond that the numbers would not be legible
        for (row, column), value in np.ndenumerate(matrix):
            ax.text(column, row, str(value), ha="center", va="center", fontsize=7,
                    color="white" if value > matrix.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix, {source}")


def plot_training_loss(loss: list[float], ax) -> None:
    ax.plot(range(1, len(loss) + 1), loss)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.set_title("training of the chosen head (refit on all examples)")


# ------------------------------------------------------------------------------------------- HTML

def render_html(report: Report) -> str:
    parts = [f"<h1>{_e(report.title)}</h1>", _model_section(report.model)]
    if report.test is not None:
        parts.append(f"<h2>Test set</h2><p>accuracy on {report.test.n_examples} test examples: "
                     f"<b>{100 * report.test.accuracy:.1f}%</b></p>" + _cut_off_html(report.test)
                     + _per_class_table(report.test))
    if report.comparison is not None:
        parts.append("<h2>Candidates and the baseline</h2>" + _figure(plot_comparison, report.comparison)
                     + _comparison_table(report.comparison))
    if report.calibration is not None:
        parts.append(_trust_html(report))
    if report.curve is not None:
        parts.append(f"<h2>How much more data would help</h2><p>{_e(report.curve.summary)}</p>"
                     + _figure(plot_curve, report.curve))
    if report.training_loss:
        parts.append("<h2>Training curve</h2>" + _figure(plot_training_loss, report.training_loss, size=(6, 3)))
    if report.confusion:
        parts.append("<h2>Errors</h2>" + _figure(plot_confusion, report.confusion_labels, report.confusion,
                                                  source=report.confusion_source, size=_confusion_size(report)))
    show = _thumbnail if report.model["modality"] == "image" else _e
    parts += [_finding_html(name, finding, show) for name, finding in report.findings.items()]
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(report.title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}"
            f"<footer>written by smalldata, {created}; the same results are in the .json beside this file</footer>"
            "</body></html>")


STYLE = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
img.plot{max-width:100%}img.thumb{width:96px;height:96px;object-fit:cover}footer{color:#777;margin-top:3em;font-size:.9em}"""

FINDINGS = {
    "label_issues": ("Suspected label errors",
                     "examples whose out-of-fold prediction disagrees confidently with their label (confident learning), "
                     f"and gives it under {LABEL_ERROR_CEILING:.0%}: check these labels first"),
    "most_confused": ("Most confused pairs", "true class, predicted class, how many"),
    "most_wrong": ("Examples the model gets most wrong", "misclassified, most confident first"),
    "near_duplicates": ("Near-duplicates in the training data", "pairs that look almost the same to the backbone"),
    "outliers": ("Outliers", "examples far from every class: unusual, off-topic or broken"),
    "leakage": ("Leakage between training and test data", "test examples nearly identical to a training example inflate the test accuracy"),
}


def _finding_html(name: str, finding, show) -> str:
    title, explanation = FINDINGS[name]
    rows = _finding_rows(name, finding, show)
    if not rows:
        return f"<h2>{title}</h2><p>none found ({_e(explanation)})</p>"
    header, body = rows[0], rows[1:SHOWN + 1]
    table = "<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"
    table += "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in body)
    more = f"<p>... and {len(rows) - 1 - SHOWN} more in the JSON</p>" if len(rows) - 1 > SHOWN else ""
    return f"<h2>{title}</h2><p>{_e(explanation)}</p>{table}</table>{more}"


def _finding_rows(name: str, finding, _show) -> list[list[str]]:
    """A header row, then one row of HTML cells per entry; `_show` turns an item into HTML."""
    if name == "label_issues":
        return [["example", "given label", "suggested label", "P(given)", "P(suggested)"]] + [
            [_show(i.item), _e(i.given_label), _e(i.suggested_label), f"{i.given_probability:.2f}",
             f"{i.suggested_probability:.2f}"] for i in finding.issues] if finding.issues else []
    if name == "most_confused":
        return [["true", "predicted as", "count", "share of the true class"]] + [
            [_e(p.true_label), _e(p.predicted_label), str(p.count), f"{100 * p.rate:.0f}%"] for p in finding.pairs] if finding.pairs else []
    if name == "most_wrong":
        return [["example", "true", "predicted", "P(predicted)", "P(true)"]] + [
            [_show(w.item), _e(w.true_label), _e(w.predicted_label), f"{w.predicted_probability:.2f}",
             f"{w.true_probability:.2f}"] for w in finding.examples] if finding.examples else []
    if name == "near_duplicates":
        return [["first", "second", "cosine similarity", "labels"]] + [
            [_show(p.first_item), _show(p.second_item), f"{p.similarity:.3f}",
             "agree" if p.labels_agree else f"<b>differ</b>: {_e(p.first_label)} / {_e(p.second_label)}"]
            for p in finding.pairs] if finding.pairs else []
    if name == "outliers":
        return [["example", "label", "score (robust z, above the threshold)", "nearest class"]] + [
            [_show(o.item), _e(o.label), f"{o.score:.1f}", _e(o.nearest_class)] for o in finding.outliers] if finding.outliers else []
    if name == "leakage":
        return [["training example", "test example", "cosine similarity", "labels"]] + [
            [_show(p.train_item), _show(p.test_item), f"{p.similarity:.3f}",
             "agree" if p.labels_agree else f"differ: {_e(p.train_label)} / {_e(p.test_label)}"]
            for p in finding.pairs] if finding.pairs else []
    raise KeyError(name)


def _model_section(model: dict) -> str:
    counts = ", ".join(f"{_e(k)}: {v}" for k, v in model["counts"].items())
    return (f"<p>chosen: <b>{_e(model['head'])}</b> on <b>{_e(model['features'])}</b>; "
            f"{len(model['labels'])} classes; training examples per class: {counts}</p>")


def _comparison_table(comparison: Comparison) -> str:
    rows = "".join(
        f"<tr><td>{_e(s.name)}{' (chosen)' if s is comparison.chosen else ''}</td><td>{100 * s.mean:.1f}%</td>"
        f"<td>±{100 * s.std:.1f}</td><td>±{100 * s.standard_error:.1f}</td><td>{100 * s.balanced_mean:.1f}%</td>"
        f"<td>{_maybe(s.lowest_recall, '{:.2f}')}</td><td>{_maybe(s.calibration_error, '{:.3f}')}</td></tr>"
        for s in comparison.scores)
    protocol = f"{comparison.n_repeats}x repeated stratified {comparison.n_splits}-fold cross-validation"
    return (f"<p>{protocol}, {comparison.n_examples} examples; chosen: the first head in the table (the most "
            f"preferred) within one standard error of the best mean {comparison.metric}</p><table><tr><th>candidate</th><th>mean accuracy</th>"
            "<th>spread (std)</th><th>standard error</th><th>balanced accuracy</th><th>lowest class recall</th>"
            f"<th>calibration error (ECE, before calibration)</th></tr>{rows}</table>")


def _maybe(value, form: str) -> str:
    return "" if value is None else form.format(value)


def _trust(model: Model) -> dict:
    return {"calibration": model.calibration, "unknown_sentence": model.unknown.sentence() if model.unknown else None}


def _trust_html(report: Report) -> str:
    calibration = report.calibration
    unknown = f"<p>{_e(report.unknown_sentence)}</p>" if report.unknown_sentence else ""
    return (f"<h2>How far the probabilities can be trusted</h2><p>{_e(calibration.sentence())}; "
            f"{calibration.n_examples} held-out examples (cross-fitted: each half's temperature came from the "
            "other half). A calibrated model's bars lie on the diagonal: of the answers given with 80% "
            "confidence, about 80% are right.</p>" + _figure(plot_reliability, calibration, size=(9, 3.6), panels=2) + unknown)


def plot_reliability(calibration: Calibration, axes_pair) -> None:
    """Accuracy against confidence per bin, before and after calibration (a reliability diagram)."""
    for ax, title, table, ece in zip(axes_pair, ("before calibration", "after"),
                                     (calibration.reliability_before, calibration.reliability_after),
                                     (calibration.ece_before, calibration.ece_after)):
        edges = np.asarray(table["edges"])
        centers, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
        accuracy = [0 if a is None else a for a in table["accuracy"]]
        ax.bar(centers, accuracy, width=0.9 * width, color="#4c72b0", label="share right")
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top class's probability)", ylabel="share right",
               title=f"{title}: ECE {ece:.3f}")
        ax.legend(loc="upper left", fontsize=8)


def _cut_off_html(result: TestResult) -> str:
    if result.cut_off <= 0 and result.familiarity_floor is None:
        return ""
    answered = ("none answered" if result.answered_accuracy is None
                else f"{100 * result.answered_accuracy:.1f}% of those answers right")
    needed = CutOff(result.cut_off, result.familiarity_floor).said()
    said = (f"<p>answered at {_e(needed)} or more: {100 * result.coverage:.1f}% of the known "
            f"classes' inputs, {answered}; the rest answered 'unknown'")
    if result.unknown_answered is not None:
        said += f"; of inputs from classes the model never saw, {100 * (1 - result.unknown_answered):.1f}% answered 'unknown'"
    return said + "</p>"


def _per_class_table(result: TestResult) -> str:
    rows = "".join(f"<tr><td>{_e(label)}</td><td>{r['precision']:.2f}</td><td>{r['recall']:.2f}</td>"
                   f"<td>{r['f1']:.2f}</td><td>{r['support']}</td></tr>" for label, r in result.per_class.items())
    return ("<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>test examples</th></tr>"
            f"{rows}</table>")


# Labels and names are the user's, drawn as they are: "$x$" or "a_{b}" read as mathtext (or LaTeX)
# would be drawn as formulas, and one that does not parse failed the report after the model was saved.
LITERAL_TEXT = {"text.parse_math": False, "text.usetex": False}


def _figure(plot, *args, size=(7, 4), panels: int = 1, **kwargs) -> str:
    import matplotlib
    from matplotlib.figure import Figure

    # A Figure of its own, not pyplot's, drawn into memory by Agg: no backend switched and no rc
    # setting changed for a program that writes reports. The rc context spans the save, since tick
    # labels are made when the figure is drawn.
    with matplotlib.rc_context(LITERAL_TEXT):
        figure = Figure(figsize=size)
        plot(*args, figure.subplots(1, panels), **kwargs)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
    return f"<img class='plot' alt='{plot.__name__}' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def _confusion_size(report: Report) -> tuple[float, float]:
    side = min(12.0, 3 + 0.4 * len(report.confusion_labels))
    return side, side


def _thumbnail(item: str) -> str:
    """An image inlined as a small JPEG, with its file name; the path alone if it can't be read."""
    from PIL import Image

    try:
        with Image.open(item) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL * 2, THUMBNAIL * 2))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=80)
    except OSError:
        return _e(item)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f"<img class='thumb' title='{_e(item)}' src='data:image/jpeg;base64,{data}'><br><small>{_e(Path(item).name)}</small>"


def _e(text) -> str:
    return html.escape(str(text))


def _model_summary(model: Model) -> dict:
    return {"labels": model.classes, "modality": model.modality, "head": model.head_name, "features": model.features,
            "counts": model.data.counts}


def _embeddings(model: Model, dataset: Dataset, progress: Progress) -> np.ndarray:
    # Similarity needs a real backbone even when the chosen candidate reads raw text or statistics.
    return embed(dataset.inputs, diversity_backbone(model), keys=dataset.keys, progress=progress)


def _training_data(model: Model) -> Dataset | None:
    source = model.data.source
    if not source or not Path(source).exists():
        return None
    try:  # read it as training read it (--label-from-name, column names)
        return load_dataset(source, **model.data.load_options)
    except DataError:  # changed since training so that it no longer reads: no leakage check then
        return None
