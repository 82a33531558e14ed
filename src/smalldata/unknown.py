"""Saying "I don't know": when a prediction is answered and when it is `unknown`.

Two cut-offs on the calibrated confidence (the top class's probability), both read from the
model's own held-out predictions on its cross-validation folds:

- the *floor*: inputs less confident than almost every held-out example of a known class look like
  nothing seen in training ("none of these"). It is that confidence's `FLOOR_QUANTILE`, so about
  that share of known inputs is turned away; on by default, off with ``unknown=False``.
- a *threshold* the user gives (``--threshold 0.8``), or the one `train` suggests for a target
  precision: the lowest cut-off at which the held-out answers were right that often.

Why the confidence alone: it needs nothing beyond what the model already computes, for every kind
of head, fine-tuned ones included. It is not the best score measured: on left-out classes the
distance to the nearest class mean did better on texts and worse on images, and the two together
(each ranked against held-out scores) did better on every development and confirmation set, by
0.004-0.049 AUROC (BENCHMARKS.md, "Calibration, unknown inputs and uneven classes"). Using them
together needs the class means in the model folder and the embeddings at prediction: not built.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from smalldata.errors import DataError

UNKNOWN = "unknown"  # the answer below the cut-off; refused as a class name (`check_class_names`)
# The share of held-out known examples the floor turns away. Chosen on the development sets'
# left-out classes (flowers12, clothing10, trec6, agnews): 0.10 kept at least 90% of known test
# inputs answered on each (the model refit on every example is surer than its folds' models).
FLOOR_QUANTILE = 0.10


def shown(probability: float) -> str:
    """A cut-off as printed: two decimals, or four near 1, where two would round 0.9969 up to 1.00
    (a floor that high is common when the classes are far apart)."""
    return f"{probability:.2f}" if probability < 0.99 else f"{probability:.4f}"


def check_threshold(threshold: float | None) -> float | None:
    """`threshold` itself, or a `DataError` that says what is allowed."""
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise DataError(f"a threshold is a probability between 0 and 1 (e.g. 0.8), not {threshold!r}")
    return float(threshold)


def check_class_names(classes) -> None:
    """`unknown` is the answer for "none of these": a class of that name could not be told from it."""
    if UNKNOWN in classes:
        raise DataError(f"a class is named {UNKNOWN!r}, which is what smalldata answers when no class fits: "
                         "rename that class (e.g. 'other') and train again")


@dataclass
class Abstention:
    """The cut-offs a model folder keeps (model.json's "unknown"), and what they did on the folds."""

    floor: float  # calibrated confidence below which the answer is `unknown` (when the floor is on)
    floor_quantile: float
    known_answered: float  # share of held-out known examples at or above the floor
    target_precision: float | None = None
    suggested_threshold: float | None = None  # None: no cut-off reached the target on the folds
    coverage: float | None = None  # share of held-out examples answered at the suggested threshold
    precision: float | None = None  # share of those answers that were right

    def cut_off(self, threshold: float | None = None, *, floor: bool = True) -> float:
        """The confidence an answer needs: the larger of the user's threshold and (when on) the floor."""
        return max(check_threshold(threshold) or 0.0, self.floor if floor else 0.0)

    def sentence(self) -> str:
        said = (f"unknown: answered when the calibrated confidence is at least {shown(self.floor)}; below it the input "
                f"looks like no class seen in training (on the folds {100 * self.known_answered:.0f}% of known "
                f"examples were answered)")
        if self.target_precision is not None:
            said += "; " + self.suggestion()
        return said

    def suggestion(self) -> str:
        if self.suggested_threshold is None:
            return f"no threshold reached {100 * self.target_precision:.0f}% precision on the folds"
        said = (f"for {100 * self.target_precision:.0f}% precision use --threshold {shown(self.suggested_threshold)} "
                f"(on the folds it answered {100 * self.coverage:.0f}%, {100 * self.precision:.0f}% of them right)")
        if self.suggested_threshold <= self.floor:
            said += f"; the floor ({shown(self.floor)}) is higher, so predictions already meet it"
        return said

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> "Abstention":
        known = set(cls.__dataclass_fields__)
        abstention = cls(**{k: v for k, v in saved.items() if k in known})
        for name in ("floor", "suggested_threshold"):
            value = getattr(abstention, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0.0 <= value <= 1.0):
                raise ValueError(f"{name} {value!r} is not a probability")
        return abstention


def answers(proba: np.ndarray, classes, cut_off: float) -> list[str]:
    """The top class of each row, or `UNKNOWN` where its probability is below `cut_off`."""
    proba = np.asarray(proba)
    top = proba.argmax(axis=1)
    return [classes[i] if proba[row, i] >= cut_off else UNKNOWN for row, i in enumerate(top)]


def abstention_from(proba: np.ndarray, truth: np.ndarray, *, target_precision: float | None = None) -> Abstention:
    """The floor and the suggested threshold from held-out calibrated probabilities (`truth`:
    the true class's column per row)."""
    confidence, right = proba.max(axis=1), proba.argmax(axis=1) == truth
    floor = float(np.quantile(confidence, FLOOR_QUANTILE))
    abstention = Abstention(floor=round(floor, 4), floor_quantile=FLOOR_QUANTILE,
                            known_answered=round(float(np.mean(confidence >= floor)), 4),
                            target_precision=check_threshold(target_precision))
    if target_precision is not None:
        for cut in np.unique(confidence):  # ascending: the lowest cut-off that reaches the target
            answered = confidence >= cut
            if right[answered].mean() >= target_precision:
                abstention.suggested_threshold = math.floor(float(cut) * 1e4) / 1e4  # at or below the cut
                abstention.coverage = round(float(answered.mean()), 4)
                abstention.precision = round(float(right[answered].mean()), 4)
                break
    return abstention
