"""Batch prediction to a CSV: its columns, error rows, resuming after a real interruption."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from smalldata.batch_predict import iter_inputs, predict_to_csv
from smalldata.cli import app
from smalldata.errors import DataError
from smalldata.prediction_rows import header_of

runner = CliRunner()


def save_lite0_model(train_folder: Path, folder: Path) -> Path:
    """Logistic regression on Lite0 embeddings of `train_folder` (seconds, no cross-validation)."""
    from smalldata.data import load_image_folder
    from smalldata.features import embed
    from smalldata.heads import logistic_regression_head
    from smalldata.model import Model

    data = load_image_folder(train_folder)
    head = logistic_regression_head().fit(embed(data.inputs, "efficientnet-lite0"), data.labels)
    return Model(data.classes, "image", "efficientnet-lite0", "logistic regression", head).save(folder)


@pytest.fixture(scope="module")
def image_model(fashion_folder, tmp_path_factory) -> Path:
    return save_lite0_model(fashion_folder, tmp_path_factory.mktemp("batch") / "model")


@pytest.fixture
def images(fashion_test_folder, tmp_path) -> Path:
    """The 30 test images, and a file named .png that is no image, in bag/ (sorted after the bags)."""
    folder = shutil.copytree(fashion_test_folder, tmp_path / "images")
    (folder / "bag" / "zz-broken.png").write_bytes(b"not an image at all")
    return folder


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def assert_same_predictions(a: Path, b: Path) -> None:
    """The same rows: inputs, labels and errors exactly, probabilities to 1e-5 (ONNX Runtime's last
    digits move with how the inputs are batched)."""
    rows_a, rows_b = read_rows(a), read_rows(b)
    assert rows_a[0] == rows_b[0] and len(rows_a) == len(rows_b)
    for x, y in zip(rows_a[1:], rows_b[1:]):
        assert (x[:2], x[-1]) == (y[:2], y[-1])
        assert all(abs(float(p) - float(q)) < 1e-5 for p, q in zip(x[2:-1], y[2:-1]) if p or q)


def test_a_folder_becomes_one_row_per_image_with_probabilities_and_an_error_row(image_model, images, tmp_path):
    from smalldata.model import Model

    out = tmp_path / "predictions.csv"
    result = runner.invoke(app, ["predict", str(image_model), str(images), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["written"] == 31 and summary["errors"] == 1 and summary["resumed"] == 0
    assert summary["device"] == "CPU"
    model = Model.load(image_model)
    header, *rows = read_rows(out)
    assert header == ["input", "label", *(f"p_{c}" for c in model.classes), "error"]
    assert [row[0] for row in rows] == [str(p) for p in iter_inputs([images], "image")]  # sorted, nothing dropped
    broken = [row for row in rows if row[0].endswith("zz-broken.png")]
    assert len(broken) == 1 and broken[0][1] == "" and "cannot identify image file" in broken[0][-1]
    good = [row for row in rows if not row[-1]]
    assert len(good) == 30
    # The same numbers as the library's own predict_proba, and the label is the most probable class.
    expected = model.predict_proba([Path(row[0]) for row in good])
    written = np.array([[float(p) for p in row[2:-1]] for row in good])
    assert np.abs(written - expected).max() < 1e-6
    assert [row[1] for row in good] == [model.classes[i] for i in expected.argmax(axis=1)]
    assert np.mean([row[1] == Path(row[0]).parent.name for row in good]) >= 0.9  # real predictions, not noise


def test_a_csv_of_paths_relative_to_it_gives_the_same_rows(image_model, images, tmp_path):
    listing = tmp_path / "list.csv"
    files = sorted((images / "sneaker").iterdir())[:5]
    listing.write_text("id,path\n" + "".join(f"{i},{p.relative_to(tmp_path)}\n" for i, p in enumerate(files)))
    by_csv = predict_to_csv(image_model, [listing], tmp_path / "a.csv")
    by_files = predict_to_csv(image_model, files, tmp_path / "b.csv")
    assert by_csv.written == by_files.written == 5
    assert read_rows(tmp_path / "a.csv") == read_rows(tmp_path / "b.csv")


def test_an_interrupted_file_resumes_without_duplicates_and_cuts_a_half_row(image_model, images, tmp_path):
    out = tmp_path / "p.csv"
    predict_to_csv(image_model, [images], out, batch_size=8)
    whole = out.read_bytes()
    lines = whole.splitlines(keepends=True)
    # As a kill during the write of row 11 leaves it: 10 rows whole and part of the 11th.
    out.write_bytes(b"".join(lines[:11]) + lines[11][:25])
    result = predict_to_csv(image_model, [images], out, batch_size=8)
    assert (result.resumed, result.written) == (10, 21)
    assert out.read_bytes().startswith(b"".join(lines[:11]))  # what was whole is kept as it was
    (tmp_path / "whole.csv").write_bytes(whole)
    assert_same_predictions(out, tmp_path / "whole.csv")
    # Cut inside the header: the header is written again and everything predicted.
    out.write_bytes(whole[:7])
    assert predict_to_csv(image_model, [images], out, batch_size=8).resumed == 0 and out.read_bytes() == whole


def test_other_inputs_or_another_models_file_are_refused_not_mixed(image_model, images, tmp_path):
    out = tmp_path / "p.csv"
    predict_to_csv(image_model, [images / "bag"], out)
    with pytest.raises(DataError, match="written for other inputs"):
        predict_to_csv(image_model, [images / "sneaker"], out)
    mine = tmp_path / "mine.csv"
    mine.write_text("name,score\nx,1\n")
    with pytest.raises(DataError, match="other columns"):
        predict_to_csv(image_model, [images], mine)
    assert mine.read_text() == "name,score\nx,1\n"  # a file that is not ours is never cut
    assert predict_to_csv(image_model, [images / "sneaker"], out, overwrite=True).written == 10


def test_a_text_model_reads_a_csv_column_and_a_txt_file(tmp_path):
    from tests.test_cli import _text_model

    folder, _ = _text_model(tmp_path / "m", ["sport", "tech", "weather"])
    texts = tmp_path / "texts.csv"
    texts.write_text('id,body\n1,"The striker scored, twice"\n2,\n3,Storm and rain tonight\n')
    result = runner.invoke(app, ["predict", str(folder), str(texts), "--text-column", "body", "--out",
                                 str(tmp_path / "p.csv"), "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and result.stderr == ""  # -q: nothing printed
    header, *rows = read_rows(tmp_path / "p.csv")
    assert header == header_of(["sport", "tech", "weather"])
    assert [row[0] for row in rows] == ["The striker scored, twice", "Storm and rain tonight"]
    assert all(abs(sum(map(float, row[2:-1])) - 1) < 1e-5 for row in rows)
    lines = tmp_path / "t.txt"
    lines.write_text("The striker scored, twice\n\nStorm and rain tonight\n")
    predict_to_csv(folder, [lines], tmp_path / "q.csv")
    assert read_rows(tmp_path / "q.csv") == read_rows(tmp_path / "p.csv")


def test_the_bar_shows_rate_and_time_left_and_the_output_names_the_device(image_model, images, tmp_path):
    from io import StringIO

    from rich.console import Console

    from smalldata.progress import Progress

    shown = StringIO()
    predict_to_csv(image_model, [images / "bag"], tmp_path / "p.csv",
                   progress=Progress(console=Console(file=shown, width=200, force_terminal=False)))
    assert "predicting 11 images" in shown.getvalue() and "/s" in shown.getvalue() and "left" in shown.getvalue()
    result = runner.invoke(app, ["predict", str(image_model), str(images / "bag"), "--out", str(tmp_path / "p.csv")])
    assert "0 predictions written" in result.stderr and "on CPU" in result.stderr and "11 were there already" in result.stderr


@pytest.mark.slow
def test_killed_for_real_then_rerun_completes_without_duplicates(image_model, fashion, tmp_path):
    """A real interruption: the command is killed (SIGKILL) once some rows are on disk."""
    from smalldata.demo import write_png_folder

    images, labels = fashion
    folder = write_png_folder(images, labels, tmp_path / "many", range(3000, 3400))
    out = tmp_path / "p.csv"
    command = [sys.executable, "-m", "smalldata", "predict", str(image_model), str(folder), "--out", str(out), "--json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") > 1 + 64:  # the header and at least one batch
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be interrupted"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = len(read_rows(out)) - 1
    assert 0 < before < 400
    rerun = subprocess.run(command, capture_output=True, text=True, check=True, env=os.environ.copy())
    summary = json.loads(rerun.stdout)
    assert summary["resumed"] + summary["written"] == 400 and summary["resumed"] >= before - 1
    rows = read_rows(out)[1:]
    names = [row[0] for row in rows]
    assert names == [str(p) for p in iter_inputs([folder], "image")]  # each once, in order
    assert all(row[1] and not row[-1] for row in rows)


def test_texts_spanning_lines_resume_from_a_row_cut_inside_its_quotes(tmp_path):
    from tests.test_cli import _text_model

    folder, _ = _text_model(tmp_path / "m", ["sport", "tech", "weather"])
    texts = tmp_path / "texts.csv"
    many = [f'"Match {i}: the striker scored,\nthen again"' if i % 3 else f"Rain on day {i}" for i in range(40)]
    texts.write_text("text\n" + "\n".join(many) + "\n")
    out = tmp_path / "p.csv"
    predict_to_csv(folder, [texts], out, batch_size=8)
    whole = out.read_bytes()
    assert read_rows(out)[2][0] == "Match 1: the striker scored,\nthen again"
    # Cut between the two lines of a quoted text: that row goes, the ones before it stay.
    cut = whole.index(b"Match 20: the striker scored,\n") + len(b"Match 20: the striker scored,\n")
    out.write_bytes(whole[:cut])
    result = predict_to_csv(folder, [texts], out, batch_size=8)
    assert (result.resumed, result.written) == (20, 20)
    assert out.read_bytes() == whole  # TF-IDF's numbers do not depend on the batch


def test_the_label_is_what_predict_answers_unknown_below_the_threshold(tmp_path):
    from tests.conftest import DATA
    from tests.test_cli import _text_model

    folder, _ = _text_model(tmp_path / "m", ["sport", "tech", "weather"])
    texts = tmp_path / "texts.csv"
    shutil.copy(DATA / "topics.csv", texts)
    plain = runner.invoke(app, ["predict", str(folder), str(texts), "--out", str(tmp_path / "a.csv"), "-q"])
    assert plain.exit_code == 0, plain.output
    rows_a = read_rows(tmp_path / "a.csv")[1:]
    top = [max(map(float, row[2:-1])) for row in rows_a]
    distinct = sorted(set(top))
    cut = (distinct[len(distinct) // 2 - 1] + distinct[len(distinct) // 2]) / 2  # about half fall below, none on it
    strict = runner.invoke(app, ["predict", str(folder), str(texts), "--out", str(tmp_path / "b.csv"), "-q",
                                 "--threshold", str(cut)])
    assert strict.exit_code == 0, strict.output
    rows_b = read_rows(tmp_path / "b.csv")[1:]
    assert 0 < sum(p < cut for p in top) < len(top)
    for row_a, row_b, p in zip(rows_a, rows_b, top):
        assert row_b[2:] == row_a[2:]  # the same probabilities
        assert row_b[1] == ("unknown" if p < cut else row_a[1]) and row_a[1] != "unknown"
    table = runner.invoke(app, ["predict", str(folder), "--file", str(texts), "--threshold", str(cut), "--json"])
    assert [r["label"] for r in json.loads(table.stdout)] == [row[1] for row in rows_b]  # as the table answers
    bad = runner.invoke(app, ["predict", str(folder), str(texts), "--out", str(tmp_path / "c.csv"), "--threshold", "2"])
    assert bad.exit_code == 2 and not (tmp_path / "c.csv").exists()
