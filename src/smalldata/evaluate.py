"""Honest evaluation: every candidate on the same repeated stratified cross-validation folds,
and scoring a trained model on a labeled test set."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
from sklearn.base import clone
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support, recall_score
from sklearn.model_selection import RepeatedStratifiedKFold, train_test_split
from sklearn.utils.parallel import Parallel, delayed

from smalldata.backbones import cpu_threads
from smalldata.calibration import expected_calibration_error, stacked
from smalldata.explain import most_confused
from smalldata.progress import Progress
from smalldata.unknown import UNKNOWN

MAX_SPLITS = 5
TARGET_FITS = 10  # folds x repeats: enough fits for a spread, few enough for a CPU
LARGE_DATASET = 1000  # from here one repeat of 5 folds is enough and repeats would cost too much
# Classes are uneven when the largest has more than this many times the examples of the smallest:
# then accuracy mostly measures the large classes, and the choice is made on balanced accuracy.
UNEVEN_RATIO = 3.0


@dataclass
class Candidate:
    """One way of building the classifier: a feature extractor (a backbone name, or "text" for the
    raw strings) and a scikit-learn estimator made fresh for every fit."""

    name: str
    features: str
    make_estimator: Callable[[], object]
    description: str = ""
    is_baseline: bool = False


@dataclass
class CandidateScore:
    name: str
    features: str
    description: str
    is_baseline: bool
    fold_accuracies: list[float]
    fold_balanced_accuracies: list[float] = field(default_factory=list)  # mean recall over classes, per fold
    lowest_recall: float | None = None  # the worst class's recall over every held-out prediction
    calibration_error: float | None = None  # ECE of its held-out probabilities, before any calibration
    # The pairs it mixes up most over every held-out prediction (`confused_pairs`), for the model card
    confused: list[dict] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_accuracies))

    @property
    def balanced_mean(self) -> float:
        return float(np.mean(self.fold_balanced_accuracies or self.fold_accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.fold_accuracies))

    @property
    def standard_error(self) -> float:
        """Standard error of the mean accuracy over the folds."""
        return self.std / math.sqrt(len(self.fold_accuracies))

    def measure(self, balanced: bool) -> tuple[float, float]:
        """(mean, standard error) over the folds of accuracy, or of balanced accuracy."""
        folds = self.fold_balanced_accuracies if balanced and self.fold_balanced_accuracies else self.fold_accuracies
        return float(np.mean(folds)), float(np.std(folds) / math.sqrt(len(folds)))

    def to_dict(self) -> dict:
        return {**asdict(self), "mean_accuracy": self.mean, "std_accuracy": self.std,
                "standard_error": self.standard_error, "mean_balanced_accuracy": self.balanced_mean}


@dataclass
class Comparison:
    """Cross-validated accuracy of every candidate on the same folds."""

    scores: list[CandidateScore]
    n_splits: int
    n_repeats: int
    n_examples: int
    out_of_fold: dict[str, list[list[float]]] = field(default_factory=dict)  # name -> mean probabilities
    # Candidates that bring knowledge beyond the labels (an unlabeled pool, class descriptions):
    # judged against the labeled-only choice on paired folds (see `informed_choice`).
    informed: list[str] = field(default_factory=list)
    # Uneven classes (`UNEVEN_RATIO`): the choice is made on balanced accuracy.
    balanced: bool = False
    # name -> (held-out row indices, probabilities) per fold: what calibration is fit on; not saved
    held_out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict, repr=False)

    @property
    def best(self) -> CandidateScore:
        """The highest mean accuracy (ties: the earlier, simpler candidate)."""
        return max(self.scores, key=lambda score: score.mean)

    @property
    def chosen(self) -> CandidateScore:
        """The one-standard-error rule: the first head whose mean is within one standard error of
        the best head's mean (`one_standard_error_choice`; the baseline is the reference, not shipped).

        With ~10 small folds the highest mean is partly luck, and the luckiest candidate is most
        often the most flexible one; the simplest head that is statistically as good does better
        on new data (Hastie, Tibshirani & Friedman, The Elements of Statistical Learning, 7.10).
        """
        return informed_choice(self, self.labeled_only) or self.labeled_choice

    @property
    def labeled_only(self) -> list[CandidateScore]:
        return [score for score in self.scores if score.name not in self.informed]

    @property
    def labeled_choice(self) -> CandidateScore:
        """The choice among the candidates that use the labels alone (`chosen` without informed ones)."""
        return one_standard_error_choice(self.labeled_only, balanced=self.balanced)

    def gain(self, name: str, over: str | None = None) -> tuple[float, float]:
        """Mean and std over folds of the paired accuracy difference between candidate `name` and
        `over` (default: the labeled-only choice): what the extra knowledge contributed."""
        by_name = {score.name: score for score in self.scores}
        other = by_name[over] if over else one_standard_error_choice(self.labeled_only)
        differences = np.subtract(by_name[name].fold_accuracies, other.fold_accuracies)
        return float(differences.mean()), float(differences.std())

    @property
    def metric(self) -> str:
        return "balanced accuracy" if self.balanced else "accuracy"

    @property
    def baseline(self) -> CandidateScore | None:
        return next((score for score in self.scores if score.is_baseline), None)

    def to_dict(self) -> dict:
        return {
            "protocol": f"{self.n_repeats}x repeated stratified {self.n_splits}-fold cross-validation",
            "n_splits": self.n_splits,
            "n_repeats": self.n_repeats,
            "n_examples": self.n_examples,
            "best": self.best.name,
            "chosen": self.chosen.name,
            "selection_rule": (f"the first head within one standard error of the best head's mean {self.metric} "
                               "(the baseline is the reference)") + (f"; then {INFORMED_RULE}" if self.informed else ""),
            "balanced": self.balanced,
            "candidates": [score.to_dict() for score in self.scores],
            "informed": list(self.informed),
            # per-fold paired gain (accuracy points) of each informed candidate over the labeled-only choice
            "contributions": {name: dict(zip(("mean_points", "std_points"), (100 * v for v in self.gain(name))),
                                         over=one_standard_error_choice(self.labeled_only).name)
                              for name in self.informed},
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Comparison":
        scores = [
            CandidateScore(c["name"], c["features"], c["description"], c["is_baseline"], c["fold_accuracies"],
                           c.get("fold_balanced_accuracies", []), c.get("lowest_recall"), c.get("calibration_error"),
                           c.get("confused", []))
            for c in data["candidates"]
        ]
        return cls(scores, data["n_splits"], data["n_repeats"], data["n_examples"], informed=data.get("informed", []),
                   balanced=data.get("balanced", False))


def one_standard_error_choice(scores: Sequence[CandidateScore], *, balanced: bool = False) -> CandidateScore:
    """The first head (in the order given) within one standard error of the best head's mean
    accuracy (``balanced``: balanced accuracy).

    The baseline is measured and every head is reported against it, but it is not shipped where
    a head exists: on folds of 3-4 examples it beat every pretrained head by 13 points on an mr
    draw of 16 sentences, and lost to them by 25 on the test split; over every development and
    confirmation set and size, a pretrained head beat it on test (BENCHMARKS.md, "The automatic
    choice")."""
    heads = [score for score in scores if not score.is_baseline] or list(scores)  # in order of preference
    best_mean, best_error = max((score.measure(balanced) for score in heads), key=lambda measured: measured[0])
    return next(score for score in heads if score.measure(balanced)[0] >= best_mean - best_error)


INFORMED_TOLERANCE = 2.0  # standard errors: rejected only when the folds show harm as a one-sided test at ~2.5%
INFORMED_RULE = ("a candidate using the unlabeled pool, the class descriptions or the class names replaces it unless its "
                 "per-fold paired difference is below zero by more than two standard errors")


def informed_choice(comparison: Comparison, labeled: Sequence[CandidateScore]) -> CandidateScore | None:
    """The informed candidate with the largest paired gain over the labeled-only choice, unless the
    folds show it worse (mean paired difference below minus two standard errors).

    Why not the plain one-standard-error rule: with 5-40 labels the folds cannot tell a 2-3 point
    gain from noise, and the rule keeps the simpler labeled-only head; but an unlabeled pool or a
    description adds information the labels lack, and published results (and bench/HISTORY.md) show it
    helps far more often than it hurts. So the burden of proof is reversed: the informed candidate
    is the null hypothesis, rejected only when the same folds, compared pairwise (which cancels the
    folds' shared difficulty), show it worse at the conventional two standard errors. A
    one-standard-error bar rejected self-training where it helped most (trec6: -7 points on the
    folds of the few labels, +11 on the test split; bench/HISTORY.md).
    """
    if not comparison.informed:
        return None
    base = one_standard_error_choice(labeled)
    by_name = {score.name: score for score in comparison.scores}
    best, best_gain = None, -math.inf
    for name in comparison.informed:
        differences = np.subtract(by_name[name].fold_accuracies, base.fold_accuracies)
        gain, error = differences.mean(), differences.std() / math.sqrt(len(differences))
        if gain >= -INFORMED_TOLERANCE * error and gain > best_gain:
            best, best_gain = by_name[name], gain
    return best


@dataclass
class Folds:
    """Train/test index pairs; each example is in a test part once per repeat."""

    splits: list[tuple[np.ndarray, np.ndarray]]
    n_splits: int
    n_repeats: int


def cv_folds(labels: Sequence[str], *, seed: int = 0) -> Folds:
    """Repeated stratified k-fold, k adapted to the smallest class (at most 5), about 10 fits in all."""
    counts = np.unique(np.asarray(labels), return_counts=True)[1]
    n_splits = int(min(MAX_SPLITS, counts.min()))
    if n_splits < 2:
        raise ValueError("cross-validation needs at least 2 examples in every class")
    n_repeats = 1 if len(labels) >= LARGE_DATASET else max(1, math.ceil(TARGET_FITS / n_splits))
    splitter = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    return Folds(list(splitter.split(np.zeros(len(labels)), labels)), n_splits, n_repeats)


def compare(
    candidates: Sequence[Candidate],
    features: dict[str, np.ndarray | list],
    labels: Sequence[str],
    *,
    folds: Folds,
    progress: Progress | None = None,
    informed: Sequence[str] = (),
) -> Comparison:
    """Fit and score each candidate on each fold; `features[c.features]` is what candidate c sees.
    `informed` names the candidates that use knowledge beyond the labels (see `informed_choice`).
    With uneven classes (`uneven`) the choice is made on balanced accuracy."""
    y = np.asarray(labels)
    classes = np.unique(y)
    task = progress.task(f"cross-validating {len(candidates)} candidates", len(candidates) * len(folds.splits)) if progress else None
    scores, out_of_fold, held_out = [], {}, {}
    parallel = fits_side_by_side()
    with single_threaded_math():
        for candidate in candidates:
            X = features[candidate.features]
            fits = parallel(delayed(fit_and_predict)(candidate, X, y, classes, split) for split in folds.splits)
            held_out[candidate.name] = []
            for (_, test), proba in zip(folds.splits, fits):
                held_out[candidate.name].append((test, proba))
                if task:
                    task.advance()
            scores.append(held_out_score(candidate, held_out[candidate.name], y, classes))
            out_of_fold[candidate.name] = (sum_by_row(held_out[candidate.name], len(y), len(classes)) / folds.n_repeats).tolist()
    if task:
        task.done()
    return Comparison(scores, folds.n_splits, folds.n_repeats, len(y), out_of_fold, informed=list(informed),
                      balanced=uneven(labels), held_out=held_out)


def uneven(labels: Sequence[str]) -> bool:
    """Whether the largest class has more than `UNEVEN_RATIO` times the examples of the smallest."""
    counts = np.unique(np.asarray(labels), return_counts=True)[1]
    return bool(counts.max() > UNEVEN_RATIO * counts.min())


def sum_by_row(held_out, n_rows: int, n_classes: int) -> np.ndarray:
    total = np.zeros((n_rows, n_classes))
    for test, proba in held_out:
        total[test] += proba
    return total


def held_out_score(candidate: Candidate, held_out, y: np.ndarray, classes: np.ndarray) -> CandidateScore:
    """A candidate's accuracy and balanced accuracy per fold, its worst class's recall and its
    calibration error over every held-out prediction."""
    accuracies, balanced = [], []
    for test, proba in held_out:
        predicted = classes[proba.argmax(axis=1)]
        accuracies.append(float(accuracy_score(y[test], predicted)))
        balanced.append(float(balanced_accuracy_score(y[test], predicted)))
    rows, proba, truth = stacked(held_out, y, classes)
    recalls = recall_score(y[rows], classes[proba.argmax(axis=1)], labels=classes, average=None, zero_division=0)
    calibration_error = expected_calibration_error(proba, truth)
    return CandidateScore(candidate.name, candidate.features, candidate.description, candidate.is_baseline, accuracies,
                          balanced, round(float(recalls.min()), 4), round(calibration_error, 4),
                          confused_pairs(y[rows], classes[proba.argmax(axis=1)], classes))


CONFUSED_PAIRS_KEPT = 3


def confused_pairs(truth: np.ndarray, predicted: np.ndarray, classes: np.ndarray) -> list[dict]:
    """The (true, predicted) pairs mixed up most often, most first, at most CONFUSED_PAIRS_KEPT:
    how many times, out of how many held-out predictions of the true class (each example is
    predicted once per repeat)."""
    labels = [str(c) for c in classes]
    matrix = confusion_matrix(truth, predicted, labels=classes)
    support = matrix.sum(axis=1)
    return [{"true_label": pair.true_label, "predicted_label": pair.predicted_label, "count": pair.count,
             "out_of": int(support[labels.index(pair.true_label)])}
            for pair in most_confused(matrix, labels, limit=CONFUSED_PAIRS_KEPT).pairs]


def fits_side_by_side() -> Parallel:
    """One fit per core at a time: in threads, unless the caller chose processes with joblib's
    ``parallel_config(backend="loky")``.

    Threads suit a one-off run: the solvers spend most of their time in numpy and scipy code that
    releases the GIL, and no process has to start and import torch. The linear heads' 200 small
    torch steps hold the GIL for most of each step, though, so a long-lived caller that fits
    often (the service's training worker) does better with warm processes (bench/HISTORY.md).
    """
    return Parallel(n_jobs=cpu_threads(), prefer="threads", return_as="generator")


@contextmanager
def single_threaded_math():
    """One BLAS/OpenMP/torch thread per fit while fits run side by side.

    On few-shot-sized matrices multi-threaded BLAS costs far more than it gains: logistic
    regression on 120 x 1280 embeddings fits in 0.14 s with one thread and 1.0 s with two.
    """
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


def held_out_fifth(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, held) of a stratified split holding out a fifth, and at least one example
    of each class: a plain fifth of a 45-example fold of 10 classes is 9 rows, too few for all 10."""
    labels = np.asarray(labels)
    held = max(len(np.unique(labels)), math.ceil(0.2 * len(labels)))  # a fifth rounded up, as sklearn does
    return train_test_split(np.arange(len(labels)), test_size=held, stratify=labels, random_state=seed)


def fit_and_predict(candidate: Candidate, X, y: np.ndarray, classes: np.ndarray, split) -> np.ndarray:
    """`candidate` fit on the split's training rows: its probabilities for the test rows, in `classes` order."""
    train, test = split
    estimator = clone(candidate.make_estimator()).fit(take_rows(X, train), y[train])
    return _aligned_proba(estimator, take_rows(X, test), classes)


def take_rows(X, indices):
    return X[indices] if isinstance(X, np.ndarray) else [X[i] for i in indices]


def _aligned_proba(estimator, X, classes: np.ndarray) -> np.ndarray:
    """Probabilities in the order of `classes`, even when a fold's training part lacked a class."""
    proba = estimator.predict_proba(X)
    if len(estimator.classes_) == len(classes) and np.all(estimator.classes_ == classes):
        return proba
    aligned = np.zeros((len(proba), len(classes)))
    aligned[:, np.searchsorted(classes, estimator.classes_)] = proba
    return aligned


@dataclass
class TestResult:
    """How a trained model does on labeled examples it never saw."""

    accuracy: float
    n_examples: int
    labels: list[str]
    confusion: list[list[int]]  # rows: true label, columns: predicted label, in `labels` order
    per_class: dict[str, dict[str, float]]  # label -> precision, recall, f1, support
    unknown_labels: list[str]  # test labels the model was never trained on
    cut_off: float = 0.0  # the calibrated probability an answer needed (a threshold; in older folders the floor)
    familiarity_floor: float | None = None  # the familiarity an answer needed (None: not applied)
    coverage: float = 1.0  # share of inputs answered at that cut-off (the rest: `unknown`)
    answered_accuracy: float | None = None  # accuracy on the answered inputs
    unknown_answered: float | None = None  # of test inputs from classes the model never saw, the share answered

    def with_cut_off(self, true_labels: Sequence[str], answers: Sequence[str], cut_off) -> None:
        """Record what the cut-off (a `smalldata.unknown.CutOff`) did: `answers` hold a class or
        "unknown" per input."""
        truth, given = np.asarray(true_labels), np.asarray(answers)
        answered = given != UNKNOWN
        known = np.isin(truth, [label for label in self.labels if label not in self.unknown_labels])
        self.cut_off = round(float(cut_off.probability), 4)
        self.familiarity_floor = cut_off.familiarity
        self.coverage = float(answered[known].mean()) if known.any() else 0.0
        self.answered_accuracy = float((given == truth)[known & answered].mean()) if (known & answered).any() else None
        self.unknown_answered = float(answered[~known].mean()) if (~known).any() else None

    def to_dict(self) -> dict:
        return asdict(self)


def score(true_labels: Sequence[str], predicted: Sequence[str], model_classes: Sequence[str]) -> TestResult:
    labels = sorted(set(model_classes) | set(true_labels))
    precision, recall, f1, support = precision_recall_fscore_support(
        true_labels, predicted, labels=labels, zero_division=0
    )
    per_class = {
        label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for label, p, r, f, s in zip(labels, precision, recall, f1, support)
    }
    return TestResult(
        accuracy=float(accuracy_score(true_labels, predicted)),
        n_examples=len(true_labels),
        labels=labels,
        confusion=confusion_matrix(true_labels, predicted, labels=labels).tolist(),
        per_class=per_class,
        unknown_labels=sorted(set(true_labels) - set(model_classes)),
    )
