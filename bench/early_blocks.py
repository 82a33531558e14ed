"""Issue 26's untried image candidate: pooled features of earlier blocks beside the last.

    .venv/bin/python -m bench.early_blocks run --sets flowers12 clothing10 --sizes 10 5        # development
    .venv/bin/python -m bench.early_blocks run --sets cifar10 fashion-mnist --sizes 10 5 \
        --variants "third s6 l2"                                                              # confirmation
    .venv/bin/python -m bench.early_blocks report --sets flowers12 clothing10 cifar10 fashion-mnist --sizes 10 5
    flock /tmp/smalldata-cpu.lock .venv/bin/python -m bench.early_blocks cost                  # ms per image

Each network of the automatic choice (EfficientNet-Lite0 and Lite2, the product's weights and
preprocessing) is exported here to one ONNX graph that returns, beside the product's embedding (the
head's output, global-average-pooled), the global average pool of the last block of stages 4, 5, 6
and 7 ("s4".."s7"; stage 7 is one block just before the head). Every image is embedded once per
network and cached under bench/results/early_blocks/ (rows keyed by the image's content hash).

On the draws of bench/choice.py (`common.draw`, seeds 0-4, the same pools and test splits) every
variant is fit once on the draw (logistic regression at C=1, as the product) and scored on the test
split; the baseline is the product's default for images at few examples, the average of the
logistic regressions on Lite0's and Lite2's final embeddings (`AveragedLogisticRegression`).
Variants:
  - "concat LAYERS SCALE": each member of the average sees its network's final embedding (raw, as in
    the product) with the pooled LAYERS beside it;
  - "third LAYERS SCALE": the two members unchanged, plus a third logistic regression on the pooled
    LAYERS of both networks side by side; three probabilities averaged.
SCALE says how each early part is put beside the final one: "z" standardised with the draw's mean
and std, "l2" each row L2-normalised; then each part is multiplied so that its mean row norm on the
draw equals that of its network's final embedding (an equal say under one C), or W times that with a
suffix "wW" (for "third", W is the third member's weight in the average instead).

Development sets (variants are chosen on these only): flowers12 and clothing10, 10 and 5 per class.
Confirmation sets (one variant, unchanged): cifar10 and Debian's Fashion-MNIST, 10 and 5 per class,
on bench.choice's test splits (2000 images each; `--test-cap` takes a smaller fixed subset). The
variant confirmed, "third s6 l2", was the best on the development rows at 10 per class (the size of
issue 26's targets); no variant gained on the development sets' four rows on average. Results:
bench/results/early_blocks/SET-SIZE.json (accuracy per draw for each variant); `report` prints the
tables again from them. `cost` times one image (batch 1) through the product's graph and through
this one, network by network, and the heads' predict_proba, the default's and the chosen variant's
(run it under the CPU lock).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

from bench.choice import BACKBONES, RESULTS as CHOICE_RESULTS, load
from bench.common import capped, draw
from smalldata.backbones import PIXEL_MEAN, PIXEL_STD, cpu_threads, get_backbone
from smalldata.data import Dataset
from smalldata.ensemble import AveragedLogisticRegression
from smalldata.evaluate import single_threaded_math
from smalldata.features import embed

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "early_blocks"
NETWORKS = BACKBONES["image"]
STAGES = ("s4", "s5", "s6", "s7")
OUTPUTS = ("final", *STAGES)
C = 1.0  # the product's C for images (smalldata.train.CORE_C)
LAYER_SETS = (("s6",), ("s5", "s6"), ("s4", "s5", "s6"))
# The first round: every layer set, both scalings, both forms, the early parts at an equal say.
VARIANTS = ("default",) + tuple(f"{form} {'+'.join(layers)} {scale}" for form in ("concat", "third")
                                for layers in LAYER_SETS for scale in ("z", "l2"))
# The second round, after the first showed equal weight too loud on clothing10: the best layer set and
# scaling of the first round at half and a quarter of the say ("wW": the early part's norm, or the
# third member's weight in the average, times W); and, to see what the early blocks know alone,
# the average of the two networks' logistic regressions on their s6 alone (not a candidate).
VARIANTS += tuple(f"{form} s6 l2 w{w}" for form in ("concat", "third") for w in ("0.5", "0.25")) + ("alone s6 l2",)
BATCH = 32


# ---- the graph: the product's embedding and the pooled stage ends --------------------------------

def stage_ends(net) -> dict[str, int]:
    """Index of the last block of each stage, by stage name ("s1".."s7"): a stage ends where the
    next block's width changes (EfficientNet's stages each have their own width)."""
    widths = [block._block_args.output_filters for block in net._blocks]
    ends = [i for i in range(len(widths)) if i == len(widths) - 1 or widths[i + 1] != widths[i]]
    return {f"s{k + 1}": i for k, i in enumerate(ends)}


def export(network: str, path: Path) -> None:
    import torch

    backbone = get_backbone(network)
    net = backbone.torch_model().eval()
    wanted = {index: name for name, index in stage_ends(net).items() if name in STAGES}

    class PooledStages(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, pixels):
            # The same arithmetic as backbones.export_pooled_features and EfficientNet.extract_features,
            # keeping the stage ends on the way.
            x = (pixels.permute(0, 3, 1, 2).float() - PIXEL_MEAN) / PIXEL_STD
            x = net._swish(net._bn0(net._conv_stem(x)))
            pooled = {}
            for index, block in enumerate(net._blocks):
                rate = net._global_params.drop_connect_rate
                x = block(x, drop_connect_rate=rate * float(index) / len(net._blocks) if rate else rate)
                if index in wanted:
                    pooled[wanted[index]] = x.mean(dim=(2, 3))
            x = net._swish(net._bn1(net._conv_head(x)))
            return (x.mean(dim=(2, 3)), *(pooled[name] for name in STAGES))

    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, backbone.image_size, backbone.image_size, 3, dtype=torch.uint8)
    partial = path.with_suffix(".partial")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(PooledStages().eval(), (dummy,), str(partial), input_names=["pixels"], output_names=list(OUTPUTS),
                          dynamic_axes={"pixels": {0: "batch"}, **{o: {0: "batch"} for o in OUTPUTS}},
                          opset_version=17, dynamo=False)
    partial.replace(path)


_SESSIONS: dict = {}


def session(network: str, threads: int | None = None):
    import onnxruntime as ort

    threads = threads or cpu_threads()
    if (network, threads) not in _SESSIONS:
        path = RESULTS / "onnx" / f"{network}.onnx"
        if not path.exists():
            export(network, path)
        options = ort.SessionOptions()  # as the product's ImageBackbone.session
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        _SESSIONS[network, threads] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return _SESSIONS[network, threads]


# ---- embeddings, cached by content key -----------------------------------------------------------

def features(name: str, dataset: Dataset, network: str) -> dict[str, np.ndarray]:
    """layer -> rows of `dataset` (in order), embedding only images not yet in the cache."""
    file = RESULTS / "embeddings" / f"{name}-{network}.npz"
    stored = dict(np.load(file)) if file.exists() else {"keys": np.array([], dtype=str)}
    index = {key: i for i, key in enumerate(stored["keys"].tolist())}
    missing, seen = [], set()
    for item, key in zip(dataset.inputs, dataset.keys):
        if key not in index and key not in seen:
            missing.append((item, key))
            seen.add(key)
    if missing:
        backbone, started = get_backbone(network), time.perf_counter()
        for start in range(0, len(missing), BATCH * 8):  # saved every 8 batches: an interrupted run keeps its work
            chunk = missing[start:start + BATCH * 8]
            rows = [session(network).run(None, {"pixels": backbone.pixels([item for item, _ in chunk[i:i + BATCH]])})
                    for i in range(0, len(chunk), BATCH)]
            fresh = {output: np.vstack([r[k] for r in rows]) for k, output in enumerate(OUTPUTS)}
            for output in OUTPUTS:
                stored[output] = np.vstack([stored[output], fresh[output]]) if output in stored else fresh[output]
            stored["keys"] = np.concatenate([stored["keys"], np.array([key for _, key in chunk])])
            file.parent.mkdir(parents=True, exist_ok=True)
            np.savez(file.with_suffix(".partial.npz"), **stored)
            file.with_suffix(".partial.npz").replace(file)
        print(f"  {network}: embedded {len(missing)} images of {name} in {time.perf_counter() - started:.0f} s", flush=True)
        index = {key: i for i, key in enumerate(stored["keys"].tolist())}
    rows = [index[key] for key in dataset.keys]
    return {output: stored[output][rows] for output in OUTPUTS}


# ---- the variants --------------------------------------------------------------------------------

def _mean_norm(X: np.ndarray) -> float:
    return float(np.linalg.norm(X, axis=1).mean())


def scaled_part(X: np.ndarray, X_test: np.ndarray, how: str, target: float) -> tuple[np.ndarray, np.ndarray]:
    """One early part, normalised on the draw (`how`), then given the final embedding's mean norm."""
    if how == "z":
        mean, std = X.mean(axis=0), X.std(axis=0) + 1e-6
        X, X_test = (X - mean) / std, (X_test - mean) / std
    else:
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
        X_test = X_test / np.linalg.norm(X_test, axis=1, keepdims=True)
    factor = target / _mean_norm(X)
    return X * factor, X_test * factor


def _lr_proba(X, y, X_test):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=3000).fit(X, y).predict_proba(X_test)


def variant_proba(variant: str, train: dict, test: dict, y) -> np.ndarray:
    """Test probabilities of `variant`; `train`/`test` map network -> layer -> rows."""
    if variant == "default":
        X = np.hstack([train[n]["final"] for n in NETWORKS])
        head = AveragedLogisticRegression(widths=tuple(train[n]["final"].shape[1] for n in NETWORKS), C=C).fit(X, y)
        return head.predict_proba(np.hstack([test[n]["final"] for n in NETWORKS]))
    form, layers, how, *rest = variant.split(" ")
    layers, weight = layers.split("+"), float(rest[0][1:]) if rest else 1.0
    early = {n: [scaled_part(train[n][layer], test[n][layer], how, (weight if form == "concat" else 1.0)
                             * _mean_norm(train[n]["final"])) for layer in layers] for n in NETWORKS}
    if form == "alone":
        return np.mean([_lr_proba(np.hstack([p[0] for p in early[n]]), y, np.hstack([p[1] for p in early[n]]))
                        for n in NETWORKS], axis=0)
    if form == "concat":
        return np.mean([_lr_proba(np.hstack([train[n]["final"], *(p[0] for p in early[n])]), y,
                                  np.hstack([test[n]["final"], *(p[1] for p in early[n])])) for n in NETWORKS], axis=0)
    members = [_lr_proba(train[n]["final"], y, test[n]["final"]) for n in NETWORKS]
    members.append(weight * _lr_proba(np.hstack([p[0] for n in NETWORKS for p in early[n]]), y,
                                      np.hstack([p[1] for n in NETWORKS for p in early[n]])))
    return np.sum(members, axis=0) / (2 + weight)


def run(name: str, sizes, seeds, variants, test_cap: int) -> None:
    pool, test = load(name, "train"), capped(load(name, "test"), test_cap)
    samples = {(size, seed): draw(pool, size, seed) for size in sizes for seed in seeds}
    # Every image any draw needs, embedded in one pass per network.
    needed = {}
    for sample in samples.values():
        needed.update(zip(sample.keys, zip(sample.inputs, sample.labels)))
    union = Dataset([v[0] for v in needed.values()], [v[1] for v in needed.values()], "image", list(needed))
    print(f"{name}: {len(union)} training images for {len(samples)} draws, {len(test)} test images", flush=True)
    for network in NETWORKS:
        features(name, union, network)
    test_features = {n: features(name, test, n) for n in NETWORKS}
    for network in NETWORKS:  # the final rows must be the product's embedding (its cache has these already)
        product = embed(test.inputs[:16], network, keys=test.keys[:16])
        print(f"  {network}: largest difference from the product's embedding "
              f"{np.abs(product - test_features[network]['final'][:16]).max():.1e}", flush=True)
    y_test = np.asarray(test.labels)
    for size in sizes:
        file = RESULTS / f"{name}-{size}.json"
        results = json.loads(file.read_text()) if file.exists() else {}
        for seed in seeds:
            sample = samples[size, seed]
            train = {n: features(name, sample, n) for n in NETWORKS}
            y = np.asarray(sample.labels)
            line = []
            with single_threaded_math():
                for variant in variants:
                    proba = variant_proba(variant, train, test_features, y)
                    accuracy = float(np.mean(np.unique(y)[proba.argmax(1)] == y_test))
                    results.setdefault(variant, {})[str(seed)] = accuracy
                    line.append(f"{variant} {100 * accuracy:.1f}")
            print(f"{name} {size}/class seed {seed}: " + ", ".join(line), flush=True)
            reference = CHOICE_RESULTS / f"{name}-{size}-{seed}.npz"
            if reference.exists():  # bench.choice's saved default on the same draw, where the test split is the same
                saved = np.load(reference, allow_pickle=True)
                if len(saved["y_test"]) == len(y_test):
                    proba = np.mean([saved[f"lr-C1@{n}|test"] for n in NETWORKS], axis=0)
                    print(f"  (bench.choice's saved default on this draw: "
                          f"{100 * np.mean(saved['classes'][proba.argmax(1)] == saved['y_test']):.1f})", flush=True)
            RESULTS.mkdir(parents=True, exist_ok=True)
            file.write_text(json.dumps(results, indent=1))


def report(sets, sizes, seeds) -> None:
    rows = []
    for name in sets:
        for size in sizes:
            file = RESULTS / f"{name}-{size}.json"
            if file.exists():
                rows.append((name, size, json.loads(file.read_text())))
    gains: dict[str, list[float]] = {}
    for name, size, results in rows:
        base = results["default"]
        draws = [str(s) for s in seeds if str(s) in base]
        print(f"\n{name}, {size} per class, draws {','.join(draws)} (test accuracy %; difference from the default per draw)")
        print("| variant | mean ± std | vs default | per draw |")
        print("|---|---|---|---|")
        for variant, scores in results.items():
            if not all(d in scores for d in draws):
                continue
            acc = 100 * np.array([scores[d] for d in draws])
            diff = acc - 100 * np.array([base[d] for d in draws])
            if variant != "default":
                gains.setdefault(variant, []).append(float(diff.mean()))
            print(f"| {variant} | {acc.mean():.1f} ± {acc.std(ddof=1) if len(acc) > 1 else 0:.1f} | {diff.mean():+.2f} | "
                  + " ".join(f"{d:+.1f}" for d in diff) + " |")
    if gains:
        print("\nmean over the rows above of the mean difference from the default:")
        for variant, values in sorted(gains.items(), key=lambda kv: -np.mean(kv[1])):
            print(f"  {np.mean(values):+.2f}  {variant}  (rows: {', '.join(f'{v:+.2f}' for v in values)})")


# ---- the cost at prediction ----------------------------------------------------------------------

def cost(repeats: int) -> None:
    """ms per image (batch 1, median of `repeats`) through the product's graph and through this one."""
    from bench.common import load_split

    sample = load_split("flowers12", "test")
    total = {"product": 0.0, "early blocks": 0.0}
    for network in NETWORKS:
        backbone = get_backbone(network)
        pixels = backbone.pixels(sample.inputs[:1])
        graphs = {"product": lambda: backbone.embed_pixels(pixels),
                  "early blocks": lambda: session(network).run(None, {"pixels": pixels})}
        for _ in range(10):  # warm both before timing either
            for call in graphs.values():
                call()
        times = {label: [] for label in graphs}
        for _ in range(repeats):  # interleaved, so a change in load touches both alike
            for label, call in graphs.items():
                started = time.perf_counter()
                call()
                times[label].append(1000 * (time.perf_counter() - started))
        for label, values in times.items():
            total[label] += float(np.median(values))
            print(f"{network} {label}: median {np.median(values):.2f} ms, p90 {np.percentile(values, 90):.2f} ms")
    print(f"both networks: product {total['product']:.2f} ms, with the early blocks {total['early blocks']:.2f} ms, "
          f"extra {total['early blocks'] - total['product']:+.2f} ms per image")
    # The heads: the default's two regressions, then with the chosen variant's third (on both networks'
    # s6 side by side), on random rows of the right widths (the cost depends on widths, not values).
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(12), 10)
    dims = {n: {o.name: o.shape[1] for o in session(n).get_outputs()} for n in NETWORKS}
    finals = [dims[n]["final"] for n in NETWORKS]
    for label, widths in (("default (two heads)", finals), ("third s6 (three heads)", finals + [sum(dims[n]["s6"] for n in NETWORKS)])):
        heads = [LogisticRegression(C=C, max_iter=200).fit(rng.normal(size=(120, d)), y) for d in widths]
        rows = [rng.normal(size=(1, d)) for d in widths]
        values = []
        for _ in range(repeats):
            started = time.perf_counter()
            np.mean([head.predict_proba(row) for head, row in zip(heads, rows)], axis=0)
            values.append(1000 * (time.perf_counter() - started))
        print(f"heads, {label}: median {np.median(values):.3f} ms per image")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.early_blocks",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("run", "report", "cost"))
    parser.add_argument("--sets", nargs="+", default=["flowers12", "clothing10"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help="'default' is always run")
    parser.add_argument("--test-cap", type=int, default=2000, help="a fixed subset of the test split (bench.choice: 2000)")
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    if args.action == "cost":
        cost(args.repeats)
        return
    if args.action == "run":
        variants = ["default"] + [v for v in args.variants if v != "default"]
        for name in args.sets:
            run(name, args.sizes, args.seeds, variants, args.test_cap)
    report(args.sets, args.sizes, args.seeds)


if __name__ == "__main__":
    main()
