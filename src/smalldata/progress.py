"""Progress bars and status lines for long steps, silent when the caller asks for quiet."""

from __future__ import annotations

import sys
from contextlib import contextmanager, nullcontext

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress


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

    def task(self, description: str, total: int) -> Task:
        if not self.enabled:
            return Task(None)
        bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
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
