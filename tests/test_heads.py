"""heads.py: the torch-trained linear head, each loss, scikit-learn's contract."""

import numpy as np
import pytest
from sklearn.base import clone

from smalldata.heads import LOSSES, LinearHead
from tests.conftest import three_clusters


@pytest.mark.parametrize("loss", LOSSES)
def test_linear_head_learns_each_loss_and_survives_clone(loss):
    X, y = three_clusters()
    X_test, y_test = three_clusters(seed=0)[0] + np.random.default_rng(1).normal(size=X.shape) * 0.1, y
    head = clone(LinearHead(loss=loss)).fit(X, y)
    assert (head.predict(X_test) == y_test).mean() > 0.9
    proba = head.predict_proba(X_test)
    assert np.allclose(proba.sum(axis=1), 1) and proba.shape == (len(y), 3)
    restored = LinearHead.from_state(head.get_params(), head.classes_.tolist(), head.state())
    assert np.allclose(restored.predict_proba(X_test), proba)


def test_linear_head_rejects_unknown_loss():
    with pytest.raises(ValueError, match="loss must be one of"):
        LinearHead(loss="hinge").fit(*three_clusters())
