import json

import pytest
from typer.testing import CliRunner

from smalldata.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.conftest import DATA

    folder = tmp_path_factory.mktemp("cli") / "topics-model"
    result = runner.invoke(app, ["train", str(DATA / "topics.csv"), "--out", str(folder), "--finetune", "never"])
    assert result.exit_code == 0, result.output
    return folder, result.output


def test_train_prints_counts_and_the_cross_validation_table(trained):
    folder, output = trained
    assert "24 texts in 3 classes" in output
    assert "baseline: tf-idf + logistic regression" in output and "(chosen)" in output
    assert "vs baseline" in output and "points" in output
    assert "learning curve" in output and "more data: about" in output
    assert (folder / "model.json").exists()


def test_curve_command_measures_and_extrapolates(tmp_path):
    from tests.conftest import DATA

    result = runner.invoke(app, ["curve", str(DATA / "topics.csv"), "--json"])
    assert result.exit_code == 0, result.output
    curve = json.loads(result.stdout)
    assert [p["per_class"] for p in curve["points"]] == [1, 2, 4, 7]
    assert [p["factor"] for p in curve["projections"]] == [2, 5, 10] and curve["summary"]
    unknown = runner.invoke(app, ["curve", str(DATA / "topics.csv"), "--head", "no such head"])
    assert unknown.exit_code == 2 and "choose one of" in unknown.output


def test_predict_json_gives_label_and_probabilities(trained):
    folder, _ = trained
    # --no-unknown: every input answered (by default a short text may fall under the unknown floor)
    result = runner.invoke(app, ["predict", str(folder), "Heavy snow tonight", "Grill the fish", "--json", "--no-unknown"])
    assert result.exit_code == 0, result.output
    answers = json.loads(result.stdout)
    assert [a["label"] for a in answers] == ["weather", "cooking"]
    assert abs(sum(answers[0]["probabilities"].values()) - 1) < 1e-3


def test_predict_reads_texts_from_a_file(trained, tmp_path):
    folder, _ = trained
    texts = tmp_path / "texts.txt"
    texts.write_text("The striker was injured\n\nSift the flour\n")
    result = runner.invoke(app, ["predict", str(folder), "--file", str(texts)])
    assert result.exit_code == 0 and "sport" in result.stdout and "cooking" in result.stdout


def test_evaluate_reports_accuracy_per_class_and_confusion(trained, tmp_path):
    folder, _ = trained
    test = tmp_path / "test.csv"
    test.write_text("text,label\nThe keeper dived to his left,sport\nFry the onions slowly,cooking\n"
                    "Cloudy with a chance of rain,weather\nA new stadium opens,sport\n")
    result = runner.invoke(app, ["evaluate", str(folder), str(test), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n_examples"] == 4 and report["accuracy"] >= 0.75
    assert set(report["per_class"]) == {"cooking", "sport", "weather"}
    table = runner.invoke(app, ["evaluate", str(folder), str(test)])
    assert "confusion matrix" in table.stdout and "precision" in table.stdout


def test_bad_input_exits_2_with_advice_and_keeps_an_existing_model(trained, tmp_path):
    folder, _ = trained
    before = (folder / "model.json").read_text()
    bad = tmp_path / "bad.csv"  # dropping class a leaves two classes: --drop-small-classes is advice that works
    bad.write_text("text,label\nonly one of these,a\nand two,b\nof those,b\nand two,c\nof these,c\n")
    result = runner.invoke(app, ["train", str(bad), "--out", str(folder), "--finetune", "never"])
    assert result.exit_code == 2
    assert "--drop-small-classes" in result.output
    assert (folder / "model.json").read_text() == before
    missing = runner.invoke(app, ["predict", str(tmp_path), "hello"])
    assert missing.exit_code == 2 and "not a smalldata model folder" in missing.output
    clash = runner.invoke(app, ["train", str(bad), "--out", str(folder), "--tta", "--no-flip"])
    assert clash.exit_code == 2 and "use one or the other" in clash.output
    assert (folder / "model.json").read_text() == before


def test_quiet_and_json_keep_stdout_clean(tmp_path):
    from tests.conftest import DATA

    quiet = runner.invoke(app, ["train", str(DATA / "topics.csv"), "--out", str(tmp_path / "q"), "--quiet", "--finetune", "never"])
    assert quiet.exit_code == 0 and quiet.stdout == ""
    as_json = runner.invoke(app, ["train", str(DATA / "topics.csv"), "--out", str(tmp_path / "j"), "--json", "--finetune", "never"])
    assert json.loads(as_json.stdout)["chosen"] and json.loads(as_json.stdout)["learning_curve"]["points"]


@pytest.mark.slow
def test_image_model_from_the_command_line(fashion_folder, fashion_test_folder, tmp_path):
    result = runner.invoke(app, ["train", str(fashion_folder), "--out", str(tmp_path / "m"), "--json", "--finetune", "never"])
    assert result.exit_code == 0, result.output
    some = sorted((fashion_test_folder / "bag").iterdir())[:2]
    predicted = runner.invoke(app, ["predict", str(tmp_path / "m"), *map(str, some), "--json"])
    assert [a["label"] for a in json.loads(predicted.stdout)] == ["bag", "bag"]


def test_suggest_writes_the_texts_to_label_next_and_keeps_an_existing_file(trained, tmp_path):
    folder, _ = trained
    pool = tmp_path / "unlabeled.txt"
    pool.write_text("\n".join(["Rain and wind all afternoon.", "He dribbled past two defenders.",
                               "Knead the dough for ten minutes.", "Is it a storm or a match report?",
                               "Whisk the eggs until fluffy.", "", "Snow expected in the hills."]) + "\n")
    out = tmp_path / "to-label.csv"
    result = runner.invoke(app, ["suggest", str(folder), str(pool), "--n", "3", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert len(document["suggestions"]) == 3 and [s["rank"] for s in document["suggestions"]] == [1, 2, 3]
    assert document["skipped"] and "empty" in document["skipped"][0]["reason"]
    rows = out.read_text().splitlines()
    assert rows[0].startswith("text,label") and len(rows) == 4
    again = runner.invoke(app, ["suggest", str(folder), str(pool), "--n", "3", "--out", str(out)])
    assert again.exit_code == 2 and "--out" in again.output
    assert out.read_text().splitlines() == rows


def test_a_text_over_the_csv_field_limit_is_a_one_line_error_naming_file_and_line(tmp_path):
    # Python's csv refuses a field over 131072 characters; that was a csv.Error traceback (exit 1).
    long_text = tmp_path / "long.csv"
    long_text.write_text("text,label\nshort,a\n" + "word " * 30_000 + ",b\nanother,b\n")
    result = runner.invoke(app, ["train", str(long_text), "--out", str(tmp_path / "m"), "--finetune", "never"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert f"over 131072 characters in the row that starts at line 3 of {long_text}" in result.stderr
    assert "shorten it or split it" in result.stderr
    # The usual cause: a quote never closed swallows the lines after it, until the limit is passed.
    unclosed = tmp_path / "unclosed.csv"
    unclosed.write_text("text,label\nfine,a\n\"an open quote,b\n" + "next text,a\n" * 15_000)
    result = runner.invoke(app, ["train", str(unclosed), "--out", str(tmp_path / "m"), "--finetune", "never"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert f"starts at line 3 of {unclosed}" in result.stderr and "never closed" in result.stderr
    assert not (tmp_path / "m").exists()


def test_any_other_csv_error_names_the_file(tmp_path, monkeypatch):
    import csv

    class Refusing:  # a reader that fails on its second row: no other csv.Error is reachable with files
        line_num = 0

        def __init__(self, *args, **kwargs):
            pass

        def __iter__(self):
            return self

        def __next__(self):
            if self.line_num:
                raise csv.Error("some other parse error")
            self.line_num = 1
            return ["text", "label"]

    monkeypatch.setattr(csv, "reader", Refusing)
    path = tmp_path / "texts.csv"
    path.write_text("text,label\nhello,a\n")
    result = runner.invoke(app, ["train", str(path), "--out", str(tmp_path / "m"), "--finetune", "never"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert f"{path} cannot be read as CSV/TSV at line 2 (some other parse error)" in result.stderr


def _peak_mib(run, *args):
    """What `run(*args)` returns, and the most memory (MiB) Python allocated while it ran."""
    import tracemalloc

    tracemalloc.start()
    try:
        return run(*args), tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_predict_refuses_a_huge_or_non_image_file_before_reading_it(tmp_path):
    # A 3 GB file named .jpg was read whole (3 GB of memory, 12 s), then a traceback; now its size and
    # header are looked at first. Sparse files, which take no disk: one over the size bound, one under.
    import time

    import numpy as np
    from PIL import Image

    from smalldata.backbones import get_backbone
    from smalldata.heads import LinearHead
    from smalldata.model import Model

    width = get_backbone("colour-texture-stats").dim  # an image model without a network: fast
    model = Model(["bag", "shoe"], "image", "colour-texture-stats", "linear",
                  LinearHead(epochs=5).fit(np.random.default_rng(0).normal(size=(6, width)), ["bag", "shoe"] * 3))
    folder = model.save(tmp_path / "model")
    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), (120, 60, 200)).save(photo)
    normal = runner.invoke(app, ["predict", str(folder), str(photo), "--json"])
    assert normal.exit_code == 0, normal.output
    for name, size, why in (("huge.jpg", 300 * 2**20, "the file is 300 MiB, more than the 256 MiB"),
                            ("zeros.jpg", 200 * 2**20, "not a readable image")):
        fake = tmp_path / name
        with open(fake, "wb") as handle:
            handle.truncate(size)
        started = time.perf_counter()
        result, peak = _peak_mib(runner.invoke, app, ["predict", str(folder), str(photo), str(fake)])
        seconds = time.perf_counter() - started
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
        assert result.stderr.startswith(f"error: cannot classify {fake}: {why}"), result.stderr
        assert peak < 50 and seconds < 5, (peak, seconds)


# ---- start-up, version, errors, piped tables, inputs a model cannot read ---------------------------

def test_importing_the_cli_loads_no_heavy_library():
    """`smalldata --help` and each command's parsing must not wait for torch or scikit-learn: the
    commands import the library when they run."""
    import subprocess
    import sys

    heavy = "('torch', 'sklearn', 'onnxruntime', 'matplotlib', 'transformers')"
    found = subprocess.run(
        [sys.executable, "-c", f"import smalldata.cli, sys; print(sorted(m for m in {heavy} if m in sys.modules))"],
        capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]", found.stdout + found.stderr


def test_version_prints_the_installed_version():
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"smalldata {version('smalldata')}\n"


def test_an_unknown_backbone_is_a_message_and_a_bug_is_a_traceback(tmp_path, monkeypatch):
    from tests.conftest import DATA

    from smalldata.backbones import BackboneError, get_backbone
    from smalldata.data import DataError

    with pytest.raises(BackboneError, match="unknown backbone 'no-such-net'") as raised:
        get_backbone("no-such-net")
    assert isinstance(raised.value, DataError)
    unknown = runner.invoke(app, ["train", str(DATA / "topics.csv"), "--out", str(tmp_path / "m"), "--backbone", "no-such-net"])
    assert unknown.exit_code == 2 and "unknown backbone 'no-such-net'" in unknown.stderr
    bad_budget = runner.invoke(app, ["train", str(DATA / "topics.csv"), "--out", str(tmp_path / "m"), "--budget", "soon"])
    assert bad_budget.exit_code == 2 and "a budget looks like 90s" in bad_budget.stderr

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr("smalldata.data.load_dataset", broken)
    bug = runner.invoke(app, ["train", str(DATA / "topics.csv"), "--out", str(tmp_path / "m")])
    assert bug.exit_code == 1 and isinstance(bug.exception, KeyError)  # not "error: 'a bug'" and exit 2


def _text_model(folder, labels):
    """A TF-IDF text model over `labels` (no network: fast), saved to `folder`."""
    from tests.conftest import DATA

    from smalldata.baselines import text_baseline
    from smalldata.data import load_text_csv
    from smalldata.model import Model

    topics = load_text_csv(DATA / "topics.csv")
    names = dict(zip(sorted(set(topics.labels)), labels))
    y = [names[label] for label in topics.labels]
    model = Model(sorted(set(y)), "text", "text", "baseline", text_baseline().fit(topics.inputs, y))
    return model.save(folder), names


def test_piped_tables_are_printed_whole(tmp_path, monkeypatch):
    # Rich cut tables to 80 columns when stdout was no terminal: the confusion matrix's headers read "lo… lo…".
    monkeypatch.delenv("COLUMNS", raising=False)
    long = ["a class name long enough to be cut: sport and games",
            "another class name long enough to be cut: cooking",
            "a third class name long enough to be cut: the weather"]
    folder, names = _text_model(tmp_path / "model", long)
    test = tmp_path / "test.csv"
    test.write_text("text,label\n" + "".join(f"{text},{names[label]}\n" for text, label in (
        ("The keeper dived to his left", "sport"), ("Fry the onions slowly", "cooking"),
        ("Cloudy with a chance of rain", "weather"))))
    result = runner.invoke(app, ["evaluate", str(folder), str(test)])
    assert result.exit_code == 0, result.output
    assert "confusion matrix" in result.stdout and "…" not in result.stdout
    header = next(line for line in result.stdout.splitlines() if "true \\ predicted" in line)
    assert all(name in header for name in long), header
    assert max(map(len, result.stdout.splitlines())) > 200  # wider than any terminal default


def test_an_image_file_a_text_file_or_an_empty_text_given_to_a_text_model_is_refused(tmp_path):
    from PIL import Image

    folder, _ = _text_model(tmp_path / "model", ["cooking", "sport", "weather"])
    photo, scan = tmp_path / "photo.jpg", tmp_path / "scan.dat"  # by its extension; by Pillow opening it
    Image.new("RGB", (16, 16), (10, 200, 30)).save(photo)
    Image.new("RGB", (16, 16), (10, 200, 30)).save(scan, format="PNG")
    for image in (photo, scan):
        result = runner.invoke(app, ["predict", str(folder), "Grill the fish", str(image)])
        assert result.exit_code == 2, result.output
        assert f"{image} is an image file; this model classifies texts: give texts, or --file" in result.stderr
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    refused = runner.invoke(app, ["predict", str(folder), "Grill the fish", str(notes)])
    assert refused.exit_code == 2 and f"{notes} is a file: give it with --file {notes}" in refused.stderr
    texts = runner.invoke(app, ["predict", str(folder), "Grill the fish", "photo.jpg", "--json"])
    assert texts.exit_code == 0, texts.output  # the name of no file is a text like any other
    assert [a["input"] for a in json.loads(texts.stdout)] == ["Grill the fish", "photo.jpg"]
    empty = runner.invoke(app, ["predict", str(folder), "Grill the fish", "  "])
    assert empty.exit_code == 2 and "an input text is empty" in empty.stderr


def test_one_example_per_class_is_advised_to_add_examples(tmp_path):
    data = tmp_path / "one-each.csv"
    data.write_text("text,label\nThe striker scored,sport\nFry the onions,cooking\n")
    result = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "m"), "--finetune", "never"])
    assert result.exit_code == 2
    assert "add examples: at least 2 per class" in result.stderr and "--drop-small-classes" not in result.stderr


def test_what_a_new_user_got_wrong_is_said_at_once(tmp_path, fashion_folder):
    """Found by trying the README as a new user: each of these is one line and exit 2."""
    headless = tmp_path / "nohead.csv"
    headless.write_text("a fine film,positive\na dull film,negative\n")
    result = runner.invoke(app, ["train", str(headless), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "add a header row" in result.output
    (tmp_path / "empty.csv").write_text("")
    result = runner.invoke(app, ["train", str(tmp_path / "empty.csv"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "is empty" in result.output
    # a mistyped budget is refused before the data are read (no class table first)
    result = runner.invoke(app, ["train", str(fashion_folder), "--out", str(tmp_path / "m"), "--budget", "abc"])
    assert result.exit_code == 2 and "budget" in result.output and "trouser" not in result.output
    # listing or revoking keys in a folder with no service database makes no folder
    missing = tmp_path / "typo"
    for command in (["api-key", "list"], ["api-key", "revoke", "1"]):
        result = runner.invoke(app, [*command, "--data", str(missing)])
        assert result.exit_code == 2 and "holds no service database" in result.output and not missing.exists()


def test_no_evaluate_keeps_no_unchecked_fine_tune(fashion_folder):
    import smalldata

    model = smalldata.train(smalldata.load_dataset(fashion_folder), evaluate=False, curve=False, budget="3m")
    assert not model.fine_tuning.kept and "--no-evaluate" in model.fine_tuning.reason
    assert not model.head_name.startswith("fine-tuned")
