import json

import pytest
from typer.testing import CliRunner

from smalldata.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.conftest import DATA

    folder = tmp_path_factory.mktemp("cli") / "topics-model"
    result = runner.invoke(app, ["train", str(DATA / "topics.csv"), "--out", str(folder), "--finetune", "never"])
    assert result.exit_code == 0, result.output
    return folder, result.output


def test_train_prints_counts_and_the_cross_validation_table(trained):
    folder, output = trained
    assert "24 texts in 3 classes" in output
    assert "baseline: tf-idf + logistic regression" in output and "(chosen)" in output
    assert "vs baseline" in output and "points" in output
    assert "learning curve" in output and "more data: about" in output
    assert (folder / "model.json").exists()


def test_curve_command_measures_and_extrapolates(tmp_path):
    from tests.conftest import DATA

    result = runner.invoke(app, ["curve", str(DATA / "topics.csv"), "--json"])
    assert result.exit_code == 0, result.output
    curve = json.loads(result.stdout)
    assert [p["per_class"] for p in curve["points"]] == [1, 2, 4, 7]
    assert [p["factor"] for p in curve["projections"]] == [2, 5, 10] and curve["summary"]
    unknown = runner.invoke(app, ["curve", str(DATA / "topics.csv"), "--head", "no such head"])
    assert unknown.exit_code == 2 and "choose one of" in unknown.output


def test_predict_json_gives_label_and_probabilities(trained):
    folder, _ = trained
    result = runner.invoke(app, ["predict", str(folder), "Heavy snow tonight", "Grill the fish", "--json"])
    assert result.exit_code == 0, result.output
    answers = json.loads(result.stdout)
    assert [a["label"] for a in answers] == ["weather", "cooking"]
    assert abs(sum(answers[0]["probabilities"].values()) - 1) < 1e-3


def test_predict_reads_texts_from_a_file(trained, tmp_path):
    folder, _ = trained
    texts = tmp_path / "texts.txt"
    texts.write_text("The striker was injured\n\nSift the flour\n")
    result = runner.invoke(app, ["predict", str(folder), "--file", str(texts)])
    assert result.exit_code == 0 and "sport" in result.stdout and "cooking" in result.stdout


def test_evaluate_reports_accuracy_per_class_and_confusion(trained, tmp_path):
    folder, _ = trained
    test = tmp_path / "test.csv"
    test.write_text("text,label\nThe keeper dived to his left,sport\nFry the onions slowly,cooking\n"
                    "Cloudy with a chance of rain,weather\nA new stadium opens,sport\n")
    result = runner.invoke(app, ["evaluate", str(folder), str(test), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n_examples"] == 4 and report["accuracy"] >= 0.75
    assert set(report["per_class"]) == {"cooking", "sport", "weather"}
    table = runner.invoke(app, ["evaluate", str(folder), str(test)])
    assert "confusion matrix" in table.stdout and "precision" in table.stdout


def test_bad_input_exits_2_with_advice_and_keeps_an_existing_model(trained, tmp_path):
    folder, _ = trained
    before = (folder / "model.json").read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nonly one of these,a\nand two,b\nof those,b\n")
    result = runner.invoke(app, ["train", str(bad), "--out", str(folder), "--finetune", "never"])
    assert result.exit_code == 2
    assert "--drop-small-classes" in result.output
    assert (folder / "model.json").read_text() == before
    missing = runner.invoke(app, ["predict", str(tmp_path), "hello"])
    assert missing.exit_code == 2 and "not a smalldata model folder" in missing.output
    clash = runner.invoke(app, ["train", str(bad), "--out", str(folder), "--tta", "--no-flip"])
    assert clash.exit_code == 2 and "use one or the other" in clash.output
    assert (folder / "model.json").read_text() == before


def test_quiet_and_json_keep_stdout_clean(tmp_path):
    from tests.conftest import DATA

    quiet = runner.invoke(app, ["train", str(DATA / "topics.csv"), "--out", str(tmp_path / "q"), "--quiet", "--finetune", "never"])
    assert quiet.exit_code == 0 and quiet.stdout == ""
    as_json = runner.invoke(app, ["train", str(DATA / "topics.csv"), "--out", str(tmp_path / "j"), "--json", "--finetune", "never"])
    assert json.loads(as_json.stdout)["chosen"] and json.loads(as_json.stdout)["learning_curve"]["points"]


@pytest.mark.slow
def test_image_model_from_the_command_line(fashion_folder, fashion_test_folder, tmp_path):
    result = runner.invoke(app, ["train", str(fashion_folder), "--out", str(tmp_path / "m"), "--json", "--finetune", "never"])
    assert result.exit_code == 0, result.output
    some = sorted((fashion_test_folder / "bag").iterdir())[:2]
    predicted = runner.invoke(app, ["predict", str(tmp_path / "m"), *map(str, some), "--json"])
    assert [a["label"] for a in json.loads(predicted.stdout)] == ["bag", "bag"]


def test_suggest_writes_the_texts_to_label_next_and_keeps_an_existing_file(trained, tmp_path):
    folder, _ = trained
    pool = tmp_path / "unlabeled.txt"
    pool.write_text("\n".join(["Rain and wind all afternoon.", "He dribbled past two defenders.",
                               "Knead the dough for ten minutes.", "Is it a storm or a match report?",
                               "Whisk the eggs until fluffy.", "", "Snow expected in the hills."]) + "\n")
    out = tmp_path / "to-label.csv"
    result = runner.invoke(app, ["suggest", str(folder), str(pool), "--n", "3", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert len(document["suggestions"]) == 3 and [s["rank"] for s in document["suggestions"]] == [1, 2, 3]
    assert document["skipped"] and "empty" in document["skipped"][0]["reason"]
    rows = out.read_text().splitlines()
    assert rows[0].startswith("text,label") and len(rows) == 4
    again = runner.invoke(app, ["suggest", str(folder), str(pool), "--n", "3", "--out", str(out)])
    assert again.exit_code == 2 and "--out" in again.output
    assert out.read_text().splitlines() == rows
