import csv

import numpy as np
import pytest
from PIL import Image

import smalldata
from smalldata.baselines import text_baseline
from smalldata.data import DataError
from smalldata.backbones import RAW_TEXT
from smalldata.model import Model
from smalldata.suggest import (
    Suggestion,
    diversity_backbone,
    load_unlabeled,
    rank_for_labeling,
    suggest,
    uncertainty,
    write_suggestions,
)


def blobs(n_blobs: int, per_blob: int, dim: int = 16, seed: int = 0):
    """Well-separated clusters: points and the blob each belongs to."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_blobs, dim)) * 10
    which = np.repeat(np.arange(n_blobs), per_blob)
    return centres[which] + rng.normal(size=(len(which), dim)), which


def probabilities(u: np.ndarray) -> np.ndarray:
    """Two-class probabilities whose uncertainty (1 - margin) is `u`."""
    top = 1 - u / 2
    return np.column_stack([top, 1 - top])


def test_uncertainty_is_one_minus_the_margin():
    p = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.6, 0.3, 0.1]])
    assert np.allclose(uncertainty(p), [0.0, 1.0, 0.7])
    assert np.allclose(uncertainty(probabilities(np.array([0.2, 0.9]))), [0.2, 0.9])


def test_picks_cover_the_clusters_rather_than_one_uncertain_region():
    X, which = blobs(6, 30)
    rng = np.random.default_rng(1)
    u = np.where(which == 0, rng.uniform(0.9, 1.0, len(which)), rng.uniform(0.2, 0.5, len(which)))
    picks = rank_for_labeling(X, probabilities(u), n=6, seed=0)
    assert len(set(which[np.argsort(-u)[:6]])) == 1  # uncertainty alone would take 6 of one blob
    assert len(set(which[picks])) >= 5
    assert which[picks[0]] == 0  # the region the model is least sure of comes first


def test_picks_prefer_uncertain_examples_within_a_region():
    X, which = blobs(4, 40)
    rng = np.random.default_rng(2)
    unsure = rng.random(len(which)) < 0.5
    u = np.where(unsure, 0.9, 0.05)
    picks = rank_for_labeling(X, probabilities(u), n=8, seed=0)
    assert unsure[picks].all()
    assert len(set(which[picks])) == 4


def test_regions_already_labeled_are_worth_less():
    X, which = blobs(4, 30)
    u = np.where(which < 2, 0.95, 0.6)  # the model is least sure where labels already exist
    labeled = np.vstack([X[which == 0][:2], X[which == 1][:2]]) + 0.1
    picks = rank_for_labeling(X, probabilities(u), n=2, labeled_embeddings=labeled, seed=0)
    assert set(which[picks]) == {2, 3}
    without = rank_for_labeling(X, probabilities(u), n=2, seed=0)
    assert set(which[without]) & {0, 1}  # it is the labeled examples that moved the picks away


def test_a_typical_example_beats_an_equally_uncertain_outlier():
    X, _ = blobs(1, 40)
    X = np.vstack([X, X.mean(axis=0) + 15])  # the last row lies far from the rest
    u = np.full(len(X), 0.9)
    u[-1] = 1.0
    picks = rank_for_labeling(X, probabilities(u), n=1, seed=0)
    assert picks[0] != len(X) - 1


def test_ranking_is_deterministic_distinct_and_bounded():
    X, _ = blobs(5, 20, seed=3)
    u = np.random.default_rng(3).random(len(X))
    first = rank_for_labeling(X, probabilities(u), n=12, seed=7)
    assert np.array_equal(first, rank_for_labeling(X, probabilities(u), n=12, seed=7))
    assert len(first) == 12 and len(set(first.tolist())) == 12
    everything = rank_for_labeling(X[:10], probabilities(u[:10]), n=50, seed=0)
    assert sorted(everything.tolist()) == list(range(10))
    with pytest.raises(ValueError, match="rows of probabilities"):
        rank_for_labeling(X, probabilities(u[:5]), n=3)


# ------------------------------------------------------------------------------ on a real text model

UNLABELED = [
    "The midfielder was sent off after a second yellow card.",
    "The goalkeeper dived to his left and saved the penalty.",
    "Our swimmers won three gold medals at the championships.",
    "Chop the onions finely and fry them in olive oil.",
    "Season the soup with pepper and a little cream.",
    "Let the cake cool before you spread the icing.",
    "Snow is forecast for the hills by the weekend.",
    "A warm front will bring drizzle and low cloud tomorrow.",
    "Thunderstorms may cause flooding in low-lying areas.",
    "The team's dinner was cancelled because of the storm.",
]


@pytest.fixture(scope="module")
def text_model():
    from tests.conftest import DATA

    return smalldata.train(smalldata.load_dataset(DATA / "topics.csv"), evaluate=False)


def test_suggest_ranks_unlabeled_texts_for_a_real_model(text_model):
    from tests.conftest import DATA

    labeled = smalldata.load_dataset(DATA / "topics.csv").inputs
    found = suggest(text_model, UNLABELED, n=4, labeled=labeled, seed=0)
    assert [s.rank for s in found] == [1, 2, 3, 4]
    assert len({s.item for s in found}) == 4 and all(s.item in UNLABELED for s in found)
    proba = text_model.predict_proba([s.item for s in found])
    for s, row in zip(found, proba):
        assert s.predicted == text_model.classes[int(row.argmax())]
        assert s.probability == pytest.approx(row.max(), abs=1e-6)
        assert s.uncertainty == pytest.approx(uncertainty(row[None])[0], abs=1e-6)
    assert len({s.predicted for s in found}) >= 2  # spread over topics, not four of one
    assert set(found[0].to_dict()) == {"rank", "item", "predicted", "probability", "uncertainty"}
    assert suggest(text_model, UNLABELED, n=4, labeled=labeled, seed=0) == found


def test_a_model_on_raw_text_is_diversified_with_the_default_sentence_encoder():
    from tests.conftest import DATA

    data = smalldata.load_dataset(DATA / "topics.csv")
    model = Model(data.classes, "text", RAW_TEXT, "baseline", text_baseline().fit(data.inputs, data.labels))
    assert diversity_backbone(model) == "all-MiniLM-L6-v2"
    on_statistics = Model(["a", "b"], "image", "colour-texture-stats", "baseline", None)
    assert diversity_backbone(on_statistics) == "efficientnet-lite0"
    assert diversity_backbone(Model(["a", "b"], "image", "efficientnet-lite2", "lr", None)) == "efficientnet-lite2"
    found = suggest(model, UNLABELED, n=3)
    assert len(found) == 3 and all(s.predicted in data.classes for s in found)


# ---------------------------------------------------------------------------------- reading, writing

def test_filled_in_text_suggestions_train_a_model(tmp_path):
    found = [Suggestion("Bake the bread, then rest it.", 1, "cooking", 0.51, 0.9),
             Suggestion('A "windy" day, with gusts', 2, "weather", 0.6, 0.7)]
    out = write_suggestions(found, tmp_path / "to-label.csv", "text")
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["text", "label", "predicted", "uncertainty"]
    assert [r["text"] for r in rows] == [s.item for s in found]
    assert all(r["label"] == "" for r in rows) and rows[0]["predicted"] == "cooking"
    assert float(rows[1]["uncertainty"]) == pytest.approx(0.7)

    for r, label in zip(rows, ["cooking", "weather"]):
        r["label"] = label
    filled = tmp_path / "filled.csv"
    with open(filled, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    data = smalldata.load_dataset(filled)
    assert data.inputs == [s.item for s in found] and data.labels == ["cooking", "weather"]


def test_an_existing_file_is_never_overwritten(tmp_path):
    out = tmp_path / "to-label.csv"
    out.write_text("my work\n")
    with pytest.raises(FileExistsError, match="new file name"):
        write_suggestions([Suggestion("x", 1, "a", 0.5, 1.0)], out, "text")
    assert out.read_text() == "my work\n"


def write_png(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def test_image_suggestions_are_copied_with_their_rank_and_listed(tmp_path):
    first = write_png(tmp_path / "in" / "a" / "cat.png", (255, 0, 0))
    second = write_png(tmp_path / "in" / "dog.png", (0, 255, 0))
    found = [Suggestion(second, 1, "dog", 0.55, 0.9), Suggestion(first, 2, "cat", 0.7, 0.4)]
    out = write_suggestions(found, tmp_path / "next", "image")
    assert sorted(p.name for p in out.iterdir()) == ["001_dog.png", "002_cat.png", "suggestions.csv"]
    assert (out / "001_dog.png").read_bytes() == second.read_bytes()
    with open(out / "suggestions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["rank"], r["file"], r["predicted"]) for r in rows] == [("1", str(second), "dog"), ("2", str(first), "cat")]
    assert float(rows[1]["uncertainty"]) == pytest.approx(0.4)

    with pytest.raises(FileExistsError, match="not empty"):
        write_suggestions(found, out, "image")
    assert sorted(p.name for p in out.iterdir()) == ["001_dog.png", "002_cat.png", "suggestions.csv"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(list(write_suggestions(found, empty, "image").iterdir())) == 3


def test_unlabeled_images_are_found_recursively_and_bad_files_reported(tmp_path):
    root = tmp_path / "pool"
    write_png(root / "one.png", (10, 20, 30))
    write_png(root / "deeper" / "still" / "two.png", (200, 20, 30))
    write_png(root / "copy.png", (10, 20, 30))  # same bytes as one.png
    (root / "broken.jpg").write_bytes(b"not an image")
    write_png(root / ".hidden" / "three.png", (0, 0, 0))
    pool = load_unlabeled(root)
    assert pool.modality == "image"
    assert [p.relative_to(root).as_posix() for p in pool.inputs] == ["copy.png", "deeper/still/two.png"]
    reasons = {s.what: s.reason for s in pool.skipped}
    assert "not a readable image" in reasons["broken.jpg"]
    assert reasons["one.png"] == "exact duplicate of copy.png"
    assert any("hidden" in r for r in reasons.values())


def test_unlabeled_texts_from_lines_and_from_a_table(tmp_path):
    lines = tmp_path / "pool.txt"
    lines.write_text("first text\n\nsecond text\nfirst text\n")
    pool = load_unlabeled(lines)
    assert pool.modality == "text" and pool.inputs == ["first text", "second text"]
    assert [s.reason for s in pool.skipped] == ["empty text", "exact duplicate of line 1"]

    table = tmp_path / "pool.csv"
    table.write_text("id,sentence\n1,hello there\n2,\n3,good bye\n")
    assert load_unlabeled(table, text_column="sentence").inputs == ["hello there", "good bye"]
    with pytest.raises(DataError, match="--text-column"):
        load_unlabeled(table)


def test_what_load_unlabeled_reads_is_the_pool_type_training_takes(tmp_path):
    from smalldata.data import Pool
    from smalldata.features import content_key
    from smalldata.suggest import Unlabeled
    from smalldata.unlabeled import Pool as TrainingPool

    assert Unlabeled is Pool and TrainingPool is Pool
    write_png(tmp_path / "pool" / "one.png", (10, 20, 30))
    write_png(tmp_path / "pool" / "two.png", (200, 20, 30))
    images = load_unlabeled(tmp_path / "pool")
    assert isinstance(images, Pool) and images.keys == [content_key(p) for p in images.inputs]
    lines = tmp_path / "pool.txt"
    lines.write_text("first text\nsecond text\n")
    texts = load_unlabeled(lines)
    assert texts.keys == [content_key(t) for t in texts.inputs] and texts.summary()["n_examples"] == 2
