"""How a head is kept in a model folder: one small interface, each kind registered by the module
that defines it (as timm registers its models), and one place that saves and loads whichever kind
a folder holds. `model.py` knows no head class; `head_kinds.py` lists the modules that register.

A head kind is a class with
- `KIND`: the name model.json keeps under head.kind (never changed once saved);
- `READS`: None for a backbone's embeddings, else the raw "features" it reads (`RAW_TEXT`, `RAW_INPUTS`);
- `save_to(folder) -> dict`: write its files, return its model.json entry: kind, file, params
  (its parameters) and classes, and whatever else it keeps;
- `load_from(folder, entry, description)` (a classmethod): the fitted head, from an entry whose
  params and classes are checked already.
scikit-learn's estimators (logistic regression, the TF-IDF baseline) are not ours to give that
interface: they are kept in skops files under the kind "scikit-learn", here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smalldata.backbones import RAW_INPUTS, RAW_TEXT, get_backbone, reads_raw
from smalldata.model_folder import (DAMAGED, ModelFolderError, check_keys, check_labels, load_skops, one_line,
                                    read_safetensors, shape_difference, shown)

HEAD_KINDS: dict[str, type] = {}
SCIKIT_LEARN = "scikit-learn"
# What a damaged file makes a head's own loader raise (torch's load_state_dict: RuntimeError).
LOAD_ERRORS = (OSError, RuntimeError, KeyError, TypeError, ValueError, IndexError, AttributeError)
# What every registered kind's model.json entry holds besides name, kind and file.
ENTRY_KEYS = {"params": dict, "classes": list}


def register_head(cls: type) -> type:
    """Class decorator: model folders may hold heads of this kind from now on."""
    if HEAD_KINDS.get(cls.KIND, cls) is not cls:
        raise ValueError(f"two head classes claim the kind {cls.KIND!r}: {HEAD_KINDS[cls.KIND]} and {cls}")
    HEAD_KINDS[cls.KIND] = cls
    return cls


def save_head(estimator, folder: Path, name: str) -> dict:
    """Write the head's files into `folder`; model.json's entry for it."""
    if type(estimator) in HEAD_KINDS.values():
        return {"name": name, **estimator.save_to(folder)}
    import skops.io

    skops.io.dump(estimator, folder / "head.skops")
    return {"name": name, "kind": SCIKIT_LEARN, "file": "head.skops", "estimator": repr(estimator)}


def load_head(folder: Path, description: dict):
    """The head a checked model.json names, refused (ModelFolderError) unless it scores exactly
    the labels and reads the features model.json gives it."""
    entry, features, path = description["head"], description["features"], folder / "model.json"
    file = folder / Path(entry["file"]).name  # a name only: a model folder can't point elsewhere
    if not file.is_file():
        raise ModelFolderError(f"{folder} lacks {file.name or entry['file']!r}, which model.json names: "
                               "the folder is incomplete; copy it whole")
    if entry["kind"] == SCIKIT_LEARN:
        _check_reads(SCIKIT_LEARN, features, features != RAW_INPUTS, path)
        estimator = load_scikit_learn(file, description)
    else:
        estimator = _load_registered(folder, entry, description)
    _check_classes(estimator, description["labels"], file)
    return estimator


def _load_registered(folder: Path, entry: dict, description: dict):
    cls = HEAD_KINDS.get(entry["kind"])
    if cls is None:
        raise ModelFolderError(f"{folder / 'model.json'} names an unknown head kind {shown(entry['kind'])}: upgrade "
                               "smalldata if a newer one made it; otherwise the folder is damaged: train again")
    path = folder / "model.json"
    check_keys(entry, ENTRY_KEYS, {}, path, "head.")
    check_labels(entry["classes"], path, "head.classes")
    _check_reads(cls.KIND, description["features"], description["features"] == cls.READS if cls.READS
                 else not reads_raw(description["features"]), path)
    try:
        return cls.load_from(folder, entry, description)
    except ModelFolderError:
        raise
    except LOAD_ERRORS as error:
        raise ModelFolderError(f"{folder}'s {cls.KIND} head cannot be loaded ({one_line(error)}); {DAMAGED}") from error


def _check_reads(kind: str, features: str, fits: bool, path: Path) -> None:
    if not fits:
        raise ModelFolderError(f"{path} gives a {kind} head the features {features!r}, which it does not read; {DAMAGED}")


def _check_classes(estimator, labels: list[str], file: Path) -> None:
    """The head must score exactly the labels model.json lists, each once."""
    classes = getattr(estimator, "classes_", None)
    if classes is None or np.ndim(classes) != 1:
        raise ModelFolderError(f"{file} does not hold a fitted classifier; {DAMAGED}")
    classes = np.asarray(classes).tolist()
    if len(classes) != len(labels) or set(classes) != set(labels):
        raise ModelFolderError(f"the head in {file} scores the classes {shown(classes)}, but model.json's labels "
                               f"are {shown(labels)}; {DAMAGED}")


def load_scikit_learn(file: Path, description: dict):
    """A scikit-learn estimator. scikit-learn checks a fitted estimator's arrays only when it
    predicts, so it predicts once here, on one blank input: a file whose arrays do not fit each
    other, the backbone or the labels is refused now, not at the first request."""
    estimator = load_skops(file)
    if not callable(getattr(estimator, "predict_proba", None)):
        raise ModelFolderError(f"{file} holds a {type(estimator).__name__}, not a classifier; {DAMAGED}")
    features = description["features"]
    blank = ["a"] if features == RAW_TEXT else np.zeros((1, get_backbone(features).dim), np.float32)
    try:
        proba = np.asarray(estimator.predict_proba(blank))
    # what scikit-learn raises on a model unfitted or fitted on other features (NotFittedError is both)
    except (ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
        raise ModelFolderError(f"{file} cannot classify {features!r} features ({one_line(error)}); {DAMAGED}") from error
    if proba.shape != (1, len(description["labels"])):
        raise ModelFolderError(f"{file} gives {proba.shape[-1]} class probabilities, but model.json has "
                               f"{len(description['labels'])} labels; {DAMAGED}")
    return estimator


class TensorHead:
    """A head kept as plain arrays in head.safetensors, its parameters and classes in model.json.
    The class gives `KIND`, `state()`, `state_shapes(n_classes, n_features)` and
    `from_state(params, classes, arrays)`; `saved_params()` if model.json needs more than its
    scikit-learn parameters."""

    READS = None  # a backbone's embeddings
    FILE = "head.safetensors"

    def saved_params(self) -> dict:
        return self.get_params()

    def save_to(self, folder: Path) -> dict:
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in self.state().items()}, str(folder / self.FILE))
        return {"kind": self.KIND, "file": self.FILE, "params": self.saved_params(), "classes": self.classes_.tolist()}

    @classmethod
    def load_from(cls, folder: Path, entry: dict, description: dict):
        """The head, once its arrays have exactly the shapes its parameters, classes and backbone
        call for, so that predicting cannot fail on them later."""
        file, path = folder / Path(entry["file"]).name, folder / "model.json"
        params = {k: v for k, v in entry["params"].items() if k in cls().get_params()}
        arrays = read_safetensors(file)
        dim = get_backbone(description["features"]).dim  # a missing backbone package is no damaged head.params
        try:
            expected = cls(**params).state_shapes(len(entry["classes"]), dim)
        except (TypeError, ValueError) as error:
            raise ModelFolderError(f"{path} has damaged head.params ({one_line(error)}); {DAMAGED}") from error
        found = {name: array.shape for name, array in arrays.items()}
        if found != expected:
            raise ModelFolderError(f"{file} does not fit model.json ({shape_difference(found, expected)}); {DAMAGED}")
        return cls.from_state(params, entry["classes"], arrays)
