"""evaluate.py: folds, the comparison on the same folds, scores and the choice."""

import numpy as np
import pytest

from smalldata.evaluate import Candidate, CandidateScore, Comparison, compare, cv_folds, score
from smalldata.heads import LinearHead, logistic_regression_head
from tests.conftest import three_clusters


def test_folds_adapt_to_the_smallest_class_and_cover_each_example_once_per_repeat():
    labels = ["a"] * 3 + ["b"] * 10
    folds = cv_folds(labels)
    assert folds.n_splits == 3 and folds.n_repeats == 4
    for repeat in range(folds.n_repeats):
        tests = np.concatenate([t for _, t in folds.splits[repeat * 3:(repeat + 1) * 3]])
        assert sorted(tests) == list(range(13))
    with pytest.raises(ValueError):
        cv_folds(["a", "b", "b"])


def test_compare_scores_every_candidate_on_the_same_folds():
    X, y = three_clusters()
    noise = np.random.default_rng(0).normal(size=X.shape).astype(np.float32)
    candidates = [Candidate("noise", "noise", logistic_regression_head, is_baseline=True),
                  Candidate("signal", "signal", logistic_regression_head)]
    comparison = compare(candidates, {"noise": noise, "signal": X}, y, folds=cv_folds(y))
    assert [s.name for s in comparison.scores] == ["noise", "signal"]
    assert all(len(s.fold_accuracies) == 10 for s in comparison.scores)
    assert comparison.best.name == "signal" and comparison.baseline.name == "noise"
    assert comparison.best.mean > 0.9 > comparison.baseline.mean
    assert np.allclose(np.asarray(comparison.out_of_fold["signal"]).sum(axis=1), 1)
    again = type(comparison).from_dict(comparison.to_dict())
    assert again.best.name == "signal" and again.best.fold_accuracies == comparison.best.fold_accuracies


def test_compare_in_processes_scores_exactly_as_in_threads():
    """The service's worker runs the fits in processes (joblib's loky); the scores must not change,
    and candidates made by lambdas (as `train.candidates` makes them) must cross to the processes."""
    from joblib import parallel_config

    X, y = three_clusters()
    candidates = [Candidate("lr", "x", logistic_regression_head),
                  Candidate("cosine", "x", lambda: LinearHead(loss="cosine", epochs=30))]
    in_threads = compare(candidates, {"x": X}, y, folds=cv_folds(y))
    with parallel_config(backend="loky", idle_worker_timeout=5):
        in_processes = compare(candidates, {"x": X}, y, folds=cv_folds(y))
    assert [s.fold_accuracies for s in in_processes.scores] == [s.fold_accuracies for s in in_threads.scores]
    assert np.allclose(in_processes.out_of_fold["cosine"], in_threads.out_of_fold["cosine"])


def test_score_gives_confusion_per_class_and_unknown_labels():
    result = score(["a", "a", "b", "z"], ["a", "b", "b", "a"], ["a", "b"])
    assert result.accuracy == 0.5
    assert result.labels == ["a", "b", "z"]
    assert result.confusion == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert result.per_class["a"]["recall"] == 0.5 and result.per_class["b"]["precision"] == 0.5
    assert result.unknown_labels == ["z"]


def _score(name: str, accuracies: list[float], is_baseline: bool = False) -> CandidateScore:
    return CandidateScore(name, "features", "", is_baseline, accuracies)


def test_the_simplest_head_within_one_standard_error_of_the_best_is_chosen():
    scores = [_score("baseline", [0.5, 0.6, 0.5, 0.6], is_baseline=True),
              _score("simple", [0.78, 0.82, 0.80, 0.80]),    # mean 0.80
              _score("flexible", [0.70, 0.90, 0.75, 0.89])]  # mean 0.81, standard error ~0.04
    comparison = Comparison(scores, n_splits=4, n_repeats=1, n_examples=40)
    assert comparison.best.name == "flexible" and comparison.chosen.name == "simple"
    scores[2] = _score("flexible", [0.90, 0.91, 0.90, 0.91])  # clearly better: no longer a tie
    assert Comparison(scores, n_splits=4, n_repeats=1, n_examples=40).chosen.name == "flexible"


def test_the_baseline_is_the_reference_and_never_shipped_where_a_head_exists():
    # an mr draw of 16 sentences: folds of 3-4 put TF-IDF 13 points above every pretrained head,
    # which the test split put 25 points above it
    scores = [_score("baseline", [0.90, 0.92, 0.91, 0.91], is_baseline=True),
              _score("head", [0.60, 0.62, 0.61, 0.61])]
    comparison = Comparison(scores, n_splits=4, n_repeats=1, n_examples=40)
    assert comparison.best.name == "baseline" and comparison.chosen.name == "head"
    alone = Comparison(scores[:1], n_splits=4, n_repeats=1, n_examples=40)
    assert alone.chosen.name == "baseline"  # nothing else to ship


def test_every_training_part_of_uneven_folds_holds_every_class():
    labels = np.array(["big"] * 40 + ["mid"] * 10 + ["small"] * 2)
    folds = cv_folds(labels)
    for train, _ in folds.splits:
        assert set(labels[train]) == {"big", "mid", "small"}


def test_with_uneven_classes_balanced_accuracy_decides_and_the_table_says_so():
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    labels = np.array(["big"] * 40 + ["small"] * 8)
    # Overlapping classes: logistic regression finds the small class often, at some cost overall.
    X = rng.normal(size=(48, 2)) + np.where(labels == "small", 1.2, 0.0)[:, None]
    always_big = Candidate("always the largest class", "x", lambda: DummyClassifier(strategy="most_frequent"))
    weighted = Candidate("weighted logistic regression", "x", lambda: LogisticRegression(class_weight="balanced"))
    comparison = compare([always_big, weighted], {"x": X}, labels, folds=cv_folds(labels))
    assert comparison.balanced and comparison.metric == "balanced accuracy"
    by_name = {s.name: s for s in comparison.scores}
    assert by_name["always the largest class"].balanced_mean == pytest.approx(0.5)
    assert by_name["always the largest class"].lowest_recall == 0.0
    assert comparison.chosen.name == "weighted logistic regression"
    assert "balanced accuracy" in comparison.to_dict()["selection_rule"]
    even = np.array(["a"] * 10 + ["b"] * 10)
    assert not compare([weighted], {"x": X[:20]}, even, folds=cv_folds(even)).balanced
