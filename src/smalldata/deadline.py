"""One time budget for a whole training run, read by every step that may spend it.

A budget is what the user gives (`--budget 90s`, `train(budget="5m")`); a `Deadline` is that budget
started: made once at the start of `train`, it says how much is left.
What each step does is decided from estimates that do not depend on how busy the machine is
(`smalldata.costs`); the deadline itself is read only as a guard, so that a machine slowed by
other work stops a step early instead of running past the budget.
"""

from __future__ import annotations

import re
import time

from smalldata.errors import DataError

# What a person waits for at a terminal. On a 2-core CPU 10 images per class finish in 10-20 s
# (an image fine-tune never fits: minutes a fold), and 8 questions per class of trec6 leave room
# for MiniLM's contrastive fine-tune on three or four folds (50-75 s in all): BENCHMARKS.md,
# "Training time".
DEFAULT_BUDGET = "3m"
_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_budget(value: str | float | int | None) -> float | None:
    """Seconds from "90s", "5m", "1.5h" or a bare number of seconds; None stays None."""
    if value is None or isinstance(value, (int, float)):
        if value is not None and value < 0:
            raise DataError(f"a budget is a time to spend, not {value!r}: give 0 for the fastest run")
        return None if value is None else float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(value).lower())
    if not match:
        raise DataError(f"a budget looks like 90s, 5m or 1h, not {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


class Deadline:
    """`seconds` from now (None: no limit). Steps ask `left()` and `fits(cost)`."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.started = time.perf_counter()

    @classmethod
    def of(cls, budget: str | float | None) -> "Deadline":
        return cls(parse_budget(budget))

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        """Seconds left (infinite without a limit, never below zero)."""
        if self.seconds is None:
            return float("inf")
        return max(0.0, self.seconds - self.elapsed())

    def fits(self, seconds: float) -> bool:
        return seconds <= self.left()
