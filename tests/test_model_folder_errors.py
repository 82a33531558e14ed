"""Damaged model folders: every kind of damage is a one-line `ModelFolderError` saying what to do.

One small real text model is trained once; each case copies a saved folder of one head kind and
damages it (model.json, the head's file, or the two disagreeing). Loading must refuse it, so that
a folder that loads is one that predicts; the CLI and the service must say so without a traceback.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from smalldata.model import Model, ModelFolderError

runner = CliRunner()
TEXTS = ["The referee showed a red card.", "Stir in the flour."]
# Every refusal tells the person what to do next.
ADVICE = re.compile(r"train again|copy it whole|upgrade smalldata|install|give the folder")


# ---- the folders damaged: one per head kind, from one real training -------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """Folders by head kind: "skops" (the trained logistic regression), "linear" and "averaged"
    (safetensors heads fitted on the same embeddings), "tfidf" (the text baseline, skops too),
    "described" (descriptions alone), "image" (a linear head on colour statistics)."""
    import smalldata
    from smalldata.backbones import get_backbone
    from smalldata.baselines import text_baseline
    from smalldata.zero_shot import zero_shot_model
    from smalldata.ensemble import AveragedLogisticRegression
    from smalldata.features import embed
    from smalldata.heads import LinearHead
    from smalldata.backbones import RAW_TEXT
    from tests.conftest import DATA

    data = smalldata.load_dataset(DATA / "topics.csv")
    trained = smalldata.train(data, backbone="all-MiniLM-L6-v2", evaluate=False, curve=False)
    X, y = embed(data.inputs, trained.features), np.asarray(data.labels)
    heads = {"skops": trained,
             "linear": Model(data.classes, "text", trained.features, "linear",
                             LinearHead(loss="cosine+cross-entropy", epochs=20).fit(X, y)),
             "averaged": Model(data.classes, "text", trained.features, "averaged",
                               AveragedLogisticRegression(widths=(X.shape[1],)).fit(X, y)),
             "tfidf": Model(data.classes, "text", RAW_TEXT, "baseline", text_baseline().fit(data.inputs, y))}
    # an image model without a network: a head on the image baseline's colour statistics
    width = get_backbone("colour-texture-stats").dim
    pixels = np.random.default_rng(0).normal(size=(6, width))
    heads["image"] = Model(["bag", "shoe"], "image", "colour-texture-stats", "linear",
                           LinearHead(epochs=5).fit(pixels, ["bag", "shoe"] * 3))
    heads["described"] = zero_shot_model({"sport": "a match or a race", "cooking": "a recipe"})
    root = tmp_path_factory.mktemp("saved")
    return {kind: model.save(root / kind) for kind, model in heads.items()}


def edit_json(change):
    """A damage that rewrites model.json: `change` gets the parsed description and edits it in place."""
    def damage(folder: Path) -> None:
        description = json.loads((folder / "model.json").read_text())
        change(description)
        (folder / "model.json").write_text(json.dumps(description))
    return damage


def write(name: str, content: bytes | str):
    def damage(folder: Path) -> None:
        path = folder / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return damage


def remove(name: str):
    return lambda folder: (folder / name).unlink()


def truncate(name: str):
    def damage(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])
    return damage


def make_dir(name: str):
    def damage(folder: Path) -> None:
        (folder / name).unlink()
        (folder / name).mkdir()
    return damage


def dump_skops(make):
    """head.skops replaced by skops's dump of `make()` (a real skops file of the wrong content)."""
    def damage(folder: Path) -> None:
        import skops.io

        skops.io.dump(make(), folder / "head.skops")
    return damage


def save_tensors(make):
    """head.safetensors replaced by `make(the arrays it held)`: real safetensors of the wrong shapes."""
    def damage(folder: Path) -> None:
        from safetensors.numpy import load_file, save_file

        path = str(folder / "head.safetensors")
        save_file({k: np.ascontiguousarray(v) for k, v in make(load_file(path)).items()}, path)
    return damage


def zipped_schema(schema: str):
    """head.skops replaced by a zip like skops's, whose schema.json is `schema`."""
    def damage(folder: Path) -> None:
        with zipfile.ZipFile(folder / "head.skops", "w") as archive:
            archive.writestr("schema.json", schema)
    return damage


def untrusted():
    from sklearn.preprocessing import FunctionTransformer

    return FunctionTransformer(print)  # never loaded: refusing it is the point


def fitted_lr(dim: int, classes: list[str]):
    from sklearn.linear_model import LogisticRegression

    X = np.random.default_rng(0).normal(size=(2 * len(classes), dim))
    return LogisticRegression().fit(X, classes * 2)


def head_set(key, value):
    return edit_json(lambda d: d["head"].__setitem__(key, value))


def head_del(key):
    return edit_json(lambda d: d["head"].pop(key))


def top_set(key, value):
    return edit_json(lambda d: d.__setitem__(key, value))


def top_del(key):
    return edit_json(lambda d: d.pop(key))


PICKLE = pickle.dumps({"weights": [1.0, 2.0]})  # a harmless object: pickle's format, not its code
NOISE = bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8))

# name -> (the folder damaged, the damage)
DAMAGES = {
    # model.json unreadable or not a description
    "model.json missing": ("skops", remove("model.json")),
    "model.json empty": ("skops", write("model.json", "")),
    "model.json a JSON array": ("skops", write("model.json", "[1, 2, 3]")),
    "model.json a JSON string": ("skops", write("model.json", '"a model"')),
    "model.json a number": ("skops", write("model.json", "42")),
    "model.json null": ("skops", write("model.json", "null")),
    "model.json non-UTF-8 bytes": ("skops", write("model.json", b'{"labels": "\xff\xfe\xfa"}')),
    "model.json random bytes": ("skops", write("model.json", NOISE)),
    "model.json truncated": ("skops", truncate("model.json")),
    "model.json deeply nested arrays": ("skops", write("model.json", "[" * 100_000)),
    "model.json deeply nested objects": ("skops", write("model.json", '{"a": ' * 100_000)),
    "model.json a folder": ("skops", make_dir("model.json")),
    # required keys missing, in turn
    **{f"{key} missing": ("skops", top_del(key)) for key in ("format_version", "modality", "labels", "features", "head")},
    **{f"head.{key} missing": ("skops", head_del(key)) for key in ("name", "kind", "file")},
    # wrong types and values
    "format_version a string": ("skops", top_set("format_version", "1")),
    "format_version true": ("skops", top_set("format_version", True)),
    "format_version 0": ("skops", top_set("format_version", 0)),
    "format_version newer": ("skops", top_set("format_version", 99)),
    "format_version newer, keys unknown here": ("skops", write("model.json", '{"format_version": 2, "model": {}}')),
    "modality unknown": ("skops", top_set("modality", "audio")),
    "modality image on a text backbone": ("skops", top_set("modality", "image")),
    "labels a string": ("skops", top_set("labels", "cooking")),
    "labels a dict": ("skops", top_set("labels", {"cooking": 0})),
    "labels numbers": ("skops", top_set("labels", [1, 2, 3])),
    "labels empty": ("skops", top_set("labels", [])),
    "labels repeated": ("skops", top_set("labels", ["cooking", "cooking", "sport"])),
    "labels one too many": ("skops", edit_json(lambda d: d["labels"].append("travel"))),
    "labels one too few": ("skops", edit_json(lambda d: d["labels"].pop())),
    "labels renamed": ("skops", edit_json(lambda d: d["labels"].__setitem__(0, "baking"))),
    "features unknown": ("skops", top_set("features", "clip-vit-l14")),
    "features a list": ("skops", top_set("features", ["all-MiniLM-L6-v2"])),
    "features an image backbone": ("skops", top_set("features", "efficientnet-lite0")),
    "head a number": ("skops", top_set("head", 5)),
    "head a list": ("skops", top_set("head", ["head.skops"])),
    "head.kind unknown": ("skops", head_set("kind", "xgboost")),
    "head.kind a list": ("skops", head_set("kind", ["scikit-learn"])),
    "head.file a number": ("skops", head_set("file", 7)),
    "head.file names model.json": ("skops", head_set("file", "model.json")),
    "head.file points outside": ("skops", head_set("file", "../../etc/passwd")),
    "cross_validation damaged": ("skops", top_set("cross_validation", {"scores": 3})),
    "learning_curve damaged": ("skops", top_set("learning_curve", {"points": "many"})),
    "data not a dict": ("skops", top_set("data", "24 texts")),
    "data counts a list": ("skops", edit_json(lambda d: d["data"].__setitem__("counts", ["cooking"]))),
    "data skipped without reasons": ("skops", edit_json(lambda d: d["data"].__setitem__("skipped", [{"what": "a.csv"}]))),
    # the skops file
    "head.skops missing": ("skops", remove("head.skops")),
    "head.skops empty": ("skops", write("head.skops", b"")),
    "head.skops random bytes": ("skops", write("head.skops", NOISE)),
    "head.skops truncated": ("skops", truncate("head.skops")),
    "head.skops a renamed pickle": ("skops", write("head.skops", PICKLE)),
    "head.skops a folder": ("skops", make_dir("head.skops")),
    "head.skops an untrusted type": ("skops", dump_skops(untrusted)),
    "head.skops a dict, not a model": ("skops", dump_skops(lambda: {"coef": [1, 2]})),
    "head.skops an unfitted model": ("skops", dump_skops(lambda: fitted_lr(4, ["a", "b"]).__class__())),
    "head.skops fitted on other features": ("skops", dump_skops(lambda: fitted_lr(10, ["cooking", "sport", "weather"]))),
    "head.skops of other classes": ("skops", dump_skops(lambda: fitted_lr(384, ["a", "b", "c"]))),
    "head.skops of two classes": ("skops", dump_skops(lambda: fitted_lr(384, ["cooking", "sport"]))),
    "head.skops a zip of deeply nested JSON": ("skops", zipped_schema("[" * 100_000)),
    "head.skops a zip of a schema without a protocol": ("skops", zipped_schema('{"__class__": "LogisticRegression"}')),
    "tf-idf labels one too many": ("tfidf", edit_json(lambda d: d["labels"].append("travel"))),
    "tf-idf head.skops a renamed pickle": ("tfidf", write("head.skops", PICKLE)),
    # the safetensors file
    "head.safetensors missing": ("linear", remove("head.safetensors")),
    "head.safetensors empty": ("linear", write("head.safetensors", b"")),
    "head.safetensors random bytes": ("linear", write("head.safetensors", NOISE)),
    "head.safetensors truncated": ("linear", truncate("head.safetensors")),
    "head.safetensors a renamed pickle": ("linear", write("head.safetensors", PICKLE)),
    "head.safetensors a tensor missing": ("linear", save_tensors(lambda t: {k: v for k, v in t.items() if k != "0.bias"})),
    "head.safetensors a weight of the wrong width": ("linear", save_tensors(lambda t: {**t, "0.weight": t["0.weight"][:, :10]})),
    "head.safetensors a row per class too many": ("linear", save_tensors(
        lambda t: {**t, "0.weight": np.vstack([t["0.weight"], t["0.weight"][:1]])})),
    "head.safetensors a bias of the wrong length": ("linear", save_tensors(lambda t: {**t, "1.bias": t["1.bias"][:2]})),
    "head.safetensors a matrix turned vector": ("linear", save_tensors(lambda t: {**t, "0.weight": t["0.weight"].ravel()})),
    "head.safetensors an extra array": ("linear", save_tensors(lambda t: {**t, "2.weight": t["1.weight"]})),
    "head.file empty": ("linear", head_set("file", "")),
    "linear head.params not a dict": ("linear", head_set("params", 5)),
    "linear head.params unknown loss": ("linear", head_set("params", {"loss": "hinge"})),
    "linear head.classes missing": ("linear", head_del("classes")),
    "linear head.classes not a list": ("linear", head_set("classes", "cooking")),
    "linear head.classes not the labels": ("linear", head_set("classes", ["a", "b", "c"])),
    "linear labels one too many": ("linear", edit_json(lambda d: d["labels"].append("travel"))),
    "averaged widths too narrow": ("averaged", edit_json(lambda d: d["head"]["params"].__setitem__("widths", [100]))),
    "averaged widths not numbers": ("averaged", edit_json(lambda d: d["head"]["params"].__setitem__("widths", "wide"))),
    "averaged intercept of the wrong length": ("averaged", save_tensors(lambda t: {**t, "intercept_0": t["intercept_0"][:1]})),
    "averaged head.classes one too few": ("averaged", edit_json(lambda d: d["head"]["classes"].pop())),
    "described head.safetensors without zero_shot": ("described", save_tensors(
        lambda t: {k: v for k, v in t.items() if k != "zero_shot"})),
    "described labels one too few": ("described", edit_json(lambda d: d["labels"].pop())),
    "image modality text": ("image", top_set("modality", "text")),
    "image features a text backbone": ("image", top_set("features", "all-MiniLM-L6-v2")),
    "image features raw texts": ("image", top_set("features", "text")),
    "image features the raw images": ("image", top_set("features", "raw-images")),
    "a scikit-learn head on the raw images": ("skops", edit_json(lambda d: d.update(modality="image", features="raw-images"))),
    "a fine-tuned kind on embeddings": ("skops", head_set("kind", "contrastive-text")),
}


@pytest.fixture(params=list(DAMAGES))
def broken(request, saved, tmp_path) -> Path:
    kind, damage = DAMAGES[request.param]
    folder = shutil.copytree(saved[kind], tmp_path / "model")
    damage(folder)
    return folder


def test_the_undamaged_folders_load_and_predict(saved, tmp_path):
    from PIL import Image

    image = tmp_path / "grey.png"
    Image.new("RGB", (32, 32), (128, 128, 128)).save(image)
    for kind, folder in saved.items():
        assert len(Model.load(folder).predict([image] if kind == "image" else TEXTS)) == (1 if kind == "image" else 2)


def refusal(folder: Path) -> str:
    with pytest.raises(ModelFolderError) as caught:
        Model.load(folder)
    return str(caught.value)


def test_a_damaged_folder_is_refused_on_loading_with_what_to_do(broken):
    with pytest.raises(ModelFolderError) as caught:
        Model.load(broken)  # refused here, not at the first prediction
    message = str(caught.value)
    assert str(broken) in message and ADVICE.search(message), message
    assert "\n" not in message and len(message) < 600, message


def test_predict_command_says_so_in_one_line(broken):
    from smalldata.cli import app

    result = runner.invoke(app, ["predict", str(broken), *TEXTS])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert result.stderr == f"error: {refusal(broken)}\n"  # the whole message, on one line, and no traceback


def test_serve_checks_the_folder_before_listening(broken, monkeypatch):
    import uvicorn

    from smalldata.cli import app

    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: pytest.fail("served a damaged folder"))
    result = runner.invoke(app, ["serve", "--model", str(broken), "--data", str(broken.parent / "data")])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert result.stderr == f"error: {refusal(broken)}\n"


def test_the_service_refuses_a_damaged_folder_when_made(broken):
    from smalldata.service import create_app

    with pytest.raises(ModelFolderError):
        create_app(broken.parent / "data", model_dir=broken)


@pytest.mark.parametrize("classes", [["a", "b"], ["a", "b", "c"]])
def test_the_shapes_a_saved_head_is_checked_against_are_those_it_saves(classes):
    from smalldata.describe import DescribedHead
    from smalldata.ensemble import AveragedLogisticRegression
    from smalldata.heads import LOSSES, LinearHead

    rng = np.random.default_rng(0)
    y = classes * 4
    X = rng.normal(size=(len(y), 6)).astype(np.float32)
    prototypes = rng.normal(size=(len(classes), 6)).astype(np.float32)
    heads = [LinearHead(loss=loss, epochs=2) for loss in LOSSES] + [
        AveragedLogisticRegression(widths=(2, 4)),
        DescribedHead(prototypes=prototypes, prototype_labels=classes)]
    for head in heads:
        head.fit(X, y)
        assert {k: v.shape for k, v in head.state().items()} == head.state_shapes(len(classes), 6), head
    zero_shot = DescribedHead(prototypes=prototypes, prototype_labels=classes).fit(np.zeros((0, 6)), [])
    assert {k: v.shape for k, v in zero_shot.state().items()} == zero_shot.state_shapes(len(classes), 6)
