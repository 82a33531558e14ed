import json
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

import smalldata
from smalldata.cli import app
from smalldata.describe import (DESCRIBED_HEAD, NAMED_HEAD, DescribedHead, complete_descriptions, names_as_descriptions,
                                 parse_descriptions)
from smalldata.zero_shot import zero_shot_model

TOPICS = {"sport": "sports: football, tennis, athletics", "cooking": "cooking: recipes and food",
          "weather": "the weather forecast: rain, sun and wind"}
UNSEEN = ["The referee showed a red card to the defender.", "Stir in the flour and butter.",
          "Expect drizzle and grey skies all day."]


def test_descriptions_are_read_from_options_and_files_and_checked(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("# what the classes mean\nSci/Tech = science and technology news\n\nWorld=world news\n")
    assert parse_descriptions(["Sports=sports news"], path) == {
        "Sci/Tech": "science and technology news", "World": "world news", "Sports": "sports news"}
    with pytest.raises(smalldata.DataError, match="expected LABEL=description"):
        parse_descriptions(["no equals sign"])
    with pytest.raises(smalldata.DataError, match="described twice"):
        parse_descriptions(["a=x", "a=y"])
    assert complete_descriptions({"card_arrival": "when my card arrives"}, ["card_arrival", "top_up_limits"]) == {
        "card_arrival": "when my card arrives", "top_up_limits": "top up limits"}
    with pytest.raises(smalldata.DataError, match="check the spelling"):
        complete_descriptions({"sprot": "sports"}, ["sport", "cooking"])


def test_zero_shot_model_answers_from_descriptions_and_round_trips(tmp_path):
    model = zero_shot_model(TOPICS)
    assert model.predict(UNSEEN) == ["sport", "cooking", "weather"]
    folder = model.save(tmp_path / "zero")
    assert json.loads((folder / "model.json").read_text())["head"]["kind"] == "described-head"
    assert np.allclose(smalldata.Model.load(folder).predict_proba(UNSEEN), model.predict_proba(UNSEEN))


def test_a_class_with_no_example_is_still_predicted_from_its_description():
    from smalldata.describe import embedded_descriptions
    from smalldata.features import embed

    labels, prototypes = embedded_descriptions(TOPICS, sorted(TOPICS), "all-MiniLM-L6-v2")
    texts = ["The striker scored twice.", "Our keeper saved a penalty.", "Whisk the eggs.", "Bake for an hour."]
    head = DescribedHead(prototypes=prototypes, prototype_labels=labels).fit(
        embed(texts, "all-MiniLM-L6-v2"), ["sport", "sport", "cooking", "cooking"])
    assert list(head.classes_) == ["cooking", "sport", "weather"]
    assert list(head.predict(embed(UNSEEN, "all-MiniLM-L6-v2"))) == ["sport", "cooking", "weather"]


def test_train_with_descriptions_cross_validates_them_and_saves_them(tmp_path):
    from tests.conftest import DATA

    data = smalldata.load_dataset(DATA / "topics.csv")
    model = smalldata.train(data, descriptions={"sport": TOPICS["sport"]}, curve=False)
    assert DESCRIBED_HEAD in model.comparison.informed
    assert model.data.descriptions == {"sport": TOPICS["sport"]}
    assert DESCRIBED_HEAD in model.comparison.to_dict()["contributions"]
    loaded = smalldata.Model.load(model.save(tmp_path / "m"))
    assert np.allclose(loaded.predict_proba(UNSEEN), model.predict_proba(UNSEEN))
    # one example per class cannot be cross-validated: the descriptions are then used as given
    one = data.subset([data.labels.index(label) for label in data.classes])
    described = smalldata.train(one, descriptions=TOPICS, evaluate=False)
    assert described.head_name == DESCRIBED_HEAD and described.predict(UNSEEN) == ["sport", "cooking", "weather"]


def test_class_names_stand_in_as_descriptions_only_where_they_are_words():
    assert names_as_descriptions(["card_arrival", "Sci/Tech", "World"]) == {
        "card_arrival": "card arrival", "Sci/Tech": "Sci Tech", "World": "World"}
    for meaningless in (["0", "1"], ["a", "b"], ["class_1", "class_2"], ["pos", "x"]):
        assert names_as_descriptions(meaningless) is None


def test_train_judges_the_class_names_on_the_folds_unless_descriptions_are_given(text_model):
    from tests.conftest import DATA

    assert NAMED_HEAD in text_model.comparison.informed  # sport, cooking, weather: words
    assert NAMED_HEAD in text_model.comparison.to_dict()["contributions"]
    data = smalldata.load_dataset(DATA / "topics.csv")
    described = smalldata.train(data, descriptions={"sport": TOPICS["sport"]}, curve=False)
    assert described.comparison.informed == [DESCRIBED_HEAD]  # the user's descriptions replace the names
    renamed = replace(data, labels=[str(data.classes.index(label)) for label in data.labels])  # "0", "1", "2" say nothing
    assert smalldata.train(renamed, curve=False).comparison.informed == []


def test_cli_trains_from_descriptions_alone_and_predicts(tmp_path):
    runner = CliRunner()
    folder = tmp_path / "zero"
    args = ["train", "--out", str(folder)] + [f"--describe={k}={v}" for k, v in TOPICS.items()]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "nearest" in result.output
    predicted = runner.invoke(app, ["predict", str(folder), *UNSEEN, "--json"])
    assert [r["label"] for r in json.loads(predicted.stdout)] == ["sport", "cooking", "weather"]
    nothing = runner.invoke(app, ["train", "--out", str(tmp_path / "x")])
    assert nothing.exit_code == 2 and "give DATA" in nothing.output
