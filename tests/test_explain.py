"""explain.py on small seeded synthetic embeddings: planted label errors, near-duplicates, leakage
and outliers must be found, and nothing that was not planted."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from smalldata.data import Dataset
from smalldata.explain import (
    NEAR_DUPLICATE_SIMILARITY,
    label_issues,
    leakage,
    most_confused,
    most_wrong,
    near_duplicates,
    outliers,
)

CLASSES = ["ant", "bee", "cat", "dog"]


def clusters(seed: int = 0, *, per_class: int = 30, dim: int = 16, radius: float = 10.0,
             noise_seed: int | None = None):
    """Four Gaussian clusters of unit spread, centres at `radius` from the origin in random directions
    (10: far apart; 4: still separable, but two examples of a class are far from near-duplicates).
    `noise_seed` draws other examples around the same centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(CLASSES), dim))
    centres *= radius / np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.repeat(np.arange(len(CLASSES)), per_class)
    noise = rng if noise_seed is None else np.random.default_rng(noise_seed)
    X = centres[y] + noise.normal(size=(len(y), dim))
    return X, y, centres


def dataset(labels, prefix: str = "item") -> Dataset:
    return Dataset([f"{prefix} {i}" for i in range(len(labels))], [CLASSES[c] for c in labels], "text")


def flipped(y: np.ndarray, fraction: float, seed: int):
    rng = np.random.default_rng(seed)
    flips = rng.choice(len(y), size=round(fraction * len(y)), replace=False)
    noisy = y.copy()
    noisy[flips] = (noisy[flips] + rng.integers(1, len(CLASSES), size=len(flips))) % len(CLASSES)
    return noisy, flips


def out_of_fold(X, y, seed: int = 0):
    # Linear discriminant analysis is the true model of these clusters (Gaussian, shared covariance),
    # so the probabilities are those of a good model, which is what label_issues is to be tested with.
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    return cross_val_predict(LinearDiscriminantAnalysis(), X, y, cv=folds, method="predict_proba")


def test_label_issues_finds_planted_flips_and_suggests_the_true_label():
    X, y, _ = clusters()
    noisy, flips = flipped(y, 0.1, seed=1)
    result = label_issues(dataset(noisy), out_of_fold(X, noisy))
    flagged = [issue.index for issue in result.issues]
    assert set(flagged) == set(flips.tolist())
    for issue in result.issues:
        assert issue.given_label == CLASSES[noisy[issue.index]]
        assert issue.suggested_label == CLASSES[y[issue.index]]
        assert issue.suggested_probability > issue.given_probability
        assert issue.item == f"item {issue.index}"
    given = [issue.given_probability for issue in result.issues]
    assert given == sorted(given)  # most suspicious (least probable given label) first
    json.dumps(result.to_dict())


def test_label_issues_flags_nothing_much_on_clean_labels():
    X, y, _ = clusters(seed=2)
    assert len(label_issues(dataset(y), out_of_fold(X, y)).issues) <= 1


def test_label_issues_are_not_the_ordinary_mistakes_of_weak_folds():
    # Overlapping clusters and 8 examples a class: the folds are weak and every label is right. The
    # filter alone takes their ordinary mistakes for label errors; the ceiling keeps only examples
    # whose label the folds all but rule out (BENCHMARKS.md, "False alarms of the training report's
    # findings").
    X, y, _ = clusters(seed=5, per_class=8, radius=1.5)
    probabilities = out_of_fold(X, y)
    assert len(label_issues(dataset(y), probabilities, ceiling=1.0).issues) >= 3
    kept = label_issues(dataset(y), probabilities).issues
    assert all(issue.given_probability < 0.05 for issue in kept)
    assert len(kept) < len(label_issues(dataset(y), probabilities, ceiling=1.0).issues)


def test_label_issues_reads_columns_in_the_given_class_order():
    X, y, _ = clusters(seed=3)
    noisy, flips = flipped(y, 0.1, seed=3)
    probabilities = out_of_fold(X, noisy)
    reversed_classes = CLASSES[::-1]
    result = label_issues(dataset(noisy), probabilities[:, ::-1], classes=reversed_classes)
    assert {issue.index for issue in result.issues} == set(flips.tolist())
    with pytest.raises(ValueError, match="no column"):
        label_issues(dataset(noisy), probabilities[:, :3], classes=CLASSES[:3])


def test_near_duplicates_finds_planted_copies_and_whether_labels_agree():
    X, y, _ = clusters(seed=4, radius=4)
    rng = np.random.default_rng(4)
    copy_of = {len(y): 5, len(y) + 1: 40}  # new index -> original
    X = np.vstack([X, X[5] + 0.01 * rng.normal(size=X.shape[1]), 3 * X[40]])  # a scaled copy is a copy
    labels = np.concatenate([y, [y[5], (y[40] + 1) % len(CLASSES)]])
    result = near_duplicates(dataset(labels), X)
    assert {(p.first_index, p.second_index) for p in result.pairs} == {(o, n) for n, o in copy_of.items()}
    agree = {p.second_index: p.labels_agree for p in result.pairs}
    assert agree == {len(y): True, len(y) + 1: False}
    assert all(p.similarity >= NEAR_DUPLICATE_SIMILARITY for p in result.pairs)
    assert result.pairs[0].similarity >= result.pairs[1].similarity
    assert json.loads(json.dumps(result.to_dict()))["pairs"][0]["labels_agree"] in (True, False)


def test_leakage_pairs_each_test_copy_with_its_training_original():
    X, y, _ = clusters(seed=5, radius=4)
    X_test, y_test, _ = clusters(seed=5, radius=4, noise_seed=50)  # same centres, other examples: close, no copies
    X_test, y_test = X_test[::3], y_test[::3]
    X_test[2] = X[17] * 1.001
    X_test[7] = X[60] + 1e-3
    y_test[7] = (y[60] + 2) % len(CLASSES)
    result = leakage(dataset(y), X, dataset(y_test, "test"), X_test)
    assert [(p.train_index, p.test_index) for p in sorted(result.pairs, key=lambda p: p.test_index)] == [(17, 2), (60, 7)]
    assert {p.test_index: p.labels_agree for p in result.pairs} == {2: True, 7: False}
    assert result.n_leaked_test_examples == 2
    assert result.pairs[0].test_item.startswith("test ")
    json.dumps(result.to_dict())


def test_outliers_finds_an_example_far_from_every_class_but_not_a_mislabelled_one():
    X, y, centres = clusters(seed=6)
    # a direction orthogonal to every class centre: far from all of them in cosine distance
    away = np.linalg.svd(centres)[2][-1] * 6
    X = np.vstack([X, away, centres[2] + 0.3])
    labels = np.concatenate([y, [0, 1]])  # the second one sits inside class 2 but is labelled 1
    result = outliers(dataset(labels), X)
    assert [o.index for o in result.outliers] == [len(y)]
    assert result.outliers[0].score > result.threshold
    json.dumps(result.to_dict())
    scores = outliers(dataset(labels), X, threshold=-np.inf).outliers
    mislabelled = next(o for o in scores if o.index == len(y) + 1)
    assert mislabelled.nearest_class == CLASSES[2] and mislabelled.own_class_score > result.threshold


def test_outliers_are_scale_free():
    X, y, centres = clusters(seed=7)
    X = np.vstack([X, np.linalg.svd(centres)[2][-1]])
    labels = np.concatenate([y, [3]])
    a = outliers(dataset(labels), X, threshold=-np.inf).outliers
    b = outliers(dataset(labels), 1000 * X, threshold=-np.inf).outliers
    assert [o.index for o in a] == [o.index for o in b] and a[0].index == len(y)
    assert np.allclose([o.score for o in a], [o.score for o in b])


def test_most_confused_orders_by_count_then_rate():
    labels = ["a", "b", "c"]
    confusion = [[10, 3, 1],
                 [3, 5, 0],
                 [5, 0, 2]]
    pairs = most_confused(confusion, labels).pairs
    assert [(p.true_label, p.predicted_label, p.count) for p in pairs] == [
        ("c", "a", 5), ("b", "a", 3), ("a", "b", 3), ("a", "c", 1)]  # b->a: 3 of 8, a->b: 3 of 14
    assert pairs[0].rate == pytest.approx(5 / 7)
    assert len(most_confused(confusion, labels, limit=2).pairs) == 2
    json.dumps(most_confused(confusion, labels).to_dict())


def test_most_wrong_ranks_confident_mistakes_first():
    data = Dataset(["x0", "x1", "x2", "x3", "x4"], ["ant", "bee", "bee", "ant", "cat"], "text")
    probabilities = np.array([[0.9, 0.1],   # right
                              [0.6, 0.4],   # wrong, 0.6
                              [0.95, 0.05],  # wrong, 0.95
                              [0.2, 0.8],   # wrong, 0.8
                              [0.5, 0.5]])  # label the model does not know: wrong
    result = most_wrong(data, probabilities, classes=["ant", "bee"])
    assert [e.index for e in result.examples] == [2, 3, 1, 4]
    assert result.examples[0].predicted_label == "ant" and result.examples[0].true_probability == pytest.approx(0.05)
    assert result.examples[-1].true_probability == 0.0 and result.n_wrong == 4
    assert [e.index for e in most_wrong(data, probabilities, classes=["ant", "bee"], limit=1).examples] == [2]
    json.dumps(result.to_dict())
