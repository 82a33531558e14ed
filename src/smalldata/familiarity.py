"""How familiar an input looks to a model: the score behind "none of these" where embeddings exist.

Two signals, each turned into a share of the training examples' own held-out scores (out of the
cross-validation folds) that lie below it, then averaged:

- the calibrated top-class probability (how sure the head is), and
- the cosine similarity of the input's embedding to the nearest class's mean embedding (how close
  it lies to anything seen; for side-by-side backbones, each network's similarity, averaged).

A familiarity of 0.4 says: the input scored higher than about 40% of the training examples did
when they were held out. Why this score: on classes left out of the training data it told them
apart better than the probability alone on every development set and every confirmation set
(BENCHMARKS.md, "Calibration, unknown inputs and uneven classes"). The held-out scores, not the
training examples' own: the final model has seen those, and would find them all familiar.

Kept in the model folder as ``familiarity.safetensors`` (the class means and the two reference
distributions); models whose head reads raw inputs (the tf-idf baseline, fine-tuned networks) have
none and keep the probability floor alone (`smalldata.unknown`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

FILE = "familiarity.safetensors"
# A reference distribution longer than this is kept as that many evenly spaced quantiles: a share
# below read from 1,001 quantiles is off by at most 0.001, and the folder stays small.
REFERENCE_POINTS = 1001


@dataclass
class Familiarity:
    """Class means and the held-out scores a new input is ranked against."""

    class_means: np.ndarray  # (classes, embedding width), each network's part scaled to unit length
    widths: tuple[int, ...]  # each network's width, in the order of the embedding's columns
    held_out_confidence: np.ndarray  # sorted
    held_out_similarity: np.ndarray  # sorted

    def similarity(self, features) -> np.ndarray:
        """Each row's cosine similarity to its nearest class mean, averaged over the networks."""
        rows = np.asarray(features, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != sum(self.widths):
            raise ValueError(f"familiarity needs embeddings {sum(self.widths)} wide, got shape {rows.shape}")
        return nearest_mean_similarity(rows, self.class_means, self.widths)

    def of(self, features, proba: np.ndarray) -> np.ndarray:
        """Each input's familiarity in [0, 1] (see the module's docstring)."""
        confidence = np.asarray(proba, dtype=np.float64).max(axis=1)
        return (share_below(self.held_out_confidence, confidence)
                + share_below(self.held_out_similarity, self.similarity(features))) / 2

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        save_file({"class_means": self.class_means.astype(np.float32),
                   "widths": np.asarray(self.widths, dtype=np.int64),
                   "held_out_confidence": self.held_out_confidence.astype(np.float32),
                   "held_out_similarity": self.held_out_similarity.astype(np.float32)}, str(Path(folder) / FILE))

    @classmethod
    def load(cls, folder: Path) -> "Familiarity":
        """The folder's familiarity, or a `ValueError` saying what is wrong with the file."""
        from smalldata.model_folder import read_safetensors

        arrays = read_safetensors(Path(folder) / FILE)
        missing = {"class_means", "widths", "held_out_confidence", "held_out_similarity"} - set(arrays)
        if missing:
            raise ValueError(f"{FILE} lacks {', '.join(sorted(missing))}")
        widths = tuple(int(w) for w in arrays["widths"])
        means = arrays["class_means"].astype(np.float64)
        if means.ndim != 2 or means.shape[1] != sum(widths) or min(widths, default=0) < 1:
            raise ValueError(f"{FILE}: class means of shape {means.shape} do not match widths {widths}")
        references = [np.sort(arrays[k].astype(np.float64)) for k in ("held_out_confidence", "held_out_similarity")]
        if any(r.ndim != 1 or len(r) == 0 or not np.isfinite(r).all() for r in references):
            raise ValueError(f"{FILE}: a held-out reference is empty or not finite")
        return cls(means, widths, *references)


def nearest_mean_similarity(rows: np.ndarray, class_means: np.ndarray, widths: Sequence[int]) -> np.ndarray:
    """Cosine similarity of each row to the nearest class mean, per network part, averaged."""
    found, start = [], 0
    for width in widths:
        part = _unit(rows[:, start:start + width])
        found.append((part @ class_means[:, start:start + width].T).max(axis=1))
        start += width
    return np.mean(found, axis=0)


def class_means_of(rows: np.ndarray, labels: np.ndarray, classes: Sequence, widths: Sequence[int]) -> np.ndarray:
    """Each class's mean embedding, every network's part scaled to unit length (after scaling its
    examples to unit length, so that no example weighs more for being longer)."""
    parts, start = [], 0
    for width in widths:
        part = _unit(rows[:, start:start + width])
        parts.append(_unit(np.stack([part[labels == c].mean(axis=0) for c in classes])))
        start += width
    return np.hstack(parts)


def familiarity_from(features, labels: Sequence[str], classes: Sequence[str], widths: Sequence[int],
                     splits: Sequence[tuple[np.ndarray, np.ndarray]],
                     held_out_confidence: np.ndarray) -> tuple[Familiarity, np.ndarray]:
    """The familiarity of a model fit on `features`: class means from every example, and the
    reference similarities from the folds (`splits`: the train/test pairs whose held-out
    predictions gave `held_out_confidence`, one per held-out row in the order of the splits).
    Also each held-out row's own familiarity, which the floor is chosen from (the saved
    references are sorted, so they no longer pair a row's two scores)."""
    rows, labels = np.asarray(features, dtype=np.float64), np.asarray(labels)
    similarity = []
    for fit, held in splits:
        present = [c for c in classes if np.any(labels[fit] == c)]  # stratified folds keep every class
        means = class_means_of(rows[fit], labels[fit], present, widths)
        similarity.append(nearest_mean_similarity(rows[held], means, widths))
    confidence, similarity = np.asarray(held_out_confidence, dtype=np.float64), np.concatenate(similarity)
    if len(confidence) != len(similarity):
        raise ValueError(f"{len(confidence)} held-out probabilities for {len(similarity)} held-out rows")
    own = (share_below(np.sort(confidence), confidence) + share_below(np.sort(similarity), similarity)) / 2
    familiarity = Familiarity(class_means_of(rows, labels, classes, widths), tuple(int(w) for w in widths),
                              _reference(confidence), _reference(similarity))
    return familiarity, own


def share_below(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The share of the sorted `reference` strictly below each value."""
    return np.searchsorted(reference, values, side="left") / len(reference)


def _reference(values: np.ndarray) -> np.ndarray:
    values = np.sort(np.asarray(values, dtype=np.float64))
    if len(values) > REFERENCE_POINTS:
        values = np.quantile(values, np.linspace(0, 1, REFERENCE_POINTS))
    return values


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)
