"""ONNX export: file size, and predict latency per image with ONNX Runtime alone against `smalldata predict`.

    flock /tmp/smalldata-cpu.lock .venv/bin/python -m bench.export

Two image models on the demo's 10 Fashion-MNIST train images per class: logistic regression on
Lite0, and the default two-backbone model (the average of logistic regressions on Lite0 and Lite2).
Each is exported with `smalldata export`, then 200 Fashion-MNIST test PNGs are classified:

- ONNX Runtime alone, in a process that cannot import smalldata: PIL decoding and the resize the
  file's metadata documents, then the graph, with the session options smalldata uses (no spin-waiting:
  on these shared cores a spinning thread waits on the others); one image at a time (median and 90th percentile of
  the milliseconds per image), and all 200 in batches of 25 (src/smalldata/onnx_runner.py);
- `smalldata predict MODEL FOLDER --json` on the 200 (one process, start-up included), and on one image;
- `Model.predict_proba` in-process, one image at a time (other images, none cached before).

Results go to bench/results/export.json; a markdown summary is printed.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
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
N_IMAGES = 200

# smalldata's stand-alone runner, with smalldata refused at import: ONNX Runtime, PIL and numpy alone
RUNNER = ROOT / "src" / "smalldata" / "onnx_runner.py"
WITHOUT_SMALLDATA = f"""
import importlib.abc, runpy, sys


class NoSmalldata(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "smalldata":
            raise ImportError("ONNX Runtime alone")


sys.meta_path.insert(0, NoSmalldata())
runpy.run_path({str(RUNNER)!r}, run_name="__main__")
"""


def make_models(work: Path) -> dict[str, Path]:
    from smalldata.data import load_image_folder
    from smalldata.ensemble import AveragedLogisticRegression
    from smalldata.features import embed
    from smalldata.heads import logistic_regression_head
    from smalldata.model import Model

    images, labels = read_fashion_mnist("train")
    data = load_image_folder(write_png_folder(images, labels, work / "train", sample_per_class(labels, 10)))
    both = "efficientnet-lite0+efficientnet-lite2"
    lite0 = logistic_regression_head().fit(embed(data.inputs, "efficientnet-lite0"), data.labels)
    average = AveragedLogisticRegression(widths=(1280, 1280)).fit(embed(data.inputs, both), data.labels)
    return {"logistic regression on efficientnet-lite0":
                Model(data.classes, "image", "efficientnet-lite0", "logistic regression", lite0).save(work / "lite0"),
            "average of logistic regressions on lite0 and lite2 (the default)":
                Model(data.classes, "image", both, "average of logistic regressions", average).save(work / "both")}


def timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, done.stdout


def in_process_ms(folder: Path, paths: list[Path]) -> float:
    from smalldata.model import Model

    model = Model.load(folder)
    model.predict_proba(paths[:1])  # loads the networks
    times = []
    for path in paths[1:]:
        start = time.perf_counter()
        model.predict_proba([path])
        times.append(1000 * (time.perf_counter() - start))
    return round(statistics.median(times), 1)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    os.environ["SMALLDATA_CACHE"] = str(work / "cache")  # a cache of its own: no embedding of the test images is there
    smalldata = [sys.executable, "-m", "smalldata"]
    results = {"machine": machine(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
               "load_average_at_start": os.getloadavg()[0], "images": N_IMAGES, "models": {}}
    try:
        images, labels = read_fashion_mnist("test")
        test = write_png_folder(images, labels, work / "test", range(N_IMAGES))
        # other images for the in-process timing: none of them embedded (and cached) by the runs before
        fresh = sorted(write_png_folder(images, labels, work / "fresh", range(N_IMAGES, N_IMAGES + 100)).rglob("*.png"))
        paths = sorted(test.rglob("*.png"))
        (work / "paths.json").write_text(json.dumps([str(p) for p in paths]))
        for i, (name, folder) in enumerate(make_models(work).items()):
            graph = work / f"{folder.name}.onnx"
            export_s, _ = timed([*smalldata, "export", str(folder), "--out", str(graph), "-q"])
            ort_alone = json.loads(timed([sys.executable, "-c", WITHOUT_SMALLDATA, str(graph), str(work / "paths.json"), "--time"])[1])
            folder_s, output = timed([*smalldata, "predict", str(folder), str(test), "--json"])
            assert len(json.loads(output)) == N_IMAGES
            one_s, _ = timed([*smalldata, "predict", str(folder), str(paths[0]), "--json"])
            results["models"][name] = {
                "onnx_mib": round(graph.stat().st_size / 2**20, 1), "export_s": round(export_s, 1),
                "onnxruntime_alone": ort_alone,
                "smalldata_predict_200_s": round(folder_s, 1),
                "smalldata_predict_ms_per_image": round(1000 * folder_s / N_IMAGES, 1),
                "smalldata_predict_one_image_s": round(one_s, 1),
                "model_predict_proba_one_at_a_time_p50_ms": in_process_ms(folder, fresh[50 * i:50 * i + 50]),
            }
        results["load_average_at_end"] = os.getloadavg()[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "export.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print("\n| model | ONNX file | ONNX Runtime alone, one image (p50 / p90) | ONNX Runtime alone, batches of 25 "
          "| `smalldata predict`, 200 images | `smalldata predict`, one image | `Model.predict_proba`, one image (p50) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results["models"].items():
        o = r["onnxruntime_alone"]
        print(f"| {name} | {r['onnx_mib']} MiB | {o['one_at_a_time_p50_ms']} / {o['one_at_a_time_p90_ms']} ms "
              f"| {o['batches_of_25_ms_per_input']} ms/image | {r['smalldata_predict_200_s']} s ({r['smalldata_predict_ms_per_image']} "
              f"ms/image) | {r['smalldata_predict_one_image_s']} s | {r['model_predict_proba_one_at_a_time_p50_ms']} ms |")


if __name__ == "__main__":
    main()
