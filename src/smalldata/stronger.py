"""A stronger, slower backbone as more frozen candidates, when the time budget allows it.

Texts: all-mpnet-base-v2 embeds about 10x slower than MiniLM. Frozen, at 8 texts per class, it
scores far higher on some sets (sst2 78.8% against 59.2%, BENCHMARKS.md) and no higher on others
(agnews 75.6% against 76.2%).
Images: EfficientNet-Lite2 (260 px) embeds about half as fast as Lite0 (224 px). Frozen, its best
head beat Lite0's on the test split of every benchmark set and size, by 0.1 to 3.8 points, but
with 50-200 images its folds rarely separate the two (BENCHMARKS.md, sessions 13 and 14).

So the stronger backbone's heads are scored on the same folds as the default one's and listed
before them. The one-standard-error rule then takes a stronger-backbone head unless a default one
beats them all by more than one standard error. Why before: the rule guards against the luck of
the most flexible head, and a head on a better pretrained backbone is no more flexible (it is
the same head on other features); listed after, the rule kept default heads on draws where
the stronger ones were better on the test split (BENCHMARKS.md, session 15). The price is a
served model that embeds at the stronger backbone's pace, which the user's budget allowed.

The cost is measured, not assumed: the backbone is loaded (for images exported to ONNX the first
time) and timed on a few of the examples, and the rest are embedded only if that estimate, plus
cross-validating its heads (estimated from what the default backbone's candidates took), fits
in a share of the budget left.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from smalldata.backbones import get_backbone
from smalldata.features import embed, uncached
from smalldata.progress import Progress

STRONGER = {"all-MiniLM-L6-v2": "all-mpnet-base-v2", "efficientnet-lite0": "efficientnet-lite2"}
# Images also get logistic regression on both backbones' embeddings side by side, listed first
# (`backbones.PairedBackbone` says why). Not texts: on sst2 mpnet alone beat the pair by 2.5 to
# 4.2 points on every draw, and listed first the pair would be kept wherever folds of a few texts
# cannot tell them apart (BENCHMARKS.md, session 17).
PAIRED = {"efficientnet-lite0": "efficientnet-lite0+efficientnet-lite2"}
# Fine-tuning, tried after the frozen candidates, needs most of the budget.
BUDGET_SHARE = 0.25
SAMPLE = 16  # examples timed to estimate the rest
# Faster than this machine ever loaded mpnet (1.7 s from a warm disk) or Lite2, and embedded with
# them (15-35 texts/s; about 90 images/s, decoding included): skipping without loading only where
# the stronger backbone could not fit even at this pace.
OPTIMISTIC_LOAD_SECONDS = 1.0
OPTIMISTIC_PER_SECOND = {"text": 100.0, "image": 400.0}


@dataclass
class EncoderDecision:
    """Whether the stronger backbone's heads joined the comparison, and why."""

    encoder: str
    tried: bool
    reason: str
    seconds: float = 0.0  # spent on it: loading, and embedding what was not cached

    def to_dict(self) -> dict:
        return asdict(self)


def stronger_encoder(dataset, backbone: str, *, seconds_left: float, heads_seconds: float,
                     progress: Progress) -> EncoderDecision | None:
    """Embed `dataset` with the backbone stronger than `backbone` when that, plus `heads_seconds`
    to cross-validate its heads, fits in BUDGET_SHARE of `seconds_left`; None when no stronger
    backbone is known for `backbone`."""
    stronger = STRONGER.get(backbone)
    if stronger is None:
        return None
    noun = "texts" if dataset.modality == "text" else "images"
    started = time.perf_counter()
    allowed = BUDGET_SHARE * seconds_left - heads_seconds
    missing = uncached(dataset.keys, get_backbone(stronger))
    optimistic = (OPTIMISTIC_LOAD_SECONDS + len(missing) / OPTIMISTIC_PER_SECOND[dataset.modality]) if missing else 0.0
    if optimistic > allowed:
        embedding = f"embedding {len(missing)} {noun} with {stronger} and " if missing else ""
        return EncoderDecision(stronger, False, f"not tried: {embedding}cross-validating its heads "
                               f"(about {heads_seconds:.0f} s) would take more than "
                               f"{BUDGET_SHARE * seconds_left:.0f} s, the quarter of the budget left; give a larger --budget")
    if missing:
        try:
            get_backbone(stronger).load()  # loading (and a first ONNX export) is part of the cost
        except (RuntimeError, ImportError) as error:  # its packages are not installed
            return EncoderDecision(stronger, False, f"not tried: {error}", round(time.perf_counter() - started, 1))
        sample, rest = missing[:SAMPLE], missing[SAMPLE:]
        timed = time.perf_counter()
        _embed_rows(dataset, sample, stronger, progress)
        estimate = (time.perf_counter() - timed) / len(sample) * len(rest)
        spent = time.perf_counter() - started
        if spent + estimate > allowed:
            return EncoderDecision(stronger, False, f"not tried: embedding the other {len(rest)} {noun} with {stronger} "
                                   f"would take about {estimate:.0f} s more and cross-validating its heads about "
                                   f"{heads_seconds:.0f} s, past {BUDGET_SHARE * seconds_left:.0f} s, the quarter of "
                                   "the budget left; give a larger --budget", round(spent, 1))
        _embed_rows(dataset, rest, stronger, progress)
    spent = round(time.perf_counter() - started, 1)
    cost = f"{spent:.0f} s to load it and embed {len(missing)} {noun} not cached yet" if missing else "its embeddings were cached"
    return EncoderDecision(stronger, True, f"tried: its heads were scored on the same folds ({cost}); preferred "
                           f"unless a {backbone} head beats them by more than one standard error", spent)


def _embed_rows(dataset, rows: list[int], backbone: str, progress: Progress) -> None:
    """Embed (and so cache) the dataset's examples at `rows`."""
    if rows:
        embed([dataset.inputs[i] for i in rows], backbone, keys=[dataset.keys[i] for i in rows], progress=progress)
