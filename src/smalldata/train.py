"""From a labeled dataset to the best model its examples can give, chosen by cross-validation.

Baseline first, then heads on frozen embeddings of a pretrained backbone, all scored on the same
folds; the simplest head that does as well as the best (within one standard error) is refit
on every example.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Mapping

import numpy as np
from sklearn.base import clone

from smalldata.backbones import DEFAULT_BACKBONE, fine_tunable, get_backbone, why_not_fine_tunable
from smalldata.budget import FineTuneDecision, fine_tune_step, parse_budget
from smalldata.baselines import image_baseline, text_baseline
from smalldata.curve import LearningCurve, learning_curve
from smalldata.data import DataError, Dataset, require_evaluable
from smalldata.evaluate import Candidate, compare, cv_folds, fit_and_predict, single_threaded_math
from smalldata.features import embed
from smalldata.heads import LinearHead, logistic_regression_head
from smalldata.model import RAW_TEXT, Model
from smalldata.progress import QUIET, Progress
from smalldata.stronger import PAIRED, stronger_encoder
from smalldata.describe import DESCRIBED_HEAD, described_candidate
from smalldata.unlabeled import Pool, PoolHead, pool_candidates

IMAGE_BASELINE_FEATURES = "colour-texture-stats"
DEFAULT_HEAD = "logistic-regression"


def candidates(modality: str, backbone: str) -> list[Candidate]:
    """The baseline, then the heads on `backbone`'s embeddings; earlier ones win ties."""
    if modality == "text":
        baseline = Candidate("baseline: tf-idf + logistic regression", RAW_TEXT, text_baseline,
                             "TF-IDF of words and word pairs, logistic regression", is_baseline=True)
    else:
        baseline = Candidate("baseline: colour/texture + random forest", IMAGE_BASELINE_FEATURES, image_baseline,
                             "colour and texture statistics of a 64px thumbnail, random forest", is_baseline=True)
    return [baseline] + frozen_heads(backbone)


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
    finetune: str = "auto",
    flip: bool = True,
    tta: bool = False,
    progress: Progress = QUIET,
) -> Model:
    """Cross-validate every candidate on the same folds, refit the chosen one on all of `dataset`,
    and (``curve=True``) draw its learning curve to say how much more data would help.

    `unlabeled` (a `Pool`, see `smalldata.unlabeled.load_pool`) and `descriptions` (label ->
    what the class means, texts only) add candidates that use them; each is kept only as
    `Comparison.chosen` says; ``model.comparison.to_dict()["contributions"]`` says what each added,
    in points. Without evaluation the pool is not used (nothing could show that it helps).

    With a time ``budget`` (seconds, or "5m"), fine-tuning the backbone is tried too when the
    budget allows, scored on the same folds, and kept only where it beats the frozen choice: an
    image fine-tune by more than one standard error, a text one at all
    (``budget.STANDARD_ERRORS_REQUIRED``). ``finetune="always"`` keeps it regardless, "never" skips
    it; ``budget=None`` means no fine-tuning unless "always". On the default backbone, a budget also
    lets a stronger, slower backbone's heads (all-mpnet-base-v2 for texts, EfficientNet-Lite2 for
    images) join the same folds when embedding with it and cross-validating them fit in a quarter
    of it (`smalldata.stronger`), and for images logistic regression on both backbones' embeddings
    side by side too; ``model.stronger_encoder`` says what happened. ``flip=False`` keeps image fine-tuning
    from mirroring training images, where a mirror image would change the label; ``tta=True``
    makes a fine-tuned image model average each prediction with its mirror image's (not with flip=False).

    With ``evaluate=False`` nothing is cross-validated (possible from 1 example per class): the
    default head (logistic regression on embeddings, or with descriptions the described head) is
    fit, and the model carries no accuracy estimate.
    """
    started = time.perf_counter()
    chosen_by_user = backbone is not None
    backbone = backbone or DEFAULT_BACKBONE[dataset.modality]
    if tta and not flip:
        raise DataError("test-time augmentation mirrors test images, and --no-flip says a mirror image changes "
                        "the label: use one or the other")
    resolved = get_backbone(backbone)
    if resolved.modality != dataset.modality:
        raise DataError(f"backbone {backbone!r} is for {resolved.modality}s, but the data are {dataset.modality}s")
    tuning = finetune == "always" or (finetune != "never" and budget is not None)
    untunable = why_not_fine_tunable(backbone) if tuning else None
    if untunable and finetune == "always":
        raise DataError(f"{untunable}: pick one of {', '.join(fine_tunable(dataset.modality))}, "
                        "or leave out --finetune always")
    if evaluate:
        dataset = require_evaluable(dataset, drop_small_classes=drop_small_classes)
    elif len(dataset.classes) < 2:
        raise DataError("a classifier needs at least 2 classes: add examples of another class")
    options = candidates(dataset.modality, backbone)
    # Extra knowledge (an unlabeled pool, class descriptions) comes in as more candidates on the same folds.
    informed = informed_candidates(dataset, backbone, unlabeled=unlabeled if evaluate else None,
                                   descriptions=descriptions, progress=progress)
    seconds = parse_budget(budget)
    encoder = None
    if not evaluate:
        options = [c for c in options if c.name == DEFAULT_HEAD]
        # Without folds nothing can be judged; descriptions, when given, are the user's own prior knowledge.
        options = [c for c in informed if c.name == DESCRIBED_HEAD] or options
    else:
        options += informed
    features = {name: _features(dataset, name, progress) for name in {c.features for c in options}}
    comparison = None
    chosen = options[0]
    if evaluate:
        folds = cv_folds(dataset.labels, seed=seed)
        compared = time.perf_counter()
        comparison = compare(options, features, dataset.labels, folds=folds, progress=progress,
                             informed=[c.name for c in informed])
        if seconds is not None and not chosen_by_user:  # a stronger backbone costs budget
            # Its heads on embeddings up to twice as wide (mpnet 768 against MiniLM's 384; Lite2 and
            # Lite0 both 1280): at most about twice what each of these candidates cost.
            per_candidate = (time.perf_counter() - compared) / len(options)
            heads_seconds = 2 * per_candidate * (len(frozen_heads(backbone)) + (backbone in PAIRED))
            encoder, extra = _stronger_heads(dataset, backbone, features, folds, heads_seconds=heads_seconds,
                                             seconds_left=seconds - (time.perf_counter() - started), progress=progress)
            if extra:
                comparison = comparison.with_preferred(compare(extra, features, dataset.labels, folds=folds, progress=progress))
                options += extra
        chosen = next(c for c in options if c.name == comparison.chosen.name)
    tuned_name, tuned, fine_tuning = None, None, None
    if untunable:  # the backbone the user chose is kept; the budget's fine-tune is left out, and said so
        fine_tuning = FineTuneDecision("", finetune, kept=False, reason=f"not tried: {untunable}").to_dict()
        progress.log(f"fine-tuning: {fine_tuning['reason']}")
    elif tuning:
        frozen = next(s for s in comparison.scores if s.name == chosen.name) if comparison else None
        tuned_name, tuned, fine_tuning = fine_tune_step(
            dataset, backbone, folds if evaluate else None, frozen, mode=finetune, flip=flip, tta=tta, progress=progress,
            seconds_left=(seconds or 0.0) - (time.perf_counter() - started),
            frozen_correct=_fit_and_check(chosen, features[chosen.features], dataset.labels))
    data = {**summary(dataset), **informed_summary(unlabeled, descriptions)}
    if tuned is not None:  # no learning curve: it would cost a fine-tune per point
        return Model(classes=dataset.classes, modality=dataset.modality, features=fine_tuning["features"],
                     head_name=tuned_name, estimator=tuned, comparison=comparison, data=data, fine_tuning=fine_tuning,
                     stronger_encoder=encoder and encoder.to_dict())
    estimator = _refit(chosen, features[chosen.features], dataset, progress)
    drawn = None
    if evaluate and curve:
        drawn = learning_curve(features[chosen.features], dataset.labels, chosen.make_estimator,
                               seed=seed, progress=progress)
    return Model(classes=dataset.classes, modality=dataset.modality, features=chosen.features,
                 head_name=chosen.name, estimator=estimator, fine_tuning=fine_tuning, comparison=comparison,
                 data=data, curve=drawn, stronger_encoder=encoder and encoder.to_dict())


def _stronger_heads(dataset: Dataset, backbone: str, features: dict, folds, *, heads_seconds: float,
                    seconds_left: float, progress: Progress):
    """(the stronger encoder's decision or None, its heads to compare on `folds`, or none); when
    tried, its embeddings are added to `features`."""
    decision = stronger_encoder(dataset, backbone, seconds_left=seconds_left, heads_seconds=heads_seconds,
                                progress=progress)
    if decision is None:
        return None, []
    progress.log(f"{decision.encoder}: {decision.reason}")
    if not decision.tried:
        return decision, []
    features[decision.encoder] = _features(dataset, decision.encoder, progress)  # cached by now
    extra = frozen_heads(decision.encoder, named_by_backbone=True)
    paired = PAIRED.get(backbone)
    if paired:  # both embeddings are cached by now: side by side they cost only a wider head
        features[paired] = _features(dataset, paired, progress)
        extra = [Candidate(f"{DEFAULT_HEAD} on {paired}", paired, logistic_regression_head,
                           f"logistic regression on frozen {backbone} and {decision.encoder} embeddings side by side")] + extra
    return decision, extra


def _fit_and_check(chosen: Candidate, features, labels):
    """(train rows, test rows) -> which test examples `chosen` gets right when fit on the train rows:
    the frozen side of a fine-tune scored on a held-out split."""
    y = np.asarray(labels)
    classes = np.unique(y)

    def correct(train, test):
        with single_threaded_math():
            proba = fit_and_predict(chosen, features, y, classes, (train, test))
        return classes[proba.argmax(axis=1)] == y[test]
    return correct


def _refit(chosen: Candidate, features, dataset: Dataset, progress: Progress):
    progress.log(f"refitting [bold]{chosen.name}[/] on all {len(dataset)} examples")
    with single_threaded_math():
        estimator = clone(chosen.make_estimator()).fit(features, np.asarray(dataset.labels))
    if isinstance(estimator, PoolHead):
        estimator = estimator.head_  # the pool is needed to fit, not to predict: save the plain LR
    return estimator


def informed_candidates(dataset: Dataset, backbone: str, *, unlabeled: Pool | None,
                        descriptions: Mapping[str, str] | None, progress: Progress) -> list[Candidate]:
    """Candidates that use an unlabeled pool or class descriptions (none when neither is given)."""
    found = []
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
    options = {c.name: c for c in candidates(dataset.modality, backbone)}
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


def informed_summary(unlabeled: Pool | None, descriptions: Mapping[str, str] | None) -> dict:
    """For model.json: the pool that was offered (size, what was left out) and the descriptions given."""
    found = {}
    if unlabeled is not None:
        found["unlabeled"] = unlabeled.summary()
    if descriptions is not None:
        found["descriptions"] = dict(descriptions)
    return found


def summary(dataset: Dataset) -> dict:
    """What was read: counts per class, and every file or row left out, with the reason."""
    return {
        "source": dataset.source,
        "load_options": dataset.load_options,
        "modality": dataset.modality,
        "n_examples": len(dataset),
        "counts": dataset.counts(),
        "skipped": [asdict(s) for s in dataset.skipped],
        "dropped_duplicates": [asdict(s) for s in dataset.dropped_duplicates],
        "conflicting_duplicates": dataset.conflicting_duplicates,
    }
