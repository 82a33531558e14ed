"""Averaging instead of choosing: logistic regression on each backbone's embeddings, probabilities averaged.

With 20-100 examples the folds cannot tell near-equal candidates apart, and choosing one of them
adds the folds' noise to the result. Averaging the probabilities of logistic regression on every
installed backbone of the modality uses what each backbone knows; on the development sets it
beat logistic regression on the stronger backbone alone by more than choosing between them did
(BENCHMARKS.md, "The automatic choice").

The input is the backbones' embeddings side by side (a `PairedBackbone`); `widths` says how many
columns each backbone gave. The estimator follows the scikit-learn contract, so `clone` and the
shared folds work on it, and it saves as plain arrays (safetensors), never pickled.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from smalldata.head_io import TensorHead, register_head


@register_head
class AveragedLogisticRegression(TensorHead, ClassifierMixin, BaseEstimator):
    """Logistic regression on each block of columns alone; `predict_proba` averages them."""

    KIND = "averaged-logistic-regression"  # saved in model.json: never renamed

    def saved_params(self) -> dict:
        return {**self.get_params(), "widths": list(self.widths)}

    def __init__(self, *, widths: tuple[int, ...] = (), C: float = 1.0, max_iter: int = 3000,
                 class_weight: str | None = None):
        self.widths = widths
        self.C = C
        self.max_iter = max_iter
        self.class_weight = class_weight  # "balanced" for uneven classes, as scikit-learn's

    def _blocks(self, X) -> list[np.ndarray]:
        X = np.asarray(X)
        if sum(self.widths) != X.shape[1]:
            raise ValueError(f"expected {sum(self.widths)} columns (blocks of {list(self.widths)}), got {X.shape[1]}")
        ends = np.cumsum(self.widths)
        return [X[:, end - width:end] for width, end in zip(self.widths, ends)]

    def fit(self, X, y) -> "AveragedLogisticRegression":
        self.models_ = [LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight=self.class_weight).fit(block, y)
                        for block in self._blocks(X)]
        self.classes_ = self.models_[0].classes_
        return self

    def predict_proba(self, X) -> np.ndarray:
        return np.mean([model.predict_proba(block) for model, block in zip(self.models_, self._blocks(X))], axis=0)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    # ---- saving: plain arrays -----------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        arrays = {}
        for i, model in enumerate(self.models_):
            arrays[f"coef_{i}"], arrays[f"intercept_{i}"] = model.coef_, model.intercept_
        return arrays

    def state_shapes(self, n_classes: int, n_features: int) -> dict[str, tuple[int, ...]]:
        """The arrays `state` holds for these widths, by name and shape (a saved head is checked against it)."""
        widths = list(self.widths) if isinstance(self.widths, (list, tuple)) else None
        if not widths or not all(type(width) is int and width > 0 for width in widths) or sum(widths) != n_features:
            raise ValueError(f"widths {self.widths!r} do not split the backbone's {n_features} columns")
        rows = 1 if n_classes == 2 else n_classes  # scikit-learn keeps one row for two classes
        shapes = {}
        for i, width in enumerate(widths):
            shapes[f"coef_{i}"], shapes[f"intercept_{i}"] = (rows, width), (rows,)
        return shapes

    @classmethod
    def from_state(cls, params: dict, classes: list, state: dict[str, np.ndarray]) -> "AveragedLogisticRegression":
        """The head from arrays of the shapes `state_shapes` gives (`Model.load` checks them first)."""
        estimator = cls(**{**params, "widths": tuple(params.get("widths", ()))})
        estimator.classes_ = np.asarray(classes)
        estimator.models_ = []
        for i in range(len(estimator.widths)):
            coef, intercept = state[f"coef_{i}"], state[f"intercept_{i}"]
            model = LogisticRegression(C=estimator.C)
            model.coef_, model.intercept_, model.classes_ = coef, intercept, estimator.classes_
            estimator.models_.append(model)
        return estimator
