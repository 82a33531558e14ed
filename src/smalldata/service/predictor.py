"""A model folder ready to answer requests: image bytes or texts in, class probabilities out.

Predictions run through the library's own `Model.predict_proba`, with one difference: the
embedding step (`batched_embed`) sends each backbone's network through one batcher per process,
shared by every model that uses it, instead of the on-disk cache. Images are decoded from memory
(no file is written); texts go through the ONNX text encoder. Loaded models are kept by folder, a
few at a time: versions are immutable, so a folder's model never goes stale.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from starlette.concurrency import run_in_threadpool

from smalldata.backbones import (
    RAW_TEXT,
    ImageBackbone,
    TextBackbone,
    cpu_threads,
    get_backbone,
    networks_of,
)
from smalldata.model import Model
from smalldata.onnx_text import text_encoder
from smalldata.service.batching import Batcher
from smalldata.unknown import CutOff, Scored, answer_records

KEPT_MODELS = 8


class Predictor:
    def __init__(self, model: Model):
        self.model = model

    @property
    def classes(self) -> list[str]:
        return self.model.classes

    def images(self, images: list[bytes]) -> Scored:
        """Probabilities (and familiarity) for images already checked by `uploads.check_image`."""
        return self.model.scored([io.BytesIO(data) for data in images], embedder=batched_embed)

    def texts(self, texts: list[str]) -> Scored:
        return self.model.scored(texts, embedder=batched_embed)

    async def texts_async(self, texts: list[str]) -> Scored:
        """`texts` for an async endpoint: the network runs in its batcher while the event loop
        goes on, so a text prediction costs no thread hand-over."""
        backbone = get_backbone(self.model.features) if self.model.features != RAW_TEXT else None
        if not isinstance(backbone, TextBackbone) or backbone.name not in _networks:
            return await run_in_threadpool(self.texts, texts)  # first use loads the network: not on the loop
        rows = await asyncio.wrap_future(_networks[backbone.name].submit(texts))
        return self.model.scored_features(rows)

    def warm_up(self) -> None:
        """Load the backbone and run it once, so the first request does not pay for it."""
        if self.model.modality == "text":
            self.texts(["warm up"])
        else:
            from PIL import Image

            buffer = io.BytesIO()
            Image.new("RGB", (64, 64), (128, 128, 128)).save(buffer, format="PNG")
            self.images([buffer.getvalue()])


def batched_embed(inputs: list, features: str, progress=None) -> np.ndarray:
    """What `features.embed` gives, through the shared batchers and without the on-disk cache:
    each network of the backbone (both of a pair, side by side) behind its own batcher."""
    backbone = get_backbone(features)
    rows = []
    for part in networks_of(backbone):
        if isinstance(part, ImageBackbone):
            for item in inputs:  # each network of a pair reads the uploads from their start
                if hasattr(item, "seek"):
                    item.seek(0)
            # Decoded here, outside the batcher (Pillow releases the GIL), so decoding overlaps the network.
            rows.append(network(part)(list(part.pixels(inputs))))
        elif isinstance(part, TextBackbone):
            rows.append(network(part)(list(inputs)))
        else:  # a backbone that is no network (colour statistics): cheap enough to run here
            rows.append(part.embed_batch(inputs))
    return np.hstack(rows) if len(rows) > 1 else rows[0]


_networks: dict[str, Batcher] = {}
_networks_lock = threading.Lock()


def network(backbone) -> Batcher:
    """The backbone's network behind one batcher per process, shared by every model that uses it."""
    with _networks_lock:
        if backbone.name not in _networks:
            if isinstance(backbone, TextBackbone):
                encoder = text_encoder(backbone)
                _networks[backbone.name] = Batcher(encoder.embed, name=f"net-{backbone.name}")
            else:
                _networks[backbone.name] = Batcher(image_lanes(backbone), max_batch=8, name=f"net-{backbone.name}")
        return _networks[backbone.name]


def image_lanes(backbone: ImageBackbone) -> list:
    """One lane on every core, for a lone request's latency, then single-thread lanes (up to 3)
    that take requests only while the lanes before them are busy. Batching more images into one
    run saved nothing per image on a 2-core CPU (bench/HISTORY.md), so a small batch keeps the lanes
    evenly loaded."""
    threads = [cpu_threads()] + [1] * min(cpu_threads() - 1, 3)
    for count in set(threads):
        backbone.session(count)  # load before the first request needs it
    return [lambda pixels, count=count: backbone.embed_pixels(np.stack(pixels), count) for count in threads]


def answers(model: Model, scored: Scored, cut_off: CutOff) -> list[dict]:
    """One answer per input (`unknown.answer_records`: the label, why it is `unknown` where it
    misses `cut_off`, the familiarity, every class's probability)."""
    return answer_records(scored, model.classes, cut_off)


class Predictors:
    """Loaded models by folder, the least recently used dropped past `KEPT_MODELS`."""

    def __init__(self):
        self._loaded: OrderedDict[Path, Predictor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, folder: Path) -> Predictor:
        with self._lock:
            if folder in self._loaded:
                self._loaded.move_to_end(folder)
                return self._loaded[folder]
        predictor = Predictor(Model.load(folder))  # outside the lock: loading takes a moment
        with self._lock:
            self._loaded[folder] = predictor
            while len(self._loaded) > KEPT_MODELS:
                self._loaded.popitem(last=False)
        return predictor
