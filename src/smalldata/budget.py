"""Fine-tune only when it pays, and only when the time budget allows it.

After the frozen candidates are cross-validated, the fine-tune candidate is timed on one training
step, its cost per fold extrapolated, and it is scored on as many of the frozen candidates' own
folds as the budget leaves room for (all of them when it can; the first few otherwise, and the
decision says so). It is kept only when its paired per-fold gain over the frozen choice is larger
than one standard error of those differences: a gain of one image on two folds is luck, not a
reason to ship a model 20 times as costly to train.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.base import clone
from sklearn.metrics import accuracy_score

from smalldata.evaluate import Candidate, CandidateScore, Folds, take_rows
from smalldata.progress import Progress

MODES = ("auto", "always", "never")
MIN_FOLDS = 3  # fewer paired differences give no usable standard error
DEFAULT_CLI_BUDGET = "5m"
_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_budget(value: str | float | int | None) -> float | None:
    """Seconds from "90s", "5m", "1.5h" or a bare number of seconds; None stays None."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(value).lower())
    if not match:
        raise ValueError(f"a budget looks like 90s, 5m or 1h, not {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


@dataclass
class FineTuneDecision:
    """What was tried, on which folds, what it cost, and why it was kept or not."""

    candidate: str
    mode: str
    kept: bool
    reason: str
    folds_used: int = 0
    folds_available: int = 0
    fold_accuracies: list[float] = field(default_factory=list)
    frozen_fold_accuracies: list[float] = field(default_factory=list)
    frozen_name: str = ""
    mean_gain: float | None = None
    gain_standard_error: float | None = None
    estimated_fold_seconds: float | None = None
    measured_fold_seconds: list[float] = field(default_factory=list)

    @property
    def protocol(self) -> str:
        if self.folds_used == self.folds_available:
            return f"all {self.folds_available} cross-validation folds of the frozen candidates"
        return (f"the first {self.folds_used} of the frozen candidates' {self.folds_available} folds "
                "(the budget allowed no more)")

    def to_dict(self) -> dict:
        return {**asdict(self), "protocol": self.protocol if self.folds_used else None}


def paired_gain(tuned: list[float], frozen: list[float]) -> tuple[float, float]:
    """Mean and standard error of the per-fold accuracy differences (tuned minus frozen)."""
    diffs = np.asarray(tuned) - np.asarray(frozen[: len(tuned)])
    error = float(diffs.std(ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else float("inf")
    return float(diffs.mean()), error


def consider(
    candidate: Candidate,
    X,
    y: np.ndarray,
    folds: Folds,
    frozen: CandidateScore,
    *,
    mode: str,
    seconds_left: float,
    progress: Progress,
) -> FineTuneDecision:
    """Score `candidate` on the folds that fit in `seconds_left` (keeping room for the refit on all
    examples) and decide whether it replaces the frozen choice."""
    if mode not in MODES:
        raise ValueError(f"--finetune must be one of {', '.join(MODES)}, not {mode!r}")
    estimator = candidate.make_estimator()
    n_train = len(folds.splits[0][0])
    step_seconds = estimator.time_step(take_rows(X, folds.splits[0][0]), y[folds.splits[0][0]])
    fold_seconds = estimator.estimated_fit_seconds(step_seconds, n_train)
    refit_seconds = estimator.estimated_fit_seconds(step_seconds, len(y))
    decision = FineTuneDecision(candidate.name, mode, kept=False, reason="", folds_available=len(folds.splits),
                                frozen_name=frozen.name, estimated_fold_seconds=round(fold_seconds, 1))
    deadline = time.perf_counter() + seconds_left - refit_seconds
    affordable = int(max(0.0, deadline - time.perf_counter()) // fold_seconds)
    progress.log(f"fine-tuning costs about {fold_seconds:.0f} s per fold and {refit_seconds:.0f} s on all "
                 f"examples; {seconds_left:.0f} s left allow {min(affordable, len(folds.splits))} of "
                 f"{len(folds.splits)} folds")
    if mode == "auto" and affordable < MIN_FOLDS:
        decision.reason = (f"not tried: the budget leaves room for {affordable} folds of fine-tuning "
                           f"(about {fold_seconds:.0f} s each), and at least {MIN_FOLDS} are needed to "
                           "tell a gain from luck; give a larger --budget")
        return decision
    task = progress.task(f"cross-validating {candidate.name}", min(affordable, len(folds.splits)))
    for train, test in folds.splits:
        # Stop when the next fold, at the pace measured so far, would overrun the budget.
        pace = max(decision.measured_fold_seconds, default=fold_seconds)
        if time.perf_counter() + pace > deadline and decision.folds_used >= (MIN_FOLDS if mode == "auto" else 0):
            break
        start = time.perf_counter()
        fitted = clone(estimator).fit(take_rows(X, train), y[train])
        accuracy = float(accuracy_score(y[test], fitted.predict(take_rows(X, test))))
        decision.fold_accuracies.append(accuracy)
        decision.measured_fold_seconds.append(round(time.perf_counter() - start, 1))
        decision.folds_used += 1
        task.advance()
    task.done()
    decision.frozen_fold_accuracies = frozen.fold_accuracies[: decision.folds_used]
    return _decide(decision)


def _decide(decision: FineTuneDecision) -> FineTuneDecision:
    if decision.folds_used == 0:
        decision.kept = decision.mode == "always"
        decision.reason = "kept without evaluation (--finetune always; the budget allowed no fold)"
        return decision
    gain, error = paired_gain(decision.fold_accuracies, decision.frozen_fold_accuracies)
    decision.mean_gain, decision.gain_standard_error = round(gain, 4), round(error, 4)
    pays = decision.folds_used >= MIN_FOLDS and gain > error and gain > 0
    decision.kept = pays or decision.mode == "always"
    verdict = (f"{100 * gain:+.1f} points over {decision.frozen_name} on {decision.folds_used} folds "
               f"(standard error of the paired differences {100 * error:.1f})")
    if pays:
        decision.reason = f"kept: {verdict}, more than one standard error"
    elif decision.kept:
        decision.reason = f"kept because --finetune always, though it gains {verdict}"
    else:
        decision.reason = f"not kept: {verdict}, not more than one standard error"
    return decision


def fine_tune_candidate(modality: str, backbone: str, *, flip: bool = True, tta: bool = False) -> Candidate:
    """The one fine-tune candidate for a modality; it reads raw inputs (texts, image paths). `tta`
    (images) averages each prediction with the mirror image's, in its cross-validation too."""
    from smalldata.model import RAW_INPUTS, RAW_TEXT

    if modality == "text":
        from smalldata.finetune_text import ContrastiveTextClassifier

        return Candidate(f"fine-tuned: contrastive {backbone} + logistic regression", RAW_TEXT,
                         lambda: ContrastiveTextClassifier(backbone=backbone),
                         f"{backbone} tuned on same-class/different-class pairs (SetFit), logistic regression on top")
    from smalldata.finetune import FineTunedImageClassifier

    return Candidate(f"fine-tuned: {backbone}", RAW_INPUTS, lambda: FineTunedImageClassifier(backbone=backbone, flip=flip, tta=tta),
                     f"{backbone} fine-tuned (head first, then the body with discriminative learning rates)")


def fine_tune_step(dataset, backbone: str, folds: Folds | None, frozen: CandidateScore | None, *,
                   mode: str, seconds_left: float, progress: Progress, flip: bool = True, tta: bool = False):
    """The hook `train` calls after the frozen candidates: (name, fitted estimator or None, decision)."""
    candidate = fine_tune_candidate(dataset.modality, backbone, flip=flip, tta=tta)
    X = list(dataset.inputs)
    y = np.asarray(dataset.labels)
    if folds is None or frozen is None:  # --no-evaluate with --finetune always
        decision = FineTuneDecision(candidate.name, mode, kept=True, reason="kept without evaluation (--no-evaluate)")
    else:
        decision = consider(candidate, X, y, folds, frozen, mode=mode, seconds_left=seconds_left, progress=progress)
    progress.log(f"fine-tuning: {decision.reason}")
    summary = {**decision.to_dict(), "features": candidate.features}
    if not decision.kept:
        return None, None, summary
    progress.log(f"fine-tuning [bold]{candidate.name}[/] on all {len(y)} examples")
    estimator = candidate.make_estimator().fit(X, y)
    # An image fine-tune whose early stopping went back to the head-only state says so in its name.
    name = getattr(estimator, "kept_name_", None) or candidate.name
    return name, estimator, summary
