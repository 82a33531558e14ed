"""train.py: the automatic choice on the same folds, the learning curve, and what train refuses."""

import pytest

import smalldata
from smalldata.model import Model


def test_training_compares_baseline_and_every_head_on_the_same_folds(text_model):
    comparison = text_model.comparison
    names = [s.name for s in comparison.scores]
    assert names[0].startswith("baseline") and comparison.baseline is comparison.scores[0]
    assert names[1:] == ["logistic-regression on all-mpnet-base-v2", "average of logistic regressions",
                         "logistic-regression on all-MiniLM-L6-v2", "logistic regression + class names"]
    assert len({len(s.fold_accuracies) for s in comparison.scores}) == 1
    assert text_model.head_name == comparison.chosen.name
    assert comparison.chosen.mean >= comparison.best.mean - comparison.best.standard_error
    assert comparison.best.mean >= 0.8  # 3 distinct topics, real sentence encoder


def test_training_draws_the_chosen_heads_learning_curve(text_model):
    curve = text_model.curve
    assert [p.per_class for p in curve.points] == [1, 2, 4, 7]  # 8 texts per class, one left out
    assert curve.points[-1].mean >= 0.8 and curve.fit is not None and len(curve.projections) == 3
    assert "more examples per class" in curve.summary


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
                         "linear: cosine + cross-entropy", "logistic regression + class names"]
    assert {s.features for s in model.comparison.scores[1:]} == {"all-MiniLM-L6-v2"}


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
