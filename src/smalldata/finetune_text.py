"""Contrastive fine-tuning of the sentence encoder, then a head on the tuned embeddings (SetFit).

Tunstall et al. (2022, "Efficient Few-Shot Learning Without Prompts") tune the encoder so that
texts of the same class move together and texts of different classes apart, then fit logistic
regression on the tuned embeddings. SetFit draws explicit pairs; here every batch is one set of
labeled texts and sentence-transformers' ``BatchAllTripletLoss`` uses every valid
(anchor, positive, negative) triple in it, so each forward pass serves many pairs. That is why
it needs fewer passes than the setfit library for the same gain (see bench/HISTORY.md).

`ContrastiveTextClassifier` follows the scikit-learn contract and reads raw strings, so the same
cross-validation folds that score the frozen heads score it too. Its tuned weights are saved as
``encoder.safetensors`` and loaded back into the installed base encoder: never pickle.

The encoder trains on `devices.torch_device()` (a CUDA GPU when torch can use one, else the CPU,
the default): each batch's tokens and labels go to the encoder's device.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

from smalldata.backbones import RAW_TEXT, get_backbone, onnx_of_weights
from smalldata.costs import fastest_step_seconds
from smalldata.devices import device_name, torch_device
from smalldata.features import in_length_order
from smalldata.head_io import register_head
from smalldata.heads import logistic_regression_head
from smalldata.model_folder import load_skops

ENCODER_FILE = "encoder.safetensors"
HEAD_FILE = "head.skops"


@register_head
class ContrastiveTextClassifier(ClassifierMixin, BaseEstimator):
    """Sentence encoder tuned with a batch-all triplet loss, logistic regression on top."""

    KIND = "contrastive-text"  # saved in model.json: never renamed
    READS = RAW_TEXT  # embeds the strings with its own tuned encoder

    def __init__(self, *, backbone: str = "all-MiniLM-L6-v2", epochs: int = 16, batch_size: int = 16,
                 lr: float = 2e-5, margin: float = 0.5, random_state: int = 0):
        self.backbone = backbone
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        # Of the triplet loss, in euclidean distance between unit-length embeddings (at most 2): the
        # library default of 5 can never be met, so every triple pulls equally, however easy it is.
        self.margin = margin
        self.random_state = random_state

    def fit(self, X, y):
        from sentence_transformers.sentence_transformer.losses import BatchAllTripletLoss

        texts = [str(t) for t in X]
        self.classes_, targets = np.unique(np.asarray(y), return_inverse=True)
        self.encoder_ = _pretrained_copy(self.backbone)
        self.device_ = device_name(modality_uses_torch=True)  # said in model.json: which device trained it
        loss = BatchAllTripletLoss(self.encoder_, margin=self.margin)
        optimizer = torch.optim.AdamW(self.encoder_.parameters(), lr=self.lr)
        rng = np.random.default_rng(self.random_state)
        self.loss_curve_ = []
        self.encoder_.train()
        with torch.random.fork_rng():  # dropout draws from torch's global generator: keep it seeded, locally
            torch.manual_seed(self.random_state)
            for _ in range(self.epochs):
                epoch_losses = [self._step(loss, optimizer, [texts[i] for i in batch], targets[batch])
                                for batch in self._batches(rng, targets)]
                self.loss_curve_.append(float(np.mean(epoch_losses)))
        self.encoder_.eval()
        self.head_ = logistic_regression_head().fit(self.transform(texts), self.classes_[targets])
        return self

    def refit_head(self, X, y) -> "ContrastiveTextClassifier":
        """The head again, on the tuned embeddings of `X` (e.g. every example, where the encoder saw a part)."""
        self.head_ = logistic_regression_head().fit(self.transform(X), np.asarray(y))
        return self

    def _batches(self, rng, targets: np.ndarray):
        """Shuffled batches; a last batch too small to hold a positive pair joins the previous one."""
        order = rng.permutation(len(targets))
        n_batches = max(1, len(order) // self.batch_size)
        return np.array_split(order, n_batches)

    def _step(self, loss, optimizer, texts: list[str], labels: np.ndarray) -> float:
        from sentence_transformers.util import batch_to_device

        device = self.encoder_.device
        features = batch_to_device(self.encoder_.preprocess(texts), device)
        value = loss([features], torch.from_numpy(labels.astype(np.int64)).to(device))
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        return float(value.detach())

    def steps_per_fit(self, n_examples: int) -> int:
        return self.epochs * max(1, n_examples // self.batch_size)

    def time_step(self, X, y) -> float:
        """Seconds one training step takes here, measured on a copy (`fastest_step_seconds`)."""
        from sentence_transformers.sentence_transformer.losses import BatchAllTripletLoss

        texts = [str(t) for t in X][: self.batch_size]
        labels = np.unique(np.asarray(y)[: self.batch_size], return_inverse=True)[1]
        probe = copy.deepcopy(self)
        probe.encoder_ = _pretrained_copy(self.backbone)
        loss = BatchAllTripletLoss(probe.encoder_, margin=self.margin)
        optimizer = torch.optim.AdamW(probe.encoder_.parameters(), lr=self.lr)
        return fastest_step_seconds(lambda: probe._step(loss, optimizer, texts, labels))

    def estimated_fit_seconds(self, step_seconds: float, n_examples: int) -> float:
        """Training at the measured rate per text, plus loading the encoder and embedding the texts
        for the head (about a step's worth per 64 texts).

        Per text, not per step: a last short batch joins the one before (`_batches`), so with 25
        texts the one step per epoch is 25 texts, not the 16 that were timed.
        """
        return step_seconds * (self.epochs * n_examples / self.batch_size + math.ceil(n_examples / 64) + 1)

    def transform(self, X) -> np.ndarray:
        """Tuned, unit-length embeddings (through ONNX Runtime once loaded from a folder)."""
        if getattr(self, "onnx_", None) is not None:
            return self._onnx_transform([str(t) for t in X])
        vectors = self.encoder_.encode([str(t) for t in X], batch_size=64, normalize_embeddings=True,
                                       show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)

    def _onnx_transform(self, texts: list[str]) -> np.ndarray:
        """In batches of 64 texts of similar length (each batch is padded to its longest text)."""
        return in_length_order(texts, lambda ordered: np.concatenate(
            [self.onnx_.embed(ordered[start:start + 64]) for start in range(0, len(ordered), 64)]))

    def predict_proba(self, X) -> np.ndarray:
        return self.head_.predict_proba(self.transform(X))

    def predict(self, X) -> np.ndarray:
        return self.head_.predict(self.transform(X))

    # A model folder: the tuned encoder's tensors and the scikit-learn head, no pickle.
    def save_to(self, folder: Path) -> dict:
        import skops.io
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in self.encoder_.state_dict().items()}
        save_file(state, str(folder / ENCODER_FILE))
        skops.io.dump(self.head_, folder / HEAD_FILE)
        return {"kind": self.KIND, "file": HEAD_FILE, "encoder_file": ENCODER_FILE,
                "params": self.get_params(), "classes": self.classes_.tolist(),
                "epochs_trained": len(self.loss_curve_) if hasattr(self, "loss_curve_") else None,
                "trained_on": getattr(self, "device_", None)}

    @classmethod
    def load_from(cls, folder: Path, head: dict, description: dict) -> "ContrastiveTextClassifier":
        from safetensors.torch import load_file

        params = {k: v for k, v in head["params"].items() if k in cls().get_params()}
        model = cls(**params)
        model.classes_ = np.array(head["classes"])
        model.encoder_ = copy.deepcopy(get_backbone(model.backbone).encoder())
        # strict: a file whose tensors don't fit the installed encoder is refused, not half-loaded
        model.encoder_.load_state_dict(load_file(str(folder / ENCODER_FILE)), strict=True)
        model.encoder_.eval()
        model.head_ = load_skops(folder / HEAD_FILE)
        model.onnx_ = _onnx_encoder(model.encoder_, model.backbone, folder / ENCODER_FILE)
        return model


def _pretrained_copy(backbone: str):
    """A copy of the pretrained encoder to tune, on the device chosen now (`torch_device`): the
    shared one stays as it is, for the frozen embeddings."""
    return copy.deepcopy(get_backbone(backbone).encoder()).to(torch_device())


def _onnx_encoder(encoder, backbone: str, weights: Path):
    """The tuned encoder exported to ONNX once (cached by the weights' digest): a loaded model
    embeds through ONNX Runtime, about twice as fast as eager PyTorch for one text."""
    from smalldata.onnx_text import OnnxTextEncoder, export_encoder

    path = onnx_of_weights(weights, "tuned-text", lambda path: export_encoder(encoder, path))
    return OnnxTextEncoder(get_backbone(backbone), path)

