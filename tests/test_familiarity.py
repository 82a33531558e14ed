"""Familiarity: how an input's probability and its similarity to the nearest class mean rank among
the training examples' held-out ones, and the model folder that keeps it."""

import json

import numpy as np
import pytest

import smalldata
from smalldata.familiarity import FILE, REFERENCE_POINTS, Familiarity, familiarity_from, share_below
from smalldata.model import ModelFolderError
from smalldata.train import network_widths
from smalldata.unknown import UNKNOWN
from tests.conftest import three_clusters


def _folds(labels, n=3):
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(n, shuffle=True, random_state=0).split(np.zeros(len(labels)), labels))


def test_an_input_far_from_every_class_is_less_familiar_than_one_inside_a_class():
    X, y = three_clusters(n_per_class=12)
    splits = _folds(y)
    confidence = np.full(sum(len(held) for _, held in splits), 0.9)
    familiarity, own = familiarity_from(X, y, ["a", "b", "c"], (X.shape[1],), splits, confidence)
    assert len(own) == len(y) and 0 <= own.min() and own.max() <= 1
    inside, far = X[:1] + 0.01, -10 * X[:1]  # next to a training example of a; opposite every class
    proba = np.array([[0.9, 0.05, 0.05]])
    assert familiarity.of(inside, proba)[0] > familiarity.of(far, proba)[0]
    # the similarity half alone: far lies below every held-out similarity, so only confidence counts
    assert familiarity.of(far, proba)[0] == pytest.approx(share_below(familiarity.held_out_confidence, np.array([0.9]))[0] / 2)


def test_side_by_side_networks_count_equally_whatever_their_scale():
    X, y = three_clusters(n_per_class=9, dim=8)
    wide = np.hstack([X, 1000 * X[:, :4]])  # a second "network", 4 wide and a thousand times longer
    splits = _folds(y)
    familiarity, _ = familiarity_from(wide, y, ["a", "b", "c"], (8, 4), splits, np.full(len(y), 0.8))
    assert familiarity.class_means.shape == (3, 12)
    for part in (familiarity.class_means[:, :8], familiarity.class_means[:, 8:]):
        assert np.allclose(np.linalg.norm(part, axis=1), 1)  # each network's mean is unit length
    with pytest.raises(ValueError, match="12 wide"):
        familiarity.similarity(X)


def test_a_long_reference_is_kept_as_quantiles():
    X, y = three_clusters(n_per_class=700, dim=4)
    splits = _folds(y, n=2)
    familiarity, own = familiarity_from(X, y, ["a", "b", "c"], (4,), splits, np.linspace(0, 1, len(y)))
    assert len(familiarity.held_out_confidence) == REFERENCE_POINTS and len(own) == len(y)
    assert np.all(np.diff(familiarity.held_out_similarity) >= 0)


def test_familiarity_is_measured_only_in_a_networks_embedding_space():
    assert network_widths("text") == () and network_widths("raw-images") == ()
    assert network_widths("colour-texture-stats") == ()
    assert network_widths("efficientnet-lite0+efficientnet-lite2") == (1280, 1280)


def test_a_trained_model_keeps_its_familiarity_and_finds_an_unrelated_text_less_familiar(text_model, tmp_path):
    assert text_model.familiarity is not None and 0 < text_model.unknown.familiarity_floor < 1
    related, unrelated = "Heavy rain and strong winds are forecast for tonight.", "Quantum chromodynamics lecture notes."
    scored = text_model.scored([related, unrelated])
    assert scored.familiarity[0] > scored.familiarity[1]
    folder = text_model.save(tmp_path / "m")
    assert (folder / FILE).exists()
    saved = json.loads((folder / "model.json").read_text())["unknown"]
    assert saved["familiarity_floor"] == text_model.unknown.familiarity_floor
    loaded = smalldata.Model.load(folder)
    assert np.allclose(loaded.scored([related, unrelated]).familiarity, scored.familiarity)
    assert "familiarity" in (folder / "README.md").read_text()


def test_a_folder_from_before_familiarity_still_applies_its_probability_floor(text_model, tmp_path):
    folder = text_model.save(tmp_path / "m")
    description = json.loads((folder / "model.json").read_text())
    for key in ("familiarity_floor", "familiarity_known_answered"):
        del description["unknown"][key]
    (folder / "model.json").write_text(json.dumps(description))
    (folder / FILE).unlink()
    older = smalldata.Model.load(folder)
    assert older.familiarity is None and older.scored(["Snow tonight."]).familiarity is None
    proba = older.predict_proba(["Snow tonight.", "Quantum chromodynamics."])
    expected = [older.classes[row.argmax()] if row.max() >= older.unknown.floor else UNKNOWN for row in proba]
    assert older.predict(["Snow tonight.", "Quantum chromodynamics."], unknown=True) == expected


def test_a_missing_or_damaged_familiarity_file_is_refused_with_what_to_do(text_model, tmp_path):
    folder = text_model.save(tmp_path / "m")
    (folder / FILE).unlink()
    with pytest.raises(ModelFolderError, match="missing.*copy the whole model folder"):
        smalldata.Model.load(folder)
    narrow = Familiarity(np.ones((3, 5)), (5,), np.array([0.5]), np.array([0.5]))
    narrow.save(folder)
    with pytest.raises(ModelFolderError, match="damaged"):
        smalldata.Model.load(folder)
    (folder / FILE).write_bytes(b"not safetensors")
    with pytest.raises(ModelFolderError, match="safetensors"):
        smalldata.Model.load(folder)


def test_saving_a_model_without_familiarity_over_one_with_it_removes_the_stale_file(text_model, tmp_path):
    from dataclasses import replace

    folder = text_model.save(tmp_path / "m")
    replace(text_model, familiarity=None, unknown=None).save(folder)
    assert not (folder / FILE).exists()
    assert smalldata.Model.load(folder).familiarity is None
