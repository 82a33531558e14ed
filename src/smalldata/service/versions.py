"""What a model version says of itself and of the one before it: its accuracy with an interval, and
what changed since (examples added, removed and relabelled per class, the accuracy before).

A version keeps the examples it was trained on (`trained_on`: their content keys and labels, a
snapshot taken when its job started), so the next one can tell what a person did in between: the
labeling loop's relabels, removals and new labels, and whether they paid.
"""

from __future__ import annotations

from collections import Counter

from smalldata.intervals import wilson


def accuracy_interval(summary: dict) -> dict | None:
    """From the out-of-fold confusion matrix every version's summary holds (older versions too): the
    diagonal is what was right; a Wilson interval for the accuracy. None without a matrix."""
    confusion = summary.get("confusion") or []
    n = sum(sum(row) for row in confusion)
    if not n:
        return None
    interval = wilson(sum(row[i] for i, row in enumerate(confusion)), n)
    return {"correct": interval.successes, "n": interval.n, "accuracy": interval.share, "low": interval.low,
            "high": interval.high, "confidence": interval.confidence}


def snapshot(keys: list[str], labels: list[str]) -> dict:
    """What `ModelVersion.trained_on` holds: the examples' content keys (`Example.embed_key`, one per
    content in a project) and their labels, in the same order."""
    if len(keys) != len(labels):
        raise ValueError(f"{len(keys)} example keys but {len(labels)} labels: a snapshot pairs each key with its label")
    return {"keys": list(keys), "labels": list(labels)}


def changes(previous, trained_on: dict) -> dict | None:
    """What changed from `previous` (a ModelVersion, or None for a project's first version) to a
    version trained on `trained_on`. Examples are matched by content, not by id: an example removed
    and uploaded again (the page's Undo) is the same example, unchanged. A previous version made
    before versions kept their examples gives only its accuracy (`examples_known` false)."""
    if previous is None:
        return None
    out = {"previous_id": previous.id, "previous_number": previous.number, "examples_known": False,
           "added": {}, "removed": {}, "relabelled": [], "accuracy_before": accuracy_interval(previous.summary)}
    if not previous.trained_on:
        return out
    before = dict(zip(previous.trained_on["keys"], previous.trained_on["labels"]))
    after = dict(zip(trained_on["keys"], trained_on["labels"]))
    moved = Counter((before[i], after[i]) for i in before.keys() & after.keys() if before[i] != after[i])
    out.update(
        examples_known=True,
        added=dict(sorted(Counter(after[i] for i in after.keys() - before.keys()).items())),
        removed=dict(sorted(Counter(before[i] for i in before.keys() - after.keys()).items())),
        relabelled=[{"from": old, "to": new, "n": n} for (old, new), n in sorted(moved.items())])
    return out
