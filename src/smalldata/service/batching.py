"""One network call at a time, batching the requests that arrive meanwhile.

Under load, many request threads each calling ONNX Runtime with its own pool of threads would
oversubscribe the cores; instead one thread runs the network, and whatever requests queued up
while it ran go together in the next batch (no timer: a lone request waits for nothing).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Callable, Sequence

import numpy as np

MAX_BATCH = 32


class Batcher:
    def __init__(self, run: Callable[[list], np.ndarray], *, max_batch: int = MAX_BATCH, name: str = "batcher"):
        self._run, self._max = run, max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def __call__(self, items: Sequence) -> np.ndarray:
        """The network's output rows for `items`, computed together with other callers' items."""
        return self.submit(items).result()

    def submit(self, items: Sequence) -> Future:
        """The same, as a future (an async endpoint awaits it without holding a thread)."""
        future: Future = Future()
        self._queue.put((list(items), future))
        return future

    def _loop(self) -> None:
        while True:
            groups = [self._queue.get()]
            size = len(groups[0][0])
            while size < self._max:
                try:
                    group = self._queue.get_nowait()
                except queue.Empty:
                    break
                groups.append(group)
                size += len(group[0])
            self._answer(groups)

    def _answer(self, groups) -> None:
        try:
            rows = self._run([item for items, _ in groups for item in items])
        except Exception as error:  # each caller gets the error, the thread lives on
            for _, future in groups:
                future.set_exception(error)
            return
        start = 0
        for items, future in groups:
            future.set_result(rows[start: start + len(items)])
            start += len(items)
