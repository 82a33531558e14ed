"""ensemble.py: the average of logistic regressions, one per backbone."""

import numpy as np
import pytest


def test_the_average_of_logistic_regressions_is_the_mean_of_each_backbones_own():
    from sklearn.linear_model import LogisticRegression

    from smalldata.ensemble import AveragedLogisticRegression

    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b", "c"], 10)
    X = np.hstack([rng.normal(size=(30, 4)) + (y == "a")[:, None], rng.normal(size=(30, 6)) + (y == "b")[:, None]])
    averaged = AveragedLogisticRegression(widths=(4, 6)).fit(X, y)
    alone = [LogisticRegression(max_iter=3000).fit(X[:, :4], y), LogisticRegression(max_iter=3000).fit(X[:, 4:], y)]
    expected = (alone[0].predict_proba(X[:, :4]) + alone[1].predict_proba(X[:, 4:])) / 2
    assert np.allclose(averaged.predict_proba(X), expected) and list(averaged.classes_) == ["a", "b", "c"]
    restored = AveragedLogisticRegression.from_state(averaged.get_params(), list(averaged.classes_), averaged.state())
    assert np.allclose(restored.predict_proba(X), expected)
    with pytest.raises(ValueError, match="expected 10 columns"):
        averaged.predict_proba(X[:, :8])
    # what a saved head's arrays must be (Model.load refuses others before from_state sees them)
    assert {name: array.shape for name, array in averaged.state().items()} == averaged.state_shapes(3, 10)
    with pytest.raises(ValueError, match="do not split"):
        AveragedLogisticRegression(widths=(4, 5)).state_shapes(3, 10)
