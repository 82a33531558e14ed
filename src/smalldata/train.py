"""From a labeled dataset to the best model its examples can give, chosen by cross-validation.

`train` reads as four steps, all reading one `Deadline`:

1. `compare_frozen`: the baseline and heads on frozen embeddings of every installed backbone of the
   modality (and, where there are two, the average of their logistic regressions), all on the same
   folds. It always runs, whatever the budget or the load: at few examples per class it costs
   seconds, and the same data then give the same model on a busy machine and a quiet one.
2. `maybe_fine_tune`: fine-tuning a backbone, only where its estimated cost (`smalldata.costs`)
   fits what the budget plans for it, kept only where the folds say it pays.
3. `refit`: the choice, refit on every example.
4. `curve`: its learning curve, when the deadline leaves time for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Mapping, Sequence

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from smalldata.backbones import (DEFAULT_BACKBONE, ImageBackbone, TextBackbone, cpu_threads, fine_tunable, get_backbone,
                                 installed, networks_of, reads_raw, side_by_side, why_not_fine_tunable)
from smalldata.baselines import image_baseline, text_baseline, tokens_for
from smalldata.calibration import PRIOR_CENTER, calibrate, stacked
from smalldata.curve import LearningCurve, curve_fits, learning_curve
from smalldata.data import DataError, Dataset, require_evaluable
from smalldata.deadline import Deadline
from smalldata.defaults import DEFAULT_HEAD
from smalldata.describe import DESCRIBED_HEAD, NAMED_HEAD, described_candidate, named_candidate, names_as_descriptions
from smalldata.ensemble import AveragedLogisticRegression
from smalldata.evaluate import UNEVEN_RATIO, Candidate, Comparison, Folds, compare, cv_folds, single_threaded_math, uneven
from smalldata.familiarity import familiarity_from
from smalldata.features import embed
from smalldata.finetune_choice import (FINE_TUNE_SHARE_OF_BUDGET, MIN_FOLDS, FineTuneDecision, FineTuneOptions, consider,
                                       estimated_cost, fine_tune_candidate, folds_too_small, too_costly, weighed_against)
from smalldata.heads import LinearHead, logistic_regression_head
from smalldata.backbones import RAW_TEXT
from smalldata.model import Model
from smalldata.progress import QUIET, Progress
from smalldata.training_data import TrainingData
from smalldata.unknown import abstention_from, check_class_names, check_threshold
from smalldata.unlabeled import Pool, PoolHead, pool_candidates

IMAGE_BASELINE_FEATURES = "colour-texture-stats"
AVERAGED_HEAD = "average of logistic regressions"


def baseline(modality: str, inputs: Sequence = ()) -> Candidate:
    """The simple anchor every head is measured against; `inputs` (texts) choose its tokens."""
    if modality == "text":
        return Candidate("baseline: tf-idf + logistic regression", RAW_TEXT, partial(text_baseline, tokens_for(inputs)),
                         "TF-IDF of words and word pairs, logistic regression", is_baseline=True)
    return Candidate("baseline: colour/texture + random forest", IMAGE_BASELINE_FEATURES, image_baseline,
                     "colour and texture statistics of a 64px thumbnail, random forest", is_baseline=True)


def candidates(modality: str, backbone: str, inputs: Sequence = (), *, weighted: bool = False) -> list[Candidate]:
    """The baseline, then the heads on one `backbone`'s embeddings; earlier ones win ties.
    ``weighted`` (uneven classes): class-weighted logistic regression first."""
    first = []
    if weighted:
        first = [Candidate(f"{DEFAULT_HEAD}{WEIGHTED}", backbone, partial(LogisticRegression, max_iter=3000, class_weight="balanced"),
                           f"logistic regression, classes weighted by 1/count, on frozen {backbone} embeddings")]
    return [baseline(modality, inputs)] + first + frozen_heads(backbone)


def frozen_heads(backbone: str, *, named_by_backbone: bool = False) -> list[Candidate]:
    """The heads on frozen `backbone` embeddings, simplest first; `named_by_backbone` adds the
    backbone to each name, to tell them from the same heads on another backbone."""
    heads = [
        (DEFAULT_HEAD, logistic_regression_head, "logistic regression"),
        ("linear: cross-entropy", lambda: LinearHead(loss="cross-entropy"), "linear layer trained with cross-entropy"),
        ("linear: cosine loss", lambda: LinearHead(loss="cosine"), "linear layer trained with cosine loss"),
        ("linear: cosine + cross-entropy", lambda: LinearHead(loss="cosine+cross-entropy"),
         "linear layer trained with cosine loss plus 0.1 cross-entropy"),
    ]
    return [Candidate(f"{name} on {backbone}" if named_by_backbone else name, backbone, make,
                      f"{what} on frozen {backbone} embeddings") for name, make, what in heads]


# How strongly the core's logistic regressions are regularised, by modality. The sentence encoders'
# embeddings are unit length, and at C=1 their logistic regression underfits where classes are
# many (clinc150, 150 intents: 91.9 at C=10 against 90.4); image embeddings are not normalised,
# and C=10 changed nothing there (BENCHMARKS.md, "The automatic choice").
CORE_C = {"image": 1.0, "text": 10.0}
# Whether the average of the backbones' logistic regressions is listed first (preferred in a
# tie) or after the strongest backbone alone. The two image backbones are near-equal, and their
# average beat choosing on every image set; the text encoders are not (mpnet leads MiniLM by 17
# points on sst2 at 8 per class), and listed first the average cost 1.7 points on mr, where folds
# of a few sentences could not show it worse (BENCHMARKS.md, "The automatic choice").
AVERAGE_FIRST = {"image": True, "text": False}


def core_candidates(modality: str, networks: list[str], inputs: Sequence = (), *, weighted: bool = False) -> list[Candidate]:
    """The automatic choice's frozen candidates on every installed network, most preferred first:
    logistic regression on each network (the strongest, slowest, first) and the average of their
    probabilities, placed by `AVERAGE_FIRST`. Only logistic regression: the linear heads trained
    with torch cost most of the comparison and rarely won (BENCHMARKS.md, "The automatic choice").

    ``weighted`` (uneven classes): the same heads with class weights inversely proportional to the
    class counts come first, each preferred in a tie over its unweighted twin."""
    C = CORE_C[modality]
    ordered = _core_heads(modality, networks, C, None)
    if weighted:
        ordered = _core_heads(modality, networks, C, "balanced") + ordered
    return [baseline(modality, inputs)] + ordered


WEIGHTED = " (class-weighted)"


def _core_heads(modality: str, networks: list[str], C: float, class_weight: str | None) -> list[Candidate]:
    tag, said = (WEIGHTED, ", classes weighted by 1/count") if class_weight else ("", "")
    singles = [Candidate(f"{DEFAULT_HEAD}{tag} on {n}", n,
                         partial(LogisticRegression, C=C, max_iter=3000, class_weight=class_weight),
                         f"logistic regression (C={C:g}{said}) on frozen {n} embeddings") for n in reversed(networks)]
    if len(networks) == 1:
        return singles
    widths = tuple(get_backbone(n).dim for n in networks)
    averaged = Candidate(AVERAGED_HEAD + tag, side_by_side(networks),
                         partial(AveragedLogisticRegression, widths=widths, C=C, class_weight=class_weight),
                         f"logistic regression (C={C:g}{said}) on each of {', '.join(networks)}, probabilities averaged")
    return [averaged] + singles if AVERAGE_FIRST[modality] else singles[:1] + [averaged] + singles[1:]


@dataclass
class FrozenStep:
    """What step 1 leaves: the candidates, their features, the folds and the comparison."""

    options: list[Candidate]
    features: dict
    folds: Folds | None
    comparison: Comparison | None
    chosen: Candidate


def train(
    dataset: Dataset,
    *,
    backbone: str | None = None,
    evaluate: bool = True,
    drop_small_classes: bool = False,
    curve: bool = True,
    seed: int = 0,
    unlabeled: Pool | None = None,
    descriptions: Mapping[str, str] | None = None,
    budget: float | str | None = None,
    fine_tune: FineTuneOptions = FineTuneOptions(),
    target_precision: float | None = None,
    progress: Progress = QUIET,
) -> Model:
    """Cross-validate every candidate on the same folds, refit the chosen one on all of `dataset`,
    and (``curve=True``) draw its learning curve to say how much more data would help.

    Without a `backbone`, the candidates are logistic regression on every installed backbone of
    the modality (EfficientNet-Lite0 and -Lite2; all-MiniLM-L6-v2 and all-mpnet-base-v2) and the
    average of those, always scored, whatever the budget; with one, the heads on that backbone.

    `unlabeled` (a `Pool`, see `smalldata.unlabeled.load_pool`) and `descriptions` (label ->
    what the class means, texts only) add candidates that use them; each is kept only as
    `Comparison.chosen` says; ``model.comparison.to_dict()["contributions"]`` says what each added,
    in points. Without evaluation the pool is not used (nothing could show that it helps).

    ``budget`` (seconds, or "90s", "2m"; None or 0: the frozen candidates only) bounds the whole
    run, and fine-tuning a backbone is tried when its estimated cost on three folds fits
    (`smalldata.finetune_choice`); it is kept only where its per-fold gain beats the frozen choice
    by more than one standard error. ``fine_tune`` says how (`FineTuneOptions`: "always" keeps it
    regardless, "never" skips it; image flips and test-time mirroring).

    The model's probabilities are calibrated on its held-out predictions (`smalldata.calibration`),
    and it keeps the cut-offs under which an answer is `unknown` (`smalldata.unknown`); with
    ``target_precision`` (e.g. 0.9) it also suggests the threshold that reached it on the folds.

    With ``evaluate=False`` nothing is cross-validated (possible from 1 example per class): the
    default head (logistic regression on embeddings, or with descriptions the described head) is
    fit, and the model carries no accuracy estimate.
    """
    if not isinstance(dataset, Dataset):
        raise DataError(f"train takes a Dataset (smalldata.load_dataset(PATH)), not a {type(dataset).__name__}; "
                        "for a table or lists use SmalldataClassifier().fit(df['text'], df['label'])")
    deadline = Deadline.of(budget)
    check_threshold(target_precision)
    check_class_names(dataset.classes)
    networks = _networks(dataset, backbone, fine_tune)
    if evaluate:
        dataset = require_evaluable(dataset, drop_small_classes=drop_small_classes)
    elif len(dataset.classes) < 2:
        raise DataError("a classifier needs at least 2 classes: add examples of another class")
    frozen = compare_frozen(dataset, networks, chosen_by_user=backbone is not None, evaluate=evaluate, seed=seed,
                            unlabeled=unlabeled, descriptions=descriptions, progress=progress)
    decision, tuned_name, tuned = maybe_fine_tune(dataset, networks, frozen, fine_tune, deadline, progress)
    data = TrainingData.of(dataset, unlabeled, descriptions)
    common = dict(classes=dataset.classes, modality=dataset.modality, comparison=frozen.comparison, data=data,
                  fine_tuning=decision, **trust_of(dataset, frozen, decision if tuned is not None else None,
                                                   target_precision))
    if tuned is not None:  # no learning curve: it would cost a fine-tune per point
        return Model(features=tuned_name[1], head_name=tuned_name[0], estimator=tuned, **common)
    chosen = frozen.chosen
    started = time.perf_counter()
    estimator = refit(chosen, frozen.features[chosen.features], dataset, progress)
    drawn = None
    if evaluate and curve:
        # Smaller draws fit faster than the refit: an upper bound, read only against the deadline.
        needed = (time.perf_counter() - started) * curve_fits(dataset.labels) / cpu_threads()
        if deadline.fits(needed):
            drawn = learning_curve(frozen.features[chosen.features], dataset.labels, chosen.make_estimator,
                                   seed=seed, progress=progress)
        else:
            progress.log(f"learning curve: not drawn: about {needed:.0f} s, and the budget leaves "
                         f"{deadline.left():.0f} s (`smalldata curve` draws it alone)")
    return Model(features=chosen.features, head_name=chosen.name, estimator=estimator, curve=drawn, **common)


def _networks(dataset: Dataset, backbone: str | None, fine_tune: FineTuneOptions) -> list[str]:
    """The backbones the frozen step embeds with: the user's one, or every installed network."""
    if backbone is None:
        return installed(dataset.modality) or [DEFAULT_BACKBONE[dataset.modality]]
    resolved = get_backbone(backbone)
    if resolved.modality != dataset.modality:
        raise DataError(f"backbone {backbone!r} is for {resolved.modality}s, but the data are {dataset.modality}s")
    untunable = why_not_fine_tunable(backbone)
    if untunable and fine_tune.mode == "always":
        raise DataError(f"{untunable}: pick one of {', '.join(fine_tunable(dataset.modality))}, "
                        "or leave out --finetune always")
    return [backbone]


def compare_frozen(dataset: Dataset, networks: list[str], *, chosen_by_user: bool, evaluate: bool, seed: int,
                   unlabeled: Pool | None, descriptions: Mapping[str, str] | None, progress: Progress) -> FrozenStep:
    """Step 1: the baseline and the frozen heads (and any informed candidates) on the same folds."""
    weighted = evaluate and uneven(dataset.labels)
    if weighted:
        progress.log(f"uneven classes (the largest has more than {UNEVEN_RATIO:g}x the examples of the smallest): "
                     "class-weighted heads join the candidates, and the choice is made on balanced accuracy")
    options = (candidates(dataset.modality, networks[0], dataset.inputs, weighted=weighted) if chosen_by_user
               else core_candidates(dataset.modality, networks, dataset.inputs, weighted=weighted))
    # Extra knowledge (an unlabeled pool, class descriptions) comes in as more candidates on the
    # same folds, on the strongest network: judged against the labeled-only choice, they must not
    # start from weaker embeddings than it.
    informed = informed_candidates(dataset, networks[-1], unlabeled=unlabeled if evaluate else None,
                                   descriptions=descriptions, progress=progress, names=evaluate)
    if not evaluate:
        # Without folds nothing can be judged; descriptions, when given, are the user's own prior knowledge.
        default = [c for c in options if not c.is_baseline][0]
        options = [c for c in informed if c.name == DESCRIBED_HEAD] or [default]
    else:
        options += informed
    features = {name: _features(dataset, name, progress) for name in dict.fromkeys(c.features for c in options)}
    if not evaluate:
        return FrozenStep(options, features, None, None, options[0])
    folds = cv_folds(dataset.labels, seed=seed)
    comparison = compare(options, features, dataset.labels, folds=folds, progress=progress,
                         informed=[c.name for c in informed])
    chosen = next(c for c in options if c.name == comparison.chosen.name)
    return FrozenStep(options, features, folds, comparison, chosen)


def maybe_fine_tune(dataset: Dataset, networks: list[str], frozen: FrozenStep, options: FineTuneOptions,
                    deadline: Deadline, progress: Progress):
    """Step 2: (decision or None, (name, features) of the kept fine-tune or None, its estimator or None)."""
    if options.mode == "never" or (options.mode == "auto" and deadline.seconds is None):
        return None, None, None
    if options.mode == "auto" and deadline.seconds == 0:
        return FineTuneDecision("", "auto", kept=False, reason="not tried: --budget 0 asks for the frozen backbones "
                                "only; the default budget or a larger one tries it when it fits"), None, None
    tunable = [n for n in networks if why_not_fine_tunable(n) is None]
    if not tunable:  # the backbone the user chose is kept; the budget's fine-tune is left out, and said so
        decision = FineTuneDecision("", options.mode, kept=False, reason=f"not tried: {why_not_fine_tunable(networks[0])}")
        progress.log(f"fine-tuning: {decision.reason}")
        return decision, None, None
    X, y = list(dataset.inputs), np.asarray(dataset.labels)
    if frozen.comparison is None and options.mode == "auto":  # no folds: nothing can say that it pays
        return FineTuneDecision("", "auto", kept=False, reason="not tried: without cross-validation (--no-evaluate) "
                                "nothing can say that it pays; --finetune always keeps one unchecked"), None, None
    if frozen.comparison is None:  # --no-evaluate with --finetune always
        candidate = fine_tune_candidate(dataset.modality, tunable[0], options)
        decision = FineTuneDecision(candidate.name, options.mode, kept=True, reason="kept without evaluation (--no-evaluate)")
        return decision, *_fit_kept(candidate, X, y, progress)
    too_small = folds_too_small(fine_tune_candidate(dataset.modality, tunable[0], options), frozen.folds)
    if options.mode == "auto" and too_small:
        progress.log(f"fine-tuning: {too_small.reason}")
        return too_small, None, None
    planned = min(FINE_TUNE_SHARE_OF_BUDGET * (deadline.seconds or 0.0), deadline.left())
    # Judged against the labels-only choice, the reference its rule was chosen on; where an informed
    # candidate (a pool, descriptions, the class names) is the frozen choice, the two are then
    # weighed by their gains over that same reference (`weighed_against`).
    score = frozen.comparison.labeled_choice
    n_train = len(frozen.folds.splits[0][0])
    decision = None
    for network in reversed(tunable):  # the strongest whose folds fit; else the fastest says why not
        candidate = fine_tune_candidate(dataset.modality, network, options)
        if options.mode == "auto":  # first from a lower bound: what could never fit is not even timed
            optimistic = estimated_cost(candidate, X, n_train, optimistic=True)
            if optimistic.folds_within(planned) < MIN_FOLDS:
                decision = too_costly(candidate, optimistic, planned, at_least=True)
                continue
        cost = estimated_cost(candidate, X, n_train, progress=progress)
        if cost.folds_within(planned) < MIN_FOLDS and network != tunable[0]:
            continue
        decision = consider(candidate, X, y, frozen.folds, score, mode=options.mode, cost=cost,
                            planned_seconds=planned, deadline=deadline, progress=progress)
        if frozen.chosen.name != score.name:
            decision = weighed_against(decision, next(s for s in frozen.comparison.scores if s.name == frozen.chosen.name))
        break
    progress.log(f"fine-tuning: {decision.reason}")
    if not decision.kept:
        return decision, None, None
    return decision, *_fit_kept(fine_tune_candidate(dataset.modality, network, options), X, y, progress)


def trust_of(dataset: Dataset, frozen: FrozenStep, tuned: FineTuneDecision | None,
             target_precision: float | None) -> dict:
    """The shipped candidate's temperature and its `unknown` cut-offs, both from its own held-out
    predictions (none without folds)."""
    if frozen.comparison is None or (tuned is not None and not tuned.held_out):
        return {}  # no held-out predictions (no folds; a fine-tune kept by --finetune always unscored)
    if tuned is not None:
        held_out, center = tuned.held_out, PRIOR_CENTER["other"]
    else:
        held_out = frozen.comparison.held_out[frozen.chosen.name]
        # The class names' head is the core's logistic regression (C=10) with one row more a class.
        logistic = frozen.chosen.name.startswith((DEFAULT_HEAD, AVERAGED_HEAD, NAMED_HEAD))
        center = PRIOR_CENTER["logistic" if logistic else "other"]
    calibration = calibrate(held_out, dataset.labels, dataset.classes, center=center)
    _, proba, truth = stacked(held_out, dataset.labels, dataset.classes)
    proba = calibration.apply(proba)
    familiarity, held_familiarity = None, None
    if tuned is None and (widths := network_widths(frozen.chosen.features)):
        familiarity, held_familiarity = familiarity_from(frozen.features[frozen.chosen.features], dataset.labels,
                                                         dataset.classes, widths, frozen.folds.splits, proba.max(axis=1))
    return {"calibration": calibration, "familiarity": familiarity,
            "unknown": abstention_from(proba, truth, target_precision=target_precision, familiarity=held_familiarity)}


def network_widths(features: str) -> tuple[int, ...]:
    """Each network's width in these features, or () where they are not networks' embeddings
    (raw inputs, colour statistics): familiarity is measured in a network's embedding space."""
    if reads_raw(features):
        return ()
    parts = networks_of(get_backbone(features))
    if not all(isinstance(part, (ImageBackbone, TextBackbone)) for part in parts):
        return ()
    return tuple(part.dim for part in parts)


def _fit_kept(candidate: Candidate, X, y, progress: Progress):
    with progress.spinner(f"fine-tuning {candidate.name} on all {len(y)} examples"):
        estimator = candidate.make_estimator().fit(X, y)
    # An image fine-tune whose early stopping went back to the head-only state says so in its name.
    return (getattr(estimator, "kept_name_", None) or candidate.name, candidate.features), estimator


def refit(chosen: Candidate, features, dataset: Dataset, progress: Progress):
    with progress.spinner(f"refitting {chosen.name} on all {len(dataset)} examples"), single_threaded_math():
        estimator = clone(chosen.make_estimator()).fit(features, np.asarray(dataset.labels))
    if isinstance(estimator, PoolHead):
        estimator = estimator.head_  # the pool is needed to fit, not to predict: save the plain LR
    return estimator


def informed_candidates(dataset: Dataset, backbone: str, *, unlabeled: Pool | None,
                        descriptions: Mapping[str, str] | None, progress: Progress,
                        names: bool = False) -> list[Candidate]:
    """Candidates that use an unlabeled pool or class descriptions; with ``names`` (texts judged on
    folds, no descriptions given), the class names standing in as descriptions where they are words.

    Why the names by default: what the labels mean is knowledge the examples lack, and the folds
    judge it like a description. Chosen on sst2, trec6, agnews and banking77 (+1.7 points on average
    at 8-16 texts a class) and confirmed on mr and clinc150 (+0.5), no set losing more than its
    spread (BENCHMARKS.md, "The automatic choice")."""
    found = []
    if names and descriptions is None and dataset.modality == "text":
        named = names_as_descriptions(dataset.classes)
        if named is not None:
            found.append(named_candidate(named, dataset.classes, backbone, CORE_C["text"]))
    if unlabeled is not None:
        if unlabeled.modality != dataset.modality:
            raise DataError(f"the labeled data are {dataset.modality}s but the unlabeled pool holds {unlabeled.modality}s")
        found += pool_candidates(embed(unlabeled.inputs, backbone, keys=unlabeled.keys, progress=progress), backbone)
    if descriptions is not None:
        if dataset.modality != "text":
            raise DataError("class descriptions work for texts only (they are embedded with the sentence encoder)")
        found.append(described_candidate(descriptions, dataset.classes, backbone))
    return found


def curve_of(
    dataset: Dataset,
    *,
    backbone: str | None = None,
    head: str = DEFAULT_HEAD,
    seed: int = 0,
    progress: Progress = QUIET,
) -> LearningCurve:
    """The learning curve of one candidate (by name, default: logistic regression on embeddings)."""
    backbone = backbone or DEFAULT_BACKBONE[dataset.modality]
    options = {c.name: c for c in candidates(dataset.modality, backbone, dataset.inputs)}
    if head not in options:
        raise DataError(f"unknown head {head!r}; choose one of: {', '.join(options)}")
    dataset = require_evaluable(dataset, drop_small_classes=False)
    chosen = options[head]
    return learning_curve(_features(dataset, chosen.features, progress), dataset.labels, chosen.make_estimator,
                          seed=seed, progress=progress)


def _features(dataset: Dataset, name: str, progress: Progress):
    if name == RAW_TEXT:
        return list(dataset.inputs)
    return embed(dataset.inputs, name, keys=dataset.keys, progress=progress)
