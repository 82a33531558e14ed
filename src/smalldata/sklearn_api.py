"""smalldata as a scikit-learn estimator: `SmalldataClassifier().fit(X, y)`.

    from smalldata import SmalldataClassifier
    clf = SmalldataClassifier(budget="2m").fit(texts, labels)     # or image paths, PIL images, arrays
    clf.predict(["a new text"]); clf.predict_proba(...); clf.classes_

`fit` runs `smalldata.train` (the baseline, the heads on every installed backbone, cross-validated,
the best refit) on what it is given, so `clone`, `cross_val_score`, `GridSearchCV` and `Pipeline`
treat the whole recipe as one estimator. The trained `Model` is `model_` (save it with
`clf.model_.save(folder)`).

What X may hold, one input per item (a list, a numpy array, or a pandas Series or one-column
DataFrame, read duck-typed: pandas is not needed):
- texts (str);
- image files (str or Path naming existing image files);
- images in memory: PIL images, or numpy arrays H x W x 3 (or H x W, grey) of uint8, or of floats
  in 0..1, or a 4-D array of such images. They are written as PNG (lossless) to a temporary folder
  for the call, so that they are decoded, and cached by content, exactly as image files are.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from smalldata.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class SmalldataClassifier(ClassifierMixin, BaseEstimator):
    """smalldata's training (`smalldata.train`) behind scikit-learn's estimator interface.

    backbone: one backbone by name (default: every installed one, compared by cross-validation).
    budget: time for the whole training ("90s", "5m", seconds; None or 0: the frozen backbones only,
        the fastest); fine-tuning is tried when its estimated cost fits.
    evaluate: cross-validate and choose among candidates; "auto" does where every class has 2
        examples (as cross-validation needs), else fits the default head.
    curve: also draw the learning curve (it costs several fits).
    finetune: "auto", "always" or "never" (`smalldata train --finetune`).
    seed: the cross-validation folds' seed.
    """

    def __init__(self, backbone: str | None = None, budget: float | str | None = None, *,
                 evaluate: bool | str = "auto", curve: bool = False, finetune: str = "auto", seed: int = 0):
        self.backbone = backbone
        self.budget = budget
        self.evaluate = evaluate
        self.curve = curve
        self.finetune = finetune
        self.seed = seed

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # X is a sequence of inputs (texts, files, images), not a table of numbers
        tags.input_tags.one_d_array, tags.input_tags.two_d_array, tags.input_tags.string = True, False, True
        return tags

    def fit(self, X, y) -> SmalldataClassifier:
        from smalldata.data import Dataset
        from smalldata.finetune_choice import FineTuneOptions
        from smalldata.train import train

        labels = _labels(y)
        self.classes_ = np.unique(labels)
        names = [str(label) for label in self.classes_]
        if len(set(names)) < len(names):
            raise DataError(f"labels {list(self.classes_)} are not told apart as text: give labels whose str() differ")
        with inputs_of(X) as (items, modality):
            if len(items) != len(labels):
                raise DataError(f"X has {len(items)} inputs but y has {len(labels)} labels: give one label per input")
            dataset = Dataset(items, [str(label) for label in labels], modality, source="SmalldataClassifier.fit")
            evaluate = self.evaluate if self.evaluate != "auto" else min(dataset.counts().values()) >= 2
            self.model_ = train(dataset, backbone=self.backbone, budget=self.budget, evaluate=bool(evaluate),
                                curve=self.curve, seed=self.seed, fine_tune=FineTuneOptions(mode=self.finetune))
        self.modality_ = modality
        self.columns_ = [self.model_.classes.index(name) for name in names]  # model's columns in classes_ order
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self)
        with inputs_of(X) as (items, modality):
            if modality != self.modality_:
                raise DataError(f"this classifier was fitted on {self.modality_}s, but X holds {modality}s")
            return self.model_.predict_proba(items)[:, self.columns_]

    def predict(self, X) -> np.ndarray:
        best = self.predict_proba(X).argmax(axis=1)
        return self.classes_[best]


def _labels(y) -> np.ndarray:
    if hasattr(y, "columns"):  # a one-column DataFrame
        y = _one_column(y, "y")
    labels = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y, dtype=object)
    if labels.ndim != 1:
        raise DataError(f"y must be one label per input, not an array of shape {labels.shape}")
    if any(label is None or (isinstance(label, float) and np.isnan(label)) for label in labels):
        raise DataError("y has missing labels (None or NaN): drop those inputs or label them")
    if all(isinstance(label, (int, np.integer)) for label in labels):
        return labels.astype(np.int64)  # classes_ as numbers, as scikit-learn's own estimators keep them
    return labels


def _one_column(frame, name: str):
    columns = list(frame.columns)
    if len(columns) != 1:
        raise DataError(f"{name} is a table of {len(columns)} columns ({', '.join(map(str, columns[:5]))}): "
                        f"pass the one column of inputs, e.g. {name}=frame[{str(columns[0])!r}]")
    return frame[columns[0]]


def _items(X) -> list:
    """X as a list of single inputs."""
    if isinstance(X, (str, Path, bytes)):
        raise DataError("X is one input: pass a list of inputs, e.g. [X]")
    if hasattr(X, "columns"):  # a DataFrame (pandas, or anything shaped like one)
        X = _one_column(X, "X")
    if hasattr(X, "to_numpy") and not isinstance(X, np.ndarray):  # a pandas Series
        X = X.to_numpy()
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.ndim == 4 or (X.ndim == 3 and X.shape[-1] not in (3, 4)):
            return list(X)  # a batch of colour images, or of grey ones
        if X.ndim in (2, 3):
            raise DataError(f"X is one array of shape {X.shape}: pass a list of images, or a 4-D array "
                            "(images x height x width x 3)")
    return list(X)


@contextmanager
def inputs_of(X):
    """(inputs as the models take them, modality) for X; images in memory are written as PNG files
    to a temporary folder that lasts as long as the `with` block."""
    items = _items(X)
    if not items:
        raise DataError("X holds no inputs")
    kinds = {_kind(item) for item in items}
    if kinds == {"text"}:
        yield [str(item) for item in items], "text"
        return
    if "text" in kinds:
        text = next(item for item in items if _kind(item) == "text")
        raise DataError(f"X mixes texts and images ({str(text)[:60]!r} is no image file): give one kind")
    with tempfile.TemporaryDirectory(prefix="smalldata-images-") as folder:
        yield [_as_file(item, Path(folder), i) for i, item in enumerate(items)], "image"


def _kind(item) -> str:
    if isinstance(item, Path) or hasattr(item, "read"):
        return "file"
    if isinstance(item, str):
        return "file" if Path(item).suffix.lower() in IMAGE_SUFFIXES and Path(item).is_file() else "text"
    if isinstance(item, np.ndarray) or _is_pil(item):
        return "memory"
    raise DataError(f"X holds a {type(item).__name__}: give texts, image files, PIL images or numpy arrays")


def _is_pil(item) -> bool:
    from PIL import Image

    return isinstance(item, Image.Image)


def _as_file(item, folder: Path, index: int):
    if _kind(item) == "file":
        return item if hasattr(item, "read") else Path(item)
    from smalldata.data import png_of

    path = folder / f"{index:07d}.png"
    path.write_bytes(png_of(item).getvalue())  # the bytes Model.predict would make of it: the same cache key
    return path
