"""Run a file `smalldata export` wrote with ONNX Runtime, PIL and tokenizers alone: it imports nothing of
smalldata, so it can be copied anywhere, and it is the reference for the preprocessing the file's
metadata documents (tests/test_export.py and bench/export.py run it as it is).

    python onnx_runner.py model.onnx inputs.json [--time]

inputs.json holds a list of image paths or texts. Prints JSON: the labels and one row of probabilities
per input; with --time, milliseconds per input one at a time (median, 90th percentile) and in batches.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

BATCH = 25


def session_of(graph: str):
    options = ort.SessionOptions()
    # no spin-waiting between operators, as smalldata runs its networks: on shared cores a spinning
    # thread holds a core the others wait for
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def pixels(path: str, size: int) -> np.ndarray:
    """The image upright by its EXIF orientation, RGB, its shorter side resized to `size` (bicubic,
    reducing_gap=3.0), the centre square cropped: uint8, height x width x 3."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
    scale = size / min(image.size)
    width, height = max(size, round(image.size[0] * scale)), max(size, round(image.size[1] * scale))
    image = image.resize((width, height), Image.BICUBIC, reducing_gap=3.0)
    left, top = (width - size) // 2, (height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def feeds(session, graph: str, inputs: list[str]) -> dict[str, np.ndarray]:
    """The graph's inputs for `inputs` (image paths or texts), as its metadata says to make them."""
    meta = session.get_modelmeta().custom_metadata_map
    if meta["modality"] == "image":
        return {spec.name: np.stack([pixels(path, spec.shape[1]) for path in inputs]) for spec in session.get_inputs()}
    from tokenizers import Tokenizer

    found = {}
    for file, names in json.loads(meta["tokenizers"]).items():  # tokenizer file beside the graph -> its inputs
        encodings = Tokenizer.from_file(str(Path(graph).parent / file)).encode_batch(inputs)
        found[names["input_ids"]] = np.array([e.ids for e in encodings], dtype=np.int64)
        found[names["attention_mask"]] = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return found


def probabilities(session, graph: str, inputs: list[str]) -> np.ndarray:
    return np.concatenate([session.run(["probabilities"], feeds(session, graph, inputs[i:i + BATCH]))[0]
                           for i in range(0, len(inputs), BATCH)])


def timings(session, graph: str, inputs: list[str]) -> dict:
    probabilities(session, graph, inputs[:1])  # the first run allocates
    one = []
    for item in inputs:
        start = time.perf_counter()
        probabilities(session, graph, [item])
        one.append(1000 * (time.perf_counter() - start))
    start = time.perf_counter()
    probabilities(session, graph, inputs)
    batched = 1000 * (time.perf_counter() - start) / len(inputs)
    one.sort()
    return {"one_at_a_time_p50_ms": round(statistics.median(one), 1),
            "one_at_a_time_p90_ms": round(one[int(0.9 * len(one))], 1), f"batches_of_{BATCH}_ms_per_input": round(batched, 1)}


def main(argv: list[str]) -> None:
    graph, inputs = argv[0], json.loads(Path(argv[1]).read_text())
    started = time.perf_counter()
    session = session_of(graph)
    answer = {"session_load_s": round(time.perf_counter() - started, 2),
              "labels": json.loads(session.get_modelmeta().custom_metadata_map["labels"])}
    if "--time" in argv:
        answer |= timings(session, graph, inputs)
    else:
        answer["probabilities"] = probabilities(session, graph, inputs).tolist()
    print(json.dumps(answer))


if __name__ == "__main__":
    main(sys.argv[1:])
