"""Saying "I don't know": when a prediction is answered and when it is `unknown`.

Two cut-offs, both read from the model's own held-out predictions on its cross-validation folds:

- the *floor*: inputs less familiar than almost every held-out example of a known class look like
  nothing seen in training ("none of these"). It is that score's `FLOOR_QUANTILE`, so about that
  share of known inputs is turned away; on by default, off with ``unknown=False``. The score is the
  input's familiarity (`smalldata.familiarity`: the calibrated top probability together with the
  similarity to the nearest class mean) where the model's head reads embeddings, and the calibrated
  top probability alone where it reads raw inputs (the tf-idf baseline, fine-tuned networks) or
  the folder is from before familiarity.
- a *threshold* the user gives (``--threshold 0.8``), or the one `train` suggests for a target
  precision: the lowest calibrated probability at which the held-out answers were right that often.

Why familiarity where it can: on classes left out of the training data it told them apart better
than the probability alone on every development and confirmation set (BENCHMARKS.md,
"Calibration, unknown inputs and uneven classes"). The probability floor is still saved beside it:
a runtime without the embeddings (an exported ONNX graph) can apply that one.
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
class Scored:
    """What a model says about each input: its calibrated probabilities, and (where the model has
    one, `smalldata.familiarity`) how familiar the input looks, in [0, 1]."""

    proba: np.ndarray
    familiarity: np.ndarray | None = None


@dataclass(frozen=True)
class CutOff:
    """What an answer needs in one call: a calibrated top probability (the user's threshold; in a
    folder from before familiarity, the floor too), and a familiarity (None: not applied)."""

    probability: float = 0.0
    familiarity: float | None = None

    def said(self) -> str:
        """The cut-off in words, e.g. for `evaluate`'s output."""
        parts = [f"probability {shown(self.probability)}"] if self.probability > 0 or self.familiarity is None else []
        if self.familiarity is not None:
            parts.append(f"familiarity {self.familiarity:.2f}")
        return " and ".join(parts)


@dataclass
class Abstention:
    """The cut-offs a model folder keeps (model.json's "unknown"), and what they did on the folds."""

    floor: float  # calibrated confidence below which the answer is `unknown` (when the floor is on and no familiarity)
    floor_quantile: float
    known_answered: float  # share of held-out known examples at or above the floor
    target_precision: float | None = None
    suggested_threshold: float | None = None  # None: no cut-off reached the target on the folds
    coverage: float | None = None  # share of held-out examples answered at the suggested threshold
    precision: float | None = None  # share of those answers that were right
    familiarity_floor: float | None = None  # familiarity below which the answer is `unknown` (None: no embeddings)
    familiarity_known_answered: float | None = None  # share of held-out known examples at or above it

    def cut_off(self, threshold: float | None = None, *, floor: bool = True) -> CutOff:
        """What an answer needs: the user's threshold, and (when on) the familiarity floor, or the
        probability floor where the model has no familiarity."""
        threshold = check_threshold(threshold) or 0.0
        if not floor:
            return CutOff(threshold)
        if self.familiarity_floor is not None:
            return CutOff(threshold, self.familiarity_floor)
        return CutOff(max(threshold, self.floor))

    def sentence(self) -> str:
        if self.familiarity_floor is not None:
            said = (f"unknown: an input whose familiarity (its probability and its similarity to the nearest class, "
                    f"ranked among the training examples' held-out ones) is under {self.familiarity_floor:.2f} is "
                    f"answered 'unknown', as it looks like no class seen in training (on the folds "
                    f"{100 * self.familiarity_known_answered:.0f}% of known examples were at or above it)")
        else:
            said = (f"unknown: an input whose calibrated confidence is under {shown(self.floor)} is answered 'unknown', "
                    f"as it looks like no class seen in training (on the folds {100 * self.known_answered:.0f}% of "
                    f"known examples were at or above it)")
        if self.target_precision is not None:
            said += "; " + self.suggestion()
        return said

    def suggestion(self) -> str:
        if self.suggested_threshold is None:
            return f"no threshold reached {100 * self.target_precision:.0f}% precision on the folds"
        said = (f"for {100 * self.target_precision:.0f}% precision use --threshold {shown(self.suggested_threshold)} "
                f"(on the folds it answered {100 * self.coverage:.0f}%, {100 * self.precision:.0f}% of them right)")
        if self.familiarity_floor is None and self.suggested_threshold <= self.floor:
            said += f"; the floor ({shown(self.floor)}) is higher, so predictions already meet it"
        return said

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> "Abstention":
        known = set(cls.__dataclass_fields__)
        abstention = cls(**{k: v for k, v in saved.items() if k in known})
        for name in ("floor", "suggested_threshold", "familiarity_floor", "familiarity_known_answered"):
            value = getattr(abstention, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0.0 <= value <= 1.0):
                raise ValueError(f"{name} {value!r} is not between 0 and 1")
        if (abstention.familiarity_floor is None) != (abstention.familiarity_known_answered is None):
            raise ValueError("familiarity_floor and familiarity_known_answered come together")
        return abstention


UNFAMILIAR, BELOW_THRESHOLD = "unfamiliar", "below threshold"  # why an answer is `unknown`


def verdicts(scored: Scored, classes, cut_off: CutOff) -> list[tuple[str, str | None]]:
    """Each input's answer and, where it is `UNKNOWN`, why: `UNFAMILIAR` (below the familiarity
    floor; said first, as the stronger reason) or `BELOW_THRESHOLD` (no class reached the
    probability cut-off)."""
    proba = np.asarray(scored.proba)
    if cut_off.familiarity is not None and scored.familiarity is None:
        raise ValueError("a familiarity cut-off needs the inputs' familiarity (Model.scored)")
    found = []
    for row, i in enumerate(proba.argmax(axis=1)):
        if cut_off.familiarity is not None and scored.familiarity[row] < cut_off.familiarity:
            found.append((UNKNOWN, UNFAMILIAR))
        elif proba[row, i] < cut_off.probability:
            found.append((UNKNOWN, BELOW_THRESHOLD))
        else:
            found.append((classes[i], None))
    return found


def answer_records(scored: Scored, classes, cut_off: CutOff) -> list[dict]:
    """One answer per input as the CLI's JSON and the API give it: the label, why it is `unknown`
    (`verdicts`), the familiarity (None without one), and every class's probability, most probable
    first."""
    records = []
    for at, (row, (label, why)) in enumerate(zip(np.asarray(scored.proba), verdicts(scored, classes, cut_off))):
        records.append({"label": label, "unknown_because": why,
                        "familiarity": None if scored.familiarity is None else round(float(scored.familiarity[at]), 4),
                        "probabilities": {classes[i]: round(float(row[i]), 4) for i in np.argsort(row)[::-1]}})
    return records


def answers(scored: Scored, classes, cut_off: CutOff) -> list[str]:
    """The top class of each input, or `UNKNOWN` where it misses the cut-off (`verdicts`)."""
    return [label for label, _ in verdicts(scored, classes, cut_off)]


def abstention_from(proba: np.ndarray, truth: np.ndarray, *, target_precision: float | None = None,
                    familiarity: np.ndarray | None = None) -> Abstention:
    """The floors and the suggested threshold from held-out calibrated probabilities (`truth`:
    the true class's column per row) and, where the model has it, the same rows' familiarity."""
    confidence, right = proba.max(axis=1), proba.argmax(axis=1) == truth
    floor = float(np.quantile(confidence, FLOOR_QUANTILE))
    abstention = Abstention(floor=round(floor, 4), floor_quantile=FLOOR_QUANTILE,
                            known_answered=round(float(np.mean(confidence >= floor)), 4),
                            target_precision=check_threshold(target_precision))
    if familiarity is not None:
        # Rounded down: the held-out row at the quantile stays answered.
        abstention.familiarity_floor = math.floor(float(np.quantile(familiarity, FLOOR_QUANTILE)) * 1e4) / 1e4
        abstention.familiarity_known_answered = round(float(np.mean(familiarity >= abstention.familiarity_floor)), 4)
    if target_precision is not None:
        for cut in np.unique(confidence):  # ascending: the lowest cut-off that reaches the target
            answered = confidence >= cut
            if right[answered].mean() >= target_precision:
                abstention.suggested_threshold = math.floor(float(cut) * 1e4) / 1e4  # at or below the cut
                abstention.coverage = round(float(answered.mean()), 4)
                abstention.precision = round(float(right[answered].mean()), 4)
                break
    return abstention
