"""Small heads on frozen embeddings.

- logistic regression (scikit-learn);
- a linear layer trained with cross-entropy, with the cosine loss of Barz & Denzler (2020,
  "Deep Learning on Small Datasets without Pre-Training using Cosine Loss"), or with both.

`LinearHead` follows the scikit-learn contract (parameters in `__init__`, state ending in `_`,
inputs checked as scikit-learn's own estimators check them), so `clone` and cross-validation work
on it like on any estimator, and it passes scikit-learn's `check_estimator` (tests/test_sklearn_api.py).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from smalldata.head_io import TensorHead, register_head

LOSSES = ("cross-entropy", "cosine", "cosine+cross-entropy")
COSINE_WEIGHT_OF_CROSS_ENTROPY = 0.1  # lambda in Barz & Denzler's combined loss
COSINE_SCALE = 16.0  # turns cosine similarities in [-1, 1] into logits for class probabilities


def logistic_regression_head() -> object:
    # Plain L2-regularised logistic regression on the raw embeddings: standardising or L2-normalising
    # first was no better on average over flowers12, clothing10, sst2, trec6 and agnews.
    return LogisticRegression(C=1.0, max_iter=3000)


@register_head
class LinearHead(TensorHead, ClassifierMixin, BaseEstimator):
    """A linear layer on unit-length embeddings, trained full-batch with AdamW.

    loss="cosine" trains ``1 - cos(W x + b, one_hot(y))``; "cosine+cross-entropy" adds
    ``0.1 * cross-entropy`` of a second linear layer on the L2-normalised output, which then
    gives the probabilities, as in the paper.
    """

    KIND = "linear-head"  # saved in model.json: never renamed

    def __init__(self, *, loss: str = "cross-entropy", epochs: int = 200, lr: float = 1e-2,
                 weight_decay: float = 1e-2, random_state: int = 0):
        self.loss = loss
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.random_state = random_state

    def fit(self, X, y):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, not {self.loss!r}")
        X, y = validate_data(self, X, y, dtype=np.float32)  # finite, 2-D, as many rows as labels
        check_classification_targets(y)
        self.classes_, targets = np.unique(y, return_inverse=True)
        generator = torch.Generator().manual_seed(self.random_state)
        layers = self._layers(X.shape[1], len(self.classes_), generator)
        inputs = torch.from_numpy(_unit_length(X))
        target = torch.from_numpy(targets.astype(np.int64))
        optimizer = torch.optim.AdamW([p for layer in layers for p in layer.parameters()],
                                      lr=self.lr, weight_decay=self.weight_decay)
        self.loss_curve_ = []  # training loss per epoch, for the report's training curve
        for _ in range(self.epochs):  # full batch: a few-shot training set fits in one
            optimizer.zero_grad()
            loss = self._loss(layers, inputs, target)
            loss.backward()
            optimizer.step()
            self.loss_curve_.append(float(loss.detach()))
        self.tensors_ = {name: p.detach().numpy().copy()
                         for i, layer in enumerate(layers) for name, p in _named(layer, i)}
        return self

    def _layers(self, dim: int, n_classes: int, generator) -> list[torch.nn.Linear]:
        layers = [torch.nn.Linear(dim, n_classes)]
        if self.loss == "cosine+cross-entropy":
            layers.append(torch.nn.Linear(n_classes, n_classes))
        for layer in layers:
            torch.nn.init.normal_(layer.weight, std=0.01, generator=generator)
            torch.nn.init.zeros_(layer.bias)
        return layers

    def _loss(self, layers, inputs, target):
        output = layers[0](inputs)
        if self.loss == "cross-entropy":
            return torch.nn.functional.cross_entropy(output, target)
        one_hot = torch.nn.functional.one_hot(target, output.shape[1]).float()
        cosine = 1 - torch.nn.functional.cosine_similarity(output, one_hot).mean()
        if self.loss == "cosine":
            return cosine
        logits = layers[1](torch.nn.functional.normalize(output, dim=1))
        return cosine + COSINE_WEIGHT_OF_CROSS_ENTROPY * torch.nn.functional.cross_entropy(logits, target)

    def decision_function(self, X) -> np.ndarray:
        """One score per class; with two classes, scikit-learn's one score (positive: `classes_[1]`)."""
        logits = self._logits(X)
        return logits[:, 1] - logits[:, 0] if len(self.classes_) == 2 else logits

    def _logits(self, X) -> np.ndarray:
        check_is_fitted(self)
        x = _unit_length(validate_data(self, X, dtype=np.float32, reset=False))
        output = x @ self.tensors_["0.weight"].T + self.tensors_["0.bias"]
        if self.loss == "cross-entropy":
            return output
        normalised = output / (np.linalg.norm(output, axis=1, keepdims=True) + 1e-8)
        if self.loss == "cosine":
            return COSINE_SCALE * normalised
        return normalised @ self.tensors_["1.weight"].T + self.tensors_["1.bias"]

    def predict_proba(self, X) -> np.ndarray:
        logits = self._logits(X)
        logits = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        best = np.argmax(self._logits(X), axis=1)  # first: unfitted, it raises NotFittedError
        return self.classes_[best]

    # Saving without pickle: the parameters go to JSON, the learned arrays to safetensors.
    def state(self) -> dict[str, np.ndarray]:
        return dict(self.tensors_)

    def state_shapes(self, n_classes: int, n_features: int) -> dict[str, tuple[int, ...]]:
        """The arrays `state` holds for these parameters, by name and shape (a saved head is checked against it)."""
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, not {self.loss!r}")
        shapes = {"0.weight": (n_classes, n_features), "0.bias": (n_classes,)}
        if self.loss == "cosine+cross-entropy":
            shapes |= {"1.weight": (n_classes, n_classes), "1.bias": (n_classes,)}
        return shapes

    @classmethod
    def from_state(cls, params: dict, classes: list[str], state: dict[str, np.ndarray]) -> "LinearHead":
        head = cls(**params)
        head.classes_ = np.array(classes)
        head.tensors_ = dict(state)
        head.n_features_in_ = state["0.weight"].shape[1]
        return head


def _unit_length(X: np.ndarray) -> np.ndarray:
    # Unit-length inputs beat standardised ones for every loss here (flowers12, clothing10, trec6, agnews).
    return X / (np.linalg.norm(X, axis=1, keepdims=True) + 1e-8)


def _named(layer: torch.nn.Linear, index: int):
    yield f"{index}.weight", layer.weight
    yield f"{index}.bias", layer.bias
