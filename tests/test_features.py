"""Real backbones: EfficientNet-Lite0 through ONNX Runtime and all-MiniLM-L6-v2."""

import uuid

import numpy as np
import pytest

from smalldata import features
from smalldata.data import load_image_folder
from smalldata.features import EmbeddingCache, embed


def test_image_embeddings_are_computed_once_then_read_from_disk(fashion_folder, monkeypatch):
    data = load_image_folder(fashion_folder)
    first = embed(data.inputs, "efficientnet-lite0", keys=data.keys)
    assert first.shape == (24, 1280) and np.isfinite(first).all() and first.std() > 0

    features._caches.clear()  # as if a new process: only the files on disk remain

    def must_not_compute(*args, **kwargs):
        raise AssertionError("a cached embedding was computed again")

    monkeypatch.setattr(features, "_compute", must_not_compute)
    again = embed(data.inputs, "efficientnet-lite0", keys=data.keys)
    assert np.array_equal(first, again)


def test_image_embeddings_separate_real_classes(fashion_folder):
    data = load_image_folder(fashion_folder)
    vectors = embed(data.inputs, "efficientnet-lite0", keys=data.keys)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.array(data.labels)
    similarity = vectors @ vectors.T
    same = similarity[labels[:, None] == labels[None, :]].mean()
    other = similarity[labels[:, None] != labels[None, :]].mean()
    assert same > other + 0.05


@pytest.mark.parametrize("backbone, dim", [("all-MiniLM-L6-v2", 384), ("all-mpnet-base-v2", 768)])
def test_text_embeddings_are_unit_length_and_put_synonyms_close(backbone, dim):
    # all-mpnet-base-v2 is joined from its five packages and unpacked into the cache on first use
    vectors = embed(["The match ended in a draw.", "The game finished level.", "Preheat the oven."], backbone)
    assert vectors.shape == (3, dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_only_missing_items_are_computed(monkeypatch):
    texts = [f"A sentence no other test embeds, number {i} of {uuid.uuid4()}" for i in range(8)]
    embed(texts[:5], "all-MiniLM-L6-v2")
    computed = []
    original = features._compute
    monkeypatch.setattr(features, "_compute", lambda items, *a: computed.extend(items) or original(items, *a))
    embed(texts, "all-MiniLM-L6-v2")
    assert computed == texts[5:]


def test_cache_shards_survive_a_reload(tmp_path):
    cache = EmbeddingCache("demo", root=tmp_path)
    cache.add(["k1", "k2"], np.eye(2, dtype=np.float32))
    fresh = EmbeddingCache("demo", root=tmp_path)
    fresh.refresh()
    assert np.array_equal(fresh.get("k2"), [0, 1]) and fresh.get("k3") is None
    assert not list(tmp_path.rglob("*.partial"))
