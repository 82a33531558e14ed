"""What is wrong with the data, and where the model goes wrong.

- `label_issues`: examples whose given label the model's out-of-fold probabilities doubt
  (confident learning, Northcutt et al. 2021, through cleanlab);
- `near_duplicates` within one set and `leakage` between a training and a test set, in embedding space;
- `outliers`: examples far from every class in embedding space;
- `most_confused` (pairs of labels) and `most_wrong` (examples) from a model's results.

Every function returns a small result object with `to_dict()`, ready for JSON, the HTML report and
the CLI. Items are given back as strings (a file path or the text) so a report can show thumbnails.
Probabilities are always in the column order of `classes`, sorted labels by default, as
`Comparison.out_of_fold` and `Model.predict_proba` give them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import normalize

from smalldata.data import Dataset

# Cosine similarity from which two different examples count as near-duplicates. Measured on this
# project's backbones: resized/re-encoded/cropped copies of a flowers12 photo score 0.84-0.98 with
# EfficientNet-Lite0, and the flowers12 pairs between 0.94 and 1.0 are the same shot reframed; an
# upper-cased or re-punctuated sentence scores 0.97-1.0 with MiniLM, while the closest two distinct
# sentences among 2000 of sst2 score 0.86. 0.95 keeps clear of distinct examples on both.
NEAR_DUPLICATE_SIMILARITY = 0.95
# Robust z-score above which an example is an outlier (Iglewicz & Hoaglin's modified z-score rule).
OUTLIER_Z = 3.5
OUTLIER_NEIGHBOURS = 5
MAD_TO_STD = 1.4826  # the median absolute deviation of a normal distribution times this is its std
# A suspected label error also needs the folds to give its label less than this probability. At a few
# examples per class, cleanlab's filter alone flagged 9-26% of clean texts and 10-14% of clean
# clothing photos: the weak folds' ordinary mistakes. 0.05, chosen on the development sets, then
# flagged 3.6-5.2% of clean cifar10 draws; 0.02 (chosen on those and cifar10) flags at most 1.2%
# of any of them (Fashion-MNIST, which confirmed it: 1.0%, and 2.4% at 5 a class), and still
# finds a third to a half of planted flips in photos. Weak text folds
# find next to none: at 8-16 texts a class no list is better than a wrong one. BENCHMARKS.md,
# "False alarms of the training report's findings".
LABEL_ERROR_CEILING = 0.02


def _item(value) -> str:
    return str(value)


# --------------------------------------------------------------------------------- label issues

@dataclass
class LabelIssue:
    index: int
    item: str
    given_label: str
    suggested_label: str
    given_probability: float  # the model's out-of-fold probability of the given label
    suggested_probability: float


@dataclass
class LabelIssues:
    """Suspected label errors, most suspicious first (lowest probability of the given label)."""

    issues: list[LabelIssue]
    n_examples: int
    method: str

    def to_dict(self) -> dict:
        return {"method": self.method, "n_examples": self.n_examples, "n_issues": len(self.issues),
                "issues": [asdict(issue) for issue in self.issues]}


def label_issues(
    dataset: Dataset,
    probabilities,
    *,
    classes: Sequence[str] | None = None,
    filter_by: str = "prune_by_noise_rate",
    ceiling: float = LABEL_ERROR_CEILING,
) -> LabelIssues:
    """Examples whose label is probably wrong, from out-of-fold probabilities (never in-sample ones:
    a model that has seen an example agrees with its label, wrong or not).

    Confident learning estimates, per pair of classes, how many examples given label i truly belong
    to j, counting those whose probability of j passes j's own average self-confidence; it then
    flags that many examples per pair, the ones with the largest margin for j ("prune_by_noise_rate",
    cleanlab's default). Per-class thresholds make it robust to a head whose probabilities are
    over- or under-confident, which is why no calibration step is added here.

    Of those, only examples whose given label has an out-of-fold probability under `ceiling` are
    kept: where the folds are weak, the filter's per-class thresholds are low and it takes the
    model's ordinary mistakes for label errors (`ceiling=1` keeps the filter's whole list).
    """
    # cleanlab brings pandas along: imported here so that the CLI and predict do not pay for it.
    from cleanlab.filter import find_label_issues

    classes = list(classes) if classes is not None else dataset.classes
    probabilities = np.asarray(probabilities, dtype=float)
    column = {label: c for c, label in enumerate(classes)}
    unknown = sorted(set(dataset.labels) - set(column))
    if unknown:
        raise ValueError(f"labels {unknown} have no column in the probabilities: give the classes they were computed for")
    given = np.array([column[label] for label in dataset.labels], dtype=int)
    method = (f"confident learning (cleanlab, filter_by={filter_by!r}) on out-of-fold probabilities, "
              f"where the given label's is under {ceiling:g}")
    if len(classes) < 2 or len(dataset) == 0:
        return LabelIssues([], len(dataset), method)
    ranked = find_label_issues(given, probabilities, filter_by=filter_by,
                               return_indices_ranked_by="self_confidence", n_jobs=1)
    issues = []
    for index in ranked.tolist():
        row = probabilities[index]
        if row[given[index]] >= ceiling:
            continue
        others = row.copy()
        others[given[index]] = -np.inf  # the suggestion is always another label, even when the model is unsure
        suggested = int(np.argmax(others))
        issues.append(LabelIssue(index, _item(dataset.inputs[index]), dataset.labels[index], classes[suggested],
                                 float(row[given[index]]), float(row[suggested])))
    return LabelIssues(issues, len(dataset), method)


# ------------------------------------------------------------------- near-duplicates and leakage

@dataclass
class DuplicatePair:
    first_index: int
    first_item: str
    first_label: str
    second_index: int
    second_item: str
    second_label: str
    similarity: float

    @property
    def labels_agree(self) -> bool:
        return self.first_label == self.second_label

    def to_dict(self) -> dict:
        return {**asdict(self), "labels_agree": self.labels_agree}


@dataclass
class NearDuplicates:
    """Pairs of examples of one set closer than `threshold` (cosine similarity), closest first."""

    pairs: list[DuplicatePair]
    threshold: float
    n_examples: int

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "n_examples": self.n_examples, "n_pairs": len(self.pairs),
                "pairs": [pair.to_dict() for pair in self.pairs]}


@dataclass
class LeakedPair:
    train_index: int
    train_item: str
    train_label: str
    test_index: int
    test_item: str
    test_label: str
    similarity: float

    @property
    def labels_agree(self) -> bool:
        return self.train_label == self.test_label

    def to_dict(self) -> dict:
        return {**asdict(self), "labels_agree": self.labels_agree}


@dataclass
class Leakage:
    """Test examples with a near-duplicate among the training examples: their test score is not
    a score on unseen data. Closest pairs first."""

    pairs: list[LeakedPair]
    threshold: float
    n_train: int
    n_test: int

    @property
    def n_leaked_test_examples(self) -> int:
        return len({pair.test_index for pair in self.pairs})

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "n_train": self.n_train, "n_test": self.n_test,
                "n_pairs": len(self.pairs), "n_leaked_test_examples": self.n_leaked_test_examples,
                "pairs": [pair.to_dict() for pair in self.pairs]}


def near_duplicates(dataset: Dataset, embeddings, *, threshold: float = NEAR_DUPLICATE_SIMILARITY) -> NearDuplicates:
    """Pairs of different examples whose embeddings have cosine similarity >= `threshold`.

    Exact copies are already dropped when a dataset is read; these are the resized, re-encoded,
    reframed or re-punctuated ones, which inflate cross-validated accuracy when they land in
    different folds, and which contradict each other when their labels differ.
    """
    found = _similar_pairs(embeddings, None, threshold)
    pairs = [DuplicatePair(i, _item(dataset.inputs[i]), dataset.labels[i], j, _item(dataset.inputs[j]),
                           dataset.labels[j], similarity) for i, j, similarity in found]
    return NearDuplicates(pairs, threshold, len(dataset))


def leakage(train: Dataset, train_embeddings, test: Dataset, test_embeddings, *,
            threshold: float = NEAR_DUPLICATE_SIMILARITY) -> Leakage:
    """Pairs (training example, test example) whose embeddings have cosine similarity >= `threshold`."""
    found = _similar_pairs(train_embeddings, test_embeddings, threshold)
    pairs = [LeakedPair(i, _item(train.inputs[i]), train.labels[i], j, _item(test.inputs[j]),
                        test.labels[j], similarity) for i, j, similarity in found]
    return Leakage(pairs, threshold, len(train), len(test))


def _similar_pairs(reference, queries, threshold: float) -> list[tuple[int, int, float]]:
    """(reference index, query index, similarity) for pairs at least `threshold` similar, most similar
    first. Without `queries`, pairs within `reference`, each once, never an example with itself."""
    reference = normalize(np.asarray(reference, dtype=np.float64))
    if len(reference) == 0 or (queries is not None and len(queries) == 0):
        return []
    index = NearestNeighbors(metric="cosine").fit(reference)
    if queries is None:
        distances, neighbours = index.radius_neighbors(radius=1 - threshold)  # leaves each point out
    else:
        distances, neighbours = index.radius_neighbors(normalize(np.asarray(queries, dtype=np.float64)),
                                                       radius=1 - threshold)
    pairs = []
    for query, (row_distances, row_neighbours) in enumerate(zip(distances, neighbours)):
        for distance, found in zip(row_distances.tolist(), row_neighbours.tolist()):
            if queries is not None:
                pairs.append((found, query, 1 - distance))
            elif found > query:
                pairs.append((query, found, 1 - distance))
    return sorted(pairs, key=lambda pair: (-pair[2], pair[0], pair[1]))


# ------------------------------------------------------------------------------------- outliers

@dataclass
class Outlier:
    index: int
    item: str
    label: str
    score: float  # robust z-score of its distance to the nearest class; above `threshold` = outlier
    own_class_score: float | None  # the same against its own class alone (None: a class of one)
    nearest_class: str


@dataclass
class Outliers:
    """Examples far from every class, farthest first."""

    outliers: list[Outlier]
    threshold: float
    n_neighbours: int
    n_examples: int
    rule: str

    def to_dict(self) -> dict:
        return {"rule": self.rule, "threshold": self.threshold, "n_neighbours": self.n_neighbours,
                "n_examples": self.n_examples, "n_outliers": len(self.outliers),
                "outliers": [asdict(outlier) for outlier in self.outliers]}


def outliers(dataset: Dataset, embeddings, *, n_neighbours: int = OUTLIER_NEIGHBOURS,
             threshold: float = OUTLIER_Z) -> Outliers:
    """Examples that belong to no class: far from each class compared with how far that class's own
    examples are from one another.

    An example's distance to a class is its mean cosine distance to the class's `n_neighbours`
    nearest members (itself left out). A class's typical distance is the median of its members'
    distances to it; the spread is the median absolute deviation around those medians, pooled over
    all classes (one class of 3 examples cannot give a spread of its own). The score against a class
    is (distance - typical) / spread, a robust z-score: it has no unit, so it means the same for any
    backbone. The outlier score is the lowest over the classes, so an example that sits well inside
    another class is a suspected label error, not an outlier. Classes of one example give no typical
    distance and are left out as references. On flowers12's 719 training photos this flags 7, all
    unusual shots (extreme close-ups, a butterfly, a rock background); on 2000 sst2 sentences, none.
    """
    X = normalize(np.asarray(embeddings, dtype=np.float64))
    labels = np.asarray(dataset.labels)
    classes = [c for c in dataset.classes if np.sum(labels == c) >= 2]
    rule = (f"robust z-score of the mean cosine distance to the {n_neighbours} nearest examples of the "
            f"nearest class, against that class's own (median, pooled MAD); outlier above {threshold}")
    if not classes:
        return Outliers([], threshold, n_neighbours, len(dataset), rule)
    distance = np.full((len(X), len(classes)), np.nan)
    for column, label in enumerate(classes):
        members = np.flatnonzero(labels == label)
        k = min(n_neighbours, len(members) - 1)
        index = NearestNeighbors(n_neighbors=k, metric="cosine").fit(X[members])
        distance[members, column] = index.kneighbors()[0].mean(axis=1)  # members: themselves left out
        others = np.flatnonzero(labels != label)
        if len(others):
            distance[others, column] = index.kneighbors(X[others], n_neighbors=k)[0].mean(axis=1)
    own = np.array([classes.index(label) if label in classes else -1 for label in labels])
    is_member = own >= 0
    own_distance = distance[np.flatnonzero(is_member), own[is_member]]
    typical = np.array([np.median(own_distance[own[is_member] == c]) for c in range(len(classes))])
    spread = MAD_TO_STD * np.median(np.abs(own_distance - typical[own[is_member]]))
    spread = max(spread, 1e-12 * max(float(typical.max()), 1e-12))  # identical distances: avoid 0/0
    z = (distance - typical) / spread
    nearest = np.argmin(z, axis=1)
    score = z[np.arange(len(X)), nearest]
    found = [Outlier(int(i), _item(dataset.inputs[i]), str(labels[i]), float(score[i]),
                     float(z[i, own[i]]) if own[i] >= 0 else None, classes[nearest[i]])
             for i in np.argsort(-score, kind="stable") if score[i] > threshold]
    return Outliers(found, threshold, n_neighbours, len(dataset), rule)


# ------------------------------------------------------------------- where the model goes wrong

@dataclass
class ConfusedPair:
    true_label: str
    predicted_label: str
    count: int
    rate: float  # count / examples of `true_label`


@dataclass
class MostConfused:
    """Pairs (true label, predicted label) the model mixes up most often, most first."""

    pairs: list[ConfusedPair]

    def to_dict(self) -> dict:
        return {"pairs": [asdict(pair) for pair in self.pairs]}


def most_confused(confusion, labels: Sequence[str], *, limit: int = 10) -> MostConfused:
    """The off-diagonal cells of a confusion matrix (rows: true, columns: predicted, both in
    `labels` order, as in `TestResult`), largest count first; ties: the larger rate, then by name."""
    matrix = np.asarray(confusion)
    support = matrix.sum(axis=1)
    pairs = [ConfusedPair(labels[t], labels[p], int(matrix[t, p]), float(matrix[t, p] / support[t]))
             for t in range(len(labels)) for p in range(len(labels)) if t != p and matrix[t, p] > 0]
    pairs.sort(key=lambda pair: (-pair.count, -pair.rate, pair.true_label, pair.predicted_label))
    return MostConfused(pairs[:limit])


@dataclass
class WrongPrediction:
    index: int
    item: str
    true_label: str
    predicted_label: str
    predicted_probability: float
    true_probability: float  # 0 when the model does not know the true label


@dataclass
class MostWrong:
    """Misclassified examples, the most confidently wrong first."""

    examples: list[WrongPrediction]
    n_examples: int
    n_wrong: int

    def to_dict(self) -> dict:
        return {"n_examples": self.n_examples, "n_wrong": self.n_wrong,
                "examples": [asdict(example) for example in self.examples]}


def most_wrong(dataset: Dataset, probabilities, *, classes: Sequence[str] | None = None,
               limit: int = 20) -> MostWrong:
    """Examples whose most probable class is not their label, highest probability first.

    `probabilities` are held-out ones (a test set, or out-of-fold), columns in `classes` order
    (default: the dataset's sorted labels; give `Model.classes` for a model's test predictions).
    """
    classes = list(classes) if classes is not None else dataset.classes
    probabilities = np.asarray(probabilities, dtype=float)
    predicted = probabilities.argmax(axis=1)
    column = {label: c for c, label in enumerate(classes)}
    wrong = [i for i, label in enumerate(dataset.labels) if column.get(label) != predicted[i]]
    wrong.sort(key=lambda i: (-probabilities[i, predicted[i]], i))
    examples = [
        WrongPrediction(i, _item(dataset.inputs[i]), dataset.labels[i], classes[predicted[i]],
                        float(probabilities[i, predicted[i]]),
                        float(probabilities[i, column[dataset.labels[i]]]) if dataset.labels[i] in column else 0.0)
        for i in wrong[:limit]
    ]
    return MostWrong(examples, len(dataset), len(wrong))
