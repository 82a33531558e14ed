"""One ONNX file per model: backbone, head and calibration as one graph, runnable without smalldata.

The graph starts from preprocessed input and ends at class probabilities (output `probabilities`,
columns in the order of the `labels` metadata entry):

- images: `pixels`, uint8 RGB, NHWC, at the backbone's size (224 for efficientnet-lite0, 260 for
  lite2): each image turned upright by its EXIF orientation, converted to RGB, its shorter side
  resized to the size (PIL bicubic, reducing_gap=3.0), the centre square cropped. Scaling and
  normalisation happen inside the graph. A model on two backbones of different sizes takes one input
  per size (`pixels_224`, `pixels_260`).
- texts: `input_ids` and `attention_mask`, int64 [batch, tokens], from the tokenizer whose JSON is
  written beside the graph (truncation and padding set as the model reads them), with the
  `tokenizers` library. A model on two encoders takes each encoder's pair, suffixed by its name.

The metadata (`onnx.ModelProto.metadata_props`) keeps the labels, each input's preprocessing and the
tokenizer files as JSON, so a program in any language can use the file alone.

The heads are a matrix product, an addition and a softmax, written here with `onnx.helper`: every
head kind smalldata keeps on embeddings is linear in them (after an optional L2 normalisation).
What is not a graph of tensor operators cannot be exported: the TF-IDF baseline (a Python tokenizer
and vocabulary) and the colour/texture baseline (PIL statistics and a random forest); `ExportError`
says so.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smalldata.backbones import (
    PIXEL_MEAN,
    PIXEL_STD,
    RAW_INPUTS,
    RAW_TEXT,
    ImageBackbone,
    PairedBackbone,
    TextBackbone,
    get_backbone,
)
from smalldata.errors import DataError

FORMATS = ("onnx",)
OPSET = 17  # what the backbones are exported at (backbones.py, onnx_text.py)
OUTPUT = "probabilities"
# log(0) is -inf: probabilities are floored before the logarithm, at calibration.FLOOR's value
# (not imported: that module needs scipy, which the graph's maker has no use for)
LOG_FLOOR = 1e-12
RESIZE = ("each image upright by its EXIF orientation, converted to RGB, its shorter side resized to {size} px "
          "(PIL bicubic, reducing_gap=3.0), the centre {size}x{size} square cropped; uint8 RGB, NHWC")


def not_exportable(features: str, head_kind: str) -> str | None:
    """Why a model of these features and head kind (model.json's) cannot be an ONNX graph, or None."""
    if features == RAW_TEXT and head_kind not in ("contrastive-text",):
        return ("it reads the raw strings with scikit-learn's TF-IDF tokenizer and vocabulary, which are Python "
                "code, not tensor operators; train with a backbone (--backbone all-MiniLM-L6-v2) to export")
    if "colour-texture-stats" in features.split("+"):
        return ("its features are colour and texture statistics computed with PIL and numpy, not a network "
                "(the image baseline)")
    return None


class ExportError(DataError):
    """A model that cannot be exported, or an export that would overwrite a file; the message says which and why."""


@dataclass
class Exported:
    """What `export_onnx` wrote: the graph, the files beside it, and the graph's inputs."""

    path: Path
    inputs: dict[str, str]  # input name -> what goes in
    tokenizers: list[Path] = field(default_factory=list)

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


class _Graph:
    """Nodes, constants and inputs gathered into one ONNX graph; networks included under a prefix."""

    def __init__(self):
        self.nodes, self.initializers, self.inputs, self.value_info = [], [], [], []
        self.opsets = {"": OPSET}
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, array, hint: str = "const") -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, *inputs: str, hint: str | None = None, **attributes) -> str:
        from onnx import helper

        output = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attributes))
        return output

    def input(self, name: str, elem_type: int, shape: list) -> str:
        from onnx import helper

        if name not in {i.name for i in self.inputs}:
            self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def include(self, network, prefix: str, feeds: dict[str, str]) -> list[str]:
        """Add `network` (a ModelProto) with every name prefixed; its inputs read the tensors `feeds`
        names (inner input name -> tensor here). Its outputs' names here, in order."""
        from onnx import compose, helper

        network = compose.add_prefix(network, prefix)
        for graph_input in network.graph.input:
            inner = graph_input.name[len(prefix):]
            if inner not in feeds:
                raise ValueError(f"nothing feeds the network's input {inner!r}")
            self.nodes.append(helper.make_node("Identity", [feeds[inner]], [graph_input.name]))
        self.nodes.extend(network.graph.node)
        self.initializers.extend(network.graph.initializer)
        self.value_info.extend(network.graph.value_info)
        for opset in network.opset_import:
            self.opsets[opset.domain] = max(self.opsets.get(opset.domain, 0), opset.version)
        return [output.name for output in network.graph.output]

    # ---- arithmetic the heads need ------------------------------------------------------------
    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray) -> str:
        """x @ weight.T + bias, in float32."""
        product = self.op("MatMul", x, self.const(np.asarray(weight, np.float32).T, "weight"))
        return self.op("Add", product, self.const(np.asarray(bias, np.float32), "bias"))

    def unit_length(self, x: str, epsilon: float = 1e-8) -> str:
        """x / (||x|| + epsilon), row by row, as heads.py and describe.py compute it. (Sqrt of a
        product with a column of ones: ReduceL2's axes moved from attribute to input at opset 18.)"""
        squares = self.op("Mul", x, x)
        ones = self.op("Shape", x)
        width = self.op("Slice", ones, self.const(np.array([1], np.int64)), self.const(np.array([2], np.int64)))
        column = self.op("ConstantOfShape", self.op("Concat", width, self.const(np.array([1], np.int64)), axis=0),
                         value=_float_tensor(1.0))
        norm = self.op("Sqrt", self.op("MatMul", squares, column))
        return self.op("Div", x, self.op("Add", norm, self.const(np.array(epsilon, np.float32))))

    def softmax(self, logits: str) -> str:
        return self.op("Softmax", logits, axis=-1)

    def columns(self, x: str, start: int, end: int) -> str:
        return self.op("Slice", x, self.const(np.array([start], np.int64)), self.const(np.array([end], np.int64)),
                       self.const(np.array([1], np.int64)))

    def mean(self, tensors: list[str]) -> str:
        total = tensors[0]
        for tensor in tensors[1:]:
            total = self.op("Add", total, tensor)
        return self.op("Mul", total, self.const(np.array(1.0 / len(tensors), np.float32)))


def _float_tensor(value: float):
    from onnx import TensorProto, helper

    return helper.make_tensor("value", TensorProto.FLOAT, [1], [value])


# ---- heads: features -> probabilities, in the estimator's own class order ---------------------------
def _logistic(graph: _Graph, x: str, estimator) -> str:
    """scikit-learn's LogisticRegression: a softmax over x @ coef.T + intercept; with two classes its
    one row z gives [1 - sigmoid(z), sigmoid(z)], the softmax over (0, z)."""
    coef, intercept = np.asarray(estimator.coef_), np.asarray(estimator.intercept_)
    if getattr(estimator, "multi_class", "auto") == "ovr" and coef.shape[0] > 1:
        raise ExportError("a one-vs-rest logistic regression cannot be exported (its probabilities are normalised "
                          "sigmoids, not a softmax): train again with this version of smalldata")
    if coef.shape[0] == 1:
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    return graph.softmax(graph.linear(x, coef, intercept))


def _head(graph: _Graph, x: str, estimator) -> str:
    """The probability columns of `estimator` (in its `classes_` order) for features `x`."""
    from sklearn.linear_model import LogisticRegression

    from smalldata.describe import DescribedHead
    from smalldata.ensemble import AveragedLogisticRegression
    from smalldata.heads import COSINE_SCALE, LinearHead
    from smalldata.unlabeled import PoolHead

    if isinstance(estimator, LogisticRegression):
        return _logistic(graph, x, estimator)
    if isinstance(estimator, PoolHead):  # fitted with a pool, predicts with its logistic regression alone
        return _logistic(graph, x, estimator.head_)
    if isinstance(estimator, AveragedLogisticRegression):
        ends = np.cumsum(estimator.widths)
        return graph.mean([_logistic(graph, graph.columns(x, int(end - width), int(end)), model)
                           for model, width, end in zip(estimator.models_, estimator.widths, ends)])
    if isinstance(estimator, DescribedHead):
        if estimator.zero_shot_:
            x = graph.unit_length(x)
        return graph.softmax(graph.linear(x, estimator.coef_, estimator.intercept_))
    if isinstance(estimator, LinearHead):
        tensors = estimator.tensors_
        output = graph.linear(graph.unit_length(x), tensors["0.weight"], tensors["0.bias"])
        if estimator.loss == "cosine":
            output = graph.op("Mul", graph.unit_length(output), graph.const(np.array(COSINE_SCALE, np.float32)))
        elif estimator.loss == "cosine+cross-entropy":
            output = graph.linear(graph.unit_length(output), tensors["1.weight"], tensors["1.bias"])
        return graph.softmax(output)
    raise ExportError(f"a {type(estimator).__name__} head cannot be exported to ONNX: smalldata exports logistic "
                      "regression, the linear head, the averaged and described heads, and fine-tuned models")


# ---- networks: preprocessed inputs -> features ---------------------------------------------------
def _image_features(graph: _Graph, backbone: ImageBackbone, network_path: Path, prefix: str, pixels: str) -> str:
    import onnx

    return graph.include(onnx.load(str(network_path)), prefix, {"pixels": pixels})[0]


def _pixels_input(graph: _Graph, size: int, sizes: set[int], inputs: dict) -> str:
    from onnx import TensorProto

    name = "pixels" if len(sizes) == 1 else f"pixels_{size}"
    inputs[name] = RESIZE.format(size=size)
    return graph.input(name, TensorProto.UINT8, ["batch", size, size, 3])


def _text_inputs(graph: _Graph, backbone: TextBackbone, suffix: str, inputs: dict, tokenizer_file: str) -> dict[str, str]:
    """The token inputs of one encoder, and zeros for its token types (one sentence per input)."""
    from onnx import TensorProto

    ids = graph.input(f"input_ids{suffix}", TensorProto.INT64, ["batch", "tokens"])
    mask = graph.input(f"attention_mask{suffix}", TensorProto.INT64, ["batch", "tokens"])
    inputs[ids] = f"token ids from {tokenizer_file} ({backbone.name}'s tokenizer), int64 [batch, tokens]"
    inputs[mask] = f"the attention mask from {tokenizer_file}, int64 [batch, tokens]"
    types = graph.op("ConstantOfShape", graph.op("Shape", ids), value=_int64_tensor(0))
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def _int64_tensor(value: int):
    from onnx import TensorProto, helper

    return helper.make_tensor("value", TensorProto.INT64, [1], [value])


def _text_features(graph: _Graph, network_path: Path, prefix: str, feeds: dict[str, str]) -> str:
    import onnx

    network = onnx.load(str(network_path))
    used = {i.name for i in network.graph.input}  # MPNet's graph has no token types
    return graph.include(network, prefix, {k: v for k, v in feeds.items() if k in used})[0]


def _suffix(name: str, several: bool) -> str:
    return "_" + "".join(c if c.isalnum() else "_" for c in name) if several else ""


class _Build:
    """One model's graph under construction, with the inputs it takes and the tokenizers it needs."""

    def __init__(self, model, out: Path, workdir: Path):
        self.model, self.out, self.workdir = model, out, workdir
        self.graph = _Graph()
        self.inputs: dict[str, str] = {}
        self.tokenizers: dict[Path, str] = {}  # file to write -> its JSON
        self.token_inputs: dict[str, dict[str, str]] = {}  # tokenizer file name -> the inputs it fills

    def tokenizer_path(self, backbone: TextBackbone, several: bool) -> Path:
        name = f"{self.out.stem}{'.' + backbone.name if several else ''}.tokenizer.json"
        return self.out.with_name(name)

    def backbone_features(self, name: str) -> str:
        """Features as the frozen backbone `name` gives them (a pair: each part's, side by side)."""
        backbone = get_backbone(name)
        parts = [get_backbone(part) for part in backbone.parts] if isinstance(backbone, PairedBackbone) else [backbone]
        if not all(isinstance(part, (ImageBackbone, TextBackbone)) for part in parts):
            raise ExportError(f"a model on {name!r} cannot be exported to ONNX: "
                              f"{not_exportable(name, '') or 'its features come from no network'}")
        several = len(parts) > 1
        outputs = [self.network_features(part, None, f"{part.name}/", several) for part in parts]
        return outputs[0] if len(outputs) == 1 else self.graph.op("Concat", *outputs, axis=1)

    def network_features(self, backbone, network_path: Path | None, prefix: str, several: bool,
                         pixels: str | None = None) -> str:
        """`backbone`'s network (or a tuned copy at `network_path`) on this graph's inputs."""
        if isinstance(backbone, ImageBackbone):
            sizes = self._image_sizes()
            pixels = pixels or _pixels_input(self.graph, backbone.image_size, sizes, self.inputs)
            return _image_features(self.graph, backbone, network_path or backbone.onnx_path(), prefix, pixels)
        from smalldata.onnx_text import exported

        tokenizer = self.tokenizer_path(backbone, several)
        self.tokenizers[tokenizer] = _tokenizer_json(backbone)
        feeds = _text_inputs(self.graph, backbone, _suffix(backbone.name, several), self.inputs, tokenizer.name)
        self.token_inputs[tokenizer.name] = {k: feeds[k] for k in ("input_ids", "attention_mask")}
        return _text_features(self.graph, network_path or exported(backbone), prefix, feeds)

    def _image_sizes(self) -> set[int]:
        backbone = get_backbone(self.model.features) if self.model.features != RAW_INPUTS else None
        if isinstance(backbone, PairedBackbone):
            return {get_backbone(part).image_size for part in backbone.parts}
        return {0}  # one network: one input, `pixels`

    def probabilities(self) -> str:
        """The estimator's probabilities (its class order) from this graph's inputs."""
        from smalldata.finetune import FineTunedImageClassifier
        from smalldata.finetune_text import ContrastiveTextClassifier

        estimator, features = self.model.estimator, self.model.features
        if isinstance(estimator, FineTunedImageClassifier):
            return self.fine_tuned_image(estimator)
        if isinstance(estimator, ContrastiveTextClassifier):
            return self.contrastive_text(estimator)
        if features == RAW_TEXT:
            raise ExportError(f"the {self.model.head_name!r} model cannot be exported to ONNX: "
                              f"{not_exportable(features, '')}")
        if features == RAW_INPUTS:
            raise ExportError(f"a {type(estimator).__name__} model on image files cannot be exported to ONNX")
        return _head(self.graph, self.backbone_features(features), estimator)

    def fine_tuned_image(self, estimator) -> str:
        """The tuned body (or the frozen backbone, where early stopping undid the tuning) and its
        logistic regression; with test-time augmentation, averaged with the mirror image's."""
        from smalldata.backbones import export_pooled_features

        backbone = get_backbone(estimator.backbone)
        if estimator.net_ is None:
            return _logistic(self.graph, self.network_features(backbone, None, "body/", False), estimator.head_)
        body = self.workdir / "body.onnx"
        export_pooled_features(estimator.net_, backbone.image_size, body)
        pixels = _pixels_input(self.graph, backbone.image_size, {0}, self.inputs)
        if not estimator.tta:
            return _logistic(self.graph, self.network_features(backbone, body, "body/", False, pixels), estimator.head_)
        # The batch and its mirror images through the body at once, then split: one copy of the weights.
        g = self.graph
        mirrored = g.op("Slice", pixels, g.const(np.array([-1], np.int64)), g.const(np.array([np.iinfo(np.int64).min], np.int64)),
                        g.const(np.array([2], np.int64)), g.const(np.array([-1], np.int64)))
        features = self.network_features(backbone, body, "body/", False, g.op("Concat", pixels, mirrored, axis=0))
        n = g.op("Slice", g.op("Shape", pixels), g.const(np.array([0], np.int64)), g.const(np.array([1], np.int64)))
        zero, end = g.const(np.array([0], np.int64)), g.const(np.array([np.iinfo(np.int64).max], np.int64))
        axis = g.const(np.array([0], np.int64))
        plain, flipped = g.op("Slice", features, zero, n, axis), g.op("Slice", features, n, end, axis)
        return g.mean([_logistic(g, plain, estimator.head_), _logistic(g, flipped, estimator.head_)])

    def contrastive_text(self, estimator) -> str:
        """The tuned encoder (its ONNX graph cached when loaded from a folder) and its logistic regression."""
        from smalldata.onnx_text import export_encoder

        onnx_encoder = getattr(estimator, "onnx_", None)
        if onnx_encoder is not None:
            network = onnx_encoder.path
        else:
            network = self.workdir / "encoder.onnx"
            export_encoder(estimator.encoder_, network)
        features = self.network_features(get_backbone(estimator.backbone), network, "encoder/", False)
        return _logistic(self.graph, features, estimator.head_)


def _tokenizer_json(backbone: TextBackbone) -> str:
    """The encoder's tokenizer with the truncation and padding it is used with (onnx_text.OnnxTextEncoder)."""
    from tokenizers import Tokenizer

    folder = Path(backbone.model_dir())
    max_length = int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding()
    return tokenizer.to_str()


def onnx_graph(model, out: Path, workdir: Path) -> tuple:
    """(the ModelProto, its inputs described, the tokenizer files and their JSON) for `model`."""
    import onnx
    from onnx import TensorProto, helper

    build = _Build(model, out, workdir)
    g = build.graph
    proba = build.probabilities()
    # the estimator's columns in the model's `classes` order (Model._in_class_order)
    order = [list(np.asarray(model.estimator.classes_).tolist()).index(label) for label in model.classes]
    proba = g.op("Gather", proba, g.const(np.array(order, np.int64)), axis=1)
    calibration = getattr(model, "calibration", None)
    kept = calibration is not None and getattr(calibration, "kept", True)  # one not kept leaves them as they are
    temperature = float(calibration.temperature) if kept else None
    if temperature is not None:  # softmax(log(p) / T), as the model's calibration computes it
        logs = g.op("Log", g.op("Max", proba, g.const(np.array(LOG_FLOOR, np.float32))))
        proba = g.softmax(g.op("Div", logs, g.const(np.array(temperature, np.float32))))
    g.nodes.append(helper.make_node("Identity", [proba], [OUTPUT]))
    output = helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", len(model.classes)])
    graph = helper.make_graph(g.nodes, "smalldata", g.inputs, [output], g.initializers, value_info=g.value_info)
    proto = helper.make_model(graph, producer_name="smalldata",
                              opset_imports=[helper.make_opsetid(domain, version) for domain, version in g.opsets.items()])
    proto.ir_version = min(proto.ir_version, 8)  # opset 17's IR version: older ONNX Runtimes read it too
    onnx.helper.set_model_props(proto, {
        "labels": json.dumps(model.classes),
        "modality": model.modality,
        "inputs": json.dumps(build.inputs),
        "output": f"{OUTPUT}: float32 [batch, {len(model.classes)}], one column per label, in the order of 'labels'",
        # tokenizer file (beside the graph) -> {"input_ids": input name, "attention_mask": input name}
        "tokenizers": json.dumps(build.token_inputs),
        "head": model.head_name,
        "features": model.features,
        "pixel_normalisation": f"(pixel - {PIXEL_MEAN:g}) / {PIXEL_STD:g}, inside the graph" if model.modality == "image" else "",
        "calibration_temperature": "" if temperature is None else repr(temperature),
        # The probability floor for inputs of no known class: the graph gives no embeddings' familiarity
        # (`smalldata.familiarity`, what `smalldata predict` applies where the model has it), so a runtime
        # applies this one, from the same folds.
        "unknown_below": "" if getattr(model, "unknown", None) is None else repr(float(model.unknown.floor)),
    })
    proto.doc_string = __doc__.split("\n\n")[1]
    return proto, build.inputs, build.tokenizers


def export_onnx(model, out: str | Path, *, overwrite: bool = False) -> Exported:
    """Write `model` as one ONNX graph to `out` (and its tokenizers beside it, for texts).
    Refuses to replace an existing file unless `overwrite`."""
    import onnx

    out = Path(out)
    if out.suffix != ".onnx":
        raise ExportError(f"{out}: an ONNX file's name ends in .onnx")
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists already: pass --overwrite to replace it, or choose another --out")
    if out.is_dir():
        raise ExportError(f"{out} is a folder: give a file name ending in .onnx")
    with tempfile.TemporaryDirectory(prefix="smalldata-export-") as workdir:
        proto, inputs, tokenizers = onnx_graph(model, out, Path(workdir))
        if not overwrite and (clash := [p for p in tokenizers if p.exists()]):
            raise ExportError(f"{clash[0]} exists already: pass --overwrite to replace it, or choose another --out")
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
        onnx.save(proto, str(partial))  # under 2 GB (every backbone here), so one file: no external data
        for path, text in tokenizers.items():
            path.write_text(text)
        partial.replace(out)  # atomic: a half-written graph is never found under the name
    return Exported(out, inputs, sorted(tokenizers))
