"""Fine-tune only when it pays, and only when the time budget allows it.

After the frozen candidates are cross-validated, the fine-tune's cost per fold is estimated from
what a training step costs on this machine (`smalldata.costs`, measured once per backbone and
kept), never from timing steps in this run, so the plan does not depend on the load of the
moment. It is scored on as many of the frozen candidates' own folds as the planned time allows
(all of them when it can; the first few otherwise, and the decision says so). It is skipped at
once, saying so, when fewer than three fit (fewer paired differences give no usable standard
error) or when the folds are too small to judge it.

It is kept only when its paired per-fold gain over the frozen choice is larger than one standard
error of those differences, for images and texts alike (`STANDARD_ERRORS_REQUIRED` says why).
The deadline is read only as a guard: a machine more than about twice as slow as its measured
pace (another process fighting torch's threads made it five times slower) stops scoring folds
early, and the decision says so; there, and only there, the busy machine's model differs.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np
from sklearn.metrics import accuracy_score

from smalldata.backbones import RAW_INPUTS, RAW_TEXT
from smalldata.costs import known_step_seconds, optimistic_step_seconds, step_seconds, text_length_factor
from smalldata.data import DataError
from smalldata.deadline import Deadline
from smalldata.devices import device_name
from smalldata.evaluate import Candidate, CandidateScore, Folds, fit_and_predict
from smalldata.progress import Progress

MODES = ("auto", "always", "never")
MIN_FOLDS = 3  # fewer paired differences give no usable standard error
# Folds must hold at least this many examples on average before they can judge a fine-tune. A
# fold of 3-4 sentences scores 0, 1/3, 2/3 or 1: on sst2 at 8 per class the fine-tune's fold gains
# ran from -47 to -3 points on five draws, and on two mr draws (16 sentences) the folds put
# MiniLM's fine-tune 30 and 16 points above mpnet's logistic regression where the test split put
# it 15 and 10 points below. trec6 at 8 per class (folds of about 10 questions) kept it on all five
# draws, +15 points on test (BENCHMARKS.md, "The automatic choice"). Chosen after mr was seen.
MIN_EXAMPLES_PER_FOLD = 8
# How many standard errors a fine-tune's gain must clear. One, for both modalities. A bar of zero
# for texts (a gain above zero was enough) was chosen on agnews at 8 per class, where small folds
# hid a 7-point gain; on data it was not chosen on it kept a contrastive MiniLM fine-tune 7.9
# points under plain logistic regression on mpnet. With every installed encoder in the frozen
# core the fine-tune now has to beat a stronger choice, and the bar asks the folds for evidence
# that survives their noise (BENCHMARKS.md, "The automatic choice").
STANDARD_ERRORS_REQUIRED = 1.0
# Of a budget, what fine-tuning may plan to spend. The frozen core, the refit and the learning
# curve take 5-15 s at 8 texts or 10 images per class on a 2-core CPU; the rest is slack, so that
# a machine twice as slow as when the step was timed (another process loading both cores) still
# finishes what was planned within the budget, and the same data give the same model.
FINE_TUNE_SHARE_OF_BUDGET = 0.45
# A real text fit costs about twice what the probe's step figure gives for its steps: batches of
# up to 31 texts where the probe has 16, the encoder's copy, and the embeddings for the head.
# Timed fits on trec6, sst2, mr and agnews draws took 1.9 to 2.4 times the fastest step's figure
# (after `costs.text_length_factor`; BENCHMARKS.md, "Training time"). The image estimate counts
# its forward passes itself (`FineTunedImageClassifier.estimated_fit_seconds`).
TEXT_FIT_PER_STEP_ESTIMATE = 2.2


@dataclass(frozen=True)
class FineTuneOptions:
    """How a budgeted `train` fine-tunes: `mode` auto (kept where the folds say it pays), always or
    never; `flip` mirrors training images (off where a mirror image changes the label); `tta`
    averages a fine-tuned image model's prediction with the mirror image's, in its folds too."""

    mode: str = "auto"
    flip: bool = True
    tta: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise DataError(f"--finetune must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.tta and not self.flip:
            raise DataError("test-time augmentation mirrors test images, and --no-flip says a mirror image changes "
                            "the label: use one or the other")


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
    standard_errors_required: float = STANDARD_ERRORS_REQUIRED
    stopped_early: bool = False  # the deadline's guard stopped scoring folds before the plan said
    # (held-out row indices, probabilities) per fold scored: what calibration is fit on; not saved
    held_out: list = field(default_factory=list, repr=False)

    @property
    def protocol(self) -> str:
        if self.folds_used == self.folds_available:
            return f"all {self.folds_available} cross-validation folds of the frozen candidates"
        why = ("this machine ran slower than its measured pace, and the budget's deadline came first"
               if self.stopped_early else "the budget allowed no more")
        return f"the first {self.folds_used} of the frozen candidates' {self.folds_available} folds ({why})"

    def to_dict(self) -> dict:
        saved = {k: v for k, v in asdict(self).items() if k != "held_out"}
        return {**saved, "protocol": self.protocol if self.folds_used else None}

    @classmethod
    def from_dict(cls, saved: dict) -> "FineTuneDecision":
        """The decision `to_dict` wrote (model.json); keys a later version added are left out."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})


def paired_gain(tuned: list[float], frozen: list[float]) -> tuple[float, float]:
    """Mean and standard error of the per-fold accuracy differences (tuned minus frozen)."""
    diffs = np.asarray(tuned) - np.asarray(frozen[: len(tuned)])
    error = float(diffs.std(ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else float("inf")
    return float(diffs.mean()), error


@dataclass(frozen=True)
class FineTuneCost:
    """Estimated seconds of one fold's fit and of the refit on every example, from the step cost
    kept for this machine (`smalldata.costs`)."""

    fold_seconds: float
    refit_seconds: float

    def folds_within(self, seconds: float) -> int:
        """How many folds fit in `seconds`, leaving room for the refit."""
        return int(max(0.0, seconds - self.refit_seconds) // self.fold_seconds)


def estimated_cost(candidate: Candidate, X, n_train: int, *, optimistic: bool = False,
                   progress: Progress | None = None) -> FineTuneCost:
    """From the step cost kept for this machine (measured now if it never was); `optimistic`: from
    a lower bound, measuring nothing."""
    estimator = candidate.make_estimator()
    if optimistic:
        step = optimistic_step_seconds(estimator)
    elif known_step_seconds(estimator) is None and progress is not None:
        with progress.spinner(f"timing a fine-tuning step of {estimator.backbone} (once on this machine)"):
            step = step_seconds(estimator)
    else:
        step = step_seconds(estimator)
    if not hasattr(estimator, "flip"):  # a text step grows with the texts' length
        step *= text_length_factor(X) * TEXT_FIT_PER_STEP_ESTIMATE
    return FineTuneCost(estimator.estimated_fit_seconds(step, n_train), estimator.estimated_fit_seconds(step, len(X)))


def folds_too_small(candidate: Candidate, folds: Folds) -> FineTuneDecision | None:
    """The decision not to try `candidate` where the folds hold too few examples to judge it."""
    held = float(np.mean([len(test) for _, test in folds.splits]))
    if held >= MIN_EXAMPLES_PER_FOLD:
        return None
    return FineTuneDecision(candidate.name, "auto", kept=False,
                            reason=f"not tried: the folds hold {held:.1f} examples each, and folds of fewer than "
                                   f"{MIN_EXAMPLES_PER_FOLD} cannot tell a fine-tune's gain from luck; with more "
                                   "examples it is tried (or --finetune always)")


def too_costly(candidate: Candidate, cost: FineTuneCost, planned_seconds: float, *, at_least: bool = False) -> FineTuneDecision:
    """The decision not to try `candidate`: `MIN_FOLDS` folds at `cost` do not fit `planned_seconds`."""
    about = "at least" if at_least else "about"
    needed = MIN_FOLDS * cost.fold_seconds + cost.refit_seconds
    return FineTuneDecision(candidate.name, "auto", kept=False, estimated_fold_seconds=round(cost.fold_seconds, 1),
                            reason=f"not tried: {MIN_FOLDS} folds ({about} {cost.fold_seconds:.0f} s each here) and the refit "
                                   f"need {about} {needed:.0f} s, and the budget leaves {planned_seconds:.0f} s for "
                                   f"fine-tuning; fewer than {MIN_FOLDS} folds cannot tell a gain from luck. "
                                   f"--budget {_minutes(needed / FINE_TUNE_SHARE_OF_BUDGET)} would try it")


def _minutes(seconds: float) -> str:
    return f"{math.ceil(seconds / 60)}m"


def consider(candidate: Candidate, X, y: np.ndarray, folds: Folds, frozen: CandidateScore, *, mode: str,
             cost: FineTuneCost, planned_seconds: float, deadline: Deadline, progress: Progress) -> FineTuneDecision:
    """Score `candidate` on the folds that `planned_seconds` allow by `cost` (keeping room for the
    refit on all examples); the deadline only guards against a machine slower than its estimate."""
    decision = FineTuneDecision(candidate.name, mode, kept=False, reason="", folds_available=len(folds.splits),
                                frozen_name=frozen.name, estimated_fold_seconds=round(cost.fold_seconds, 1))
    planned = min(cost.folds_within(planned_seconds), len(folds.splits))
    if mode == "auto" and planned < MIN_FOLDS:
        return too_costly(candidate, cost, planned_seconds)
    progress.log(f"fine-tuning costs about {cost.fold_seconds:.0f} s per fold and {cost.refit_seconds:.0f} s on all "
                 f"examples here, on {device_name(modality_uses_torch=True)}; scoring it on {planned} of "
                 f"{len(folds.splits)} folds")
    task = progress.task(f"cross-validating {candidate.name}", planned)
    classes = np.unique(y)
    for train, test in folds.splits[:planned]:
        # The pace measured so far, where it is slower than estimated, scales the refit too.
        pace = max(decision.measured_fold_seconds, default=cost.fold_seconds)
        if not deadline.fits(pace + cost.refit_seconds * max(1.0, pace / cost.fold_seconds)):
            decision.stopped_early = True
            break
        start = time.perf_counter()
        proba = fit_and_predict(candidate, X, y, classes, (train, test))
        decision.held_out.append((test, proba))
        decision.fold_accuracies.append(float(accuracy_score(y[test], classes[proba.argmax(axis=1)])))
        decision.measured_fold_seconds.append(round(time.perf_counter() - start, 1))
        decision.folds_used += 1
        task.advance()
    task.done()
    decision.frozen_fold_accuracies = frozen.fold_accuracies[: decision.folds_used]
    return decide(decision)


def weighed_against(decision: FineTuneDecision, informed: CandidateScore) -> FineTuneDecision:
    """A fine-tune kept over the labels-only frozen choice, where an informed candidate (an unlabeled
    pool, descriptions, the class names) is the frozen choice: the one with the larger mean gain over
    that labels-only choice, on the folds the fine-tune ran, ships.

    Why not judge the fine-tune against the informed candidate directly: on 3-4 folds of a few
    examples the paired differences carry standard errors of 6-9 points, and a fine-tune that beat
    logistic regression by 13 points and the class names' head by 3 was then dropped for it (trec6 at
    8 a class, 84.8% against 67.8% on the test split; BENCHMARKS.md, "The automatic choice")."""
    if not decision.kept or decision.folds_used == 0 or decision.mode == "always":
        return decision
    n = decision.folds_used
    informed_gain = float(np.mean(informed.fold_accuracies[:n]) - np.mean(decision.frozen_fold_accuracies))
    said = f"{informed.name} gained {100 * informed_gain:+z.1f} on the same folds"
    if decision.mean_gain > informed_gain:
        decision.reason += f"; {said}, less"
    else:
        decision.kept = False
        decision.reason = decision.reason.replace("kept: ", "not kept: though ", 1) + f"; {said}, as much or more"
    return decision


def decide(decision: FineTuneDecision) -> FineTuneDecision:
    """Keep the fine-tune where its paired per-fold gain exceeds the standard errors required."""
    if decision.folds_used == 0 and decision.mode == "always":
        decision.kept = True
        decision.reason = "kept without evaluation (--finetune always; the budget allowed no fold)"
        return decision
    if decision.folds_used < MIN_FOLDS and decision.mode == "auto":
        decision.reason = (f"not kept: only {decision.folds_used} folds ran before the budget's deadline (this machine "
                           f"ran slower than its measured pace), and fewer than {MIN_FOLDS} cannot tell a gain from luck")
        return decision
    gain, error = paired_gain(decision.fold_accuracies, decision.frozen_fold_accuracies)
    decision.mean_gain, decision.gain_standard_error = round(gain, 4), round(error, 4)
    bar = decision.standard_errors_required
    needed = "more than one standard error" if bar == 1 else f"more than {bar:g} standard errors"
    # Strictly more, past rounding: one example won of n and none lost gives a gain of exactly one
    # standard error, and that is the luck this rule is here to refuse.
    pays = decision.folds_used >= MIN_FOLDS and gain > 0 and gain - bar * error > 1e-9
    decision.kept = pays or decision.mode == "always"
    verdict = (f"{100 * gain:+z.1f} points over {decision.frozen_name} on {decision.folds_used} folds "
               f"(standard error of the paired differences {100 * error:.1f})")
    if pays:
        decision.reason = f"kept: {verdict}, {needed}"
    elif decision.kept:
        decision.reason = f"kept because --finetune always, though it gains {verdict}"
    else:
        decision.reason = f"not kept: {verdict}, not {needed}"
    return decision


def fine_tune_candidate(modality: str, backbone: str, options: FineTuneOptions = FineTuneOptions()) -> Candidate:
    """The one fine-tune candidate for a modality; it reads raw inputs (texts, image paths)."""
    if modality == "text":
        from smalldata.finetune_text import ContrastiveTextClassifier

        return Candidate(f"fine-tuned: contrastive {backbone} + logistic regression", RAW_TEXT,
                         lambda: ContrastiveTextClassifier(backbone=backbone),
                         f"{backbone} tuned on same-class/different-class pairs (SetFit), logistic regression on top")
    from smalldata.finetune import FineTunedImageClassifier

    return Candidate(f"fine-tuned: {backbone}", RAW_INPUTS,
                     lambda: FineTunedImageClassifier(backbone=backbone, flip=options.flip, tta=options.tta),
                     f"{backbone} fine-tuned (head first, then the body with discriminative learning rates)")
