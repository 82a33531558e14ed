"""The cost of a fine-tuning step: measured once per machine and backbone, then read, never re-timed."""

import json

import pytest

from smalldata import costs
from smalldata.backbones import cache_dir
from smalldata.finetune_text import ContrastiveTextClassifier


def test_a_step_is_measured_once_on_the_probe_and_kept_for_this_machine(monkeypatch):
    estimator = ContrastiveTextClassifier()
    assert costs.optimistic_step_seconds(estimator) == costs.OPTIMISTIC_STEP_SECONDS["all-MiniLM-L6-v2"]
    measured = costs.step_seconds(estimator)  # a real step of the real encoder on the probe texts
    assert 0 < measured < 60
    kept = json.loads((cache_dir() / costs.COSTS_FILE).read_text())
    assert kept[costs.machine_key()]["ContrastiveTextClassifier:all-MiniLM-L6-v2:batch 16"] == pytest.approx(measured, abs=1e-4)

    def never(*args):
        raise AssertionError("a kept cost must not be timed again")
    monkeypatch.setattr(ContrastiveTextClassifier, "time_step", never)
    assert costs.step_seconds(ContrastiveTextClassifier()) == pytest.approx(measured, abs=1e-4)
    assert costs.optimistic_step_seconds(ContrastiveTextClassifier()) == pytest.approx(measured, abs=1e-4)


def test_longer_texts_cost_more_within_bounds():
    probe_length = len(costs.PROBE_TEXTS[0])
    assert costs.text_length_factor(["x" * probe_length] * 3) == pytest.approx(1.0, rel=0.05)
    assert costs.text_length_factor(["x" * (4 * probe_length)]) == pytest.approx(2.0, rel=0.05)
    assert costs.text_length_factor(["short"]) == 0.5 and costs.text_length_factor(["x" * 100_000]) == 3.0


def test_a_step_cost_is_kept_per_device(monkeypatch):
    """A figure kept for the CPU is never read for a run on a GPU (nor the reverse), and a GPU, which
    beats the CPU's fixed lower bounds, is measured rather than skipped by them."""
    estimator = ContrastiveTextClassifier(batch_size=3)  # a key no other test reads: the cache is the session's
    path = cache_dir() / costs.COSTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu_key = costs.machine_key()
    kept = json.loads(path.read_text()) if path.exists() else {}
    kept.setdefault(cpu_key, {})[costs._key(estimator)] = 0.5
    path.write_text(json.dumps(kept))
    assert costs.known_step_seconds(estimator) == 0.5

    monkeypatch.setattr(costs, "torch_device", lambda: "cuda")
    monkeypatch.setattr(costs, "device_name", lambda modality_uses_torch=False: "GPU (a test card)")
    assert costs.machine_key() == f"{cpu_key} | GPU (a test card)"
    assert costs.known_step_seconds(estimator) is None
    assert costs.optimistic_step_seconds(estimator) == 0.0
