"""`smalldata export`: one ONNX graph per model, run here by ONNX Runtime in a process that cannot
import smalldata, from the preprocessing the file's metadata documents, on 100 inputs each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import smalldata
from smalldata.cli import app
from smalldata.features import embed
from smalldata.model import Model

DATA = Path(__file__).parent / "data"
MINILM = "all-MiniLM-L6-v2"

# The user's side: smalldata's stand-alone runner (ONNX Runtime, PIL and tokenizers), run with smalldata
# refused at import. It decodes images as the graph's metadata says (EXIF, RGB, shorter side bicubic,
# centre crop) and tokenizes texts with the tokenizer files the metadata names.
RUNNER = Path(smalldata.__file__).parent / "onnx_runner.py"
WITHOUT_SMALLDATA = f"""
import importlib.abc, runpy, sys


class NoSmalldata(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "smalldata":
            raise ImportError("the exported model must run without smalldata")


sys.meta_path.insert(0, NoSmalldata())
runpy.run_path({str(RUNNER)!r}, run_name="__main__")
"""


def run_exported(graph: Path, inputs: list) -> tuple[list[str], np.ndarray]:
    listing = graph.with_suffix(".inputs.json")
    listing.write_text(json.dumps([str(item) for item in inputs]))
    done = subprocess.run([sys.executable, "-c", WITHOUT_SMALLDATA, str(graph), str(listing)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    return answer["labels"], np.array(answer["probabilities"])


def assert_same_as_the_model(model: Model, graph: Path, inputs: list) -> None:
    labels, proba = run_exported(graph, inputs)
    assert labels == model.classes
    expected = model.predict_proba(inputs)
    assert proba.shape == expected.shape == (len(inputs), len(model.classes))
    np.testing.assert_allclose(proba, expected, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def hundred_images(fashion, tmp_path_factory) -> list[Path]:
    """100 other Fashion-MNIST images of the training classes (and of others: a model sees anything)."""
    from smalldata.demo import CLASSES, write_png_folder

    images, labels = fashion
    wanted = [CLASSES.index(name) for name in ("trouser", "bag", "sneaker", "shirt")]
    indices = [i for c in wanted for i in (labels == c).nonzero()[0][200:225]]
    folder = write_png_folder(images, labels, tmp_path_factory.mktemp("export") / "images", indices)
    return sorted(folder.rglob("*.png"))


@pytest.fixture(scope="module")
def hundred_texts() -> list[str]:
    """topics.csv's 24 texts, and 76 longer ones made of two of them (varied lengths pad in a batch)."""
    texts = list(smalldata.load_dataset(DATA / "topics.csv").inputs)
    pairs = [f"{a} {b}" for a in texts for b in texts[::-1] if a != b]
    return texts + pairs[:: len(pairs) // 76][:76]


def fitted(dataset, features: str, estimator, classes: list[str] | None = None) -> Model:
    """A model of `estimator` fitted on the real embeddings of `dataset` (classes in a chosen order)."""
    estimator.fit(embed(dataset.inputs, features), np.asarray(dataset.labels))
    return Model(classes=classes or list(dataset.classes), modality=dataset.modality, features=features,
                 head_name=type(estimator).__name__, estimator=estimator)


@pytest.fixture(scope="module")
def topics():
    return smalldata.load_dataset(DATA / "topics.csv")


def test_the_cli_exports_a_saved_image_model_that_runs_without_smalldata(fashion_folder, hundred_images, tmp_path):
    from smalldata.heads import logistic_regression_head

    dataset = smalldata.load_dataset(fashion_folder)
    # labels in an order not the estimator's: the graph reorders its columns as the model does
    model = fitted(dataset, "efficientnet-lite0", logistic_regression_head(), classes=sorted(dataset.classes)[::-1])
    model.save(tmp_path / "model")
    graph = tmp_path / "model.onnx"
    result = CliRunner().invoke(app, ["export", str(tmp_path / "model"), "--format", "onnx", "--out", str(graph)])
    assert result.exit_code == 0, result.output
    assert "input pixels: " in result.output and "224 px" in result.output
    assert_same_as_the_model(Model.load(tmp_path / "model"), graph, hundred_images)


def test_the_default_image_model_of_two_backbones_takes_one_input_per_size(fashion_folder, hundred_images, tmp_path):
    """`train`'s own choice at --budget 0 on these images (the average of logistic regressions on
    efficientnet-lite0 and -lite2 side by side, as checked): each backbone reads its own size."""
    from smalldata.ensemble import AveragedLogisticRegression
    from smalldata.export import export_onnx

    model = smalldata.train(smalldata.load_dataset(fashion_folder), budget=0, curve=False)
    assert isinstance(model.estimator, AveragedLogisticRegression), model.head_name
    written = export_onnx(model, tmp_path / "pair.onnx")
    assert set(written.inputs) == {"pixels_224", "pixels_260"}
    assert_same_as_the_model(model, written.path, hundred_images)


@pytest.mark.parametrize("loss", ["cross-entropy", "cosine", "cosine+cross-entropy"])
def test_a_linear_head_exports_with_its_normalisation(topics, hundred_texts, tmp_path, loss):
    from smalldata.export import export_onnx
    from smalldata.heads import LinearHead

    model = fitted(topics, MINILM, LinearHead(loss=loss, epochs=50))
    written = export_onnx(model, tmp_path / "linear.onnx")
    assert set(written.inputs) == {"input_ids", "attention_mask"}
    assert [path.name for path in written.tokenizers] == ["linear.tokenizer.json"]
    assert_same_as_the_model(model, written.path, hundred_texts)


def test_described_heads_export_with_and_without_examples(topics, hundred_texts, tmp_path):
    from smalldata.describe import DescribedHead, embedded_descriptions
    from smalldata.export import export_onnx

    labels, prototypes = embedded_descriptions({"sport": "football and other games"}, topics.classes, MINILM)
    zero_shot = DescribedHead(prototypes=prototypes, prototype_labels=labels).fit(np.zeros((0, 384)), [])
    models = [Model(list(topics.classes), "text", MINILM, "described", zero_shot),
              fitted(topics, MINILM, DescribedHead(prototypes=prototypes, prototype_labels=labels))]
    assert models[0].estimator.zero_shot_ and not models[1].estimator.zero_shot_
    for i, model in enumerate(models):
        written = export_onnx(model, tmp_path / f"described{i}.onnx")
        assert_same_as_the_model(model, written.path, hundred_texts)


def test_calibration_is_in_the_graph_when_the_model_has_one(topics, hundred_texts, tmp_path):
    """softmax(log(p) / temperature) of the head's probabilities, as `Model.predict_proba` gives them
    with the calibration kept; one not kept changes nothing."""
    import onnx

    from smalldata.calibration import Calibration
    from smalldata.export import export_onnx
    from smalldata.heads import logistic_regression_head

    model = fitted(topics, MINILM, logistic_regression_head())
    raw = model.predict_proba(hundred_texts)
    for kept in (True, False):
        model.calibration = Calibration(temperature=0.4, kept=kept, reason="", n_examples=24, log_loss_before=0.0,
                                        log_loss_after=0.0, ece_before=0.0, ece_after=0.0)
        written = export_onnx(model, tmp_path / f"calibrated-{kept}.onnx")
        assert_same_as_the_model(model, written.path, hundred_texts)
        meta = {p.key: p.value for p in onnx.load(str(written.path)).metadata_props}
        assert meta["calibration_temperature"] == ("0.4" if kept else "")
    _, proba = run_exported(tmp_path / "calibrated-True.onnx", hundred_texts)
    assert np.abs(proba - raw).max() > 0.05  # the temperature changed them: the graph applied it
    logits = np.log(raw) / 0.4
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(proba, expected / expected.sum(axis=1, keepdims=True), atol=1e-4, rtol=0)


def test_a_contrastive_fine_tune_exports_its_tuned_encoder(topics, hundred_texts, tmp_path):
    from smalldata.export import export_onnx
    from smalldata.finetune_text import ContrastiveTextClassifier

    estimator = ContrastiveTextClassifier(epochs=1).fit(topics.inputs, topics.labels)
    Model(list(topics.classes), "text", "text", "contrastive", estimator).save(tmp_path / "model")
    model = Model.load(tmp_path / "model")  # as a user exports it: from a folder, through its cached graph
    written = export_onnx(model, tmp_path / "tuned.onnx")
    assert_same_as_the_model(model, written.path, hundred_texts)


@pytest.mark.slow
def test_a_fine_tuned_image_model_with_test_time_augmentation_exports(fashion_folder, hundred_images, tmp_path):
    """The tuned body once, on the batch and its mirror images, both through the head, averaged."""
    from smalldata.export import export_onnx
    from smalldata.finetune import FineTunedImageClassifier

    dataset = smalldata.load_dataset(fashion_folder)
    estimator = FineTunedImageClassifier(epochs=1, lr=1e-4, tta=True).fit(dataset.inputs, dataset.labels)
    assert estimator.net_ is not None, "early stopping undid the tuning: nothing tuned to export"
    model = Model(list(dataset.classes), "image", "raw-images", "fine-tuned", estimator)
    written = export_onnx(model, tmp_path / "tuned.onnx")
    assert_same_as_the_model(model, written.path, hundred_images)


@pytest.mark.slow
def test_the_default_text_model_on_both_encoders_exports_with_two_tokenizers(topics, hundred_texts, tmp_path):
    from smalldata.backbones import side_by_side
    from smalldata.ensemble import AveragedLogisticRegression
    from smalldata.export import export_onnx

    both = side_by_side([MINILM, "all-mpnet-base-v2"])
    model = fitted(topics, both, AveragedLogisticRegression(widths=(384, 768)))
    written = export_onnx(model, tmp_path / "both.onnx")
    assert sorted(path.name for path in written.tokenizers) == [
        "both.all-MiniLM-L6-v2.tokenizer.json", "both.all-mpnet-base-v2.tokenizer.json"]
    assert_same_as_the_model(model, written.path, hundred_texts)


def test_models_that_are_not_tensor_graphs_are_refused_with_why(topics, fashion_folder, tmp_path):
    from smalldata.baselines import image_baseline, text_baseline
    from smalldata.export import ExportError, export_onnx

    tfidf = text_baseline().fit(topics.inputs, topics.labels)
    with pytest.raises(ExportError, match="TF-IDF tokenizer and vocabulary"):
        export_onnx(Model(list(topics.classes), "text", "text", "baseline", tfidf), tmp_path / "a.onnx")
    images = smalldata.load_dataset(fashion_folder)
    model = fitted(images, "colour-texture-stats", image_baseline())
    with pytest.raises(ExportError, match="colour and texture statistics"):
        export_onnx(model, tmp_path / "b.onnx")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_out_onto_an_existing_file_is_refused_unless_overwrite(topics, tmp_path):
    from smalldata.heads import logistic_regression_head

    fitted(topics, MINILM, logistic_regression_head()).save(tmp_path / "model")
    graph = tmp_path / "model.onnx"
    graph.write_text("someone's file")
    runner = CliRunner()
    refused = runner.invoke(app, ["export", str(tmp_path / "model"), "--out", str(graph)])
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    assert graph.read_text() == "someone's file" and not (tmp_path / "model.tokenizer.json").exists()
    done = runner.invoke(app, ["export", str(tmp_path / "model"), "--out", str(graph), "--overwrite"])
    assert done.exit_code == 0, done.output
    assert graph.stat().st_size > 1_000_000 and (tmp_path / "model.tokenizer.json").exists()
    unknown = runner.invoke(app, ["export", str(tmp_path / "model"), "--format", "tflite", "--out", str(tmp_path / "m")])
    assert unknown.exit_code == 2 and "choose one of onnx" in unknown.output
