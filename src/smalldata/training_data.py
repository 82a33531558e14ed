"""What a model was trained on, as model.json's "data" keeps it: where the examples came from and how
they were read, the counts per class, every file or row left out with its reason, and the extra
knowledge offered (an unlabeled pool, class descriptions).

The report reads the source again to look for leakage, the model card and the service show the
counts and what was left out; they read these fields, not keys of a dict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping

from smalldata.data import Dataset, Skipped


@dataclass
class TrainingData:
    source: str = ""
    load_options: dict = field(default_factory=dict)  # the non-default options `source` was read with
    modality: str = ""
    n_examples: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    dropped_duplicates: list[Skipped] = field(default_factory=list)
    conflicting_duplicates: list[list[str]] = field(default_factory=list)
    unlabeled: dict | None = None  # the pool offered: its size and what was left out of it
    descriptions: dict[str, str] | None = None  # label -> what the class means, as given

    @classmethod
    def of(cls, dataset: Dataset, unlabeled=None, descriptions: Mapping[str, str] | None = None) -> "TrainingData":
        """What `dataset` holds, and the pool (`smalldata.unlabeled.Pool`) and descriptions offered."""
        return cls(source=dataset.source, load_options=dict(dataset.load_options), modality=dataset.modality,
                   n_examples=len(dataset), counts=dataset.counts(), skipped=list(dataset.skipped),
                   dropped_duplicates=list(dataset.dropped_duplicates),
                   conflicting_duplicates=[list(group) for group in dataset.conflicting_duplicates],
                   unlabeled=unlabeled.summary() if unlabeled is not None else None,
                   descriptions=dict(descriptions) if descriptions is not None else None)

    @property
    def n_unlabeled(self) -> int:
        return (self.unlabeled or {}).get("n_examples", 0)

    def to_dict(self) -> dict:
        """model.json's "data": the pool and the descriptions appear only when they were offered."""
        saved = asdict(self)
        return {key: value for key, value in saved.items()
                if value is not None or key not in ("unlabeled", "descriptions")}

    @classmethod
    def from_dict(cls, saved: Mapping) -> "TrainingData":
        """Back from model.json; folders written before a field existed load with its default."""
        def skipped(key: str) -> list[Skipped]:
            return [Skipped(str(s["what"]), str(s["reason"])) for s in saved.get(key) or []]

        return cls(source=saved.get("source") or "", load_options=dict(saved.get("load_options") or {}),
                   modality=saved.get("modality") or "", n_examples=int(saved.get("n_examples") or 0),
                   counts={str(k): int(v) for k, v in (saved.get("counts") or {}).items()},
                   skipped=skipped("skipped"), dropped_duplicates=skipped("dropped_duplicates"),
                   conflicting_duplicates=[list(g) for g in saved.get("conflicting_duplicates") or []],
                   unlabeled=saved.get("unlabeled"), descriptions=saved.get("descriptions"))
