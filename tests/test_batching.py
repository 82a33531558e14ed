"""The batcher that runs a served network: rows go back to their callers, errors too, and later
lanes take work only while earlier ones are busy."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from smalldata.service.batching import Batcher


def test_every_caller_gets_its_own_rows_back():
    batches = []

    def double(items):
        batches.append(len(items))
        return np.array(items) * 2

    batcher = Batcher(double, max_batch=8)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: batcher([i, i + 1000]), range(200)))
    for i, rows in enumerate(answers):
        assert rows.tolist() == [2 * i, 2 * (i + 1000)]
    assert sum(batches) == 400 and max(batches) <= 8


def test_an_error_reaches_the_callers_of_that_batch_and_the_lane_goes_on():
    def picky(items):
        if "bad" in items:
            raise ValueError("cannot run on bad")
        return np.array([len(item) for item in items])

    batcher = Batcher(picky)
    with pytest.raises(ValueError, match="cannot run on bad"):
        batcher(["bad"])
    assert batcher(["fine", "ok"]).tolist() == [4, 2]


def test_one_callers_bad_input_fails_only_that_caller_not_the_others_in_its_batch():
    # a lone surrogate from one client made the tokenizer raise for every request batched with it
    release = threading.Event()

    def picky(items):
        release.wait(5)  # hold the lane so the next requests queue up and go in one batch
        if any("\udfff" in item for item in items):
            raise UnicodeEncodeError("utf-8", "\udfff", 0, 1, "surrogates not allowed")
        return np.array([len(item) for item in items])

    batcher = Batcher(picky)
    first = batcher.submit(["warm"])  # occupies the lane while the others arrive
    good = [batcher.submit([f"text {i}"]) for i in range(8)]
    bad = batcher.submit(["x \udfff"])
    release.set()
    assert first.result(5).tolist() == [4]
    assert [future.result(5).tolist() for future in good] == [[6]] * 8
    with pytest.raises(UnicodeEncodeError):
        bad.result(5)


def test_a_later_lane_runs_only_while_the_first_is_busy():
    release, first_running = threading.Event(), threading.Event()
    used = []

    def lane(index):
        def run(items):
            used.append((index, items))
            if items == ["hold"]:
                first_running.set()
                release.wait(10)
            return np.zeros(len(items))
        return run

    batcher = Batcher([lane(0), lane(1)])
    batcher(["alone"])
    held = batcher.submit(["hold"])
    assert first_running.wait(10)
    batcher(["meanwhile"])  # answered by lane 1 while lane 0 is held
    release.set()
    held.result(10)
    batcher(["alone again"])
    assert used == [(0, ["alone"]), (0, ["hold"]), (1, ["meanwhile"]), (0, ["alone again"])]
