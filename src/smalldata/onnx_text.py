"""Sentence embeddings for serving: a text encoder exported to ONNX and run with ONNX Runtime
(the backbone itself, or a fine-tuned copy loaded from a model folder).

Answering one text, sentence-transformers in eager PyTorch spends most of its ~25 ms in Python
and dispatch overhead; the same network under ONNX Runtime with the Rust tokenizer and fused
transformer operators takes well under half (bench/HISTORY.md). The vectors are the library's own
(mean pooling over the attention mask, L2-normalised), equal within 1e-4
(tests/service/test_model_mode_and_cli.py), so a head trained on the library's embeddings reads
these unchanged.
"""

from __future__ import annotations

import inspect
import json
import os
import threading
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from smalldata.backbones import TextBackbone, cache_dir, cache_name, cpu_threads
from smalldata.devices import onnx_providers


class OnnxTextEncoder:
    """`backbone`'s tokenizer and truncation with its exported graph, or with the graph at `path`
    (a fine-tuned copy of the same encoder: `export_encoder`)."""

    def __init__(self, backbone: TextBackbone, path: Path | None = None):
        self.backbone = backbone
        self.path = path or exported(backbone)
        # The encoder's own truncation, read from its folder: serving needs neither torch nor
        # sentence-transformers once the graph is exported (the training worker exports it).
        config = json.loads((Path(backbone.model_dir()) / "sentence_bert_config.json").read_text())
        self.max_length = int(config["max_seq_length"])
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(Path(backbone.model_dir()) / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.enable_padding()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = cpu_threads()
        options.inter_op_num_threads = 1
        # No spin-waiting between operators: in-process it takes one sentence from 10.9 to 8.8 ms,
        # but over HTTP the spinning threads take the cores the response needs (bench/HISTORY.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), options, providers=onnx_providers())
        self._inputs = {i.name for i in self.session.get_inputs()}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        return self.session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]


def exported(backbone: TextBackbone) -> Path:
    """The backbone's ONNX graph, exported on first use."""
    # "-2": the second way of exporting (fused operators, no token types where the encoder has none);
    # a new name, so a graph exported the first way is not picked up
    path = cache_dir() / "onnx" / f"{cache_name(backbone)}-text-2.onnx"
    if not path.exists():
        export_encoder(backbone.encoder(), path)
    return path


def export_encoder(encoder, path: Path) -> None:
    """The transformer, mean pooling and normalisation as one ONNX graph with ONNX Runtime's
    transformer fusions (attention, layer norm, GELU as single operators), written atomically.

    The fusions take one text from about 10.4 to 9.1 ms on this CPU and change no output by more
    than 2e-7 (bench/HISTORY.md). They recognise attention written out as matrix products, so the
    graph is traced with the eager attention, not PyTorch's fused kernel.
    """
    transformer = encoder[0].auto_model.eval()
    attention = transformer.config._attn_implementation
    transformer.config._attn_implementation = "eager"
    try:
        _trace(transformer, path)
    finally:  # the same encoder goes on embedding training examples
        transformer.config._attn_implementation = attention


def _trace(transformer, path: Path) -> None:
    import torch
    from onnxruntime.transformers.optimizer import optimize_model

    class Pooled(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, input_ids, attention_mask, token_type_ids):
            # MPNet has no token types: the input is then unused, and the graph drops it
            types = {"token_type_ids": token_type_ids} if uses_types else {}
            tokens = self.net(input_ids=input_ids, attention_mask=attention_mask, **types).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            mean = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    uses_types = "token_type_ids" in inspect.signature(transformer.forward).parameters
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    dummy = torch.ones(1, 8, dtype=torch.int64, device=transformer.device)  # where the weights are: CPU or GPU
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pooled(transformer), (dummy, dummy, torch.zeros_like(dummy)), str(partial),
            input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["embedding"],
            dynamic_axes={name: {0: "batch", 1: "tokens"} for name in ("input_ids", "attention_mask", "token_type_ids")}
            | {"embedding": {0: "batch"}},
            opset_version=17, dynamo=False,
        )
    if transformer.config.model_type == "bert":  # the fusions know BERT's graph (MiniLM is one), not MPNet's
        fused = optimize_model(str(partial), model_type="bert", num_heads=transformer.config.num_attention_heads,
                               hidden_size=transformer.config.hidden_size, opt_level=1)
        fused.save_model_to_file(str(partial))
    partial.replace(path)


_encoders: dict[str, OnnxTextEncoder] = {}
_lock = threading.Lock()


def text_encoder(backbone: TextBackbone) -> OnnxTextEncoder:
    with _lock:  # requests arrive on many threads; export and load once
        if backbone.name not in _encoders:
            _encoders[backbone.name] = OnnxTextEncoder(backbone)
        return _encoders[backbone.name]
