"""Fine-tune only when it pays, and only when the time budget allows it.

After the frozen candidates are cross-validated, the fine-tune candidate's training step is timed
(`median_step_seconds`), its cost per fold extrapolated, and it is scored on as many of the frozen
candidates' own folds as the budget leaves room for (all of them when it can; the first few
otherwise, and the decision says so). An image fine-tune is kept only when its paired per-fold
gain over the frozen choice is larger than one standard error of those differences: a gain of one
image on two folds is luck, not a reason to ship a model 20 times as costly to train. A text
fine-tune needs only a positive gain (`STANDARD_ERRORS_REQUIRED` says why).

When fewer than three folds fit (an image fine-tune of a few hundred images takes minutes), it is
scored once on a held-out fifth instead, against the frozen choice fit on the same other four
fifths; the decision says so. That one fit is also the model kept: its head is refit on every
example, so the budget pays for one fine-tune.

On one held-out split most per-example differences are zero, and the few examples where the two
models disagree decide. There the normal approximation behind "one standard error" is too
generous: 4 won and 1 lost of 20 is 1.4 standard errors, yet a coin gives 4 or 5 of 5 one time
in five. So the held-out split uses the exact test made for it, McNemar's (a sign test on the
examples where the two disagree; Dietterich 1998, for models that can be trained only once), at
the level the standard errors required stand for: one-sided p below 0.16 for images (one). Texts,
whose bar is zero, need only more won than lost.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
from scipy.stats import binomtest, norm
from sklearn.base import clone
from sklearn.metrics import accuracy_score

from smalldata.evaluate import Candidate, CandidateScore, Folds, held_out_fifth, take_rows
from smalldata.progress import Progress

MODES = ("auto", "always", "never")
MIN_FOLDS = 3  # fewer paired differences give no usable standard error
# How many standard errors a fine-tune's gain must clear, by modality: how much evidence the folds
# must give before fine-tuning is believed to pay (BENCHMARKS.md, session 16). Images need one: the
# fine-tune often loses to the frozen head (clothing10 at 10 per class by 2.3 points on average),
# and on the clothing10 draws where a smaller positive gain would have kept it, it lost 3 to 5
# points on 2 of 3. Texts need only a positive gain: the contrastive fine-tune beat its own
# encoder's frozen logistic regression on 29 of 30 draws at 8 per class, yet on agnews folds of 3
# texts put it 0.3 points above the frozen choice where the test split put it 7.4 above, and the
# one-standard-error bar (3 to 7 points there) never let it through. Both biases of the folds
# favour the frozen choice already: it was selected on those folds, and the fine-tune, fit on
# fewer examples, loses most where learning is steepest.
STANDARD_ERRORS_REQUIRED = {"image": 1.0, "text": 0.0}
DEFAULT_CLI_BUDGET = "5m"
_UNITS = {"s": 1, "m": 60, "h": 3600}


def median_step_seconds(step: Callable[[], object], repeats: int = 3) -> float:
    """Seconds `step()` takes here: the median of `repeats` timed calls after one untimed call (the
    first pays for allocation). One timed step is not enough: now and then one runs twice as
    long, and the fine-tune, estimated at twice its cost, fell back to a held-out fifth where
    four folds fit (BENCHMARKS.md, session 15)."""
    step()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


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
    held_out_examples: int = 0  # > 0: scored on one held-out split, not on folds
    held_out_won: int = 0  # held-out examples the fine-tune got right and the frozen choice wrong
    held_out_lost: int = 0
    sign_test_p: float | None = None  # one-sided, exact, over the won and lost examples; set: it decides
    standard_errors_required: float = 1.0  # the gain must exceed this many standard errors

    @property
    def sign_test_level(self) -> float:
        """The sign test's one-sided level that the standard errors required stand for: how often
        luck alone passes that bar (0.159 for one standard error). A bar of zero does not use it:
        there `_decide` asks for more won than lost."""
        return float(norm.sf(self.standard_errors_required))

    @property
    def protocol(self) -> str:
        if self.held_out_examples:
            return (f"a held-out fifth ({self.held_out_examples} examples) against {self.frozen_name} fit on the same "
                    f"other four fifths: cross-validating would take about {self.estimated_fold_seconds:.0f} s per "
                    "fold, more than the budget allows")
        if self.folds_used == self.folds_available:
            return f"all {self.folds_available} cross-validation folds of the frozen candidates"
        return (f"the first {self.folds_used} of the frozen candidates' {self.folds_available} folds "
                "(the budget allowed no more)")

    def to_dict(self) -> dict:
        return {**asdict(self), "protocol": self.protocol if self.folds_used or self.held_out_examples else None}


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
    frozen_correct: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    standard_errors: float = 1.0,
) -> tuple[FineTuneDecision, object | None]:
    """Score `candidate` on the folds that fit in `seconds_left` (keeping room for the refit on all
    examples), or on one held-out split when too few folds fit and `frozen_correct(train, test)`
    (which test examples the frozen choice gets right when fit on `train`) is given. The gain must
    exceed `standard_errors` standard errors. Returns the decision and, from a held-out split, the
    fitted estimator (None: refit on all examples)."""
    if mode not in MODES:
        raise ValueError(f"--finetune must be one of {', '.join(MODES)}, not {mode!r}")
    estimator = candidate.make_estimator()
    n_train = len(folds.splits[0][0])
    step_seconds = estimator.time_step(take_rows(X, folds.splits[0][0]), y[folds.splits[0][0]])
    fold_seconds = estimator.estimated_fit_seconds(step_seconds, n_train)
    refit_seconds = estimator.estimated_fit_seconds(step_seconds, len(y))
    decision = FineTuneDecision(candidate.name, mode, kept=False, reason="", folds_available=len(folds.splits),
                                frozen_name=frozen.name, estimated_fold_seconds=round(fold_seconds, 1),
                                standard_errors_required=standard_errors)
    deadline = time.perf_counter() + seconds_left - refit_seconds
    affordable = int(max(0.0, deadline - time.perf_counter()) // fold_seconds)
    progress.log(f"fine-tuning costs about {fold_seconds:.0f} s per fold and {refit_seconds:.0f} s on all "
                 f"examples; {seconds_left:.0f} s left allow {min(affordable, len(folds.splits))} of "
                 f"{len(folds.splits)} folds")
    if mode == "auto" and affordable < MIN_FOLDS:
        held_seconds = estimator.estimated_fit_seconds(step_seconds, round(0.8 * len(y)))
        if frozen_correct is not None and held_seconds <= seconds_left:
            return held_out_split(estimator, X, y, frozen_correct, decision, progress)
        decision.reason = (f"not tried: the budget leaves room for {affordable} folds of fine-tuning "
                           f"(about {fold_seconds:.0f} s each) and not for one fit on a held-out split "
                           f"(about {held_seconds:.0f} s); at least {MIN_FOLDS} folds are needed to tell "
                           "a gain from luck; give a larger --budget")
        return decision, None
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
    return _decide(decision), None


def held_out_split(estimator, X, y: np.ndarray, frozen_correct, decision: FineTuneDecision, progress: Progress):
    """Fit on a stratified four fifths, score both on the rest; the fit is kept, its head refit on all."""
    train, test = held_out_fifth(y)
    progress.log(f"fine-tuning on {len(train)} examples, scored with the frozen choice on the other {len(test)}")
    start = time.perf_counter()
    fitted = clone(estimator).fit(take_rows(X, train), y[train])
    tuned = fitted.predict(take_rows(X, test)) == y[test]
    frozen = np.asarray(frozen_correct(train, test))
    decision.measured_fold_seconds.append(round(time.perf_counter() - start, 1))
    decision.held_out_examples = len(test)
    decision.fold_accuracies, decision.frozen_fold_accuracies = [float(tuned.mean())], [float(frozen.mean())]
    won, lost, p = sign_test(tuned, frozen)
    decision.held_out_won, decision.held_out_lost, decision.sign_test_p = won, lost, p
    gain, error = paired_gain(tuned.astype(float), frozen.astype(float))  # reported, as over folds
    _decide(decision, gain, error, evidence=f"{len(test)} held-out examples (won {won}, lost {lost})")
    if decision.kept:  # the body saw four fifths; the head now learns from every example
        fitted.refit_head(X, y)
    return decision, fitted if decision.kept else None


def sign_test(tuned_correct: np.ndarray, frozen_correct: np.ndarray) -> tuple[int, int, float]:
    """(examples only the fine-tune got right, examples only the frozen choice got right, the exact
    one-sided p of a gain at least that large if each of those were a coin toss): McNemar's test."""
    tuned_correct, frozen_correct = np.asarray(tuned_correct, bool), np.asarray(frozen_correct, bool)
    won, lost = int(np.sum(tuned_correct & ~frozen_correct)), int(np.sum(~tuned_correct & frozen_correct))
    p = float(binomtest(won, won + lost, 0.5, alternative="greater").pvalue) if won + lost else 1.0
    return won, lost, p


def _decide(decision: FineTuneDecision, gain: float | None = None, error: float | None = None,
            evidence: str = "") -> FineTuneDecision:
    """Keep the fine-tune where its gain (by default the paired per-fold one) exceeds the standard
    errors the decision requires; on a held-out split (`decision.sign_test_p` set), where the sign
    test passes at the level those stand for, or for a bar of zero where more were won than lost."""
    if decision.folds_used == 0 and not decision.held_out_examples:
        decision.kept = decision.mode == "always"
        decision.reason = "kept without evaluation (--finetune always; the budget allowed no fold)"
        return decision
    if gain is None:
        gain, error = paired_gain(decision.fold_accuracies, decision.frozen_fold_accuracies)
    decision.mean_gain, decision.gain_standard_error = round(gain, 4), round(error, 4)
    enough = decision.folds_used >= MIN_FOLDS or decision.held_out_examples > 0
    p, bar, level = decision.sign_test_p, decision.standard_errors_required, decision.sign_test_level
    if bar == 0:
        # A gain above zero, held out too (more won than lost). The sign test would ask for more:
        # one won more than lost, over an odd number of disagreements, gives p = 0.5 exactly.
        pays, passed, failed = enough and gain > 1e-9, "a gain above zero", "not a gain above zero"
    elif p is None:
        # Strictly more, past rounding: one image won of n and none lost gives a gain of exactly one
        # standard error (1/n), and that is the luck this rule is here to refuse.
        needed = "more than one standard error" if bar == 1 else f"more than {bar:g} standard errors"
        pays, passed, failed = enough and gain > 0 and gain - bar * error > 1e-9, needed, f"not {needed}"
    else:
        pays, passed, failed = enough and gain > 0 and p < level, f"p below {level:.2f}", f"p not below {level:.2f}"
    decision.kept = pays or decision.mode == "always"
    evidence = evidence or f"{decision.folds_used} folds"
    test = f"standard error of the paired differences {100 * error:.1f}" if p is None else f"one-sided sign test p = {p:.2f}"
    verdict = f"{100 * gain:+z.1f} points over {decision.frozen_name} on {evidence} ({test})"
    if pays:
        decision.reason = f"kept: {verdict}, {passed}"
    elif decision.kept:
        decision.reason = f"kept because --finetune always, though it gains {verdict}"
    else:
        decision.reason = f"not kept: {verdict}, {failed}"
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
                   mode: str, seconds_left: float, progress: Progress, flip: bool = True, tta: bool = False,
                   frozen_correct: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None):
    """The hook `train` calls after the frozen candidates: (name, fitted estimator or None, decision)."""
    candidate = fine_tune_candidate(dataset.modality, backbone, flip=flip, tta=tta)
    X = list(dataset.inputs)
    y = np.asarray(dataset.labels)
    if folds is None or frozen is None:  # --no-evaluate with --finetune always
        decision, estimator = FineTuneDecision(candidate.name, mode, kept=True, reason="kept without evaluation (--no-evaluate)"), None
    else:
        decision, estimator = consider(candidate, X, y, folds, frozen, mode=mode, seconds_left=seconds_left,
                                       progress=progress, frozen_correct=frozen_correct,
                                       standard_errors=STANDARD_ERRORS_REQUIRED[dataset.modality])
    progress.log(f"fine-tuning: {decision.reason}")
    summary = {**decision.to_dict(), "features": candidate.features}
    if not decision.kept:
        return None, None, summary
    if estimator is None:
        progress.log(f"fine-tuning [bold]{candidate.name}[/] on all {len(y)} examples")
        estimator = candidate.make_estimator().fit(X, y)
    # An image fine-tune whose early stopping went back to the head-only state says so in its name.
    name = getattr(estimator, "kept_name_", None) or candidate.name
    return name, estimator, summary
