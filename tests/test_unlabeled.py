import json

import numpy as np
import pytest
from typer.testing import CliRunner

import smalldata
from smalldata.cli import app
from smalldata.describe import NAMED_HEAD
from smalldata.heads import logistic_regression_head
from smalldata.unlabeled import KEPT_SHARE, SELF_TRAINING, PoolHead, load_pool, most_confident_per_class, pool_from

# Unlabeled texts on the three topics of tests/data/topics.csv, written for these tests.
POOL = [
    "The defender was sent off after a second yellow card.", "She won gold in the 200 metres sprint.",
    "The club signed a new striker before the transfer deadline.", "Our team lost the derby on penalties.",
    "The cyclists climbed the mountain stage in thick fog.", "He scored a hat-trick in the league match.",
    "Simmer the tomato sauce for twenty minutes.", "Roast the chicken with garlic and rosemary.",
    "Fold the egg whites gently into the batter.", "Season the soup with salt and black pepper.",
    "Knead the dough until it is smooth and elastic.", "Grill the peppers until their skins blacken.",
    "Heavy snow is forecast for the hills overnight.", "A warm front brings drizzle by the afternoon.",
    "Strong winds and thunderstorms are expected on Friday.", "Temperatures will fall below freezing tonight.",
    "Sunny spells and a light breeze this weekend.", "Fog will clear by mid-morning, then bright sunshine.",
]


@pytest.fixture(scope="module")
def topics():
    from tests.conftest import DATA

    return smalldata.load_dataset(DATA / "topics.csv")


def blobs(n_per_class: int, seed: int):
    """Two round clusters, away from the origin (label spreading compares directions)."""
    rng = np.random.default_rng(seed)
    a = rng.normal([0, 10], 0.7, size=(n_per_class, 2))
    b = rng.normal([3, 10], 0.7, size=(n_per_class, 2))
    return np.vstack([a, b]), np.array(["a"] * n_per_class + ["b"] * n_per_class)


def test_self_training_and_label_spreading_learn_from_the_pool():
    pool, pool_truth = blobs(200, seed=1)
    test, truth = blobs(200, seed=2)
    X, y = np.array([[0.5, 10.0], [4.5, 10.0]]), np.array(["a", "b"])  # alone, the boundary sits too far right
    alone = np.mean(logistic_regression_head().fit(X, y).predict(test) == truth)
    assert alone < 0.9
    trained = PoolHead(pool=pool, method="self-training").fit(X, y)
    assert len(trained.pseudo_indices_) == pytest.approx(KEPT_SHARE * len(pool), abs=2)  # each class's confident share
    assert np.mean(trained.pseudo_labels_ == pool_truth[trained.pseudo_indices_]) > 0.95
    assert np.mean(trained.predict(test) == truth) > 0.95
    spread = PoolHead(pool=pool, method="label-spreading").fit(X, y)
    assert len(spread.pseudo_indices_) > 20
    assert np.mean(spread.pseudo_labels_ == pool_truth[spread.pseudo_indices_]) > 0.95
    assert np.mean(spread.predict(test) == truth) > alone


def test_each_class_keeps_its_own_most_confident_share():
    proba = np.array([[0.99, 0.01], [0.98, 0.02], [0.97, 0.03], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
    indices, labels = most_confident_per_class(proba, np.array(["a", "b"]), 0.5)
    assert sorted(zip(indices.tolist(), labels.tolist())) == [(0, "a"), (1, "a"), (4, "b")]


def test_the_pool_never_holds_a_labeled_example(topics, tmp_path):
    path = tmp_path / "pool.txt"
    path.write_text("\n".join([topics.inputs[0], *POOL[:3], "", POOL[0]]) + "\n")
    pool = load_pool(path, topics)
    assert pool.inputs == POOL[:3]
    reasons = [s.reason for s in pool.skipped]
    assert "identical to a labeled example" in reasons and "empty text" in reasons
    assert any(r.startswith("exact duplicate") for r in reasons)
    with pytest.raises(smalldata.DataError, match="every one was unreadable, a duplicate, or identical"):
        pool_from([topics.inputs[1]], topics)


def test_train_judges_pool_candidates_on_the_same_folds_and_saves_a_plain_model(topics, tmp_path):
    model = smalldata.train(topics, unlabeled=pool_from(POOL, topics), curve=False)
    comparison = model.comparison
    assert SELF_TRAINING in {s.name for s in comparison.scores}
    assert comparison.informed == [NAMED_HEAD, SELF_TRAINING]  # the class names are words: they join too
    assert len({len(s.fold_accuracies) for s in comparison.scores}) == 1
    contributions = comparison.to_dict()["contributions"]
    assert set(contributions) == {NAMED_HEAD, SELF_TRAINING}
    mean, std = comparison.gain(SELF_TRAINING)
    assert contributions[SELF_TRAINING]["mean_points"] == pytest.approx(100 * mean) and std >= 0
    assert model.data.n_unlabeled == len(POOL)
    folder = model.save(tmp_path / "m")
    assert sum(p.stat().st_size for p in folder.iterdir()) < 200_000  # the pool is not saved with the model
    loaded = smalldata.Model.load(folder)
    assert loaded.comparison.chosen.name == comparison.chosen.name == model.head_name
    assert loaded.predict(["A penalty in the final minute.", "Bake the bread for an hour."]) == ["sport", "cooking"]


def test_the_choice_keeps_a_pool_candidate_unless_the_folds_show_it_worse():
    from smalldata.evaluate import CandidateScore, Comparison

    def comparison(pool_folds):
        scores = [CandidateScore("baseline", "text", "", True, [0.5] * 4),
                  CandidateScore("logistic-regression", "m", "", False, [0.8, 0.6, 0.7, 0.7]),
                  CandidateScore(SELF_TRAINING, "m", "", False, pool_folds)]
        return Comparison(scores, 2, 2, 8, informed=[SELF_TRAINING])

    assert comparison([0.9, 0.5, 0.7, 0.65]).chosen.name == SELF_TRAINING  # slightly worse: within its error
    assert comparison([0.7, 0.5, 0.6, 0.6]).chosen.name == "logistic-regression"  # clearly worse: rejected
    kept = comparison([0.9, 0.7, 0.8, 0.8])
    assert kept.chosen.name == SELF_TRAINING and kept.gain(SELF_TRAINING)[0] == pytest.approx(0.1)
    again = Comparison.from_dict(kept.to_dict())
    assert again.chosen.name == SELF_TRAINING and again.informed == [SELF_TRAINING]


def test_cli_train_with_unlabeled_texts_says_what_they_contributed(tmp_path):
    from tests.conftest import DATA

    pool = tmp_path / "pool.csv"
    pool.write_text("text\n" + "\n".join(POOL) + "\n")
    result = CliRunner().invoke(app, ["train", str(DATA / "topics.csv"), "--unlabeled", str(pool), "--no-curve",
                                      "--finetune", "never", "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert "18 unlabeled texts" in result.output and "what the extra knowledge contributed" in result.output
    assert "points over" in result.output
    wrong = CliRunner().invoke(app, ["train", str(DATA / "topics.csv"), "--unlabeled", str(tmp_path / "none.csv"),
                                     "--out", str(tmp_path / "m2")])
    assert wrong.exit_code == 2 and "does not exist" in wrong.output
    saved = json.loads((tmp_path / "m" / "model.json").read_text())
    assert saved["cross_validation"]["contributions"] and saved["data"]["unlabeled"]["n_examples"] == 18


@pytest.mark.slow
def test_images_learn_from_an_unlabeled_folder(fashion_folder, fashion_test_folder):
    labeled = smalldata.load_dataset(fashion_folder)
    pool = load_pool(fashion_test_folder, labeled)  # class subfolders are ignored: only the images count
    assert len(pool) == 30
    model = smalldata.train(labeled, unlabeled=pool, curve=False)
    assert SELF_TRAINING in {s.name for s in model.comparison.scores}
    assert model.evaluate(smalldata.load_dataset(fashion_test_folder)).accuracy >= 0.9
    with pytest.raises(smalldata.DataError, match="give unlabeled images"):
        from tests.conftest import DATA

        load_pool(DATA / "topics.csv", labeled)
