"""What the labels mean: class descriptions, embedded, as prototypes and as a prior.

A user knows what a class is about before giving examples of it ("Sci/Tech=science and technology
news"). The description is embedded with the same sentence encoder as the texts, and then:

- with no examples, a text gets the class whose description it is most similar to (nearest
  description, as in zero-shot classification with sentence embeddings);
- with a few examples, the answer blends that nearest-description vote with logistic regression on
  the examples. The description's weight is ``s / (s + k)`` for ``k`` examples per class: a prior
  worth ``s`` examples (``prior_strength``, 4 by default), which fades as examples accumulate.

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

from smalldata.data import DataError
from smalldata.evaluate import Candidate

DESCRIBED_HEAD = "class descriptions + logistic regression"
PRIOR_STRENGTH = 4.0  # the description counts as much as 4 examples of its class
SIMILARITY_SCALE = 20.0  # cosine similarities in [-1, 1] -> logits; MiniLM's cosines spread over ~0.1-0.6


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
    """A class name as words, for classes given no description: 'card_arrival' -> 'card arrival'."""
    return re.sub(r"[_\-]+", " ", label).strip() or label


def complete_descriptions(descriptions: Mapping[str, str], classes: Sequence[str]) -> dict[str, str]:
    """A description for every class: the user's, else the class name itself. Unknown labels are an error."""
    unknown = sorted(set(descriptions) - set(classes))
    if unknown:
        raise DataError(
            f"descriptions given for {', '.join(map(repr, unknown))}, which the data do not have as labels "
            f"(labels: {', '.join(classes)}): check the spelling"
        )
    return {label: descriptions.get(label) or label_as_text(label) for label in classes}


class DescribedHead(ClassifierMixin, BaseEstimator):
    """Logistic regression on the examples, blended with nearest-description matching.

    `prototypes` are the embedded descriptions (one row per label in `prototype_labels`). Classes
    with a description but no example can still be predicted; with no examples at all the head is
    plain nearest-description matching.
    """

    def __init__(self, *, prototypes=None, prototype_labels: Sequence[str] = (),
                 prior_strength: float = PRIOR_STRENGTH, scale: float = SIMILARITY_SCALE, C: float = 1.0):
        self.prototypes = prototypes
        self.prototype_labels = prototype_labels
        self.prior_strength = prior_strength
        self.scale = scale
        self.C = C

    def fit(self, X, y):
        X = np.asarray(X, dtype=np.float32).reshape(len(y), -1) if len(y) else np.zeros((0, self._dim()), np.float32)
        y = np.asarray(y, dtype=object)
        labels = [str(label) for label in self.prototype_labels]
        self.classes_ = np.array(sorted(set(labels) | set(y.tolist())), dtype=object)
        described = {label: row for label, row in zip(labels, _unit(np.asarray(self.prototypes, np.float32)))}
        dim = self._dim()
        # A class without a description gets a zero prototype: the prior then says nothing about it.
        self.prototypes_ = np.stack([described.get(c, np.zeros(dim, np.float32)) for c in self.classes_])
        per_class = len(y) / len(self.classes_)
        self.prior_weight_ = float(self.prior_strength / (self.prior_strength + per_class))
        # Logistic regression needs two classes with examples; below that, descriptions only.
        self.coef_ = np.zeros((len(self.classes_), dim), np.float32)
        self.intercept_ = np.zeros(len(self.classes_), np.float32)
        self.has_examples_ = np.zeros(len(self.classes_), dtype=bool)
        if len(set(y.tolist())) >= 2:
            lr = LogisticRegression(C=self.C, max_iter=3000).fit(X, y)
            rows = np.searchsorted(self.classes_, lr.classes_)
            coef, intercept = lr.coef_, lr.intercept_
            if coef.shape[0] == 1:  # binary: sklearn keeps one row; softmax over (0, z) is its sigmoid
                coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.array([0.0, intercept[0]])
            self.coef_[rows], self.intercept_[rows] = coef, intercept
            self.has_examples_[rows] = True
        else:
            self.prior_weight_ = 1.0
        return self

    def _dim(self) -> int:
        return int(np.asarray(self.prototypes).shape[1])

    def predict_proba(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        prior = _softmax(self.scale * (_unit(X) @ self.prototypes_.T))
        if self.prior_weight_ >= 1.0:
            return prior
        logits = X @ self.coef_.T + self.intercept_
        logits[:, ~self.has_examples_] = -np.inf  # classes seen only through their description
        return self.prior_weight_ * prior + (1 - self.prior_weight_) * _softmax(logits)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    # Saving without pickle: parameters to JSON, learned arrays to safetensors.
    def state(self) -> dict[str, np.ndarray]:
        return {"prototypes": self.prototypes_, "coef": self.coef_, "intercept": self.intercept_,
                "has_examples": self.has_examples_.astype(np.uint8),
                "prior_weight": np.array([self.prior_weight_], np.float32)}

    def saved_params(self) -> dict:
        """The parameters worth writing to model.json (the prototypes themselves are in the state)."""
        return {"prior_strength": self.prior_strength, "scale": self.scale, "C": self.C}

    @classmethod
    def from_state(cls, params: dict, classes: list[str], state: dict[str, np.ndarray]) -> "DescribedHead":
        head = cls(**params)
        head.classes_ = np.array(classes, dtype=object)
        head.prototypes_ = state["prototypes"]
        head.coef_, head.intercept_ = state["coef"], state["intercept"]
        head.has_examples_ = state["has_examples"].astype(bool)
        head.prior_weight_ = float(state["prior_weight"][0])
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
                     f"logistic regression on {backbone} embeddings blended with nearest class description; "
                     f"the description weighs as much as {PRIOR_STRENGTH:g} examples")


def zero_shot_model(descriptions: Mapping[str, str], *, backbone: str | None = None):
    """A text classifier from class descriptions alone (at least 2 classes): nearest description."""
    from smalldata.backbones import DEFAULT_BACKBONE, get_backbone
    from smalldata.model import Model

    backbone = backbone or DEFAULT_BACKBONE["text"]
    if get_backbone(backbone).modality != "text":
        raise DataError(f"backbone {backbone!r} is for images; descriptions need a text encoder")
    if len(descriptions) < 2:
        raise DataError("a classifier needs at least 2 classes: describe another class")
    labels, prototypes = embedded_descriptions(descriptions, sorted(descriptions), backbone)
    head = DescribedHead(prototypes=prototypes, prototype_labels=labels).fit(np.zeros((0, prototypes.shape[1])), [])
    return Model(classes=labels, modality="text", features=backbone, head_name=DESCRIBED_HEAD, estimator=head,
                 data={"n_examples": 0, "descriptions": dict(descriptions)})


def _unit(X: np.ndarray) -> np.ndarray:
    return X / (np.linalg.norm(X, axis=1, keepdims=True) + 1e-8)


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)
