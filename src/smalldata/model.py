"""The trained model: predict, predict_proba, and a model folder a person can read.

A model folder holds ``model.json`` (format version, labels, backbone and its preprocessing, the
chosen head, the cross-validation table, the learning curve, library versions) beside the head's learned arrays:
``head.safetensors`` for smalldata's own heads, ``head.skops`` (scikit-learn's safe, pickle-free
format) for scikit-learn models. Loading never runs code from the folder.
"""

from __future__ import annotations

import json
import platform
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
# head kinds whose estimator reads and writes its own files (fine-tuned encoders): kind -> module:class
FINE_TUNED_KINDS = {
    "contrastive-text": "smalldata.finetune_text:ContrastiveTextClassifier",
    "fine-tuned-image": "smalldata.finetune:FineTunedImageClassifier",
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
        folder = Path(folder)
        path = folder / "model.json"
        if not path.exists():
            raise ModelFolderError(f"{folder} is not a smalldata model folder (no model.json); give the folder `smalldata train --out` wrote")
        try:
            description = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ModelFolderError(f"{path} is not valid JSON ({error}); the folder is damaged: train again") from error
        version = description.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ModelFolderError(
                f"{folder} has model format {version!r}, newer than this smalldata reads ({FORMAT_VERSION}): "
                "upgrade smalldata (pip install -U smalldata)"
            )
        features = description["features"]
        if features not in (RAW_TEXT, RAW_INPUTS) and features not in REGISTRY:
            raise ModelFolderError(
                f"{folder} needs the backbone {features!r}, which is not installed here "
                f"(installed: {', '.join(sorted(REGISTRY))}); install the smalldata version that made it"
            )
        comparison = description.get("cross_validation")
        curve = description.get("learning_curve")
        return cls(
            classes=list(description["labels"]),
            modality=description["modality"],
            features=features,
            head_name=description["head"]["name"],
            estimator=_load_head(folder, description["head"]),
            comparison=Comparison.from_dict(comparison) if comparison else None,
            data=description.get("data", {}),
            curve=LearningCurve.from_dict(curve) if curve else None,
            fine_tuning=description.get("fine_tuning"),
        )


def _load_head(folder: Path, head: dict):
    file = folder / Path(head["file"]).name  # a name only: a model folder can't point elsewhere
    if not file.exists():
        raise ModelFolderError(f"{folder} lacks {file.name}, which model.json names: the folder is incomplete; copy it whole")
    if head["kind"] in TENSOR_HEADS:
        from safetensors.numpy import load_file

        cls = TENSOR_HEADS[head["kind"]][0]
        params = {k: v for k, v in head["params"].items() if k in cls().get_params()}
        try:
            return cls.from_state(params, head["classes"], load_file(str(file)))
        except (KeyError, ValueError) as error:
            raise ModelFolderError(f"{file} does not match model.json ({error}); the folder is damaged: train again") from error
    if head["kind"] == "scikit-learn":
        return load_skops(file)
    if head["kind"] in FINE_TUNED_KINDS:
        import importlib

        module, name = FINE_TUNED_KINDS[head["kind"]].split(":")
        return getattr(importlib.import_module(module), name).load_folder(folder, head)
    raise ModelFolderError(f"unknown head kind {head['kind']!r} in {folder / 'model.json'}")


def load_skops(file: Path):
    """A scikit-learn estimator from a skops file, refused if it holds any type we do not trust."""
    import skops.io

    untrusted = skops.io.get_untrusted_types(file=file)
    if untrusted:
        raise ModelFolderError(
            f"{file} contains types smalldata does not trust ({', '.join(untrusted)}); "
            "it was not made by smalldata, so it is not loaded"
        )
    return skops.io.load(file)


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions
