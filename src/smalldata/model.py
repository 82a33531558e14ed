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
from typing import Callable, Sequence

import numpy as np

import smalldata.head_kinds  # noqa: F401  (every head kind registered, so that any folder loads)
from smalldata.backbones import get_backbone, reads_raw
from smalldata.calibration import Calibration
from smalldata.curve import LearningCurve
from smalldata.data import as_inputs
from smalldata.errors import DataError
from smalldata.evaluate import Comparison, TestResult, score
from smalldata.familiarity import FILE as FAMILIARITY_FILE, Familiarity
from smalldata.features import embed
from smalldata.finetune_choice import FineTuneDecision
from smalldata.head_io import load_head, save_head
from smalldata.model_card import write_card
from smalldata.model_folder import DAMAGED, FORMAT_VERSION, ModelFolderError, parsed, read_description  # noqa: F401  (ModelFolderError: callers import it from here)
from smalldata.progress import QUIET, Progress
from smalldata.training_data import TrainingData
from smalldata.unknown import Abstention, CutOff, Scored, answers, check_threshold


# (inputs, backbone name, progress=...) -> one embedding row per input, as `features.embed` gives them
Embedder = Callable[..., np.ndarray]
LIBRARIES = ("smalldata", "numpy", "scikit-learn", "torch", "onnxruntime", "sentence-transformers", "skops")


@dataclass
class Model:
    """A fitted classifier over images or texts. `classes` orders the columns of `predict_proba`."""

    classes: list[str]
    modality: str
    features: str  # a backbone name, or "text" for candidates that read raw strings
    head_name: str
    estimator: object
    comparison: Comparison | None = None
    data: TrainingData = field(default_factory=TrainingData)  # what training saw: counts per class, skipped files
    curve: LearningCurve | None = None  # accuracy against examples per class, extrapolated
    fine_tuning: FineTuneDecision | None = None  # what fine-tuning tried and why it was kept or not
    calibration: Calibration | None = None  # the temperature its probabilities pass through (None: as the head gives them)
    unknown: Abstention | None = None  # when an answer is `unknown` (None: a folder from before it, or no folds)
    familiarity: Familiarity | None = None  # how familiar inputs look (None: a head on raw inputs, or an older folder)

    def __repr__(self) -> str:  # the dataclass's own printed every out-of-fold probability
        shown = ", ".join(map(repr, self.classes[:5])) + (f", ... ({len(self.classes)} in all)" if len(self.classes) > 5 else "")
        accuracy = f", cross-validated accuracy {self.comparison.chosen.mean:.3f}" if self.comparison else ""
        return f"Model({self.modality}s into [{shown}], {self.head_name!r} on {self.features!r}{accuracy})"

    def features_of(self, inputs: Sequence, progress: Progress = QUIET, embedder: Embedder = embed):
        """What the head reads: the inputs themselves, or their embeddings by `embedder` (the
        library's cached `features.embed`; the service passes its batched one)."""
        inputs = as_inputs(inputs, self.modality)
        if reads_raw(self.features):
            return inputs
        return embedder(inputs, self.features, progress=progress)

    def predict_proba(self, inputs: Sequence, *, progress: Progress = QUIET, embedder: Embedder = embed) -> np.ndarray:
        """Class probabilities, one row per input (image paths or files, or texts), columns in
        `classes` order."""
        return self.proba_of_features(self.features_of(inputs, progress, embedder))

    def proba_of_features(self, features) -> np.ndarray:
        """`predict_proba` from features already computed (embeddings, or texts for RAW_TEXT heads)."""
        proba = self._in_class_order(self.estimator.predict_proba(features))
        return self.calibration.apply(proba) if self.calibration else proba

    def _in_class_order(self, proba) -> np.ndarray:
        """The estimator's probability columns, reordered to `classes`."""
        order = [list(self.estimator.classes_).index(label) for label in self.classes]
        return np.asarray(proba)[:, order]

    def scored(self, inputs: Sequence, *, progress: Progress = QUIET, embedder: Embedder = embed) -> Scored:
        """`predict_proba`, and each input's familiarity where the model keeps one (one embedding
        pass for both)."""
        return self.scored_features(self.features_of(inputs, progress, embedder))

    def scored_features(self, features) -> Scored:
        """`scored` from features already computed."""
        proba = self.proba_of_features(features)
        return Scored(proba, self.familiarity.of(features, proba) if self.familiarity is not None else None)

    def predict(self, inputs: Sequence, *, threshold: float | None = None, unknown: bool = False,
                progress: Progress = QUIET) -> list[str]:
        """The most probable class of each input; `unknown` where its calibrated probability is below
        `threshold`, or (``unknown=True``) where it looks like no class seen (`smalldata.unknown`)."""
        return self.answer(self.scored(inputs, progress=progress), threshold=threshold, unknown=unknown)

    def cut_off(self, threshold: float | None = None, *, unknown: bool = True) -> CutOff:
        """What an answer needs: the user's `threshold`, and (``unknown=True``) the saved floor."""
        if self.unknown is None:  # a folder from before the floor, or a model trained without folds
            return CutOff(check_threshold(threshold) or 0.0)
        return self.unknown.cut_off(threshold, floor=unknown)

    def answer(self, scored: Scored, *, threshold: float | None = None, unknown: bool = True) -> list[str]:
        """The labels `predict` gives for inputs already scored (`scored`)."""
        return answers(scored, self.classes, self.cut_off(threshold, unknown=unknown))

    def evaluate(self, dataset, *, threshold: float | None = None, unknown: bool = True,
                 progress: Progress = QUIET) -> TestResult:
        """Accuracy (every input answered), per-class precision and recall and confusion matrix on
        labeled examples; with the cut-off (`threshold`, the floor), the share answered and the
        accuracy of those answers."""
        if dataset.modality != self.modality:
            raise DataError(f"this model classifies {self.modality}s, but the test data are {dataset.modality}s")
        scored = self.scored(dataset.inputs, progress=progress)
        result = score(dataset.labels, self.answer(scored, unknown=False), self.classes)
        result.with_cut_off(dataset.labels, self.answer(scored, threshold=threshold, unknown=unknown),
                            self.cut_off(threshold, unknown=unknown))
        return result

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        head = save_head(self.estimator, folder, self.head_name)
        description = {
            "format_version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "modality": self.modality,
            "labels": self.classes,
            "features": self.features,
            "preprocessing": None if reads_raw(self.features) else get_backbone(self.features).preprocessing,
            "head": head,
            "cross_validation": self.comparison.to_dict() if self.comparison else None,
            "data": self.data.to_dict(),
            "learning_curve": self.curve.to_dict() if self.curve else None,
            "fine_tuning": self.fine_tuning.to_dict() if self.fine_tuning else None,
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "unknown": self.unknown.to_dict() if self.unknown else None,
            "libraries": _library_versions(),
        }
        if self.familiarity is not None:
            self.familiarity.save(folder)
        elif (folder / FAMILIARITY_FILE).exists():  # a model saved over one that had it: not its own
            (folder / FAMILIARITY_FILE).unlink()
        (folder / "model.json").write_text(json.dumps(description, indent=2) + "\n")
        write_card(folder, description)  # README.md, for a person who finds the folder
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Model":
        """The model in `folder`. Anything wrong with the folder is a `ModelFolderError` saying what
        to do, raised here rather than at the first prediction: a folder that loads is one that predicts."""
        folder = Path(folder)
        description = read_description(folder)
        estimator = load_head(folder, description)
        comparison, curve = description.get("cross_validation"), description.get("learning_curve")
        fine_tuning, calibration = description.get("fine_tuning"), description.get("calibration")
        unknown = description.get("unknown")
        unknown = parsed(folder, "unknown", Abstention.from_dict, unknown) if unknown else None
        return cls(
            classes=list(description["labels"]),
            modality=description["modality"],
            features=description["features"],
            head_name=description["head"]["name"],
            estimator=estimator,
            comparison=parsed(folder, "cross_validation", Comparison.from_dict, comparison) if comparison else None,
            data=parsed(folder, "data", TrainingData.from_dict, description.get("data", {})),
            curve=parsed(folder, "learning_curve", LearningCurve.from_dict, curve) if curve else None,
            fine_tuning=parsed(folder, "fine_tuning", FineTuneDecision.from_dict, fine_tuning) if fine_tuning else None,
            calibration=parsed(folder, "calibration", Calibration.from_dict, calibration) if calibration else None,
            unknown=unknown,
            familiarity=_familiarity(folder, unknown, len(description["labels"]), description["features"]),
        )


def _familiarity(folder: Path, unknown: Abstention | None, n_classes: int, features: str) -> Familiarity | None:
    """The folder's familiarity, which model.json's familiarity floor needs (`smalldata.familiarity`)."""
    if unknown is None or unknown.familiarity_floor is None:
        return None
    file = folder / FAMILIARITY_FILE
    if not file.exists():
        raise ModelFolderError(f"{file} is missing, and model.json's unknown.familiarity_floor needs it: "
                               "copy the whole model folder again, or train the model again")
    try:
        familiarity = Familiarity.load(folder)
        if len(familiarity.class_means) != n_classes:
            raise ValueError(f"{len(familiarity.class_means)} class means for {n_classes} labels")
        if sum(familiarity.widths) != get_backbone(features).dim:
            raise ValueError(f"class means {sum(familiarity.widths)} wide for {features}'s {get_backbone(features).dim}")
    except ValueError as error:
        raise ModelFolderError(f"{file} is damaged ({error}); {DAMAGED}") from error
    return familiarity


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions
