"""Scale-out on a Ray cluster (the optional extra, `pip install 'smalldata[ray]'`): batch prediction
and the embedding of unlabeled pools as Ray Data batch jobs.

Each job is `map_batches` with a callable class, so every worker loads the model (or the backbone)
once and then takes batch after batch. The driver, this process, keeps what the local path keeps: it
writes the same CSV rows (`batch_predict.predict_rows` runs on the workers, in input order) and adds
the vectors to the same embedding cache (`features.add_to_cache`), so a job run on Ray and one run
here leave the same files.

The workers read the files by path: on a cluster of several machines the inputs and the model folder
must be at the same paths on every node (a shared file system), as for Ray's own `read_images`, and
every node needs smalldata installed.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path

import numpy as np

from smalldata.errors import DataError
from smalldata.progress import QUIET, Progress

# Inputs handed to Ray at a time: the driver holds one window's names, never the whole input, and
# each window starts the workers once (a few seconds, next to minutes of work in a window).
WINDOW = 20_000
CONNECT_TIMEOUT_S = 5.0  # a cluster's head answers a TCP connect at once; silence means none is there
CACHE_FLUSH_ROWS = 2048  # vectors added to the cache in shards of this many, not one small shard per batch


def connect(address: str):
    """Ray, connected to the cluster at `address` ("auto": the one `ray start` began on this machine,
    or RAY_ADDRESS; else HOST:PORT of its head). An address where nothing answers is a DataError at
    once, not Ray's own minute of retries."""
    try:
        import ray
        import ray.data  # loaded now, so that its loggers exist to be quietened below
    except ImportError as error:
        raise DataError("--ray needs Ray, which is not installed: pip install 'smalldata[ray]'") from error
    if ray.is_initialized():
        return ray
    # Ray itself retries an address where nothing answers for minutes (RAY_ADDRESS=127.0.0.1:1 with
    # auto still waited at 2 minutes): look first, for a given address and for the one auto would use.
    known = _auto_address() if address == "auto" else address
    if known is not None:
        _require_answer(known)
    logging.getLogger("ray").setLevel(logging.ERROR)  # Ray Data's notes on each job would print beside our bar
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    except ConnectionError as error:
        raise DataError(f"no Ray cluster answers at {address!r}: start one with `ray start --head` "
                        f"(then --ray auto), or give its head's HOST:PORT ({' '.join(str(error).split())[:200]})") from error
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # configured apart from "ray" when ray.data loads
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows in input order: the CSV resumes by position
    context.enable_progress_bars = False  # the caller's bar counts rows; Ray's would print beside it
    context.print_on_execution_start = False
    return ray


def _auto_address() -> str | None:
    """The address `ray.init("auto")` would connect to: RAY_ADDRESS, else the one `ray start` left in
    Ray's temporary folder; None where neither is set (Ray then says at once that none runs)."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    current = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    return (current.read_text().strip() or None) if current.is_file() else None


def _require_answer(address: str) -> None:
    where = address.removeprefix("ray://")
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise DataError(f"--ray {address!r} is no address: give auto, or the head's HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise DataError(f"no Ray cluster answers at {address} ({error.strerror or error}): start one with "
                        "`ray start --head --port PORT` there, or check the address") from error


def _workers(ray) -> int:
    """One worker per CPU the cluster offers (each is given one, and runs its network on one thread)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _windows(items: Iterator, size: int = WINDOW) -> Iterator[list]:
    while window := list(islice(items, size)):
        yield window


class _Predictor:
    """A Ray worker's model, loaded once; each call predicts one batch into CSV rows."""

    def __init__(self, model_dir: str, threshold: float | None, unknown: bool):
        from smalldata.model import Model

        self.model = Model.load(model_dir)
        self.threshold, self.unknown = threshold, unknown

    def __call__(self, batch: dict) -> dict:
        from smalldata.data import as_inputs
        from smalldata.prediction_rows import predict_rows

        written = []
        for names, paths in zip(batch["inputs"], batch["paths"]):  # one record: one of the local run's batches
            rows = predict_rows(self.model, as_inputs(json.loads(paths), self.model.modality),
                                threshold=self.threshold, unknown=self.unknown)
            for row, name in zip(rows, json.loads(names)):
                row[0] = name  # the input as the user named it, as the local run writes it
            written.append(json.dumps(rows))
        return {"rows": np.array(written, dtype=object)}


def predict_batches_on_ray(model_dir: str | Path, inputs: Iterator, address: str, *, batch_size: int,
                           threshold: float | None = None, unknown: bool = True) -> Iterator[list[list[str]]]:
    """The CSV rows of `inputs` (image paths or texts), batch after batch in input order, predicted
    by workers of the Ray cluster at `address`."""
    ray = connect(address)
    model_dir = str(Path(model_dir).resolve())
    workers = _workers(ray)
    for window in _windows(inputs):
        # A record is one batch of the local run's, so that the network sees the same batches (ONNX
        # Runtime's last digits move with a batch's make-up) and the CSV comes out the same.
        records = [{"inputs": json.dumps([str(item) for item in window[start:start + batch_size]]),
                    "paths": json.dumps([_absolute(item) for item in window[start:start + batch_size]])}
                   for start in range(0, len(window), batch_size)]
        rows = ray.data.from_items(records, override_num_blocks=len(records)).map_batches(
            _Predictor, fn_constructor_kwargs={"model_dir": model_dir, "threshold": threshold, "unknown": unknown}, batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1)
        for batch in rows.iter_batches(batch_size=None, batch_format="numpy"):
            for written in batch["rows"]:
                yield json.loads(written)


def _absolute(item) -> str:
    """An image's path as every node reads it (not relative to this process's folder); a text as it is."""
    return str(Path(item).resolve()) if isinstance(item, Path) else str(item)


class _Embedder:
    """A Ray worker's backbone, loaded once; each call embeds one batch."""

    def __init__(self, backbone: str):
        from smalldata.backbones import get_backbone

        self.backbone = get_backbone(backbone)
        self.backbone.load()

    def __call__(self, batch: dict) -> dict:
        from smalldata.data import as_inputs
        from smalldata.features import embed

        # The library's own path (its sub-batches, texts in length order), uncached: the vectors go to
        # the driver's cache, and match what `embed` computes there.
        paths, keys = json.loads(batch["paths"][0]), json.loads(batch["keys"][0])  # one record: one batch
        items = as_inputs(paths, self.backbone.modality)
        return {"key": np.array(keys), "vector": embed(items, self.backbone, keys=[""] * len(items), use_cache=False)}


def embed_on_ray(items: Sequence, keys: Sequence[str], backbone: str, address: str, *, batch_size: int = 64,
                 progress: Progress = QUIET) -> int:
    """Embed by `backbone` (each of its networks, for a pair) the `items` whose content `keys` the
    embedding cache lacks, on the Ray cluster at `address`, and add them to this machine's cache, where
    `features.embed` then finds them. Returns how many vectors were computed."""
    from smalldata.backbones import get_backbone, networks_of
    from smalldata.features import add_to_cache, uncached

    ray = connect(address)
    computed = 0
    for network in networks_of(get_backbone(backbone)):
        missing = uncached(keys, network)
        if not missing:
            continue
        # A record is a batch (its vectors come back as that many rows): batches start where the local
        # `embed`'s would, so the network sees the same sub-batches.
        records = [{"paths": json.dumps([_absolute(items[i]) for i in missing[start:start + batch_size]]),
                    "keys": json.dumps([keys[i] for i in missing[start:start + batch_size]])}
                   for start in range(0, len(missing), batch_size)]
        task = progress.task(f"embedding {len(missing)} {network.modality}s with {network.name} on Ray", len(missing),
                             rate=True)
        for window in _windows(iter(records)):
            vectors = ray.data.from_items(window, override_num_blocks=len(window)).map_batches(
                _Embedder, fn_constructor_kwargs={"backbone": network.name}, batch_size=1,
                batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=_workers(ray)), num_cpus=1)
            held_keys, held = [], []
            for batch in vectors.iter_batches(batch_size=None, batch_format="numpy"):
                held_keys += batch["key"].tolist()
                held.append(batch["vector"])
                task.advance(len(batch["key"]))
                if len(held_keys) >= CACHE_FLUSH_ROWS:
                    add_to_cache(network, held_keys, np.concatenate(held))
                    held_keys, held = [], []
            if held_keys:
                add_to_cache(network, held_keys, np.concatenate(held))
        task.done()
        computed += len(missing)
    return computed


def pool_backbone(modality: str, backbone: str | None) -> str:
    """The backbone `train` embeds an unlabeled pool with: the user's, else the strongest installed
    network (`train.compare_frozen` gives the pool's candidates the last of `train._networks`)."""
    from smalldata.backbones import DEFAULT_BACKBONE, installed

    return backbone or (installed(modality) or [DEFAULT_BACKBONE[modality]])[-1]


def embed_pool_on_ray(pool, backbone: str | None, address: str, *, progress: Progress = QUIET) -> int:
    """`train --unlabeled POOL --ray ADDRESS`: the pool's embeddings computed on the cluster and kept
    in this machine's cache, so that training embeds nothing of the pool itself."""
    return embed_on_ray(pool.inputs, pool.keys, pool_backbone(pool.modality, backbone), address, progress=progress)
