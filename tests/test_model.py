"""model.py: prediction, saving and loading a model folder, and what a folder may not hold."""

import json

import numpy as np
import pytest

import smalldata
from smalldata.baselines import text_baseline
from smalldata.backbones import RAW_TEXT
from smalldata.model import Model, ModelFolderError


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


def test_the_service_predicts_a_model_on_both_text_encoders_as_the_library_does():
    from smalldata.service.predictor import Predictor
    from tests.conftest import DATA

    both = "all-MiniLM-L6-v2+all-mpnet-base-v2"
    model = smalldata.train(smalldata.load_dataset(DATA / "topics.csv"), backbone=both, curve=False)
    assert model.features == both  # both encoders, each through its ONNX batcher when served
    texts = ["The referee showed a red card.", "Stir in the flour.", "Grey skies all day."]
    served, library = Predictor(model).texts(texts), model.scored(texts)
    assert np.allclose(served.proba, library.proba, atol=1e-3)
    assert library.familiarity is not None and np.allclose(served.familiarity, library.familiarity, atol=0.05)
