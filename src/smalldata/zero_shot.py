"""A text classifier from class descriptions alone: no example, nearest description (`describe.py`)."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from smalldata.backbones import DEFAULT_BACKBONE, get_backbone
from smalldata.data import DataError
from smalldata.describe import DESCRIBED_HEAD, DescribedHead, embedded_descriptions
from smalldata.model import Model
from smalldata.training_data import TrainingData


def zero_shot_model(descriptions: Mapping[str, str], *, backbone: str | None = None) -> Model:
    """A text classifier from class descriptions alone (at least 2 classes): nearest description."""
    backbone = backbone or DEFAULT_BACKBONE["text"]
    if get_backbone(backbone).modality != "text":
        raise DataError(f"backbone {backbone!r} is for images; descriptions need a text encoder")
    if len(descriptions) < 2:
        raise DataError("a classifier needs at least 2 classes: describe another class")
    labels, prototypes = embedded_descriptions(descriptions, sorted(descriptions), backbone)
    head = DescribedHead(prototypes=prototypes, prototype_labels=labels).fit(np.zeros((0, prototypes.shape[1])), [])
    return Model(classes=labels, modality="text", features=backbone, head_name=DESCRIBED_HEAD, estimator=head,
                 data=TrainingData(modality="text", descriptions=dict(descriptions)))
