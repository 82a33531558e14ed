"""How much more data is enough: a learning curve over examples per class, extrapolated.

Accuracy is measured at 1, 2, 4, 8, ... examples per class drawn from the data (the rest of the data
scores each draw). No single curve shape extrapolates well on every kind of data (Viering & Loog
2022, "The Shape of Learning Curves: a Review"), so three shapes are fitted to the means and their
predictions averaged:

- an inverse power law with a plateau, ``accuracy(n) = a - b * n**-c`` (Hestness et al. 2017,
  "Deep Learning Scaling is Predictable, Empirically"; `a` is where the curve levels off);
- a power law of the error rate, ``accuracy(n) = 1 - b * n**-c`` (no plateau below 100%);
- a log-linear trend through the last three sizes, ``accuracy(n) = a + b * log(n)`` (capped at 100%).

The plateau shape tends to level off too early, the other two to rise for too long. The uncertainty
band pools every shape's refits on bootstrap resamples of the draws, each with the draw-to-draw
spread of a single training set of the target size, so it holds both how unsure the shape is and how
much one set of examples differs from another.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from sklearn.base import clone
from sklearn.utils.parallel import delayed

from smalldata.evaluate import fits_side_by_side, single_threaded_math, take_rows
from smalldata.progress import Progress

FACTORS = (2, 5, 10)  # extrapolate to this many times the current examples per class
MIN_SCORED = 200  # draw until each size is scored on at least this many held-out predictions
MIN_DRAWS, MAX_DRAWS = 5, 30
BOOTSTRAP = 100
BAND = (10, 90)  # percentiles of the bootstrap: an 80% band
FLATTENING = 0.02  # doubling the data adds less than this: "the curve is flattening"
CLASSES_NAMED = 3


@dataclass
class CurvePoint:
    per_class: int
    accuracies: list[float]  # one per draw, each on the examples that draw left out
    recalls: dict[str, float]  # per class, pooled over the draws

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))

    def to_dict(self) -> dict:
        return {**asdict(self), "mean_accuracy": self.mean, "std_accuracy": self.std}


@dataclass
class PowerLaw:
    """accuracy(n) = plateau - scale * n ** -exponent"""

    plateau: float
    scale: float
    exponent: float

    def __call__(self, per_class) -> np.ndarray:
        return _power_law(np.asarray(per_class, dtype=float), self.plateau, self.scale, self.exponent)


@dataclass
class ErrorPowerLaw:
    """accuracy(n) = 1 - scale * n ** -exponent: the error rate falls as a power law"""

    scale: float
    exponent: float

    def __call__(self, per_class) -> np.ndarray:
        return _error_power_law(np.asarray(per_class, dtype=float), self.scale, self.exponent)


@dataclass
class LogLinear:
    """accuracy(n) = intercept + slope * log(n), capped at 100%"""

    intercept: float
    slope: float

    def __call__(self, per_class) -> np.ndarray:
        return np.minimum(1.0, self.intercept + self.slope * np.log(np.asarray(per_class, dtype=float)))


@dataclass
class CurveFit:
    """The mean of the three shapes' predictions."""

    power_law: PowerLaw
    error_power_law: ErrorPowerLaw
    log_linear: LogLinear

    def __call__(self, per_class) -> np.ndarray:
        return np.clip(np.mean([shape(per_class) for shape in self.shapes()], axis=0), 0.0, 1.0)

    def shapes(self) -> tuple:
        return self.power_law, self.error_power_law, self.log_linear

    @classmethod
    def from_dict(cls, data: dict) -> "CurveFit":
        return cls(PowerLaw(**data["power_law"]), ErrorPowerLaw(**data["error_power_law"]), LogLinear(**data["log_linear"]))


@dataclass
class Projection:
    factor: float
    per_class: float
    accuracy: float
    low: float  # the uncertainty band (BAND percentiles of the bootstrap refits)
    high: float


@dataclass
class ClassGain:
    label: str
    recall: float  # at the largest size measured
    gain_per_doubling: float  # recall gained by the last doubling of examples per class


@dataclass
class LearningCurve:
    points: list[CurvePoint]
    current_per_class: float  # the median class size of the data the curve was drawn from
    fit: CurveFit | None  # None with fewer than 3 sizes: nothing to extrapolate from
    projections: list[Projection]
    class_gains: list[ClassGain]  # classes that would gain most from more examples first
    summary: str

    def to_dict(self) -> dict:
        return {
            "points": [p.to_dict() for p in self.points],
            "current_per_class": self.current_per_class,
            "fit": asdict(self.fit) if self.fit else None,
            "model": ("mean of: plateau - scale * n ** -exponent; 1 - scale * n ** -exponent; "
                      "intercept + slope * log(n) through the last 3 sizes; n = examples per class"),
            "band": (f"{BAND[0]}th to {BAND[1]}th percentile of {BOOTSTRAP} bootstrap refits of each shape, "
                     "with the draw-to-draw spread of one training set of the target size"),
            "projections": [asdict(p) for p in self.projections],
            "class_gains": [asdict(g) for g in self.class_gains],
            "summary": self.summary,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "LearningCurve":
        points = [CurvePoint(p["per_class"], p["accuracies"], p["recalls"]) for p in data["points"]]
        fit = data["fit"]
        if fit and "power_law" not in fit:  # saved when the curve was one power law: refit the three shapes
            fit = asdict(fit_curve(points))
        return cls(
            points=points,
            current_per_class=data["current_per_class"],
            fit=CurveFit.from_dict(fit) if fit else None,
            projections=[Projection(**p) for p in data["projections"]],
            class_gains=[ClassGain(**g) for g in data["class_gains"]],
            summary=data["summary"],
        )


def shot_sizes(counts: Sequence[int], max_per_class: int | None = None) -> list[int]:
    """1, 2, 4, ... examples per class, and the most every class can give while keeping one out."""
    largest = int(min(counts)) - 1
    if max_per_class is not None:
        largest = min(largest, max_per_class)
    sizes = [2**i for i in range(int(math.log2(largest)) + 1)] if largest >= 1 else []
    if sizes and sizes[-1] != largest:
        sizes.append(largest)
    return sizes


def curve_fits(labels: Sequence[str], max_per_class: int | None = None) -> int:
    """How many fits `learning_curve` makes on `labels`: what it costs, in refits."""
    counts = np.unique(np.asarray(labels), return_counts=True)[1]
    return sum(_draws(counts, n) for n in shot_sizes(counts, max_per_class))


def learning_curve(
    features,
    labels: Sequence[str],
    make_estimator: Callable[[], object],
    *,
    max_per_class: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> LearningCurve:
    """Measure accuracy at growing examples per class and extrapolate to 2x, 5x and 10x the data.

    `features` is what the estimator reads (an embedding matrix, or raw texts for the TF-IDF baseline).
    `max_per_class` stops the sizes early, e.g. to see how a large labeled pool would do with less.
    """
    y = np.asarray(labels)
    classes, counts = np.unique(y, return_counts=True)
    sizes = shot_sizes(counts, max_per_class)
    if not sizes:
        raise ValueError("a learning curve needs at least 2 examples in every class")
    plan = [(n, d) for n in sizes for d in range(_draws(counts, n))]
    task = progress.task(f"learning curve: {len(plan)} fits at {', '.join(map(str, sizes))} per class", len(plan)) if progress else None
    parallel = fits_side_by_side()
    outcomes: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {n: [] for n in sizes}
    with single_threaded_math():
        jobs = (delayed(_fit_and_score)(features, y, classes, n, seed * 1000 + 7 * n + d, make_estimator) for n, d in plan)
        for (n, _), outcome in zip(plan, parallel(jobs)):
            outcomes[n].append(outcome)
            if task:
                task.advance()
    if task:
        task.done()
    points = [_point(n, outcomes[n], classes) for n in sizes]
    return describe(points, current_per_class=float(np.median(counts)), seed=seed)


def describe(points: list[CurvePoint], *, current_per_class: float, seed: int = 0) -> LearningCurve:
    """Fit the curve to measured points, extrapolate, and say in a sentence what to expect."""
    fit = fit_curve(points) if len(points) >= 3 else None
    targets = [current_per_class * f for f in FACTORS]
    projections = project(points, fit, targets, current_per_class=current_per_class, seed=seed) if fit else []
    gains = _class_gains(points)
    return LearningCurve(points, current_per_class, fit, projections, gains,
                         _summary(points, fit, projections, gains, current_per_class))


def fit_curve(points: list[CurvePoint], means: np.ndarray | None = None) -> CurveFit:
    """The three shapes fitted to the mean accuracies (or to `means` given for the points, as the
    bootstrap does)."""
    return CurveFit(fit_power_law(points, means), fit_error_power_law(points, means), fit_log_linear(points, means))


def fit_power_law(points: list[CurvePoint], means: np.ndarray | None = None) -> PowerLaw:
    """Least squares on the mean accuracies, each weighted by how precisely it was measured."""
    n, means, sigma = _measured(points, means)
    top = float(means.max())
    start = (min(1.0, top + 0.05), max(top + 0.05 - means[0], 0.01), 0.5)
    # The plateau cannot be below what was measured nor above 100%; exponents outside (0.05, 3)
    # would mean a curve that never rises or one that is flat after two examples.
    bounds = ([min(top, 1.0) - 1e-6, 0.0, 0.05], [1.0, 2.0, 3.0])
    params = _least_squares(_power_law, n, means, sigma, start, bounds, flat=(top, 0.0, 1.0))
    return PowerLaw(*params)


def fit_error_power_law(points: list[CurvePoint], means: np.ndarray | None = None) -> ErrorPowerLaw:
    n, means, sigma = _measured(points, means)
    start = (max(1.0 - means[0], 0.01), 0.5)
    # The error rate shrinks (exponent > 0) but not faster than 1/n**3, as for the plateau shape.
    params = _least_squares(_error_power_law, n, means, sigma, start, ([0.0, 0.01], [2.0, 3.0]),
                            flat=(1.0 - float(means.max()), 1e-9))
    return ErrorPowerLaw(*params)


def fit_log_linear(points: list[CurvePoint], means: np.ndarray | None = None) -> LogLinear:
    """Through the last three sizes only: the recent trend, not the steep start."""
    n, means, sigma = (values[-3:] for values in _measured(points, means))
    slope, intercept = np.polyfit(np.log(n), means, 1, w=1 / sigma)
    if slope < 0:  # accuracy that fell with more data is noise: the honest trend is flat
        return LogLinear(float(np.average(means, weights=sigma ** -2)), 0.0)
    return LogLinear(float(intercept), float(slope))


def _measured(points: list[CurvePoint], means: np.ndarray | None):
    n = np.array([p.per_class for p in points], dtype=float)
    means = np.array([p.mean for p in points]) if means is None else np.asarray(means, dtype=float)
    sigma = np.array([max(p.std / math.sqrt(len(p.accuracies)), 0.005) for p in points])
    return n, means, sigma


def _least_squares(shape, n, means, sigma, start, bounds, *, flat) -> tuple[float, ...]:
    start = np.clip(start, np.asarray(bounds[0]) + 1e-9, np.asarray(bounds[1]) - 1e-9)
    try:
        with warnings.catch_warnings():  # the parameters' covariance is not used: its warning says nothing
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(shape, n, means, p0=start, sigma=sigma, bounds=bounds, maxfev=5000)
    except RuntimeError:  # no convergence: a flat line at the best measured accuracy is the honest fit
        params = flat
    return tuple(map(float, params))


def _power_law(n, plateau, scale, exponent):
    return plateau - scale * np.power(n, -exponent)


def _error_power_law(n, scale, exponent):
    return 1.0 - scale * np.power(n, -exponent)


def _draws(counts: np.ndarray, per_class: int) -> int:
    left_out = int(sum(c - per_class for c in counts))
    return int(min(MAX_DRAWS, max(MIN_DRAWS, math.ceil(MIN_SCORED / left_out))))


def _fit_and_score(features, y, classes, per_class, seed, make_estimator) -> tuple[np.ndarray, np.ndarray]:
    """Train on `per_class` random examples of every class; predict all the others."""
    rng = np.random.default_rng(seed)
    train = np.concatenate([rng.choice(np.flatnonzero(y == label), size=per_class, replace=False) for label in classes])
    test = np.setdiff1d(np.arange(len(y)), train)
    estimator = clone(make_estimator()).fit(take_rows(features, train), y[train])
    return y[test], np.asarray(estimator.predict(take_rows(features, test)))


def _point(per_class: int, outcomes, classes) -> CurvePoint:
    accuracies = [float(np.mean(true == predicted)) for true, predicted in outcomes]
    true = np.concatenate([t for t, _ in outcomes])
    predicted = np.concatenate([p for _, p in outcomes])
    recalls = {str(label): float(np.mean(predicted[true == label] == label)) for label in classes}
    return CurvePoint(per_class, accuracies, recalls)


def project(points: list[CurvePoint], fit: CurveFit, per_class: Sequence[float], *,
            current_per_class: float, seed: int = 0) -> list[Projection]:
    """The fit at `per_class` examples per class, with a band from every shape's refits on
    resampled draws, each blurred by how much one training set of that size differs from another."""
    rng = np.random.default_rng(seed)
    targets = np.asarray(per_class, dtype=float)
    spread = _draw_spread(points, targets)
    predictions = []
    for _ in range(BOOTSTRAP):
        means = np.array([np.mean(rng.choice(p.accuracies, size=len(p.accuracies))) for p in points])
        for shape in fit_curve(points, means=means).shapes():
            predictions.append(shape(targets) + rng.normal(0.0, spread))
    low, high = np.clip(np.percentile(np.array(predictions), BAND, axis=0), 0.0, 1.0)
    expected = fit(targets)
    return [Projection(float(t / current_per_class), float(t), float(a), float(min(lo, a)), float(max(hi, a)))
            for t, a, lo, hi in zip(targets, expected, low, high)]


def _draw_spread(points: list[CurvePoint], targets: np.ndarray) -> np.ndarray:
    """The standard deviation of accuracy between training sets of the target size: the spread
    measured at the largest size, shrinking as 1/sqrt(n) (the spread of an average over n examples)."""
    last = points[-1]
    return last.std * np.sqrt(last.per_class / targets)


def _class_gains(points: list[CurvePoint]) -> list[ClassGain]:
    """Per class, the recall the last doubling of examples bought: where more examples pay most."""
    last = points[-1]
    previous = next((p for p in reversed(points) if p.per_class <= last.per_class / 2), points[0])
    doublings = max(math.log2(last.per_class / previous.per_class), 1e-9) if previous is not last else None
    gains = [ClassGain(label, recall,
                       (recall - previous.recalls[label]) / doublings if doublings else 0.0)
             for label, recall in last.recalls.items()]
    # Most to gain: still rising fast, and far from perfect.
    return sorted(gains, key=lambda g: g.gain_per_doubling * (1 - g.recall), reverse=True)


def _summary(points, fit, projections, gains, current: float) -> str:
    if fit is None:
        return (f"measured at {', '.join(str(p.per_class) for p in points)} per class only; "
                "a curve to extrapolate needs 3 sizes (at least 5 examples in every class)")
    now = float(fit(current))
    double = projections[0]
    trend = ("the curve is flattening: more examples of the same kind will add little"
             if double.accuracy - now < FLATTENING else "the curve is still rising")
    sentence = (f"about {100 * (double.accuracy - now):+z.0f} points with {double.per_class - current:.0f} more "
                f"examples per class ({100 * double.accuracy:.0f}%, likely {100 * double.low:.0f}-"
                f"{100 * double.high:.0f}%); {trend}")
    # Never every class: "all of them" is no advice (with 2 classes, the one that would gain more).
    named = min(CLASSES_NAMED, len(gains) - 1)
    rising = [g.label for g in gains[:named] if g.gain_per_doubling > 0 and g.recall < 1]
    if len(rising) == 1:
        sentence += f"; the class that would gain most from more examples: {rising[0]}"
    elif rising:
        sentence += f"; the classes that would gain most from more examples: {', '.join(rising)}"
    return sentence
