"""`--ray`: batch prediction and pool embedding on a real local Ray cluster of two nodes.

The cluster runs in a network namespace of its own (only loopback: Ray would otherwise advertise the
machine's outward address, and its nodes would talk over it) and a PID namespace of its own (when the
script ends, the kernel ends every process the cluster started: nothing is left running).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from smalldata.cli import app
from tests.conftest import DATA
from tests.test_batch_predict import save_lite0_model
from tests.test_cli import _text_model

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="Ray is not installed (pip install -e '.[dev]' installs it)")
runner = CliRunner()
NODE = "--num-cpus=1 --object-store-memory=100000000 --disable-usage-stats"

CLUSTER_SCRIPT = """
set -e
ip link set lo up
export PATH="{bin}:$PATH"
temp=$(mktemp -d /tmp/sd-ray-XXXX)  # short: Ray's socket paths must fit in 107 characters
ray start --head --node-ip-address=127.0.0.1 --port=6379 --include-dashboard=false --temp-dir="$temp" {node} > {work}/head.log 2>&1
ray start --address=127.0.0.1:6379 {node} > {work}/node.log 2>&1
for i in $(seq 60); do ray status --address=127.0.0.1:6379 > {work}/status.txt 2>&1 && [ "$(grep -c ' node_' {work}/status.txt)" = 2 ] && break; sleep 1; done
cd {work}
RAY_ADDRESS=127.0.0.1:6379 python -m smalldata predict {model} {images} --out {work}/ray.csv --ray auto --json > {work}/predict.json
RAY_ADDRESS=127.0.0.1:6379 python -m smalldata predict {text_model} {texts} --out {work}/ray-texts.csv --ray auto -q
python -m smalldata train {train} --unlabeled {pool} --backbone efficientnet-lite0 --ray 127.0.0.1:6379 \\
    --finetune never --no-curve --out {work}/trained > {work}/train.txt
rm -rf "$temp"
"""


def _can_make_namespaces() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--net", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, check=False).returncode == 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def image_model(fashion_folder, tmp_path_factory) -> Path:
    return save_lite0_model(fashion_folder, tmp_path_factory.mktemp("scale") / "model")


def test_an_address_that_does_not_answer_fails_fast_and_writes_nothing(image_model, fashion_test_folder, tmp_path,
                                                                       monkeypatch):
    out = tmp_path / "p.csv"
    started = time.monotonic()
    result = runner.invoke(app, ["predict", str(image_model), str(fashion_test_folder), "--out", str(out),
                                 "--ray", f"127.0.0.1:{_free_port()}"])
    assert result.exit_code == 2 and "no Ray cluster answers at 127.0.0.1:" in result.stderr
    assert time.monotonic() - started < 15 and not out.exists()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # where `auto` looks for a cluster started here: none
    result = runner.invoke(app, ["predict", str(image_model), str(fashion_test_folder), "--out", str(out), "--ray", "auto"])
    assert result.exit_code == 2 and "no Ray cluster answers at 'auto'" in result.stderr and not out.exists()
    # auto, where RAY_ADDRESS (or the file `ray start` leaves) names a cluster gone: at once too.
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{_free_port()}")
    started = time.monotonic()
    result = runner.invoke(app, ["predict", str(image_model), str(fashion_test_folder), "--out", str(out), "--ray", "auto"])
    assert result.exit_code == 2 and "no Ray cluster answers at 127.0.0.1:" in result.stderr
    assert time.monotonic() - started < 15 and not out.exists()
    result = runner.invoke(app, ["predict", str(image_model), str(fashion_test_folder), "--ray", "nowhere"])
    assert result.exit_code == 2 and "give --out" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(not _can_make_namespaces(), reason="needs unshare and the right to make namespaces (root)")
def test_a_two_node_cluster_writes_the_same_csv_and_the_same_cache(image_model, fashion_folder, fashion_test_folder,
                                                                   fashion, private_cache, tmp_path, monkeypatch):
    from smalldata.backbones import cache_name, get_backbone
    from smalldata.batch_predict import predict_to_csv
    from smalldata.data import load_dataset
    from smalldata.demo import write_png_folder
    from smalldata.features import EmbeddingCache, embed
    from smalldata.unlabeled import load_pool

    images = shutil.copytree(fashion_test_folder, tmp_path / "images")
    (images / "bag" / "zz-broken.png").write_bytes(b"not an image")
    pool = write_png_folder(*fashion, tmp_path / "pool", range(5000, 5040))
    local = predict_to_csv(image_model, [images], tmp_path / "local.csv")
    text_model, _ = _text_model(tmp_path / "text-model", ["sport", "tech", "weather"])
    texts = tmp_path / "texts.csv"
    shutil.copy(DATA / "topics.csv", texts)  # its text column, 24 texts
    predict_to_csv(text_model, [texts], tmp_path / "local-texts.csv")
    # The cluster's own cache: empty of embeddings (only the exported network is copied, to save its
    # export), so whatever the pool's vectors are there, Ray's workers computed them.
    cluster_cache = tmp_path / "cluster-cache"
    shutil.copytree(private_cache / "onnx", cluster_cache / "onnx")
    work = tmp_path / "work"
    work.mkdir()
    script = CLUSTER_SCRIPT.format(bin=Path(sys.executable).parent, node=NODE, work=work, model=image_model,
                                   images=images, train=fashion_folder, pool=pool, text_model=text_model, texts=texts)
    monkeypatch.setenv("SMALLDATA_CACHE", str(cluster_cache))
    ran = subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "bash", "-c", script],
                         capture_output=True, text=True, timeout=600, check=False)
    logs = "".join(f"\n--- {f.name}\n{f.read_text()[-3000:]}" for f in sorted(work.glob("*.*")) if f.suffix != ".csv")
    assert ran.returncode == 0, ran.stderr[-5000:] + logs
    assert (work / "status.txt").read_text().count(" node_") == 2  # the head and one more node
    summary = json.loads((work / "predict.json").read_text())
    assert summary["device"] == "a Ray cluster" and (summary["written"], summary["errors"]) == (local.written, 1)
    # Byte for byte: the workers are given the local run's batches (ONNX Runtime's last digits move
    # with a batch's make-up), and write through the same rows.
    assert (work / "ray.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert (work / "ray-texts.csv").read_bytes() == (tmp_path / "local-texts.csv").read_bytes()
    assert (work / "ray-texts.csv").read_text().count("\n") == 25
    # The pool: every vector in the cluster's cache once (training found them there, computed none
    # again), and equal to the ones embedded here.
    monkeypatch.setenv("SMALLDATA_CACHE", str(private_cache))
    backbone = get_backbone("efficientnet-lite0")
    shards = sorted((cluster_cache / "embeddings" / cache_name(backbone)).glob("*.npz"))
    keys = [key for shard in shards for key in np.load(shard)["keys"].tolist()]
    assert len(keys) == len(set(keys))
    cache = EmbeddingCache(cache_name(backbone), root=cluster_cache)
    cache.refresh()
    unlabeled = load_pool(pool, load_dataset(fashion_folder))
    assert len(unlabeled) == 40
    here = embed(unlabeled.inputs, backbone, keys=unlabeled.keys)
    there = np.stack([cache.get(key) for key in unlabeled.keys])
    assert np.abs(here - there).max() < 1e-5
    assert "self-training" in (work / "train.txt").read_text()  # the pool was used by training
