"""Progress bars and status lines for long steps, silent when the caller asks for quiet."""

from __future__ import annotations

import sys
from contextlib import contextmanager, nullcontext

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second since the bar started. (Rich's own estimate looks at the last seconds only,
    and read 9,000/s when a Ray job handed over its rows in a burst.)"""

    def render(self, task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        return Text(f"{task.completed / elapsed:,.1f}/s" if elapsed and task.completed else "?/s")


class Task:
    def __init__(self, bar: RichProgress | None, task_id=None):
        self._bar, self._id = bar, task_id

    def advance(self, amount: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._id, amount)

    def done(self) -> None:
        if self._bar is not None:
            self._bar.stop()


class Progress:
    """Hands out one bar per long step; `enabled=False` (``--quiet``, ``--json``) prints nothing."""

    def __init__(self, *, enabled: bool = True, console: Console | None = None):
        self.enabled = enabled
        self.console = console or Console(file=sys.stderr)

    def task(self, description: str, total: int, *, rate: bool = False) -> Task:
        """A bar for `total` items; `rate` also shows items per second (for long batch jobs)."""
        if not self.enabled:
            return Task(None)
        bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            *([RateColumn()] if rate else []),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=self.console,
        )
        bar.start()
        return Task(bar, bar.add_task(description, total=total))

    @contextmanager
    def spinner(self, description: str):
        """A spinner with `description` while the block runs: for a long step with no count to show."""
        with self.console.status(description) if self.enabled else nullcontext():
            yield

    def log(self, message: str) -> None:
        if self.enabled:
            self.console.print(message)


QUIET = Progress(enabled=False)
