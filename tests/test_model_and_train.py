import json

import numpy as np
import pytest

import smalldata
from smalldata.baselines import text_baseline
from smalldata.backbones import RAW_TEXT
from smalldata.model import Model, ModelFolderError


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    from tests.conftest import DATA

    return smalldata.train(smalldata.load_dataset(DATA / "topics.csv"))


def test_training_compares_baseline_and_every_head_on_the_same_folds(text_model):
    comparison = text_model.comparison
    names = [s.name for s in comparison.scores]
    assert names[0].startswith("baseline") and comparison.baseline is comparison.scores[0]
    assert names[1:] == ["logistic-regression on all-mpnet-base-v2", "average of logistic regressions",
                         "logistic-regression on all-MiniLM-L6-v2"]
    assert len({len(s.fold_accuracies) for s in comparison.scores}) == 1
    assert text_model.head_name == comparison.chosen.name
    assert comparison.chosen.mean >= comparison.best.mean - comparison.best.standard_error
    assert comparison.best.mean >= 0.8  # 3 distinct topics, real sentence encoder


def test_training_draws_the_chosen_heads_learning_curve(text_model):
    curve = text_model.curve
    assert [p.per_class for p in curve.points] == [1, 2, 4, 7]  # 8 texts per class, one left out
    assert curve.points[-1].mean >= 0.8 and curve.fit is not None and len(curve.projections) == 3
    assert "more examples per class" in curve.summary


def test_prediction_on_unseen_texts(text_model):
    texts = ["The referee showed a red card to the defender.", "Stir in the flour and butter.",
             "Expect drizzle and grey skies all day."]
    assert text_model.predict(texts) == ["sport", "cooking", "weather"]
    proba = text_model.predict_proba(texts)
    assert proba.shape == (3, 3) and np.allclose(proba.sum(axis=1), 1)


def test_save_and_load_gives_the_same_probabilities_and_no_pickle(text_model, tmp_path):
    folder = text_model.save(tmp_path / "model")
    description = json.loads((folder / "model.json").read_text())
    assert description["format_version"] == 1 and description["labels"] == ["cooking", "sport", "weather"]
    assert description["cross_validation"]["chosen"] == text_model.head_name
    assert "scikit-learn" in description["libraries"] and description["preprocessing"]
    assert not [p for p in folder.iterdir() if p.suffix in {".pkl", ".pickle", ".joblib", ".pt"}]
    loaded = Model.load(folder)
    texts = ["Goal in extra time!", "Sunny spells later."]
    assert np.allclose(loaded.predict_proba(texts), text_model.predict_proba(texts))
    assert loaded.comparison.chosen.name == text_model.comparison.chosen.name
    assert loaded.curve.summary == text_model.curve.summary


def test_a_scikit_learn_head_round_trips_through_skops(tmp_path):
    from tests.conftest import DATA

    data = smalldata.load_dataset(DATA / "topics.csv")
    model = Model(data.classes, "text", RAW_TEXT, "baseline", text_baseline().fit(data.inputs, data.labels))
    Model.load(model.save(tmp_path / "m"))
    assert (tmp_path / "m" / "head.skops").exists()
    assert Model.load(tmp_path / "m").predict(["Knead the dough"]) == model.predict(["Knead the dough"])


def test_untrusted_code_in_a_model_folder_is_refused(tmp_path):
    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    folder = tmp_path / "evil"
    Model(["a", "b"], "text", RAW_TEXT, "x", text_baseline()).save(folder)
    skops.io.dump(FunctionTransformer(print), folder / "head.skops")
    with pytest.raises(ModelFolderError, match="does not trust"):
        Model.load(folder)


def test_newer_format_and_missing_backbone_fail_clearly(text_model, tmp_path):
    folder = text_model.save(tmp_path / "m")
    description = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**description, "format_version": 99}))
    with pytest.raises(ModelFolderError, match="newer than this smalldata reads.*upgrade"):
        Model.load(folder)
    (folder / "model.json").write_text(json.dumps({**description, "features": "clip-vit-l14"}))
    with pytest.raises(ModelFolderError, match="needs the backbone 'clip-vit-l14'"):
        Model.load(folder)
    with pytest.raises(ModelFolderError, match="not a smalldata model folder"):
        Model.load(tmp_path)


@pytest.mark.slow
def test_images_end_to_end_on_real_fashion_mnist(fashion_folder, fashion_test_folder, tmp_path):
    model = smalldata.train(smalldata.load_dataset(fashion_folder))
    assert model.features in {"efficientnet-lite0+efficientnet-lite2", "efficientnet-lite2", "efficientnet-lite0",
                              "colour-texture-stats"}
    assert model.comparison.best.mean > model.comparison.baseline.mean - 0.05
    result = Model.load(model.save(tmp_path / "m")).evaluate(smalldata.load_dataset(fashion_test_folder))
    assert result.accuracy >= 0.9 and result.n_examples == 30
    assert sum(map(sum, result.confusion)) == 30


def test_without_evaluation_one_example_per_class_is_enough(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("text,label\nThe team won the final,sport\nBake for an hour,cooking\n")
    model = smalldata.train(smalldata.load_dataset(path), evaluate=False)
    # nothing to choose with: the automatic choice's first frozen candidate, on the strongest encoder
    assert model.comparison is None and model.head_name == "logistic-regression on all-mpnet-base-v2"
    assert model.predict(["a football match"]) == ["sport"]
    with pytest.raises(smalldata.DataError, match="cross-validation needs at least 2"):
        smalldata.train(smalldata.load_dataset(path))


def test_a_backbone_the_user_chose_gets_every_head_on_it():
    from tests.conftest import DATA

    model = smalldata.train(smalldata.load_dataset(DATA / "topics.csv"), backbone="all-MiniLM-L6-v2", curve=False)
    names = [s.name for s in model.comparison.scores]
    assert names[1:] == ["logistic-regression", "linear: cross-entropy", "linear: cosine loss",
                         "linear: cosine + cross-entropy"]
    assert {s.features for s in model.comparison.scores[1:]} == {"all-MiniLM-L6-v2"}


def test_the_service_predicts_a_model_on_both_text_encoders_as_the_library_does():
    from smalldata.service.predictor import Predictor
    from tests.conftest import DATA

    both = "all-MiniLM-L6-v2+all-mpnet-base-v2"
    model = smalldata.train(smalldata.load_dataset(DATA / "topics.csv"), backbone=both, curve=False)
    assert model.features == both  # both encoders, each through its ONNX batcher when served
    texts = ["The referee showed a red card.", "Stir in the flour.", "Grey skies all day."]
    assert np.allclose(Predictor(model).texts(texts), model.predict_proba(texts), atol=1e-3)


def test_texts_without_words_train_and_keep_the_baseline_as_it_is_on_words(tmp_path):
    """Emoji-only texts have no token for TF-IDF's default pattern: the baseline then reads
    symbols too, where texts with words keep the default (and every number measured on them)."""
    from smalldata.baselines import WORDS, WORDS_OR_SYMBOLS, tokens_for

    assert tokens_for(["a great film", "dull"]) == WORDS
    assert tokens_for(["a great film", "😀😀"]) == WORDS_OR_SYMBOLS
    texts = ["😀😀", "😀🎉", "🎉😀😀", "😀", "😡😡", "😡💢", "💢😡", "😡"] * 2
    labels = (["pos"] * 4 + ["neg"] * 4) * 2
    data = smalldata.Dataset(texts, labels, "text", source="emoji")
    model = smalldata.train(data, curve=False, budget=0)
    assert model.comparison.baseline.mean > 0 and set(model.predict(["😀🎉"])) <= {"pos", "neg"}


def test_uneven_classes_bring_class_weighted_heads_and_a_balanced_choice():
    from tests.conftest import DATA

    data = smalldata.load_dataset(DATA / "topics.csv")
    sport = [i for i, label in enumerate(data.labels) if label == "sport"]
    uneven = data.subset([i for i in range(len(data)) if data.labels[i] != "sport" or i in sport[:2]])
    model = smalldata.train(uneven, budget=0, curve=False)
    names = [score.name for score in model.comparison.scores]
    assert model.comparison.balanced and any("class-weighted" in name for name in names)
    assert names.index("logistic-regression (class-weighted) on all-mpnet-base-v2") < names.index(
        "logistic-regression on all-mpnet-base-v2")  # the weighted twin is preferred in a tie
    even = smalldata.train(data, budget=0, curve=False)
    assert not even.comparison.balanced and not any("class-weighted" in s.name for s in even.comparison.scores)


def test_train_given_a_table_says_what_it_takes():
    from smalldata.data import DataError

    with pytest.raises(DataError, match="SmalldataClassifier"):
        smalldata.train({"text": ["a", "b"], "label": ["x", "y"]})
