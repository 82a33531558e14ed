"""The trained model: predict, predict_proba, and a model folder a person can read.

A model folder holds ``model.json`` (format version, labels, backbone and its preprocessing, the
chosen head, the cross-validation table, the learning curve, library versions) beside the head's learned arrays:
``head.safetensors`` for smalldata's own heads, ``head.skops`` (scikit-learn's safe, pickle-free
format) for scikit-learn models. Loading never runs code from the folder.
"""

from __future__ import annotations

import json
import platform
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np

from smalldata.backbones import REGISTRY, get_backbone
from smalldata.curve import LearningCurve
from smalldata.describe import DescribedHead
from smalldata.ensemble import AveragedLogisticRegression
from smalldata.evaluate import Comparison, TestResult, score
from smalldata.features import embed
from smalldata.heads import LinearHead
from smalldata.progress import QUIET, Progress

FORMAT_VERSION = 1
RAW_TEXT = "text"  # the "features" of candidates that read the strings themselves (TF-IDF)
RAW_INPUTS = "raw-images"  # the "features" of fine-tuned image models: they read the image files themselves
# head kinds whose estimator reads and writes its own files (fine-tuned encoders):
# kind -> (module:class, the "features" it reads: the raw inputs, which its own encoder embeds)
FINE_TUNED_KINDS = {
    "contrastive-text": ("smalldata.finetune_text:ContrastiveTextClassifier", RAW_TEXT),
    "fine-tuned-image": ("smalldata.finetune:FineTunedImageClassifier", RAW_INPUTS),
}
# Heads saved as plain arrays in head.safetensors: kind -> (class, the parameters model.json keeps).
TENSOR_HEADS = {
    "linear-head": (LinearHead, lambda head: head.get_params()),
    "described-head": (DescribedHead, lambda head: head.saved_params()),
    "averaged-logistic-regression": (AveragedLogisticRegression,
                                     lambda head: {**head.get_params(), "widths": list(head.widths)}),
}
LIBRARIES = ("smalldata", "numpy", "scikit-learn", "torch", "onnxruntime", "sentence-transformers", "skops")


class ModelFolderError(ValueError):
    """A model folder that cannot be loaded; the message says why and what to do."""


@dataclass
class Model:
    """A fitted classifier over images or texts. `classes` orders the columns of `predict_proba`."""

    classes: list[str]
    modality: str
    features: str  # a backbone name, or "text" for candidates that read raw strings
    head_name: str
    estimator: object
    comparison: Comparison | None = None
    data: dict = field(default_factory=dict)  # what training saw: counts per class, skipped files
    curve: LearningCurve | None = None  # accuracy against examples per class, extrapolated
    fine_tuning: dict | None = None  # what fine-tuning tried and why it was kept or not (finetune_choice.FineTuneDecision)

    def features_of(self, inputs: Sequence, progress: Progress = QUIET):
        inputs = [Path(item) for item in inputs] if self.modality == "image" else [str(item) for item in inputs]
        if self.features in (RAW_TEXT, RAW_INPUTS):
            return inputs
        return embed(inputs, self.features, progress=progress)

    def predict_proba(self, inputs: Sequence, *, progress: Progress = QUIET) -> np.ndarray:
        """Class probabilities, one row per input (image paths or texts), columns in `classes` order."""
        return self.proba_of_features(self.features_of(inputs, progress))

    def proba_of_features(self, features) -> np.ndarray:
        """`predict_proba` from features already computed (embeddings, or texts for RAW_TEXT heads)."""
        return self._in_class_order(self.estimator.predict_proba(features))

    def proba_of_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """`predict_proba` of a fine-tuned image model (features RAW_INPUTS) from decoded pixels."""
        return self._in_class_order(self.estimator.proba_of_pixels(pixels))

    def _in_class_order(self, proba) -> np.ndarray:
        """The estimator's probability columns, reordered to `classes`."""
        order = [list(self.estimator.classes_).index(label) for label in self.classes]
        return np.asarray(proba)[:, order]

    def predict(self, inputs: Sequence, *, progress: Progress = QUIET) -> list[str]:
        return [self.classes[i] for i in self.predict_proba(inputs, progress=progress).argmax(axis=1)]

    def evaluate(self, dataset, *, progress: Progress = QUIET) -> TestResult:
        """Accuracy, per-class precision and recall, and confusion matrix on labeled examples."""
        if dataset.modality != self.modality:
            raise ValueError(f"this model classifies {self.modality}s, but the test data are {dataset.modality}s")
        return score(dataset.labels, self.predict(dataset.inputs, progress=progress), self.classes)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        head = self._save_head(folder)
        description = {
            "format_version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "modality": self.modality,
            "labels": self.classes,
            "features": self.features,
            "preprocessing": None if self.features in (RAW_TEXT, RAW_INPUTS) else get_backbone(self.features).preprocessing,
            "head": head,
            "cross_validation": self.comparison.to_dict() if self.comparison else None,
            "data": self.data,
            "learning_curve": self.curve.to_dict() if self.curve else None,
            "fine_tuning": self.fine_tuning,
            "libraries": _library_versions(),
        }
        (folder / "model.json").write_text(json.dumps(description, indent=2) + "\n")
        return folder

    def _save_head(self, folder: Path) -> dict:
        if hasattr(self.estimator, "save_folder"):  # a fine-tuned model writes its own tensors
            return {"name": self.head_name, **self.estimator.save_folder(folder)}
        for kind, (cls, saved_params) in TENSOR_HEADS.items():
            if isinstance(self.estimator, cls):
                from safetensors.numpy import save_file

                save_file({k: np.ascontiguousarray(v) for k, v in self.estimator.state().items()},
                          str(folder / "head.safetensors"))
                return {"name": self.head_name, "kind": kind, "file": "head.safetensors",
                        "params": saved_params(self.estimator), "classes": self.estimator.classes_.tolist()}
        import skops.io

        skops.io.dump(self.estimator, folder / "head.skops")
        return {"name": self.head_name, "kind": "scikit-learn", "file": "head.skops",
                "estimator": repr(self.estimator)}

    @classmethod
    def load(cls, folder: str | Path) -> "Model":
        """The model in `folder`. Anything wrong with the folder is a `ModelFolderError` saying what
        to do, raised here rather than at the first prediction: a folder that loads is one that predicts."""
        folder = Path(folder)
        description = read_description(folder)
        estimator = _load_head(folder, description)
        comparison, curve = description.get("cross_validation"), description.get("learning_curve")
        return cls(
            classes=list(description["labels"]),
            modality=description["modality"],
            features=description["features"],
            head_name=description["head"]["name"],
            estimator=estimator,
            comparison=_parsed(folder, "cross_validation", Comparison.from_dict, comparison) if comparison else None,
            data=description.get("data", {}),
            curve=_parsed(folder, "learning_curve", LearningCurve.from_dict, curve) if curve else None,
            fine_tuning=description.get("fine_tuning"),
        )


# ---- reading model.json ------------------------------------------------------------------------
DAMAGED = "the folder is damaged: train again, or copy it whole from where it was made"
# The keys model.json must have, and the JSON types of their values (bool is left out of int below).
REQUIRED_KEYS = {"format_version": int, "modality": str, "labels": list, "features": str, "head": dict}
OPTIONAL_KEYS = {"cross_validation": (dict, type(None)), "learning_curve": (dict, type(None)), "data": dict,
                 "fine_tuning": (dict, type(None))}
HEAD_KEYS = {"name": str, "kind": str, "file": str}
# What heads that are not a scikit-learn object keep in model.json besides.
STATE_HEAD_KEYS = {"params": dict, "classes": list}
MODALITIES = ("image", "text")


def read_description(folder: Path) -> dict:
    """model.json of `folder`, parsed and checked against what `Model.save` writes."""
    path = folder / "model.json"
    if not path.exists():
        raise ModelFolderError(f"{folder} is not a smalldata model folder (no model.json); "
                               "give the folder `smalldata train --out` wrote")
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    # RecursionError: JSON nested deeper than Python's stack, which no model.json is
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ModelFolderError(f"{path} cannot be read as JSON ({_one_line(error)}); {DAMAGED}") from error
    check_description(description, path)
    return description


def check_description(description, path: Path) -> None:
    """Refuse a model.json that `Model.save` could not have written: the keys, their types, and
    values that agree with each other and with the backbones installed here."""
    if not isinstance(description, dict):
        raise ModelFolderError(f"{path} holds a JSON {_json_type(description)}, not the model's description; {DAMAGED}")
    # the version first: a newer format may keep other keys, and then the answer is to upgrade
    _check_keys(description, {"format_version": int}, {}, path, "")
    version = description["format_version"]
    if version > FORMAT_VERSION:
        raise ModelFolderError(
            f"{path.parent} has model format {version!r}, newer than this smalldata reads ({FORMAT_VERSION}): "
            "upgrade smalldata (pip install -U smalldata)"
        )
    if version < 1:
        raise ModelFolderError(f"{path} has model format {version!r}, which no smalldata writes; {DAMAGED}")
    _check_keys(description, REQUIRED_KEYS, OPTIONAL_KEYS, path, "")
    _check_keys(description["head"], HEAD_KEYS, {}, path, "head.")
    if description["head"]["kind"] in TENSOR_HEADS or description["head"]["kind"] in FINE_TUNED_KINDS:
        _check_keys(description["head"], STATE_HEAD_KEYS, {}, path, "head.")
        _check_labels(description["head"]["classes"], path, "head.classes")
    if description["modality"] not in MODALITIES:
        raise ModelFolderError(f"{path} has modality {_shown(description['modality'])}, not image or text; {DAMAGED}")
    _check_labels(description["labels"], path, "labels")
    _check_features(description["features"], description["modality"], path)


def _check_keys(found: dict, required: dict, optional: dict, path: Path, prefix: str) -> None:
    for key, types in {**required, **optional}.items():
        if key not in found:
            if key in required:
                raise ModelFolderError(f"{path} lacks {prefix}{key}; {DAMAGED}")
            continue
        value = found[key]
        # JSON's true and false are Python ints too: no count or version is one
        if not isinstance(value, types) or (isinstance(value, bool) and types is int):
            raise ModelFolderError(f"{path} has {prefix}{key} {_shown(value)} where a JSON "
                                   f"{_json_type(_example(types))} belongs; {DAMAGED}")


def _check_labels(labels: list, path: Path, key: str) -> None:
    if not labels or not all(isinstance(label, str) for label in labels) or len(set(labels)) != len(labels):
        raise ModelFolderError(f"{path} has {key} {_shown(labels)}, not a list of distinct class names; {DAMAGED}")


def _check_features(features: str, modality: str, path: Path) -> None:
    if features == RAW_TEXT or features == RAW_INPUTS:
        reads = "text" if features == RAW_TEXT else "image"
    elif features in REGISTRY:
        reads = get_backbone(features).modality
    else:
        raise ModelFolderError(
            f"{path.parent} needs the backbone {_shown(features)}, which is not installed here "
            f"(installed: {', '.join(sorted(REGISTRY))}); install the smalldata version that made it"
        )
    if reads != modality:
        raise ModelFolderError(f"{path} says the model classifies {modality}s, but its features "
                               f"{features!r} are of {reads}s; {DAMAGED}")


def _parsed(folder: Path, key: str, parse, value):
    """A record model.json keeps (cross-validation table, learning curve), refused if damaged."""
    try:
        return parse(value)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise ModelFolderError(f"{folder / 'model.json'} has a damaged {key} ({_one_line(error)}); {DAMAGED}") from error


# ---- loading the head ----------------------------------------------------------------------------
def _load_head(folder: Path, description: dict):
    """The head's estimator, from the file model.json names, checked against the labels."""
    head = description["head"]
    file = folder / Path(head["file"]).name  # a name only: a model folder can't point elsewhere
    if not file.is_file():
        raise ModelFolderError(f"{folder} lacks {file.name or head['file']!r}, which model.json names: "
                               "the folder is incomplete; copy it whole")
    _check_features_of_kind(head["kind"], description["features"], folder / "model.json")
    if head["kind"] in TENSOR_HEADS:
        estimator = _load_tensor_head(file, head, description["features"])
    elif head["kind"] == "scikit-learn":
        estimator = _load_scikit_learn(file, description)
    else:
        estimator = _load_fine_tuned(folder, head)
    _check_classes(estimator, description["labels"], file)
    return estimator


def _check_features_of_kind(kind: str, features: str, path: Path) -> None:
    """Each kind of head reads one kind of features: a backbone's embeddings (smalldata's own heads),
    those or raw texts (scikit-learn: logistic regression, the TF-IDF baseline), or the raw inputs
    (fine-tuned heads); a model.json that pairs it with others is damaged."""
    if kind in FINE_TUNED_KINDS:
        fits = features == FINE_TUNED_KINDS[kind][1]
    elif kind == "scikit-learn":
        fits = features != RAW_INPUTS
    elif kind in TENSOR_HEADS:
        fits = features not in (RAW_TEXT, RAW_INPUTS)
    else:
        raise ModelFolderError(f"{path} names an unknown head kind {_shown(kind)}: upgrade smalldata "
                               "if a newer one made it; otherwise the folder is damaged: train again")
    if not fits:
        raise ModelFolderError(f"{path} gives a {kind} head the features {features!r}, which it does not read; {DAMAGED}")


def _load_tensor_head(file: Path, head: dict, features: str):
    """One of smalldata's own heads: its arrays must have exactly the shapes its parameters,
    classes and backbone call for, so that predicting cannot fail on them later."""
    cls = TENSOR_HEADS[head["kind"]][0]
    params = {k: v for k, v in head["params"].items() if k in cls().get_params()}
    arrays = _read_safetensors(file)
    try:
        expected = cls(**params).state_shapes(len(head["classes"]), get_backbone(features).dim)
    except (TypeError, ValueError) as error:
        raise ModelFolderError(f"{file.parent / 'model.json'} has damaged head.params "
                               f"({_one_line(error)}); {DAMAGED}") from error
    found = {name: array.shape for name, array in arrays.items()}
    if found != expected:
        raise ModelFolderError(f"{file} does not fit model.json ({_shape_difference(found, expected)}); {DAMAGED}")
    return cls.from_state(params, head["classes"], arrays)


def _read_safetensors(file: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, TypeError) as error:
        raise ModelFolderError(f"{file} is not a readable safetensors file ({_one_line(error)}); {DAMAGED}") from error


def _load_scikit_learn(file: Path, description: dict):
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
        raise ModelFolderError(f"{file} cannot classify {features!r} features ({_one_line(error)}); {DAMAGED}") from error
    if proba.shape != (1, len(description["labels"])):
        raise ModelFolderError(f"{file} gives {proba.shape[-1]} class probabilities, but model.json has "
                               f"{len(description['labels'])} labels; {DAMAGED}")
    return estimator


def _load_fine_tuned(folder: Path, head: dict):
    import importlib

    from safetensors import SafetensorError

    module, name = FINE_TUNED_KINDS[head["kind"]][0].split(":")
    try:
        return getattr(importlib.import_module(module), name).load_folder(folder, head)
    except ModelFolderError:
        raise
    # torch's load_state_dict raises RuntimeError for weights that do not fit the installed backbone
    except (SafetensorError, OSError, RuntimeError, KeyError, TypeError, ValueError) as error:
        raise ModelFolderError(f"{folder}'s fine-tuned weights cannot be loaded ({_one_line(error)}); {DAMAGED}") from error


def _check_classes(estimator, labels: list[str], file: Path) -> None:
    """The head must score exactly the labels model.json lists, each once."""
    classes = getattr(estimator, "classes_", None)
    if classes is None or np.ndim(classes) != 1:
        raise ModelFolderError(f"{file} does not hold a fitted classifier; {DAMAGED}")
    classes = np.asarray(classes).tolist()
    if len(classes) != len(labels) or set(classes) != set(labels):
        raise ModelFolderError(f"the head in {file} scores the classes {_shown(classes)}, but model.json's labels "
                               f"are {_shown(labels)}; {DAMAGED}")


def load_skops(file: Path):
    """A scikit-learn estimator from a skops file, refused if it holds any type we do not trust."""
    import skops.io

    # skops parses the file's zip and JSON itself; these are what it raises on bytes it did not write
    unreadable = (OSError, EOFError, zipfile.BadZipFile, KeyError, IndexError, TypeError, ValueError,
                  AttributeError, RecursionError)
    try:
        untrusted = skops.io.get_untrusted_types(file=file)
        if not untrusted:
            return skops.io.load(file)
    except unreadable as error:
        raise ModelFolderError(f"{file} is not a readable skops file ({_one_line(error)}); {DAMAGED}") from error
    raise ModelFolderError(
        f"{file} contains types smalldata does not trust ({_shown(', '.join(untrusted))}); "
        "it was not made by smalldata, so it is not loaded: train again"
    )


# ---- messages ------------------------------------------------------------------------------------
def _one_line(error: Exception, limit: int = 160) -> str:
    """A library's error text, on one line and short: a message quotes it, it is not the message."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown(value, limit: int = 60) -> str:
    """A value from the folder as a message shows it: a damaged file's values can be any size."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _example(types):
    """A value of the first of `types`, to name its JSON type."""
    first = types[0] if isinstance(types, tuple) else types
    return first()


def _shape_difference(found: dict, expected: dict) -> str:
    """The first way the arrays in a file differ from those the head needs."""
    for name, shape in expected.items():
        if name not in found:
            return f"no array {name!r}"
        if found[name] != shape:
            return f"array {name!r} has shape {found[name]}, expected {shape}"
    return f"an unexpected array {_shown(min(set(found) - set(expected)))}"


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions
