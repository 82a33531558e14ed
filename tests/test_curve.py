import numpy as np
import pytest

from smalldata.curve import (CurvePoint, ErrorPowerLaw, LearningCurve, PowerLaw, describe, fit_curve,
                             fit_error_power_law, fit_log_linear, fit_power_law, learning_curve, shot_sizes)
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


def test_each_shape_is_recovered_from_exact_points_and_the_fit_averages_them():
    truth = ErrorPowerLaw(scale=0.4, exponent=0.6)
    points = [CurvePoint(n, [float(truth(n))] * 5, {}) for n in (1, 2, 4, 8, 16)]
    fit = fit_error_power_law(points)
    assert fit.scale == pytest.approx(0.4, abs=0.01) and fit.exponent == pytest.approx(0.6, abs=0.02)
    line = fit_log_linear([CurvePoint(n, [0.5 + 0.1 * np.log(n)] * 5, {}) for n in (1, 2, 4, 8, 16)])
    assert line.slope == pytest.approx(0.1, abs=1e-6) and line(1e6) == 1.0  # capped at 100%
    both = fit_curve(points)
    at = np.array([64.0])
    assert both(at) == pytest.approx(np.mean([shape(at) for shape in both.shapes()], axis=0))


def test_the_band_holds_how_much_one_training_set_differs_from_another():
    # The same means, measured with a large and with no draw-to-draw spread: only the first is unsure.
    means = {1: 0.5, 2: 0.6, 4: 0.68, 8: 0.74}
    noisy = [CurvePoint(n, [m - 0.05, m + 0.05] * 5, {}) for n, m in means.items()]
    exact = [CurvePoint(n, [m] * 10, {}) for n, m in means.items()]
    wide, narrow = (describe(points, current_per_class=8).projections[0] for points in (noisy, exact))
    assert wide.accuracy == pytest.approx(narrow.accuracy, abs=0.01)
    assert wide.high - wide.low > narrow.high - narrow.low + 0.03


def test_a_curve_saved_as_one_power_law_loads_with_the_three_shapes():
    points = [CurvePoint(n, [0.9 - 0.4 * n ** -0.5] * 5, {}) for n in (1, 2, 4, 8)]
    saved = describe(points, current_per_class=8).to_dict()
    saved["fit"] = {"plateau": 0.9, "scale": 0.4, "exponent": 0.5}
    loaded = LearningCurve.from_dict(saved)
    assert loaded.fit.power_law.plateau == pytest.approx(0.9, abs=0.01) and len(loaded.fit.shapes()) == 3


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
    assert curve.fit.power_law.plateau >= max(p.mean for p in curve.points) - 1e-6
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


def test_with_two_classes_only_the_one_that_would_gain_more_is_named():
    # Naming both of two classes said nothing; naming every class of three neither.
    small, large = {"cats": 0.3, "dogs": 0.5}, {"cats": 0.7, "dogs": 0.8}
    points = [CurvePoint(n, [0.5 + n / 40] * 5, small if n < 8 else large) for n in (1, 2, 4, 8)]
    summary = describe(points, current_per_class=9).summary
    assert summary.endswith("; the class that would gain most from more examples: cats"), summary
    three_small, three_large = {**small, "birds": 0.2}, {**large, "birds": 0.5}
    points = [CurvePoint(n, [0.5 + n / 40] * 5, three_small if n < 8 else three_large) for n in (1, 2, 4, 8)]
    summary = describe(points, current_per_class=9).summary
    assert summary.endswith("; the classes that would gain most from more examples: birds, cats"), summary


def test_too_few_sizes_are_said_plainly_instead_of_extrapolated():
    X, y = _hard_clusters(per_class=3)
    curve = learning_curve(X, y, logistic_regression_head)
    assert curve.fit is None and curve.projections == []
    assert "needs 3 sizes" in curve.summary
    with pytest.raises(ValueError):
        learning_curve(X[:4], ["a", "b", "b", "b"], logistic_regression_head)
