"""What the labels mean: class descriptions, embedded, as prototypes and as a prior.

A user knows what a class is about before giving examples of it ("Sci/Tech=science and technology
news"). The description is embedded with the same sentence encoder as the texts, and then:

- with no examples, a text gets the class whose description it is most similar to (nearest
  description, as in zero-shot classification with sentence embeddings);
- with a few examples, logistic regression is fitted on the examples and on the descriptions, each
  description weighted as ``s`` examples of its class (``prior_strength``, 4 by default): within a
  class of ``k`` examples it carries ``s / (s + k)`` of the weight, a prior that fades as examples
  accumulate. (Blending the nearest-description probabilities with those of logistic regression on
  the examples alone did worse: at 1-4 examples that regression is so unsure that the blend is the
  description vote, whatever the examples say.)

`DescribedHead` follows the scikit-learn contract, so it is cross-validated like every other head
and kept only where it does better; its learned arrays go to safetensors (no pickle).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from smalldata.data import DataError
from smalldata.evaluate import Candidate
from smalldata.head_io import TensorHead, register_head

DESCRIBED_HEAD = "logistic regression + class descriptions"
NAMED_HEAD = "logistic regression + class names"  # the same head, the label names standing in as descriptions
PRIOR_STRENGTH = 4.0  # the description counts as much as 4 examples of its class
SIMILARITY_SCALE = 20.0  # zero-shot: cosine similarities in [-1, 1] -> logits (MiniLM's spread over ~0.1-0.6)


def parse_descriptions(items: Sequence[str] = (), file: str | Path | None = None) -> dict[str, str]:
    """``LABEL=description`` pairs from the command line and/or a file (one pair a line, # comments)."""
    pairs: list[tuple[str, str]] = []
    if file is not None:
        path = Path(file)
        if not path.exists():
            raise DataError(f"{path} does not exist: give a text file with one LABEL=description a line")
        for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                pairs.append(_pair(line, f"{path} line {number}"))
    pairs += [_pair(item, f"--describe {item!r}") for item in items]
    descriptions: dict[str, str] = {}
    for label, text in pairs:
        if label in descriptions and descriptions[label] != text:
            raise DataError(f"class {label!r} is described twice, differently: keep one description per class")
        descriptions[label] = text
    return descriptions


def _pair(item: str, where: str) -> tuple[str, str]:
    label, sep, text = item.partition("=")
    if not sep or not label.strip() or not text.strip():
        raise DataError(f"{where}: expected LABEL=description, e.g. \"Sci/Tech=science and technology news\"")
    return label.strip(), text.strip()


def label_as_text(label: str) -> str:
    """A class name as words, for classes given no description: 'card_arrival' -> 'card arrival',
    'Sci/Tech' -> 'Sci Tech'."""
    return re.sub(r"[_\-/]+", " ", label).strip() or label


def names_as_descriptions(classes: Sequence[str]) -> dict[str, str] | None:
    """Each class's name as words, where the names say something: at least two letters each, and
    no two the same once digits and symbols are dropped ('0'/'1', 'a'/'b', 'class_1'/'class_2' say
    nothing about their classes). None otherwise."""
    letters = [re.sub(r"[^a-z]", "", label.lower()) for label in classes]
    if min(map(len, letters), default=0) < 2 or len(set(letters)) < len(letters):
        return None
    return {label: label_as_text(label) for label in classes}


def complete_descriptions(descriptions: Mapping[str, str], classes: Sequence[str]) -> dict[str, str]:
    """A description for every class: the user's, else the class name itself. Unknown labels are an error."""
    unknown = sorted(set(descriptions) - set(classes))
    if unknown:
        raise DataError(
            f"descriptions given for {', '.join(map(repr, unknown))}, which the data do not have as labels "
            f"(labels: {', '.join(classes)}): check the spelling"
        )
    return {label: descriptions.get(label) or label_as_text(label) for label in classes}


@register_head
class DescribedHead(TensorHead, ClassifierMixin, BaseEstimator):
    """Logistic regression on the examples and on each class's embedded description, weighted as
    `prior_strength` examples; with no examples at all, plain nearest-description matching.

    `prototypes` are the embedded descriptions (one row per label in `prototype_labels`). A class
    with a description but no example can still be predicted. Within a class with ``k`` examples the
    description's share of the weight is ``s / (s + k)``: a prior that fades as examples accumulate.
    """

    KIND = "described-head"  # saved in model.json: never renamed

    def __init__(self, *, prototypes=None, prototype_labels: Sequence[str] = (),
                 prior_strength: float = PRIOR_STRENGTH, scale: float = SIMILARITY_SCALE, C: float = 1.0):
        self.prototypes = prototypes
        self.prototype_labels = prototype_labels
        self.prior_strength = prior_strength
        self.scale = scale
        self.C = C

    def fit(self, X, y):
        labels = np.array([str(label) for label in self.prototype_labels], dtype=object)
        self.zero_shot_ = y is not None and np.asarray(y).size == 0
        if self.zero_shot_ and self.prototypes is None:
            raise ValueError("no examples and no class descriptions: there is nothing to fit")
        if self.zero_shot_:  # no examples (scikit-learn's checks refuse an empty X): the descriptions alone
            prototypes = np.asarray(self.prototypes, dtype=np.float32)
            self.n_features_in_ = prototypes.shape[1]
            self.classes_ = np.array(sorted(set(labels.tolist())), dtype=object)
            # Nearest description: logits are scaled cosine similarities to the described classes.
            order = np.searchsorted(self.classes_, labels)
            self.coef_ = np.zeros((len(self.classes_), prototypes.shape[1]), np.float32)
            self.coef_[order] = self.scale * _unit(prototypes)
            self.intercept_ = np.zeros(len(self.classes_), np.float32)
            return self
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        # No descriptions: logistic regression on the examples alone (what the prior fades to).
        prototypes = (np.zeros((0, X.shape[1]), np.float32) if self.prototypes is None
                      else np.asarray(self.prototypes, dtype=np.float32))
        if len(labels):
            y = np.asarray(y, dtype=object)
        self.classes_ = np.array(sorted(set(labels.tolist()) | set(y.tolist())), dtype=object if len(labels) else y.dtype)
        weights = np.concatenate([np.ones(len(y)), np.full(len(labels), self.prior_strength)])
        lr = LogisticRegression(C=self.C, max_iter=3000).fit(
            np.vstack([X, prototypes]), np.concatenate([y, labels]) if len(labels) else y, sample_weight=weights)
        coef, intercept = lr.coef_, lr.intercept_
        if coef.shape[0] == 1:  # binary: sklearn keeps one row; softmax over (0, z) is its sigmoid
            coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.array([0.0, intercept[0]])
        self.coef_, self.intercept_ = coef.astype(np.float32), intercept.astype(np.float32)
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        if self.zero_shot_:
            X = _unit(X)
        return _softmax(X @ self.coef_.T + self.intercept_)

    def predict(self, X) -> np.ndarray:
        best = self.predict_proba(X).argmax(axis=1)
        return self.classes_[best]

    # Saving without pickle: parameters to JSON, learned arrays to safetensors.
    def state(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef_, "intercept": self.intercept_,
                "zero_shot": np.array([self.zero_shot_], np.uint8)}

    def saved_params(self) -> dict:
        """The parameters worth writing to model.json (the descriptions' effect is in the state)."""
        return {"prior_strength": self.prior_strength, "scale": self.scale, "C": self.C}

    @staticmethod
    def state_shapes(n_classes: int, n_features: int) -> dict[str, tuple[int, ...]]:
        """The arrays `state` holds, by name and shape (a saved head is checked against it): a row
        per class, two rows for two classes too (see `fit`)."""
        return {"coef": (n_classes, n_features), "intercept": (n_classes,), "zero_shot": (1,)}

    @classmethod
    def from_state(cls, params: dict, classes: list[str], state: dict[str, np.ndarray]) -> "DescribedHead":
        head = cls(**params)
        head.classes_ = np.array(classes, dtype=object)
        head.coef_, head.intercept_ = state["coef"], state["intercept"]
        head.n_features_in_ = state["coef"].shape[1]
        head.zero_shot_ = bool(state["zero_shot"][0])
        return head


def embedded_descriptions(descriptions: Mapping[str, str], classes: Sequence[str], backbone: str):
    """(labels, one embedded description per label) for every class (named when not described)."""
    from smalldata.features import embed

    full = complete_descriptions(descriptions, classes)
    labels = list(full)
    return labels, embed([full[label] for label in labels], backbone)


def described_candidate(descriptions: Mapping[str, str], classes: Sequence[str], backbone: str) -> Candidate:
    labels, prototypes = embedded_descriptions(descriptions, classes, backbone)
    return Candidate(DESCRIBED_HEAD, backbone,
                     lambda: DescribedHead(prototypes=prototypes, prototype_labels=labels),
                     f"logistic regression on {backbone} embeddings of the examples and of each class's description, "
                     f"weighted as {PRIOR_STRENGTH:g} examples")


def named_candidate(names: Mapping[str, str], classes: Sequence[str], backbone: str, C: float) -> Candidate:
    """The described head with the class names as descriptions (`names_as_descriptions`), at the
    core logistic regression's `C`. At C=1 (the user's descriptions, chosen at 1-4 examples a class)
    it lost 1.3-3.0 points on banking77 and clinc150 at 8-16 a class, where C=10 did not
    (BENCHMARKS.md, "The automatic choice")."""
    labels, prototypes = embedded_descriptions(names, classes, backbone)
    return Candidate(NAMED_HEAD, backbone,
                     lambda: DescribedHead(prototypes=prototypes, prototype_labels=labels, C=C),
                     f"logistic regression (C={C:g}) on {backbone} embeddings of the examples and of each class's "
                     f"name, weighted as {PRIOR_STRENGTH:g} examples")


def _unit(X: np.ndarray) -> np.ndarray:
    return X / (np.linalg.norm(X, axis=1, keepdims=True) + 1e-8)


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)
