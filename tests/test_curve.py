import numpy as np
import pytest

from smalldata.curve import CurvePoint, LearningCurve, PowerLaw, describe, fit_power_law, learning_curve, shot_sizes
from smalldata.heads import logistic_regression_head


def test_sizes_double_up_to_what_every_class_can_give_with_one_left_out():
    assert shot_sizes([10, 12]) == [1, 2, 4, 8, 9]
    assert shot_sizes([5, 30]) == [1, 2, 4]
    assert shot_sizes([2, 2]) == [1]
    assert shot_sizes([1, 9]) == []


def test_the_power_law_is_recovered_from_exact_points():
    truth = PowerLaw(plateau=0.9, scale=0.5, exponent=0.7)
    points = [CurvePoint(n, [float(truth(n))] * 5, {}) for n in (1, 2, 4, 8, 16)]
    fit = fit_power_law(points)
    assert fit.plateau == pytest.approx(0.9, abs=0.01) and fit.exponent == pytest.approx(0.7, abs=0.05)


def _hard_clusters(per_class: int = 24, classes: int = 3, seed: int = 0):
    # Overlapping Gaussian classes in many dimensions: a linear model keeps improving with data.
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, 40)) * 0.5
    X = np.concatenate([c + rng.normal(size=(per_class, 40)) for c in centres])
    y = np.repeat([f"class {i}" for i in range(classes)], per_class)
    return X.astype(np.float32), y


def test_learning_curve_rises_and_extrapolates_with_a_band():
    X, y = _hard_clusters()
    curve = learning_curve(X, y, logistic_regression_head, seed=0)
    assert [p.per_class for p in curve.points] == [1, 2, 4, 8, 16, 23]
    assert curve.points[-1].mean > curve.points[0].mean + 0.1
    assert curve.fit.plateau >= max(p.mean for p in curve.points) - 1e-6
    assert [p.factor for p in curve.projections] == [2, 5, 10]
    for projection in curve.projections:
        assert projection.low <= projection.accuracy + 1e-9 and projection.accuracy <= projection.high + 1e-9
    accuracies = [p.accuracy for p in curve.projections]
    assert accuracies == sorted(accuracies) and accuracies[-1] <= 1
    assert "more examples per class" in curve.summary
    again = LearningCurve.from_dict(curve.to_dict())
    assert again.summary == curve.summary and again.points[2].accuracies == curve.points[2].accuracies


def test_the_class_that_is_still_learning_is_named_first():
    recalls_small = {"easy": 1.0, "hard": 0.3, "steady": 0.8}
    recalls_large = {"easy": 1.0, "hard": 0.7, "steady": 0.82}
    points = [CurvePoint(1, [0.5] * 5, recalls_small), CurvePoint(2, [0.6] * 5, recalls_small),
              CurvePoint(4, [0.7] * 5, recalls_small), CurvePoint(8, [0.8] * 5, recalls_large)]
    curve = describe(points, current_per_class=9)
    assert curve.class_gains[0].label == "hard" and curve.class_gains[0].gain_per_doubling == pytest.approx(0.4)
    assert "hard" in curve.summary and "easy" not in curve.summary


def test_too_few_sizes_are_said_plainly_instead_of_extrapolated():
    X, y = _hard_clusters(per_class=3)
    curve = learning_curve(X, y, logistic_regression_head)
    assert curve.fit is None and curve.projections == []
    assert "needs 3 sizes" in curve.summary
    with pytest.raises(ValueError):
        learning_curve(X[:4], ["a", "b", "b", "b"], logistic_regression_head)
