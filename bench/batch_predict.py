"""Batch prediction to a CSV: images per second, peak memory, and the overhead of a 2-node Ray cluster.

    flock /tmp/smalldata-cpu.lock .venv/bin/python -m bench.batch_predict [--skip-ray]

The 10,000 Fashion-MNIST test images (Debian's dataset-fashion-mnist) are written as PNG files in
class folders, as `smalldata.demo` writes them; the model is logistic regression on Lite0 embeddings
of 10 train images per class (the demo's draw). Each run is the command a user types,
``smalldata predict MODEL FOLDER --out predictions.csv -q``, in its own process, timed from start to
exit (Python and the model's start-up included) with its peak resident memory from the kernel
(`wait4`):

(a) local, on the first 1,000 images (a folder of links to them) and on all 10,000: the same peak
    memory at both sizes is the streaming working; the rate is images / wall time;
(b) the same 10,000 with ``--ray auto`` on a Ray cluster of a head and one more node (each given one
    CPU) started on loopback in a network namespace of its own, as tests/test_scale.py does; the
    overhead ratio is its wall time against the local run's. On 2 cores the two nodes share the CPUs
    the local run has alone, so it cannot be faster: the ratio is what Ray's scheduling, actor
    start-up and data transfer cost.

Results go to bench/results/batch_predict.json; a markdown summary is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import machine
from smalldata.demo import read_fashion_mnist, sample_per_class, write_png_folder

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
RAY_SCRIPT = """
set -e
ip link set lo up
export PATH="{bin}:$PATH"
temp=$(mktemp -d /tmp/sd-ray-XXXX)
node="--num-cpus=1 --object-store-memory=500000000 --disable-usage-stats"
ray start --head --node-ip-address=127.0.0.1 --port=6379 --include-dashboard=false --temp-dir="$temp" $node > {work}/head.log 2>&1
ray start --address=127.0.0.1:6379 $node > {work}/node.log 2>&1
cd {root}
RAY_ADDRESS=127.0.0.1:6379 python -m bench.batch_predict measure {work}/ray.json -- \\
    python -m smalldata predict {model} {images} --out {work}/ray.csv --ray auto -q
rm -rf "$temp"
"""


def measure(command: list[str]) -> dict:
    """Wall time and peak resident memory (the kernel's, from wait4) of one command run to its end."""
    started = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(command)} failed ({os.waitstatus_to_exitcode(status)})")
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def compare(a: Path, b: Path) -> dict:
    """How two prediction CSVs differ: byte for byte, rows, labels, the largest probability difference."""
    import csv

    with open(a, newline="") as one, open(b, newline="") as other:
        rows_a, rows_b = list(csv.reader(one))[1:], list(csv.reader(other))[1:]
    return {"bytes_identical": a.read_bytes() == b.read_bytes(), "rows": [len(rows_a), len(rows_b)],
            "same_inputs_and_labels": [x[:2] for x in rows_a] == [y[:2] for y in rows_b],
            "max_probability_difference": max(abs(float(p) - float(q)) for x, y in zip(rows_a, rows_b)
                                              for p, q in zip(x[2:-1], y[2:-1]) if p and q)}


def make_model(folder: Path, work: Path) -> Path:
    from smalldata.data import load_image_folder
    from smalldata.features import embed
    from smalldata.heads import logistic_regression_head
    from smalldata.model import Model

    images, labels = read_fashion_mnist("train")
    train = write_png_folder(images, labels, work / "train", sample_per_class(labels, 10))
    data = load_image_folder(train)
    head = logistic_regression_head().fit(embed(data.inputs, "efficientnet-lite0"), data.labels)
    return Model(data.classes, "image", "efficientnet-lite0", "logistic regression", head).save(folder)


def predict(model: Path, images: Path, out: Path) -> dict:
    return measure([sys.executable, "-m", "smalldata", "predict", str(model), str(images), "--out", str(out), "-q"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    os.environ["SMALLDATA_CACHE"] = str(work / "cache")  # a cache of its own: nothing of the user's is read
    try:
        model = make_model(work / "model", work)
        images, labels = read_fashion_mnist("test")
        test = write_png_folder(images, labels, work / "test", range(len(labels)))
        first = work / "first-1000"
        for path in sorted(test.rglob("*.png"))[:1000]:  # the first 1,000 in the order predict walks them
            (first / path.parent.name).mkdir(parents=True, exist_ok=True)
            os.link(path, first / path.parent.name / path.name)
        results = {"machine": machine(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
                   "load_average_at_start": os.getloadavg()[0],  # the 2 cores are shared: say how busy they were
                   "model": "logistic regression on efficientnet-lite0, 10 Fashion-MNIST train images per class",
                   "local_1000": predict(model, first, work / "p1000.csv"),
                   "local_10000": predict(model, test, work / "p10000.csv")}
        rows = (work / "p10000.csv").read_text().count("\n") - 1
        assert rows == 10_000, rows
        for key, n in (("local_1000", 1000), ("local_10000", 10_000)):
            results[key]["images_per_s"] = round(n / results[key]["wall_s"], 1)
        # Steady rate: the 9,000 more images of the larger run over the time they added (start-up cancels).
        results["local_steady_images_per_s"] = round(
            9000 / (results["local_10000"]["wall_s"] - results["local_1000"]["wall_s"]), 1)
        labels_of = {line.split(",")[0]: line.split(",")[1] for line in (work / "p10000.csv").read_text().splitlines()[1:]}
        results["accuracy"] = round(sum(Path(k).parent.name == v for k, v in labels_of.items()) / len(labels_of), 4)
        if not args.skip_ray:
            script = RAY_SCRIPT.format(bin=Path(sys.executable).parent, work=work, root=ROOT, model=model, images=test)
            subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "bash", "-c", script], check=True)
            results["ray_2_nodes_10000"] = json.loads((work / "ray.json").read_text())
            results["ray_2_nodes_10000"]["images_per_s"] = round(10_000 / results["ray_2_nodes_10000"]["wall_s"], 1)
            results["ray_overhead_ratio"] = round(results["ray_2_nodes_10000"]["wall_s"] / results["local_10000"]["wall_s"], 2)
            results["ray_against_local"] = compare(work / "ray.csv", work / "p10000.csv")
        results["load_average_at_end"] = os.getloadavg()[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "batch_predict.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["measure"]:  # inside the Ray script's namespace: time the command after --
        at = sys.argv.index("--")
        Path(sys.argv[2]).write_text(json.dumps(measure(sys.argv[at + 1:])))
    else:
        main()
