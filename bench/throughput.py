"""Throughput: images and texts embedded per second end to end, and the wall time of `smalldata train`.

    .venv/bin/python -m bench.throughput [--repeats 3] [--skip-cli]

(a) images/s with efficientnet-lite0, JPEG decoding and resizing included, on flowers12 train (720
    images, 224x224; 719 once the loader drops one exact duplicate) and on the first 720 clothing10
    train images in the loader's sorted order (mostly 400x533);
(b) texts/s with all-MiniLM-L6-v2 on the first 2000 sst2 train sentences;
both with ``embed(..., use_cache=False)`` after one warm-up call (which loads the model);
(c) wall time of ``smalldata train DIR --out OUT -q`` on flowers12 at 10 images per class (the first
    10 sorted files of each class), once with an empty SMALLDATA_CACHE (the ONNX export of the backbone
    happens then) and once more with the same, now warm, cache. The ONNX export alone is timed in a
    separate process on another empty cache, to show its share of the cold run.

Results go to bench/results/throughput.json; a markdown summary is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.common import DATASETS, load_split, machine
from smalldata.features import embed

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CLI = ROOT / ".venv" / "bin" / "smalldata"
N_IMAGES = 720
N_TEXTS = 2000
WARM_UP = 16
CLI_PER_CLASS = 10


def rate(items, backbone: str, repeats: int) -> dict:
    embed(items[:WARM_UP], backbone, use_cache=False)  # loads the model (and its ONNX session)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        vectors = embed(items, backbone, use_cache=False)
        seconds.append(time.perf_counter() - start)
        assert len(vectors) == len(items)
    per_second = [len(items) / s for s in seconds]
    return {
        "backbone": backbone,
        "n": len(items),
        "seconds": [round(s, 3) for s in seconds],
        "per_second": [round(r, 1) for r in per_second],
        "median_per_second": round(statistics.median(per_second), 1),
    }


def time_command(command: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, done


def cli_train(scratch: Path) -> dict:
    source = DATASETS / "flowers12" / "train"
    data = scratch / "flowers12-10"
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        target = data / folder.name
        target.mkdir(parents=True)
        for file in sorted(p for p in folder.iterdir() if p.is_file())[:CLI_PER_CLASS]:
            shutil.copy2(file, target / file.name)
    n_images = sum(1 for p in data.rglob("*") if p.is_file())

    env = dict(os.environ, SMALLDATA_CACHE=str(scratch / "cache"))
    runs = {}
    for label in ("cold", "warm"):
        out = scratch / f"model-{label}"
        seconds, done = time_command([str(CLI), "train", str(data), "--out", str(out), "-q"], env)
        if done.returncode != 0:
            sys.exit(f"smalldata train failed ({label}):\n{done.stderr}")
        description = json.loads((out / "model.json").read_text())
        runs[label] = {"seconds": round(seconds, 2), "chosen": description["head"]["name"]}

    # What the cold run spends on the one-off ONNX export, timed alone on another empty cache.
    export_env = dict(os.environ, SMALLDATA_CACHE=str(scratch / "export-only-cache"))
    probe = ("import time; from smalldata.backbones import get_backbone; b = get_backbone('efficientnet-lite0'); "
             "t = time.perf_counter(); b.onnx_path(); print(time.perf_counter() - t)")
    done = subprocess.run([sys.executable, "-c", probe], env=export_env, capture_output=True, text=True, check=True)
    export_seconds = float(done.stdout.strip().splitlines()[-1])

    # The fixed cost of starting the CLI at all (imports), for scale.
    startup, _ = time_command([str(CLI), "--help"], env)
    return {
        "data": f"flowers12 train, first {CLI_PER_CLASS} sorted files of each class ({n_images} images)",
        "command": "smalldata train DIR --out OUT -q",
        **runs,
        "onnx_export_seconds": round(export_seconds, 2),
        "cli_help_seconds": round(startup, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per measurement (after one warm-up)")
    parser.add_argument("--skip-cli", action="store_true", help="leave out the `smalldata train` timing")
    args = parser.parse_args()

    flowers = load_split("flowers12", "train")
    clothing = load_split("clothing10", "train")
    sst2 = load_split("sst2", "train")
    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "images": {
            "flowers12": rate(list(flowers.inputs[:N_IMAGES]), "efficientnet-lite0", args.repeats),
            "clothing10": rate(list(clothing.inputs[:N_IMAGES]), "efficientnet-lite0", args.repeats),
        },
        "texts": {"sst2": rate(list(sst2.inputs[:N_TEXTS]), "all-MiniLM-L6-v2", args.repeats)},
    }
    print(f"images/s: flowers12 {results['images']['flowers12']['median_per_second']}, "
          f"clothing10 {results['images']['clothing10']['median_per_second']}; "
          f"texts/s: sst2 {results['texts']['sst2']['median_per_second']}", flush=True)
    if not args.skip_cli:
        with tempfile.TemporaryDirectory(prefix="smalldata-bench-") as scratch:
            results["cli_train"] = cli_train(Path(scratch))

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "throughput.json").write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))


def report(results: dict) -> str:
    lines = ["| measurement | items | per second (median) | passes (per second) | target |", "|---|---|---|---|---|"]
    for name, r in results["images"].items():
        lines.append(f"| images embedded end to end, {r['backbone']}, {name} | {r['n']} | **{r['median_per_second']}** | "
                     f"{', '.join(map(str, r['per_second']))} | >= 100/s |")
    for name, r in results["texts"].items():
        lines.append(f"| texts embedded, {r['backbone']}, {name} | {r['n']} | **{r['median_per_second']}** | "
                     f"{', '.join(map(str, r['per_second']))} | >= 150/s |")
    if "cli_train" in results:
        c = results["cli_train"]
        lines += [
            "",
            f"`{c['command']}` on {c['data']}:",
            "",
            "| run | wall time | chosen | target |",
            "|---|---|---|---|",
            f"| cold cache (includes the ONNX export) | **{c['cold']['seconds']} s** | {c['cold']['chosen']} | < 30 s |",
            f"| warm cache (same cache again) | {c['warm']['seconds']} s | {c['warm']['chosen']} | |",
            f"| ONNX export alone (separate process, empty cache) | {c['onnx_export_seconds']} s | | |",
            f"| `smalldata --help` (CLI start-up) | {c['cli_help_seconds']} s | | |",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
