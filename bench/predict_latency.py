"""In-process prediction latency of a served model, per image backbone: what a frozen head on
Lite0, on Lite2, or on both side by side costs each request.

    flock /tmp/smalldata-cpu.lock .venv/bin/python -m bench.predict_latency efficientnet-lite0
    (one backbone per process, so no run warms or slows the next; run it once per backbone)

A frozen logistic regression is trained on clothing10 at 5 per class (seed 0), then the service's
`Predictor` answers uploaded bytes, as the API would (decoding, the backbone's batcher, the head):
50 single-image calls after 10 warm-up calls, and 32 images in one call (median of 5, after one).
Results merge into bench/results/predict-latency.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import smalldata
from bench.common import draw, load_split, machine
from smalldata.service.predictor import Predictor

RESULT = Path(__file__).resolve().parent / "results" / "predict-latency.json"


def measure(backbone: str) -> dict:
    sample = draw(load_split("clothing10", "train"), 5, 0)
    uploads = [Path(path).read_bytes() for path in list(load_split("clothing10", "test").inputs)[:60]]
    predictor = Predictor(smalldata.train(sample, backbone=backbone, curve=False))
    predictor.warm_up()
    for data in uploads[:10]:
        predictor.images([data])
    single = []
    for data in uploads[10:]:
        start = time.perf_counter()
        predictor.images([data])
        single.append(1000 * (time.perf_counter() - start))
    batches = []
    for _ in range(6):
        start = time.perf_counter()
        predictor.images(uploads[:32])
        batches.append(time.perf_counter() - start)
    batch = float(np.median(batches[1:]))  # the first call of a batch this size is the warm-up
    return {"backbone": backbone, "single_p50_ms": round(float(np.median(single)), 1),
            "single_p90_ms": round(float(np.percentile(single, 90)), 1), "single_n": len(single),
            "batch_32_ms": round(1000 * batch), "images_per_second": round(32 / batch)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.predict_latency",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("backbone", help="an image backbone, e.g. efficientnet-lite0+efficientnet-lite2")
    result = measure(parser.parse_args().backbone)
    print(f"{result['backbone']}: one image p50 {result['single_p50_ms']} ms, p90 {result['single_p90_ms']} ms "
          f"({result['single_n']} calls); 32 images in one call {result['batch_32_ms']} ms "
          f"({result['images_per_second']} images/s)", flush=True)
    saved = json.loads(RESULT.read_text()) if RESULT.exists() else {"runs": {}}
    saved["machine"], saved["runs"][result["backbone"]] = machine(), result
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(saved, indent=1))


if __name__ == "__main__":
    main()
