"""The scikit-learn face: SmalldataClassifier with clone, cross_val_score and Pipeline, on real
texts and images; scikit-learn's own estimator checks on the heads; Model's short repr."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

import smalldata
from smalldata import SmalldataClassifier
from smalldata.describe import DescribedHead
from smalldata.heads import LinearHead
from smalldata.unlabeled import PoolHead

DATA = Path(__file__).parent / "data"
MINILM = "all-MiniLM-L6-v2"
UNSEEN = {"The referee showed a red card in the derby.": "sport",
          "Simmer the sauce and season it with pepper.": "cooking",
          "Heavy snow is expected overnight in the hills.": "weather"}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """LinearHead's full-batch fits are tiny: on one thread its checks take 5 s; on two threads of a
    busy 2-core machine, 78 s (the threads wait on each other)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Every check scikit-learn has, on each head with its defaults; none is expected to fail (DescribedHead
# with no descriptions and PoolHead with no pool are logistic regression on the examples). Skipped by
# scikit-learn itself, not here: the 3 array-API checks (one per head), run only where the
# environment sets SCIPY_ARRAY_API=1; the heads take numpy arrays only.
@parametrize_with_checks([LinearHead(), DescribedHead(), PoolHead()])
def test_the_heads_pass_scikit_learns_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def topics():
    return smalldata.load_dataset(DATA / "topics.csv")


def test_texts_fit_predict_and_parameters(topics):
    clf = SmalldataClassifier(backbone=MINILM)
    assert clf.get_params() == {"backbone": MINILM, "budget": None, "evaluate": "auto", "curve": False,
                                "finetune": "auto", "seed": 0}
    assert clf.fit(topics.inputs, topics.labels) is clf
    assert list(clf.classes_) == ["cooking", "sport", "weather"]
    assert list(clf.predict(list(UNSEEN))) == list(UNSEEN.values())
    proba = clf.predict_proba(list(UNSEEN))
    assert proba.shape == (3, 3) and np.allclose(proba.sum(axis=1), 1)
    assert clf.model_.comparison is not None  # 8 per class: cross-validated, the choice made as `train` makes it

    copy = clone(clf.set_params(seed=3))
    assert copy.get_params()["seed"] == 3 and not hasattr(copy, "model_")


def test_a_pandas_column_and_number_labels(topics):
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"text": topics.inputs, "label": topics.labels})
    codes = {"cooking": 10, "sport": 2, "weather": 7}
    y = frame["label"].map(codes)
    clf = SmalldataClassifier(backbone=MINILM, evaluate=False).fit(frame[["text"]], y)
    assert clf.classes_.tolist() == [2, 7, 10]  # numbers stay numbers, in numeric order (not "10" < "2")
    assert clf.predict(pandas.Series(list(UNSEEN))).tolist() == [codes[label] for label in UNSEEN.values()]
    assert clf.score(frame["text"], y) == 1.0
    with pytest.raises(smalldata.DataError, match="table of 2 columns"):
        clf.predict(frame)


def test_cross_val_score_and_a_pipeline(topics):
    clf = SmalldataClassifier(backbone=MINILM, evaluate=False)
    scores = cross_val_score(clf, topics.inputs, topics.labels, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.8

    shout = FunctionTransformer(lambda texts: [text.upper() for text in texts])
    pipeline = Pipeline([("shout", shout), ("smalldata", SmalldataClassifier(backbone=MINILM, evaluate=False))])
    pipeline.fit(topics.inputs, topics.labels)
    assert list(pipeline.predict(list(UNSEEN))) == list(UNSEEN.values())
    assert pipeline.named_steps["smalldata"].model_.modality == "text"


def test_images_as_paths_pil_images_and_arrays_give_the_same_answers(fashion_folder, fashion_test_folder):
    paths = sorted(fashion_folder.rglob("*.png"))
    labels = [path.parent.name for path in paths]
    clf = SmalldataClassifier(backbone="efficientnet-lite0").fit([str(path) for path in paths], labels)
    tests = sorted(fashion_test_folder.rglob("*.png"))
    expected = clf.predict_proba(tests)
    assert (clf.classes_[expected.argmax(axis=1)] == [path.parent.name for path in tests]).mean() >= 0.9

    pil = [Image.open(path) for path in tests]
    arrays = [np.asarray(image.convert("RGB")) for image in pil]
    assert arrays[0].shape == (28, 28, 3)
    for given in (pil, arrays, np.stack(arrays), [array / 255.0 for array in arrays]):
        np.testing.assert_allclose(clf.predict_proba(given), expected, atol=1e-6)
    with pytest.raises(smalldata.DataError, match="fitted on images, but X holds texts"):
        clf.predict(["a text"])
    with pytest.raises(smalldata.DataError, match="mixes texts and images"):
        clf.predict([tests[0], "a text"])
    with pytest.raises(smalldata.DataError, match="one array of shape"):
        clf.predict(arrays[0])


def test_a_model_predicts_images_in_memory_as_it_does_their_files(fashion_folder, fashion_test_folder):
    """Model.predict takes PIL images and arrays; file objects are cached by their bytes, so a second
    image at the address of a first one no longer gets the first one's embedding."""
    import io

    from smalldata.features import embed
    from smalldata.heads import logistic_regression_head
    from smalldata.model import Model

    train = smalldata.load_dataset(fashion_folder)
    head = logistic_regression_head().fit(embed(train.inputs, "efficientnet-lite0"), train.labels)
    model = Model(train.classes, "image", "efficientnet-lite0", "logistic regression", head)
    tests = sorted(fashion_test_folder.rglob("*.png"))
    expected = model.predict_proba(tests)
    pil = [Image.open(path) for path in tests]
    np.testing.assert_allclose(model.predict_proba(pil), expected, atol=1e-6)
    np.testing.assert_allclose(model.predict_proba([np.asarray(image) for image in pil]), expected, atol=1e-6)
    assert model.predict(pil[:1]) == [tests[0].parent.name]
    for path, row in zip([tests[0], tests[-1]], [expected[0], expected[-1]]):  # one after the other, same id often
        np.testing.assert_allclose(model.predict_proba([io.BytesIO(path.read_bytes())])[0], row, atol=1e-6)


def test_a_models_repr_is_one_short_line(topics):
    model = smalldata.train(topics, backbone=MINILM, evaluate=True, curve=False)
    text = repr(model)
    assert "\n" not in text and len(text) < 200, text
    assert text.startswith("Model(texts into ['cooking', 'sport', 'weather']")
    assert f"cross-validated accuracy {model.comparison.chosen.mean:.3f}" in text
