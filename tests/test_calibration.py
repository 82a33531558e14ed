"""Calibration: one temperature from held-out predictions, kept only where it lowers the held-out
log-loss; the expected calibration error and the reliability table."""

import json

import numpy as np
import pytest

import smalldata
from smalldata.calibration import (Calibration, calibrate, expected_calibration_error, fit_temperature, log_loss,
                                   reliability, temper)
from smalldata.model import Model, ModelFolderError


def test_a_temperature_sharpens_or_flattens_without_changing_the_top_class():
    proba = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    sharper, flatter = temper(proba, 0.5), temper(proba, 2.0)
    assert np.allclose(sharper.sum(axis=1), 1) and np.allclose(flatter.sum(axis=1), 1)
    assert (sharper.argmax(axis=1) == proba.argmax(axis=1)).all() and (flatter.argmax(axis=1) == proba.argmax(axis=1)).all()
    assert (sharper.max(axis=1) > proba.max(axis=1)).all() and (flatter.max(axis=1) < proba.max(axis=1)).all()
    assert np.allclose(temper(proba, 1.0), proba)
    assert np.isfinite(temper(np.array([[1.0, 0.0]]), 0.5)).all()  # a random forest's hard zeros


def test_the_calibration_error_is_the_weighted_gap_between_confidence_and_accuracy():
    # Four answers at 0.9 confidence, half right: the gap is 0.4 everywhere.
    proba = np.array([[0.9, 0.1]] * 4)
    truth = np.array([0, 1, 0, 1])
    assert expected_calibration_error(proba, truth) == pytest.approx(0.4)
    table = reliability(proba, truth)
    assert table["counts"][9] == 4 and table["accuracy"][9] == 0.5 and table["confidence"][9] == 0.9
    assert table["accuracy"][0] is None  # an empty bin says so, rather than 0
    # Ten answers at 0.9 confidence, nine right: calibrated, no error.
    calibrated = np.array([[0.9, 0.1]] * 9 + [[0.1, 0.9]])
    assert expected_calibration_error(calibrated, np.zeros(10, dtype=int)) == pytest.approx(0.0, abs=1e-9)


def _under_confident(n: int, seed: int = 0):
    """Probabilities far flatter than the truth: 90% right, but said with about 60% confidence."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, n)
    right = rng.random(n) < 0.9
    top = np.where(right, truth, (truth + 1) % 3)
    proba = np.full((n, 3), 0.2)
    proba[np.arange(n), top] = 0.6
    return proba, truth


def test_the_fitted_temperature_follows_the_data_and_leans_on_the_prior_when_examples_are_few():
    proba, truth = _under_confident(600)
    many = fit_temperature(proba, truth, n_examples=600, center=1.0)
    assert many < 0.5  # the data say sharpen, strongly
    assert log_loss(temper(proba, many), truth) < log_loss(proba, truth)
    few = fit_temperature(proba[:6], truth[:6], n_examples=6, center=1.0)
    assert many < few <= 1.0  # six examples move it less far from the prior's centre


def test_calibrate_keeps_a_temperature_that_lowers_the_held_out_log_loss_and_reports_before_and_after():
    proba, truth = _under_confident(300)
    labels = np.array(["a", "b", "c"])[truth]
    folds = [(np.arange(0, 150), proba[:150]), (np.arange(150, 300), proba[150:])]
    calibration = calibrate(folds, labels, ["a", "b", "c"], center=1.0)
    assert calibration.kept and calibration.temperature < 1
    assert calibration.log_loss_after < calibration.log_loss_before
    assert calibration.ece_after < calibration.ece_before
    assert sum(calibration.reliability_before["counts"]) == 300
    assert np.allclose(calibration.apply(proba), temper(proba, calibration.temperature))


def test_calibrate_gives_up_a_temperature_the_held_out_examples_show_harmful():
    # Twelve answers at 0.8 confidence, half of them right: the prior (around 0.5) would sharpen
    # them, and the held-out log-loss shows that harm beyond its noise.
    truth = np.array([0, 1] * 6)
    top = truth.copy()
    top[6:] = 1 - top[6:]
    proba = np.full((12, 2), 0.2)
    proba[np.arange(12), top] = 0.8
    calibration = calibrate([(np.arange(12), proba)], np.array(["a", "b"])[truth], ["a", "b"], center=0.5)
    assert not calibration.kept and calibration.temperature == 1.0
    assert "beyond noise" in calibration.reason
    assert np.array_equal(calibration.apply(proba), proba)
    assert calibration.ece_after == calibration.ece_before


def test_a_temperature_is_kept_where_the_held_out_examples_cannot_tell_harm_from_noise():
    # Already calibrated (60% right at 0.6): the prior pulls the temperature down a little, which
    # the held-out log-loss cannot tell from noise; the prior's evidence stands.
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 40)
    top = np.where(rng.random(40) < 0.6, truth, 1 - truth)
    proba = np.full((40, 2), 0.4)
    proba[np.arange(40), top] = 0.6
    calibration = calibrate([(np.arange(40), proba)], np.array(["a", "b"])[truth], ["a", "b"], center=0.5)
    assert calibration.kept and "does not say it harms" in calibration.reason


@pytest.fixture(scope="module")
def text_model():
    from tests.conftest import DATA

    return smalldata.train(smalldata.load_dataset(DATA / "topics.csv"))


def test_a_trained_model_is_calibrated_on_its_folds_and_says_so_in_model_json(text_model, tmp_path):
    calibration = text_model.calibration
    assert calibration is not None and calibration.n_examples == 24
    raw = text_model.estimator.predict_proba(text_model.features_of(["It will rain all day tomorrow."]))
    given = text_model.predict_proba(["It will rain all day tomorrow."])
    assert given.argmax() == raw.argmax()
    if calibration.kept:
        assert not np.allclose(given, raw)
    saved = json.loads((text_model.save(tmp_path / "m") / "model.json").read_text())["calibration"]
    assert saved["temperature"] == calibration.temperature and "ece_before" in saved and "reliability_after" in saved
    chosen = next(s for s in text_model.comparison.scores if s is text_model.comparison.chosen)
    assert chosen.calibration_error is not None and 0 <= chosen.calibration_error <= 1


def test_a_model_folder_from_before_calibration_predicts_as_it_did(text_model, tmp_path):
    folder = text_model.save(tmp_path / "old")
    description = json.loads((folder / "model.json").read_text())
    for key in ("calibration", "unknown"):
        del description[key]
    (folder / "model.json").write_text(json.dumps(description))
    old = Model.load(folder)
    assert old.calibration is None and old.unknown is None
    texts = ["Bake the bread for forty minutes.", "Snow is expected overnight."]
    raw = text_model.estimator.predict_proba(text_model.features_of(texts))
    assert np.allclose(old.predict_proba(texts), raw)
    assert old.predict(texts, unknown=True) == old.predict(texts)  # no floor saved: every input answered


@pytest.mark.parametrize("temperature", [0, -1, "hot", None, float("inf"), True])
def test_a_damaged_temperature_is_refused_when_the_folder_loads(text_model, tmp_path, temperature):
    folder = text_model.save(tmp_path / "damaged")
    description = json.loads((folder / "model.json").read_text())
    description["calibration"]["temperature"] = temperature
    (folder / "model.json").write_text(json.dumps(description))
    with pytest.raises(ModelFolderError, match="calibration"):
        Model.load(folder)


def test_calibration_round_trips_through_its_dict():
    calibration = Calibration(0.5, True, "the held-out log-loss does not say it harms", 10, 1.0, 0.8, 0.2, 0.1)
    assert Calibration.from_dict({**calibration.to_dict(), "added_later": 1}) == calibration
