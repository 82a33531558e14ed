"""Batched embedding extraction, cached on disk by (backbone, content hash).

A second run, another cross-validation fold, or a retrain after adding examples never recomputes
an embedding it has seen. The cache is a folder of shards per backbone; each shard is an ``.npz``
of content keys and vectors (no pickle), written atomically.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from smalldata.backbones import Backbone, ImageBackbone, PairedBackbone, cache_dir, cache_name, get_backbone
from smalldata.images import check_file_size
from smalldata.progress import Progress

BATCH_SIZE = {"image": 8, "text": 32}  # lite0 under ONNX Runtime runs fastest in small batches


def hash_bytes(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def hash_file(path: str | Path) -> str:
    """`hash_bytes` of the file's content, read in chunks: the same key, never the whole file in memory."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def content_key(item) -> str:
    """A hash of what the model sees: the file's bytes for images, the string for texts.

    An image file over the size bound is refused (ImageFileError) before it is read at all."""
    if isinstance(item, Path):
        check_file_size(item)
        return hash_file(item)
    if hasattr(item, "read"):  # an image in memory: its bytes (its repr named its address, which a later one reuses)
        position = item.tell()
        item.seek(0)
        data = item.read()
        item.seek(position)
        return hash_bytes(data)
    return hash_bytes(str(item).encode("utf-8"))


class EmbeddingCache:
    """Vectors of one backbone, keyed by content hash, persisted as shards under the cache folder."""

    def __init__(self, name: str, root: Path | None = None):
        self.folder = (root or cache_dir()) / "embeddings" / name
        self.folder.mkdir(parents=True, exist_ok=True)
        self._vectors: dict[str, np.ndarray] = {}
        self._loaded_shards: set[str] = set()

    def refresh(self) -> None:
        """Read shards written since the last look (by this or another process)."""
        for shard in sorted(self.folder.glob("*.npz")):
            if shard.name in self._loaded_shards:
                continue
            with np.load(shard, allow_pickle=False) as data:
                self._vectors.update(zip(data["keys"].tolist(), data["vectors"]))
            self._loaded_shards.add(shard.name)

    def get(self, key: str) -> np.ndarray | None:
        return self._vectors.get(key)

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        if not len(keys):
            return
        name = f"{uuid.uuid4().hex}.npz"
        partial = self.folder / f".{name}.partial"
        with open(partial, "wb") as handle:
            np.savez(handle, keys=np.array(keys, dtype="U32"), vectors=vectors.astype(np.float32))
        os.replace(partial, self.folder / name)
        self._loaded_shards.add(name)
        self._vectors.update(zip(keys, vectors))


_caches: dict[str, EmbeddingCache] = {}


def embed(
    items: Sequence,
    backbone: str | Backbone,
    *,
    keys: Sequence[str] | None = None,
    progress: Progress | None = None,
    use_cache: bool = True,
) -> np.ndarray:
    """Embeddings for `items` (image paths or texts), one row each, computing only what is not cached.

    `keys` are the items' content hashes when the caller already has them (datasets do).
    """
    model = get_backbone(backbone) if isinstance(backbone, str) else backbone
    if not len(items):
        return np.zeros((0, model.dim), dtype=np.float32)
    if keys is None:
        keys = [content_key(item) for item in items]
    if isinstance(model, PairedBackbone):  # from each part's own cache: nothing is embedded twice
        return np.hstack([embed(items, part, keys=keys, progress=progress, use_cache=use_cache) for part in model.parts])
    cache = _cache_of(model) if use_cache else None
    missing = [i for i, key in enumerate(keys) if cache is None or cache.get(key) is None]
    if missing:
        if progress is not None and hasattr(model, "load"):  # loading (an ONNX export the first time) takes seconds
            with progress.spinner(f"loading {model.name}"):
                model.load()
        fresh = _compute([items[i] for i in missing], model, progress)
        if cache is not None:
            cache.add([keys[i] for i in missing], fresh)
    else:
        fresh = None
    out = np.empty((len(items), model.dim), dtype=np.float32)
    position = {index: row for row, index in enumerate(missing)}
    for i, key in enumerate(keys):
        out[i] = fresh[position[i]] if i in position else cache.get(key)
    return out


def uncached(keys: Sequence[str], backbone: Backbone) -> list[int]:
    """Positions of the content `keys` whose embeddings by `backbone` are not cached yet (what
    `embed` would have to compute); the backbone's network is not loaded to answer."""
    cache = _cache_of(backbone)
    return [i for i, key in enumerate(keys) if cache.get(key) is None]


def add_to_cache(backbone: Backbone, keys: Sequence[str], vectors: np.ndarray) -> None:
    """Keep vectors computed elsewhere (by a Ray cluster's workers, `smalldata.scale`) in `backbone`'s
    cache, where `embed` finds them as if it had computed them."""
    _cache_of(backbone).add(list(keys), np.asarray(vectors, dtype=np.float32))


def _cache_of(model: Backbone) -> EmbeddingCache:
    name = cache_name(model)
    cache = _caches[name] = _caches.get(name) or EmbeddingCache(name)
    cache.refresh()
    return cache


def in_length_order(texts: Sequence[str], run: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """`run` on the texts sorted by length, its rows put back in the texts' order.

    Texts of similar length batched together need little padding: on sst2 sentences this takes
    MiniLM from ~115 to ~185 texts/s.
    """
    order = np.argsort([len(text) for text in texts], kind="stable")
    vectors = run([texts[i] for i in order])
    out = np.empty_like(vectors)
    out[order] = vectors
    return out


def _compute(items: Sequence, model: Backbone, progress: Progress | None) -> np.ndarray:
    if model.modality == "text":
        return in_length_order(items, lambda ordered: _compute_in_order(ordered, model, progress))
    return _compute_in_order(items, model, progress)


def _compute_in_order(items: Sequence, model: Backbone, progress: Progress | None) -> np.ndarray:
    size = BATCH_SIZE[model.modality]
    batches = [items[i : i + size] for i in range(0, len(items), size)]
    task = progress.task(f"embedding {len(items)} {model.modality}s with {model.name}", len(items)) if progress else None
    outputs = []
    if isinstance(model, ImageBackbone):
        # Decode the next batch while the network runs on this one.
        with ThreadPoolExecutor(max_workers=1) as prefetch:
            pending = prefetch.submit(model.pixels, batches[0])
            for index in range(len(batches)):
                pixels = pending.result()
                if index + 1 < len(batches):
                    pending = prefetch.submit(model.pixels, batches[index + 1])
                outputs.append(model.embed_pixels(pixels))
                if task:
                    task.advance(len(batches[index]))
    else:
        for batch in batches:
            outputs.append(model.embed_batch(batch))
            if task:
                task.advance(len(batch))
    if task:
        task.done()
    return np.concatenate(outputs).astype(np.float32)
