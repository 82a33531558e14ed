"""Reading a model folder and refusing a damaged one: model.json checked against what `Model.save`
writes, and the two file formats heads are kept in (safetensors arrays, skops for scikit-learn),
read without running code from the folder. Every problem is a `ModelFolderError` that says what to
do, raised at load rather than at the first prediction.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from smalldata.backbones import RAW_TEXT, REGISTRY, get_backbone, reads_raw
from smalldata.errors import ModelFolderError  # noqa: F401  (defined there; callers import it from here too)
from smalldata.text_utils import shorten

FORMAT_VERSION = 1


DAMAGED = "the folder is damaged: train again, or copy it whole from where it was made"
# The keys model.json must have, and the JSON types of their values (bool is left out of int below).
REQUIRED_KEYS = {"format_version": int, "modality": str, "labels": list, "features": str, "head": dict}
OPTIONAL_KEYS = {"cross_validation": (dict, type(None)), "learning_curve": (dict, type(None)), "data": dict,
                 "fine_tuning": (dict, type(None))}
HEAD_KEYS = {"name": str, "kind": str, "file": str}
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
        raise ModelFolderError(f"{path} cannot be read as JSON ({one_line(error)}); {DAMAGED}") from error
    check_description(description, path)
    return description


def check_description(description, path: Path) -> None:
    """Refuse a model.json that `Model.save` could not have written: the keys, their types, and
    values that agree with each other and with the backbones installed here."""
    if not isinstance(description, dict):
        raise ModelFolderError(f"{path} holds a JSON {_json_type(description)}, not the model's description; {DAMAGED}")
    # the version first: a newer format may keep other keys, and then the answer is to upgrade
    check_keys(description, {"format_version": int}, {}, path, "")
    version = description["format_version"]
    if version > FORMAT_VERSION:
        raise ModelFolderError(
            f"{path.parent} has model format {version!r}, newer than this smalldata reads ({FORMAT_VERSION}): "
            "upgrade smalldata (pip install -U smalldata)"
        )
    if version < 1:
        raise ModelFolderError(f"{path} has model format {version!r}, which no smalldata writes; {DAMAGED}")
    check_keys(description, REQUIRED_KEYS, OPTIONAL_KEYS, path, "")
    check_keys(description["head"], HEAD_KEYS, {}, path, "head.")
    if description["modality"] not in MODALITIES:
        raise ModelFolderError(f"{path} has modality {shown(description['modality'])}, not image or text; {DAMAGED}")
    check_labels(description["labels"], path, "labels")
    _check_features(description["features"], description["modality"], path)


def check_keys(found: dict, required: dict, optional: dict, path: Path, prefix: str) -> None:
    for key, types in {**required, **optional}.items():
        if key not in found:
            if key in required:
                raise ModelFolderError(f"{path} lacks {prefix}{key}; {DAMAGED}")
            continue
        value = found[key]
        # JSON's true and false are Python ints too: no count or version is one
        if not isinstance(value, types) or (isinstance(value, bool) and types is int):
            raise ModelFolderError(f"{path} has {prefix}{key} {shown(value)} where a JSON "
                                   f"{_json_type(_example(types))} belongs; {DAMAGED}")


def check_labels(labels: list, path: Path, key: str) -> None:
    if not labels or not all(isinstance(label, str) for label in labels) or len(set(labels)) != len(labels):
        raise ModelFolderError(f"{path} has {key} {shown(labels)}, not a list of distinct class names; {DAMAGED}")


def _check_features(features: str, modality: str, path: Path) -> None:
    if reads_raw(features):
        reads = "text" if features == RAW_TEXT else "image"
    elif features in REGISTRY:
        reads = get_backbone(features).modality
    else:
        raise ModelFolderError(
            f"{path.parent} needs the backbone {shown(features)}, which is not installed here "
            f"(installed: {', '.join(sorted(REGISTRY))}); install the smalldata version that made it"
        )
    if reads != modality:
        raise ModelFolderError(f"{path} says the model classifies {modality}s, but its features "
                               f"{features!r} are of {reads}s; {DAMAGED}")


def parsed(folder: Path, key: str, parse, value):
    """A record model.json keeps (cross-validation table, learning curve), refused if damaged."""
    try:
        return parse(value)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise ModelFolderError(f"{folder / 'model.json'} has a damaged {key} ({one_line(error)}); {DAMAGED}") from error


# ---- the files heads are kept in -------------------------------------------------------------------
def read_safetensors(file: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, TypeError) as error:
        raise ModelFolderError(f"{file} is not a readable safetensors file ({one_line(error)}); {DAMAGED}") from error


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
        raise ModelFolderError(f"{file} is not a readable skops file ({one_line(error)}); {DAMAGED}") from error
    raise ModelFolderError(
        f"{file} contains types smalldata does not trust ({shown(', '.join(untrusted))}); "
        "it was not made by smalldata, so it is not loaded: train again"
    )


# ---- messages: a damaged file's values can be any size and shape ---------------------------------
def one_line(error: Exception, limit: int = 160) -> str:
    """A library's error text, on one line and short: a message quotes it, it is not the message."""
    return shorten(" ".join(str(error).split()) or type(error).__name__, limit)


def shown(value, limit: int = 60) -> str:
    """A value from the folder as a message shows it: a damaged file's values can be any size."""
    return shorten(repr(value), limit)


def _json_type(value) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _example(types):
    """A value of the first of `types`, to name its JSON type."""
    first = types[0] if isinstance(types, tuple) else types
    return first()


def shape_difference(found: dict, expected: dict) -> str:
    """The first way the arrays in a file differ from those the head needs."""
    for name, shape in expected.items():
        if name not in found:
            return f"no array {name!r}"
        if found[name] != shape:
            return f"array {name!r} has shape {found[name]}, expected {shape}"
    return f"an unexpected array {shown(min(set(found) - set(expected)))}"


