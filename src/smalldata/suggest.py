"""Which unlabeled examples to label next: uncertain ones, typical of their region, spread over the data.

Pure uncertainty sampling (label what the model is least sure of) tends to lose to random choice at
small budgets: the most uncertain examples sit together on one boundary, are often outliers, and a
batch of them teaches the model one thing many times. What works when few labels exist is to cover
the data first and pick typical examples (Hacohen et al. 2022, "Active Learning on a Budget",
TypiClust), and to spend uncertainty inside that cover (Zhdanov 2019, "Diverse mini-batch active
learning"; Citovsky et al. 2021, cluster-margin). `rank_for_labeling` does both:

1. Cluster the unlabeled and the already labeled examples together in embedding space (k-means,
   one cluster per labeled example plus one per wanted pick). Clusters that hold no labeled
   example are regions the model has not been shown.
2. Take clusters in order: uncovered before covered, and within each group the one with the most
   uncertainty mass first (sum over its members of 1 - margin, times their distance to the nearest
   labeled example): a large region the model is unsure about, far from what it was shown, is
   worth more than a small one, one next to labeled examples, or one it classifies confidently.
3. From each cluster take the example with the highest uncertainty x typicality (the inverse mean
   distance to its nearest neighbours in the cluster): uncertain, but not an outlier.
   Once every cluster has given one, go round again for second picks.

The uncertainty reported is 1 - (p_top1 - p_top2) in [0, 1]: 0 when one class has all the
probability, 1 when the two likeliest classes tie.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from smalldata.backbones import DEFAULT_BACKBONE, REGISTRY, ImageBackbone, TextBackbone, get_backbone
from smalldata.data import DataError, Pool, Skipped, as_inputs, check_images, read_texts, skipped_summary, visible_files
from smalldata.features import embed
from smalldata.progress import QUIET, Progress

TYPICALITY_NEIGHBOURS = 20  # TypiClust's k: enough for a stable density, few enough for small clusters
KMEANS_INITS = 1  # k-means++ seeding is good enough for a cover; more restarts cost time
IMAGE_CSV = "suggestions.csv"


# ------------------------------------------------------------------------------------------ ranking

def uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """1 - (largest - second largest probability) per row: 0 = sure, 1 = a tie between two classes."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must have one row per example and at least 2 columns, not shape {p.shape}")
    top_two = np.sort(p, axis=1)[:, -2:]
    return np.clip(1.0 - (top_two[:, 1] - top_two[:, 0]), 0.0, 1.0)


def rank_for_labeling(
    embeddings: np.ndarray,
    probabilities: np.ndarray,
    *,
    n: int,
    labeled_embeddings: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Indices of the `n` rows of `embeddings` most worth labeling next, best first.

    `probabilities` are the current model's class probabilities for the same rows; the optional
    `labeled_embeddings` (examples already labeled) make regions they cover worth less.
    Deterministic for a given `seed`.
    """
    X = _unit_rows(np.asarray(embeddings, dtype=np.float32))
    u = uncertainty(probabilities)
    if len(u) != len(X):
        raise ValueError(f"{len(X)} embeddings but {len(u)} rows of probabilities")
    n = min(int(n), len(X))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    labeled = (np.zeros((0, X.shape[1]), dtype=np.float32)
               if labeled_embeddings is None or len(labeled_embeddings) == 0
               else _unit_rows(np.asarray(labeled_embeddings, dtype=np.float32)))
    if labeled.shape[1] != X.shape[1]:
        raise ValueError(f"labeled embeddings have {labeled.shape[1]} dimensions, the unlabeled {X.shape[1]}")

    assignment, covered = _clusters(X, labeled, n, seed)
    # The small floor lets typicality still choose where the model is sure of everything; the tiny
    # seeded noise breaks exact ties (duplicates) reproducibly.
    score = (u + 1e-3) * _typicality(X, assignment) + 1e-9 * np.random.default_rng(seed).random(len(X))

    # How far each example lies from what is labeled: a cluster next to labeled examples (k-means may
    # split one dense region in two) is worth less than one across the space from them.
    if len(labeled):
        distance = np.sqrt(np.maximum(2.0 - 2.0 * (X @ labeled.T).max(axis=1), 0.0))
    else:
        distance = np.ones(len(X))
    clusters = np.unique(assignment)
    mass = np.array([(u * distance)[assignment == c].sum() for c in clusters])
    is_covered = np.array([c in covered for c in clusters])
    order = clusters[np.lexsort((-mass, is_covered))]  # uncovered first, then by uncertainty mass
    queues = [list(np.flatnonzero(assignment == c)[np.argsort(-score[assignment == c], kind="stable")])
              for c in order]
    picks: list[int] = []
    depth = 0
    while len(picks) < n:
        for queue in queues:
            if depth < len(queue):
                picks.append(int(queue[depth]))
                if len(picks) == n:
                    break
        depth += 1
    return np.asarray(picks, dtype=np.int64)


def _unit_rows(X: np.ndarray) -> np.ndarray:
    # Cosine geometry: the sentence encoder is trained for it, and for CNN features it removes the
    # length (how much "stuff" an image has) that would otherwise dominate distances.
    return X / (np.linalg.norm(X, axis=1, keepdims=True) + 1e-8)


def _clusters(X: np.ndarray, labeled: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, set[int]]:
    """Cluster of every unlabeled row, and the clusters that hold a labeled example."""
    from sklearn.cluster import KMeans

    points = np.vstack([X, labeled])
    k = min(n + len(labeled), len(points))
    if k <= 1:
        return np.zeros(len(X), dtype=np.int64), set()
    from threadpoolctl import threadpool_limits

    # One thread: on a few thousand points threads gain little, and on a busy machine OpenMP's
    # waiting threads made it 10x slower (3000 x 384, 72 clusters: 3.8 s on one thread, 38 s on two).
    with threadpool_limits(limits=1):
        km = KMeans(n_clusters=k, n_init=KMEANS_INITS, random_state=seed).fit(points)
    return km.labels_[: len(X)].astype(np.int64), set(km.labels_[len(X):].tolist())


def _typicality(X: np.ndarray, assignment: np.ndarray) -> np.ndarray:
    """1 / mean distance to the nearest neighbours within the cluster, scaled to 1 at each cluster's most typical."""
    typicality = np.ones(len(X))
    for c in np.unique(assignment):
        members = np.flatnonzero(assignment == c)
        if len(members) < 3:
            continue
        Y = X[members]
        k = min(TYPICALITY_NEIGHBOURS, len(members) - 1)
        value = np.empty(len(members))
        for start in range(0, len(members), 1024):  # rows in blocks: a huge cluster needs no huge matrix
            block = slice(start, start + 1024)
            distances = np.sqrt(np.maximum(2.0 - 2.0 * (Y[block] @ Y.T), 0.0))  # unit vectors
            distances[np.arange(len(distances)), np.arange(len(members))[block]] = 0.0
            nearest = np.partition(distances, k, axis=1)[:, : k + 1]  # the k nearest and the point itself (0)
            value[block] = 1.0 / (nearest.sum(axis=1) / k + 1e-6)
        typicality[members] = value / value.max()
    return typicality


# ------------------------------------------------------------------------------------- on a model

@dataclass(frozen=True)
class Suggestion:
    """One example worth labeling: `rank` 1 is the first to label."""

    item: object  # an image path or a text
    rank: int
    predicted: str  # the model's current guess
    probability: float  # the model's probability of that guess
    uncertainty: float  # 1 - (top probability - second probability)

    def to_dict(self) -> dict:
        return {"rank": self.rank, "item": str(self.item), "predicted": self.predicted,
                "probability": round(self.probability, 4), "uncertainty": round(self.uncertainty, 4)}


def diversity_backbone(model) -> str:
    """The backbone whose embeddings measure how alike examples are: the model's own when it is a
    pretrained network, else the default one for the modality (TF-IDF or colour statistics say
    little about what an example shows)."""
    if model.features in REGISTRY and isinstance(get_backbone(model.features), (ImageBackbone, TextBackbone)):
        return model.features
    return DEFAULT_BACKBONE[model.modality]


def suggest(
    model,
    items: Sequence,
    *,
    n: int,
    labeled: Sequence | None = None,
    seed: int = 0,
    progress: Progress = QUIET,
) -> list[Suggestion]:
    """The `n` of `items` (image paths or texts) most worth labeling next for `model`, best first.

    `labeled`, the examples the model was trained on (optional), makes examples like them worth less.
    """
    items = as_inputs(items, model.modality)
    if not items or n <= 0:
        return []
    proba = model.predict_proba(items, progress=progress)
    backbone = diversity_backbone(model)
    X = embed(items, backbone, progress=progress)
    known = None
    if labeled is not None and len(labeled):
        known = embed(as_inputs(labeled, model.modality), backbone, progress=progress)
    order = rank_for_labeling(X, proba, n=n, labeled_embeddings=known, seed=seed)
    u = uncertainty(proba)
    return [
        Suggestion(items[i], rank, model.classes[int(proba[i].argmax())], float(proba[i].max()), float(u[i]))
        for rank, i in enumerate(order, start=1)
    ]


# ------------------------------------------------------------------------------------------- input

# What `load_unlabeled` returns: unlabeled inputs, their content hashes, and what was left out, with why.
Unlabeled = Pool


class OutputExistsError(DataError, FileExistsError):
    """`write_suggestions` was given a file or folder that exists and would be overwritten: nothing was written."""


def load_unlabeled(path: str | Path, *, text_column: str = "text") -> Pool:
    """A folder of images (searched recursively), a CSV/TSV with a text column, or a .txt with one text a line.

    Unreadable images, empty texts and exact duplicates are left out and listed in `skipped`.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist: give a folder of images, or a CSV/TSV/.txt file of texts")
    if path.is_dir():
        return _load_image_files(path)
    if path.suffix.lower() in {".txt", ".csv", ".tsv"}:
        return _texts(path, read_texts(path, text_column=text_column))
    raise DataError(f"{path} is neither a folder of images nor a .csv/.tsv/.txt file of texts")


def _load_image_files(root: Path) -> Pool:
    candidates, skipped = visible_files(root)
    checked = check_images(candidates)
    inputs, keys, seen = [], [], {}
    for file, (key, problem) in zip(candidates, checked):
        relative = str(file.relative_to(root))
        if problem:
            skipped.append(Skipped(relative, problem))
        elif key in seen:
            skipped.append(Skipped(relative, f"exact duplicate of {seen[key]}"))
        else:
            seen[key] = relative
            inputs.append(file)
            keys.append(key)
    if not inputs:
        raise DataError(f"no readable images found in {root} (searched its subfolders too); {skipped_summary(skipped)}")
    return Pool(inputs, "image", str(root), skipped, keys=keys)


def _texts(path: Path, numbered: list[tuple[str, str]]) -> Pool:
    texts, skipped, seen = [], [], {}
    for where, text in numbered:
        text = text.strip()
        if not text:
            skipped.append(Skipped(where, "empty text"))
        elif text in seen:
            skipped.append(Skipped(where, f"exact duplicate of {seen[text]}"))
        else:
            seen[text] = where
            texts.append(text)
    if not texts:
        raise DataError(f"no texts found in {path}: every line was empty")
    return Pool(texts, "text", str(path), skipped)


# ------------------------------------------------------------------------------------------ output

def write_suggestions(suggestions: Sequence[Suggestion], out: str | Path, modality: str) -> Path:
    """Write the suggestions ready to label; never overwrites anything.

    Images: the folder `out` gets a copy of each image, its name prefixed with its rank
    (``001_cat.jpg``), and ``suggestions.csv`` (rank,file,predicted,uncertainty) naming the originals.
    Texts: the CSV `out` (tab-separated if it ends in .tsv) with columns text,label,predicted,uncertainty
    in rank order; label is empty for the person to fill in, and the filled file trains a model as it is.
    """
    out = Path(out)
    if modality == "image":
        return _write_image_folder(suggestions, out)
    if modality == "text":
        return _write_text_table(suggestions, out)
    raise ValueError(f"modality must be 'image' or 'text', not {modality!r}")


def _write_image_folder(suggestions: Sequence[Suggestion], out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is a file: give --out a new folder name")
    if out.is_dir() and any(out.iterdir()):
        raise OutputExistsError(f"{out} exists and is not empty; nothing was written: give --out a new folder, "
                                "or move that one away first")
    out.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(len(suggestions))))
    rows = []
    for s in suggestions:
        source = Path(s.item)
        target = out / f"{s.rank:0{width}d}_{source.name}"
        shutil.copy2(source, target)
        rows.append([s.rank, str(source), s.predicted, f"{s.uncertainty:.4f}"])
    with open(out / IMAGE_CSV, "x", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "file", "predicted", "uncertainty"])
        writer.writerows(rows)
    return out


def _write_text_table(suggestions: Sequence[Suggestion], out: Path) -> Path:
    if out.exists():
        raise OutputExistsError(f"{out} exists; nothing was written: give --out a new file name, or move that one away first")
    out.parent.mkdir(parents=True, exist_ok=True)
    delimiter = "\t" if out.suffix.lower() == ".tsv" else ","
    # "x": create, never replace, even if the file appeared since the check above
    with open(out, "x", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(["text", "label", "predicted", "uncertainty"])
        writer.writerows([str(s.item), "", s.predicted, f"{s.uncertainty:.4f}"] for s in suggestions)
    return out
