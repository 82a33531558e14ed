"""Every saved model folder has a README.md, written from its model.json: a card a person can read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import smalldata
from smalldata.finetune_choice import FineTuneOptions
from smalldata.model import Model
from smalldata.model_card import card

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def look_alike_folder(fashion, tmp_path_factory) -> Path:
    """8 Fashion-MNIST images of each of three look-alike classes (recall well under 100%), and one
    file that is no image, which loading leaves out."""
    from smalldata.demo import CLASSES, write_png_folder

    images, labels = fashion
    wanted = [CLASSES.index(name) for name in ("t-shirt", "pullover", "shirt")]
    indices = [i for c in wanted for i in (labels == c).nonzero()[0][:8]]
    root = write_png_folder(images, labels, tmp_path_factory.mktemp("card") / "train", indices)
    (next(root.iterdir()) / "broken.png").write_bytes(b"not a png")
    return root


@pytest.fixture(scope="module")
def image_model_folder(look_alike_folder, tmp_path_factory) -> Path:
    model = smalldata.train(smalldata.load_dataset(look_alike_folder), backbone="efficientnet-lite0", budget="60s",
                            fine_tune=FineTuneOptions(mode="never"))
    return model.save(tmp_path_factory.mktemp("card") / "clothes")


def test_the_card_says_what_the_model_json_holds(image_model_folder):
    description = json.loads((image_model_folder / "model.json").read_text())
    text = (image_model_folder / "README.md").read_text()
    assert text == card(description, "clothes")  # from model.json alone: any folder can have it made again
    assert text.startswith("# clothes: an image classifier")
    assert "into 3 classes" in text
    for label, count in description["data"]["counts"].items():
        assert f"| {label} | {count} |" in text
    skipped = description["data"]["skipped"]
    assert [entry["what"] for entry in skipped] == [f"{next(iter(description['data']['counts']))}/broken.png"]
    assert "broken.png" in text and "Left out, 1 in all" in text

    comparison = description["cross_validation"]
    chosen = next(c for c in comparison["candidates"] if c["name"] == comparison["chosen"])
    baseline = next(c for c in comparison["candidates"] if c["is_baseline"])
    assert f"**{100 * chosen['mean_accuracy']:.1f}%** accuracy (± {100 * chosen['std_accuracy']:.1f}%" in text
    assert f"scored {100 * baseline['mean_accuracy']:.1f}% (± {100 * baseline['std_accuracy']:.1f}%)" in text
    assert comparison["protocol"] in text

    assert description["learning_curve"]["summary"] in text
    assert "efficientnet-lite0: licence Apache-2.0" in text
    assert "smalldata predict clothes photo.jpg" in text and 'smalldata.Model.load("clothes")' in text
    assert "smalldata export clothes --format onnx --out clothes.onnx" in text
    floor = description["unknown"]["familiarity_floor"]
    assert f"Answers `unknown` where the input's familiarity is under {floor:.2f}" in text
    assert "some inputs of any other kind are answered `unknown`, not all" in text


def test_the_card_names_the_classes_the_model_gets_wrong(image_model_folder):
    description = json.loads((image_model_folder / "model.json").read_text())
    recalls = description["learning_curve"]["points"][-1]["recalls"]
    weak = sorted((r, label) for label, r in recalls.items() if r < 0.9)
    assert weak, "these look-alike classes should not all be recalled at 90%: the test would check nothing"
    limits = (image_model_folder / "README.md").read_text().split("## Limits")[1]
    line = next(line for line in limits.splitlines() if "gets wrong most often" in line)
    assert [label for _, label in weak] == [part.split(" ")[0].strip()
                                            for part in line.split(": ", 1)[1].rstrip(".").split(", ")]
    assert "Few examples: 3 of 3 classes have fewer than 20 (the smallest, 8)" in limits

    comparison = description["cross_validation"]
    chosen = next(c for c in comparison["candidates"] if c["name"] == comparison["chosen"])
    pairs = chosen["confused"]
    assert pairs, "look-alike classes at 8 per class: some must be mixed up, or this checks nothing"
    repeats = comparison["n_repeats"]
    assert all(p["out_of"] == 8 * repeats and 0 < p["count"] <= p["out_of"] for p in pairs)
    line = next(line for line in limits.splitlines() if "confuses most" in line)
    assert [part.split(" in ")[0] for part in line.split(": ", 1)[1].rstrip(".").split("; ")] == [
        f"**{p['true_label']}** taken for **{p['predicted_label']}** {p['count']} time{'s' * (p['count'] > 1)}"
        for p in pairs]


def test_the_most_confused_pairs_are_counted_over_every_held_out_prediction_and_left_out_when_none():
    from smalldata.evaluate import confused_pairs

    truth = np.array(["rose"] * 5 + ["tulip"] * 4 + ["daisy"] * 3)
    predicted = np.array(["rose"] * 5 + ["rose", "rose", "daisy", "tulip"] + ["daisy", "daisy", "tulip"])
    assert confused_pairs(truth, predicted, np.unique(truth)) == [
        {"true_label": "tulip", "predicted_label": "rose", "count": 2, "out_of": 4},
        {"true_label": "daisy", "predicted_label": "tulip", "count": 1, "out_of": 3},
        {"true_label": "tulip", "predicted_label": "daisy", "count": 1, "out_of": 4}]
    assert confused_pairs(truth, truth, np.unique(truth)) == []

    description = {"labels": ["rose", "tulip"], "modality": "image", "features": "efficientnet-lite0",
                   "head": {"name": "logistic regression", "kind": "linear"},
                   "cross_validation": {"protocol": "2x repeated stratified 2-fold cross-validation", "chosen": "lr",
                                        "candidates": [{"name": "lr", "mean_accuracy": 0.75, "std_accuracy": 0.1,
                                                        "fold_accuracies": [0.7, 0.8], "confused": []}]}}
    assert "confuses most" not in card(description)
    description["cross_validation"]["candidates"][0]["confused"] = [
        {"true_label": "tulip", "predicted_label": "rose", "count": 3, "out_of": 10}]
    assert "**tulip** taken for **rose** 3 times in 10." in card(description)


def test_an_unevaluated_model_and_one_that_cannot_be_exported_say_so(tmp_path):
    from smalldata.baselines import text_baseline

    topics = smalldata.load_dataset(DATA / "topics.csv")
    folder = smalldata.train(topics, evaluate=False, backbone="all-MiniLM-L6-v2").save(tmp_path / "quick")
    text = (folder / "README.md").read_text()
    assert "Not cross-validated" in text and "No learning curve was drawn" in text
    assert "smalldata export quick --format onnx" in text

    tfidf = Model(list(topics.classes), "text", "text", "baseline", text_baseline().fit(topics.inputs, topics.labels))
    text = (tfidf.save(tmp_path / "words") / "README.md").read_text()
    assert "Not possible for this model: it reads the raw strings with scikit-learn's TF-IDF" in text
    assert "smalldata export" not in text


def test_labels_and_file_names_are_shown_literally(tmp_path):
    """A label is the user's text: Markdown in it is shown, not rendered, and a | cannot break the table."""
    csv = tmp_path / "odd.csv"
    csv.write_text("text,label\nthe match was won,a|b\nthe cup final,a|b\nbake the bread,*bold* [x](y)\n"
                   "boil the pasta,*bold* [x](y)\n")
    folder = smalldata.train(smalldata.load_dataset(csv), evaluate=False, backbone="all-MiniLM-L6-v2").save(tmp_path / "m")
    text = (folder / "README.md").read_text()
    assert "| a\\|b | 2 |" in text and "| \\*bold\\* \\[x\\](y) | 2 |" in text
    assert "*bold*" not in text.replace("\\*bold\\*", "")
