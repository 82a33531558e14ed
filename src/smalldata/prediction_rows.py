"""One CSV row per input, the same wherever it is computed: here (`smalldata.batch_predict`) or on
a Ray cluster's workers (`smalldata.scale`)."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from smalldata.errors import DataError, ImageFileError

# What one unreadable input raises while it is decoded or embedded; the row says it and the run goes
# on. Anything else is a bug and stops the run with its traceback.
INPUT_ERRORS = (OSError, SyntaxError, ValueError, ImageFileError, DataError, Image.DecompressionBombError)


def header_of(classes: Sequence[str], familiarity: bool = False) -> list[str]:
    """input, label, one probability column per class (in the model's order), the input's
    familiarity where the model has one (`smalldata.familiarity`), error."""
    return ["input", "label", *(f"p_{label}" for label in classes), *(["familiarity"] if familiarity else []), "error"]


def predict_rows(model, items: Sequence, *, threshold: float | None = None, unknown: bool = True) -> list[list[str]]:
    """One CSV row per item: input, label, each class's probability, and an empty error; an item that
    cannot be read gets a row with its error and no label. The label is what `smalldata predict`
    answers: the most probable class, or 'unknown' below the cut-off (`threshold`, and the model's
    floor unless `unknown` is False; `Model.answer`). The local run and the Ray workers both write
    through this, so their CSVs are the same."""
    width = len(header_of(model.classes, model.familiarity is not None)) - 3  # the columns between label and error
    try:
        scored = model.scored(list(items), embedder=_embed_uncached)
    except INPUT_ERRORS as error:
        if len(items) == 1:
            return [[str(items[0]), "", *([""] * width), _describe_error(error)]]
        # One bad file fails the whole call: halve until it is alone. Each half is still a batch (64
        # single calls cost 0.9 s where the batch took 0.6), and the good files are all predicted.
        middle = len(items) // 2
        return (predict_rows(model, items[:middle], threshold=threshold, unknown=unknown)
                + predict_rows(model, items[middle:], threshold=threshold, unknown=unknown))
    labels = model.answer(scored, threshold=threshold, unknown=unknown)
    rows = []
    for at, (item, row, label) in enumerate(zip(items, scored.proba, labels)):
        familiarity = [] if scored.familiarity is None else [f"{scored.familiarity[at]:.4f}"]
        rows.append([str(item), label, *(f"{p:.6f}" for p in row), *familiarity, ""])
    return rows


def _embed_uncached(items, backbone, progress=None):
    """The library's embedding without its cache: a cache would keep every vector in memory, and a
    batch job seldom sees an input twice. (Keys are only the cache's, so none are computed: that
    would read every file once more.)"""
    from smalldata.features import embed

    return embed(items, backbone, keys=[""] * len(items), use_cache=False)


def _describe_error(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
