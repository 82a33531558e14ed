"""Start simple: the classic models every other candidate is measured against.

Texts: TF-IDF on words and word pairs + logistic regression.
Images: colour and texture statistics of a thumbnail + a random forest.
"""

from __future__ import annotations

import re

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from smalldata.images import load_rgb

THUMBNAIL_SIZE = 64
HUE_BINS, SATURATION_BINS, VALUE_BINS, ORIENTATION_BINS = 16, 8, 8, 8


WORDS = r"(?u)\b\w\w+\b"  # scikit-learn's default: words of two or more letters
WORDS_OR_SYMBOLS = r"(?u)\b\w+\b|[^\w\s]"  # also one-letter words, and each emoji or symbol alone


def text_baseline(token_pattern: str = WORDS) -> object:
    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, token_pattern=token_pattern),
        LogisticRegression(C=10.0, max_iter=2000),
    )


def tokens_for(texts) -> str:
    """`WORDS`, unless a text has none (emoji, symbols, one-letter words): then `WORDS_OR_SYMBOLS`,
    so that the baseline can still be fitted. Data with words everywhere keeps the default, and
    every number measured on it."""
    words = re.compile(WORDS)
    return WORDS if all(words.search(text) for text in texts) else WORDS_OR_SYMBOLS


def image_baseline() -> object:
    return RandomForestClassifier(n_estimators=200, random_state=0, n_jobs=1)


def colour_texture_statistics(image: Image.Image) -> np.ndarray:
    """Hue/saturation/value histograms, RGB mean and spread, and gradient-orientation histograms
    (whole image and 2x2 grid) of a thumbnail: what a person would call colour and texture."""
    hsv = np.asarray(image.convert("HSV"), dtype=np.float32) / 255.0
    colour = [
        np.histogram(hsv[..., 0], bins=HUE_BINS, range=(0, 1))[0],
        np.histogram(hsv[..., 1], bins=SATURATION_BINS, range=(0, 1))[0],
        np.histogram(hsv[..., 2], bins=VALUE_BINS, range=(0, 1))[0],
    ]
    colour = [counts / counts.sum() for counts in colour]
    rgb = np.asarray(image, dtype=np.float32) / 255.0
    moments = [rgb.mean(axis=(0, 1)), rgb.std(axis=(0, 1))]
    grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    dy, dx = np.gradient(grey)
    magnitude = np.hypot(dx, dy)
    orientation = np.mod(np.arctan2(dy, dx), np.pi)  # unsigned: an edge is the same either way round
    half = grey.shape[0] // 2
    regions = [(slice(None), slice(None))] + [
        (slice(r, r + half), slice(c, c + half)) for r in (0, half) for c in (0, half)
    ]
    texture = []
    for region in regions:
        counts = np.histogram(orientation[region], bins=ORIENTATION_BINS, range=(0, np.pi), weights=magnitude[region])[0]
        texture.append(counts / (counts.sum() + 1e-8))
    edges = [np.array([magnitude.mean(), magnitude.std()])]
    return np.concatenate(colour + moments + texture + edges).astype(np.float32)


@dataclass
class ColourTextureFeatures:
    """The image baseline's features, served like a backbone so they are batched and cached alike."""

    name: str = "colour-texture-stats"
    modality: str = "image"
    dim: int = HUE_BINS + SATURATION_BINS + VALUE_BINS + 6 + 5 * ORIENTATION_BINS + 2

    @property
    def preprocessing(self) -> dict:
        return {"thumbnail": THUMBNAIL_SIZE, "resample": "bicubic",
                "features": "HSV histograms, RGB mean/std, gradient orientations"}

    def embed_batch(self, items: Sequence) -> np.ndarray:
        return np.stack([colour_texture_statistics(load_rgb(item, THUMBNAIL_SIZE)) for item in items])
