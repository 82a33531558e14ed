"""`unknown` answers: the floor for inputs of no known class, the user's threshold, the threshold
suggested for a target precision, and the checks on bad input."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import smalldata
from smalldata.cli import app
from smalldata.data import DataError
from smalldata.unknown import (BELOW_THRESHOLD, UNFAMILIAR, UNKNOWN, Abstention, CutOff, Scored, abstention_from, answers,
                               check_class_names, check_threshold, verdicts)

runner = CliRunner()


def test_answers_say_unknown_below_the_cut_off_and_keep_the_top_class_above_it():
    proba = np.array([[0.7, 0.3], [0.45, 0.55], [0.2, 0.8]])
    assert answers(Scored(proba), ["a", "b"], CutOff(0.6)) == ["a", UNKNOWN, "b"]
    assert answers(Scored(proba), ["a", "b"], CutOff(0.0)) == ["a", "b", "b"]


def test_an_unfamiliar_input_is_unknown_whatever_its_probability_and_the_reason_is_given():
    scored = Scored(np.array([[0.99, 0.01], [0.45, 0.55], [0.2, 0.8]]), familiarity=np.array([0.02, 0.5, 0.3]))
    assert verdicts(scored, ["a", "b"], CutOff(0.6, 0.1)) == [(UNKNOWN, UNFAMILIAR), (UNKNOWN, BELOW_THRESHOLD), ("b", None)]
    assert answers(scored, ["a", "b"], CutOff(0.0)) == ["a", "b", "b"]  # the floor off: every input answered
    with pytest.raises(ValueError, match="familiarity"):  # a floor on scores that lack it is a bug, not a silent pass
        answers(Scored(scored.proba), ["a", "b"], CutOff(0.0, 0.1))


def test_a_model_with_familiarity_applies_its_floor_instead_of_the_probability_floor():
    abstention = Abstention(floor=0.7, floor_quantile=0.1, known_answered=0.9, familiarity_floor=0.12,
                            familiarity_known_answered=0.9)
    assert abstention.cut_off(0.5) == CutOff(0.5, 0.12) and abstention.cut_off(0.5, floor=False) == CutOff(0.5)
    older = Abstention(floor=0.7, floor_quantile=0.1, known_answered=0.9)  # a folder from before familiarity
    assert older.cut_off(0.5) == CutOff(0.7) and older.cut_off(0.8) == CutOff(0.8)
    assert "familiarity" in abstention.sentence() and "familiarity" not in older.sentence()
    assert CutOff(0.8, 0.12).said() == "probability 0.80 and familiarity 0.12" and CutOff(0, 0.12).said() == "familiarity 0.12"


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.8", True])
def test_a_threshold_outside_zero_to_one_is_refused_with_what_is_allowed(bad):
    with pytest.raises(DataError, match="between 0 and 1"):
        check_threshold(bad)
    assert check_threshold(0) == 0.0 and check_threshold(1) == 1.0 and check_threshold(None) is None


def test_unknown_as_a_class_name_is_refused_with_what_to_do():
    with pytest.raises(DataError, match="rename that class"):
        check_class_names(["cat", UNKNOWN])
    check_class_names(["cat", "Unknown animal"])


def test_the_floor_turns_away_the_least_sure_tenth_and_the_suggestion_reaches_the_target_precision():
    confidence = np.linspace(0.4, 1.0, 100)
    proba = np.column_stack([confidence, (1 - confidence) / 2, (1 - confidence) / 2])
    truth = np.where(np.arange(100) < 40, 1, 0)  # the 40 least sure are wrong, the rest right
    found = abstention_from(proba, truth, target_precision=0.9)
    assert found.floor == pytest.approx(np.quantile(confidence, 0.1), abs=1e-4)
    assert found.known_answered == pytest.approx(0.9)
    # 60 right answers reach 90% precision among at most 66 answers: the cut-off is the 35th lowest
    assert found.suggested_threshold == pytest.approx(confidence[34], abs=1e-4)
    assert found.coverage == pytest.approx(0.66) and found.precision >= 0.9
    assert "--threshold" in found.sentence()
    unreachable = abstention_from(proba, np.ones(100, dtype=int), target_precision=0.9)
    assert unreachable.suggested_threshold is None and "no threshold reached 90%" in unreachable.sentence()


def test_a_damaged_floor_is_refused():
    with pytest.raises(ValueError, match="not between 0 and 1"):
        Abstention.from_dict({"floor": 2.0, "floor_quantile": 0.1, "known_answered": 0.9})
    with pytest.raises(ValueError, match="familiarity_floor"):
        Abstention.from_dict({"floor": 0.5, "floor_quantile": 0.1, "known_answered": 0.9, "familiarity_floor": -1,
                              "familiarity_known_answered": 0.9})
    with pytest.raises(ValueError, match="come together"):
        Abstention.from_dict({"floor": 0.5, "floor_quantile": 0.1, "known_answered": 0.9, "familiarity_floor": 0.1})


@pytest.fixture(scope="module")
def text_model():
    from tests.conftest import DATA

    return smalldata.train(smalldata.load_dataset(DATA / "topics.csv"), target_precision=0.9)


def test_training_saves_the_floor_and_the_suggested_threshold(text_model, tmp_path):
    found = text_model.unknown
    assert 0 < found.floor < 1 and found.target_precision == 0.9 and found.floor_quantile == 0.1
    saved = json.loads((text_model.save(tmp_path / "m") / "model.json").read_text())["unknown"]
    assert saved["floor"] == found.floor and saved["suggested_threshold"] == found.suggested_threshold
    assert smalldata.Model.load(tmp_path / "m").unknown == found


def test_predict_answers_unknown_by_threshold_or_floor_and_keeps_the_probabilities(text_model):
    texts = ["Heavy rain and strong winds are forecast for tonight.", "Quantum chromodynamics lecture notes."]
    assert UNKNOWN not in text_model.predict(texts)  # the Python default: every input answered
    assert text_model.predict(texts, threshold=1.0) == [UNKNOWN, UNKNOWN]
    floor = text_model.unknown.familiarity_floor
    scored = text_model.scored(texts)
    expected = [text_model.classes[row.argmax()] if familiar >= floor else UNKNOWN
                for row, familiar in zip(scored.proba, scored.familiarity)]
    assert text_model.predict(texts, unknown=True) == expected
    assert text_model.cut_off(0.2, unknown=True) == CutOff(0.2, floor)
    assert text_model.cut_off(0.2, unknown=False) == CutOff(0.2)


def test_training_refuses_a_class_named_unknown():
    from smalldata.data import Dataset

    dataset = Dataset(inputs=["sunny and warm", "dry and bright", "a bowl of soup", "fresh bread"],
                      labels=["weather", "weather", UNKNOWN, UNKNOWN], modality="text", source="test")
    with pytest.raises(DataError, match="rename that class"):
        smalldata.train(dataset)


def test_evaluate_reports_the_share_answered_and_their_accuracy(text_model):
    from smalldata.data import Dataset

    test = Dataset(inputs=["Thunderstorms will roll in this afternoon.", "Whisk the eggs with sugar.",
                           "The team won the league.", "Parliament passed the budget."],
                   labels=["weather", "cooking", "sport", "politics"], modality="text", source="test")
    result = text_model.evaluate(test, threshold=0.0, unknown=False)
    assert result.coverage == 1.0 and result.cut_off == 0.0 and result.unknown_answered == 1.0
    everything = text_model.evaluate(test, threshold=1.0)
    assert everything.coverage == 0.0 and everything.answered_accuracy is None and everything.unknown_answered == 0.0
    assert everything.accuracy == result.accuracy  # plain accuracy answers every input, whatever the cut-off


def test_the_cli_predicts_unknown_under_a_threshold_and_refuses_one_out_of_range(text_model, tmp_path):
    folder = text_model.save(tmp_path / "model")
    shown = runner.invoke(app, ["predict", str(folder), "Sunny spells all weekend.", "--threshold", "1", "--json"])
    assert shown.exit_code == 0, shown.output
    result = json.loads(shown.stdout)[0]
    assert result["label"] == UNKNOWN and len(result["probabilities"]) == 3
    assert result["unknown_because"] == BELOW_THRESHOLD and 0 <= result["familiarity"] <= 1
    refused = runner.invoke(app, ["predict", str(folder), "Sunny spells all weekend.", "--threshold", "1.5"])
    assert refused.exit_code != 0 and "between 0 and 1" in refused.output
    table = runner.invoke(app, ["predict", str(folder), "Sunny spells all weekend.", "--threshold", "1", "--no-unknown"])
    assert "unknown (below threshold)" in table.stdout and "the --threshold given" in table.stdout
    answered = runner.invoke(app, ["predict", str(folder), "Sunny spells all weekend.", "--no-unknown", "--json"])
    assert json.loads(answered.stdout)[0]["label"] == "weather"


def test_the_cli_evaluate_says_how_many_were_answered(text_model, tmp_path):
    folder = text_model.save(tmp_path / "model")
    test = tmp_path / "test.csv"
    test.write_text("text,label\nSnow is falling in the hills.,weather\nSimmer the stew for an hour.,cooking\n")
    shown = runner.invoke(app, ["evaluate", str(folder), str(test), "--threshold", "0.5"])
    assert shown.exit_code == 0, shown.output
    assert "answered at probability" in shown.output and "the rest answered 'unknown'" in shown.output


def test_the_cli_refuses_a_bad_target_precision_before_reading_the_data(tmp_path):
    refused = runner.invoke(app, ["train", str(tmp_path / "nothing-here.csv"), "--out", str(tmp_path / "m"),
                                  "--target-precision", "90"])
    assert refused.exit_code != 0 and "between 0 and 1" in refused.output


def test_a_cut_off_near_one_is_printed_with_four_decimals_not_rounded_to_one():
    from smalldata.unknown import shown

    assert shown(0.8) == "0.80" and shown(0.9969) == "0.9969" and shown(1.0) == "1.0000"
    assert "0.9969" in Abstention(floor=0.9969, floor_quantile=0.1, known_answered=0.9).sentence()
