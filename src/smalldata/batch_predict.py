"""Batch prediction to a CSV that streams: `smalldata predict MODEL FOLDER_OR_CSV --out predictions.csv`.

Inputs are read lazily (a folder walked in sorted order, a CSV row by row), predicted in batches, and
each batch's rows are written and flushed before the next is read: memory stays flat however many
inputs there are (no embedding cache is filled, no list of results is kept).

Rows are written in input order, one per input, an unreadable file included (its `error` column says
why). So a rerun after an interruption resumes by position: it reads the rows already written,
checks each against the input at its place (a changed folder is refused, not mixed in), cuts a last
row that the interruption left half-written, and predicts the rest.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from smalldata.errors import DataError
from smalldata.prediction_rows import header_of, predict_rows
from smalldata.progress import QUIET, Progress

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
TABLE_SUFFIXES = {".csv", ".tsv"}
# Inputs per batch: large enough that per-batch costs (a write, a flush, a model call) vanish next to
# the network, small enough that a batch's pixels (64 x 224 x 224 x 3 bytes, 10 MB) stay small.
BATCH_SIZE = 64
# Columns an image CSV may name its files in, first found wins (or the only column).
PATH_COLUMNS = ("path", "file", "image", "input", "filename")


@dataclass
class BatchResult:
    out: Path
    written: int  # rows written by this run
    resumed: int  # rows found already written, skipped
    errors: int  # of the rows written by this run, those with an error
    device: str


def iter_inputs(sources: Iterable[str | Path], modality: str, *, column: str | None = None) -> Iterator:
    """Each input named by `sources`, lazily, in a fixed order: `Path`s for an image model (files,
    folders walked in sorted order, or the file column of a CSV/TSV), `str`s for a text model (the
    `column` of a CSV/TSV, or each non-blank line of a text file)."""
    for source in sources:
        path = Path(source)
        if modality == "text":
            if not path.is_file():
                raise DataError(f"{source} is not a file: give a CSV/TSV with a {column or 'text'!r} column, "
                                "or a .txt with one text per line")
            yield from _texts_in(path, column or "text")
        elif path.is_dir():
            yield from _images_under(path)
        elif path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
            yield from _paths_in(path, column)
        elif path.exists():
            yield path  # any other file is taken as an image: an unreadable one gets an error row
        else:
            raise DataError(f"{source} does not exist: give a folder of images, image files, or a CSV of their paths")


def _images_under(root: Path) -> Iterator[Path]:
    """Image files under `root`, depth first in sorted order; only one folder's listing is held at a time."""
    entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            yield from _images_under(Path(entry.path))
        elif Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
            yield Path(entry.path)


def _rows(path: Path) -> Iterator[list[str]]:
    """The rows of a CSV/TSV, one at a time; a row the csv module refuses is a DataError naming the line."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        try:
            yield from (row for row in reader if row)
        except csv.Error as error:
            raise DataError(f"{path}, line {reader.line_num}: {error}; fix that row and try again") from error
        except UnicodeDecodeError as error:
            raise DataError(f"{path} is not UTF-8 text ({error}); save it as UTF-8 and try again") from error


def _column_at(path: Path, header: list[str], wanted: Sequence[str], flag: str) -> int:
    for name in wanted:
        if name in header:
            return header.index(name)
    raise DataError(f"{path} has no column {' or '.join(map(repr, wanted))}; its columns are {header}: name yours with {flag}")


def _paths_in(path: Path, column: str | None) -> Iterator[Path]:
    rows = _rows(path)
    header = next(rows, [])
    wanted = [column, *PATH_COLUMNS] if column else list(PATH_COLUMNS)
    at = 0 if len(header) == 1 and not set(wanted) & set(header) else _column_at(path, header, wanted, "--text-column")
    for row in rows:
        if at < len(row) and row[at].strip():
            given = Path(row[at].strip())
            yield given if given.is_absolute() else path.parent / given  # relative to the CSV, as a user reads it


def _texts_in(path: Path, column: str) -> Iterator[str]:
    if path.suffix.lower() in TABLE_SUFFIXES:
        rows = _rows(path)
        at = _column_at(path, next(rows, []), [column], "--text-column")
        texts = (row[at] if at < len(row) else "" for row in rows)
    else:
        texts = _lines(path)
    for text in texts:
        if text.strip():
            yield text.strip()


def _lines(path: Path) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8-sig") as handle:
            yield from handle
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text ({error}); save it as UTF-8 and try again") from error


def predict_to_csv(model_dir: str | Path, sources: Sequence[str | Path], out: str | Path, *,
                   column: str | None = None, overwrite: bool = False, batch_size: int = BATCH_SIZE,
                   threshold: float | None = None, unknown: bool = True, ray_address: str | None = None,
                   progress: Progress = QUIET) -> BatchResult:
    """Predict every input of `sources` with the model in `model_dir` into the CSV `out`, resuming a
    run that was interrupted (rows already there are kept, not predicted again). `ray_address`
    ("auto" or HOST:PORT) runs the batches on a Ray cluster instead (`smalldata.scale`)."""
    from smalldata.devices import device_name
    from smalldata.model import Model

    model = Model.load(model_dir)
    model.cut_off(threshold, unknown=unknown)  # a threshold out of range is said before anything is read
    if ray_address is not None:  # before anything is written: an address that does not answer leaves no file
        from smalldata.scale import connect

        connect(ray_address)
    out = Path(out)
    header = header_of(model.classes, model.familiarity is not None)
    if overwrite and out.exists():
        out.unlink()
    inputs = iter_inputs(sources, model.modality, column=column)
    total = sum(1 for _ in iter_inputs(sources, model.modality, column=column))  # a cheap first pass: for time left
    resumed = resume(out, header, inputs)
    task = progress.task(f"predicting {total - resumed} {model.modality}s"
                         + (f" ({resumed} already in {out.name})" if resumed else ""), total - resumed, rate=True)
    written = errors = 0
    with open(out, "a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if resumed == 0 and handle.tell() == 0:
            writer.writerow(header)
        if ray_address is not None:
            from smalldata.scale import predict_batches_on_ray

            batches = predict_batches_on_ray(model_dir, inputs, ray_address, batch_size=batch_size,
                                             threshold=threshold, unknown=unknown)
        else:
            batches = (predict_rows(model, batch, threshold=threshold, unknown=unknown)
                       for batch in _batched(inputs, batch_size))
        for rows in batches:
            writer.writerows(rows)
            handle.flush()  # a row on disk is a row a rerun skips
            written += len(rows)
            errors += sum(1 for row in rows if row[-1])
            task.advance(len(rows))
    task.done()
    return BatchResult(out, written, resumed, errors, "a Ray cluster" if ray_address is not None else device_name(model.modality == "text"))


def _batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def resume(out: Path, header: list[str], inputs: Iterator) -> int:
    """How many rows of `out` are complete predictions of the first `inputs` (consumed from it, one
    per row); a half-written last row is cut off. Refuses a file of other columns or other inputs."""
    if not out.exists() or out.stat().st_size == 0:
        return 0
    done = 0
    with open(out, "rb") as handle:
        lines = _Lines(handle)
        reader = csv.reader(lines)
        try:
            first = next(reader, None)
        except csv.Error:
            first = None
        # A first line cut off while the header was being written is ours to rewrite; any other is not.
        cut_header = first is not None and not lines.ended and ",".join(header).startswith(",".join(first))
        if first != header and first is not None and not cut_header:
            raise DataError(f"{out} holds other columns than this model's predictions ({', '.join(header[:3])}, ...): "
                            "give another --out, or --overwrite to replace it")
        complete_end = lines.offset if first == header and lines.ended else 0  # else: cut off while the header was written
        try:
            for row in reader if complete_end else ():
                if len(row) != len(header) or not lines.ended:
                    break  # the interruption came while this row was written
                expected = next(inputs, None)
                if expected is None or str(expected) != row[0]:
                    raise DataError(f"{out} was written for other inputs (row {done + 2} is {row[0]!r}, the input "
                                    f"there is now {str(expected)!r}): give another --out, or --overwrite to start again")
                done += 1
                complete_end = lines.offset
        except csv.Error:
            pass  # a quoted field cut off by the interruption: everything before it stands
    if complete_end < out.stat().st_size:
        with open(out, "r+b") as handle:
            handle.truncate(complete_end)
    return done


class _Lines:
    """A binary file's lines as text for `csv.reader`, noting the byte offset after each line read and
    whether it ended with a newline (the csv reader asks for lines only as a row needs them, so after
    each row these describe that row's end)."""

    def __init__(self, handle):
        self._handle, self.offset, self.ended = handle, 0, True

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self._handle.readline()
        if not line:
            raise StopIteration
        self.offset += len(line)
        self.ended = line.endswith(b"\n")
        return line.decode("utf-8")
