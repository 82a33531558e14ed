"""Datasets: labeled images or texts, read from folders or CSV/TSV files, checked, never silently cut.

Every file or row that is not used is listed in `Dataset.skipped` with the reason.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image

from smalldata.backbones import cpu_threads
from smalldata.errors import DataError  # defined there; callers import it from here too
from smalldata.features import content_key, hash_file
from smalldata.images import ImageFileError, check_file_size, check_shape
from smalldata.text_utils import shorten

TEXT_SUFFIXES = {".csv", ".tsv", ".txt"}
MIN_PER_CLASS_FOR_CV = 2
NOT_IN_A_CLASS_FOLDER = "not inside a class folder (expected FOLDER/CLASS/FILE)"
# For images lying in the folder itself: the two ways to give their classes.
_FLAT_FOLDER_ADVICE = ("; for images directly in the folder, either move each class's images into a subfolder "
                       "named for the class (FOLDER/cat/1.jpg, FOLDER/dog/2.jpg), or, if the file names hold "
                       "the class, give --label-from-name a regex whose first group is the class "
                       "(e.g. --label-from-name '(.+)_\\d+\\.jpg$' for cat_1.jpg, dog_2.jpg)")


@dataclass(frozen=True)
class Skipped:
    what: str
    reason: str


@dataclass
class Dataset:
    """Inputs (image paths or texts), their labels, and what was found while reading them."""

    inputs: list
    labels: list[str]
    modality: str  # "image" or "text"
    keys: list[str] = field(default_factory=list)  # content hashes, one per input
    source: str = ""
    # The non-default options `source` was read with, so it can be read again the same way
    # (the report looks for leakage between a test set and the training data).
    load_options: dict = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    dropped_duplicates: list[Skipped] = field(default_factory=list)
    conflicting_duplicates: list[list[str]] = field(default_factory=list)

    def __post_init__(self):
        if not self.keys:
            self.keys = [content_key(item) for item in self.inputs]
        if not (len(self.inputs) == len(self.labels) == len(self.keys)):
            raise ValueError("inputs, labels and keys must have the same length")

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))

    def counts(self) -> dict[str, int]:
        counts = Counter(self.labels)
        return {label: counts[label] for label in self.classes}

    def subset(self, indices: Sequence[int]) -> "Dataset":
        return Dataset(
            [self.inputs[i] for i in indices],
            [self.labels[i] for i in indices],
            self.modality,
            [self.keys[i] for i in indices],
            source=self.source,
            load_options=self.load_options,
        )

    def small_classes(self, minimum: int = MIN_PER_CLASS_FOR_CV) -> dict[str, int]:
        return {label: n for label, n in self.counts().items() if n < minimum}

    def drop_classes(self, classes: Sequence[str]) -> "Dataset":
        drop = set(classes)
        keep = [i for i, label in enumerate(self.labels) if label not in drop]
        kept = self.subset(keep)
        kept.skipped = self.skipped + [
            Skipped(_describe(self.inputs[i]), f"class {self.labels[i]!r} dropped: too few examples")
            for i in range(len(self))
            if self.labels[i] in drop
        ]
        kept.dropped_duplicates = self.dropped_duplicates
        kept.conflicting_duplicates = self.conflicting_duplicates
        return kept


def as_inputs(items: Iterable, modality: str) -> list:
    """`items` as the models take them: a `Path` for each image file, a `str` for each text. An
    image already in memory (a file object, as the service's uploads are) stays as it is; a PIL
    image or a numpy array (H x W x 3, or H x W grey) becomes one, PNG-encoded (lossless)."""
    if modality == "image":
        return [item if hasattr(item, "read") else png_of(item) if _in_memory(item) else Path(item) for item in items]
    return [str(item) for item in items]


def _in_memory(item) -> bool:
    return isinstance(item, Image.Image) or hasattr(item, "__array_interface__")


def png_of(item) -> io.BytesIO:
    """A PIL image or an image array as PNG bytes in memory: decoded later exactly as a PNG file is."""
    if not isinstance(item, Image.Image):
        import numpy as np

        array = np.asarray(item)
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (1, 3, 4)):
            raise DataError(f"an image array must be height x width x 3 (or grey, height x width), not {array.shape}")
        if array.dtype != np.uint8:
            if np.issubdtype(array.dtype, np.floating) and np.nanmax(array) <= 1.0:
                array = array * 255.0  # floats in 0..1, as many libraries give images
            array = np.clip(np.nan_to_num(array), 0, 255).round().astype(np.uint8)
        item = Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array)
    encoded = io.BytesIO()
    item.save(encoded, format="PNG")
    encoded.seek(0)
    return encoded


@dataclass
class Pool:
    """Unlabeled inputs (image paths or texts), their content hashes, and what was left out while
    reading them, with why: read for suggestions (`smalldata.suggest.load_unlabeled`), or kept for
    training beside a labeled dataset (`smalldata.unlabeled.load_pool`, `pool_from`)."""

    inputs: list
    modality: str  # "image" or "text"
    source: str = ""
    skipped: list[Skipped] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # content hashes, one per input (computed when not given)

    def __post_init__(self):
        if not self.keys:
            self.keys = [content_key(item) for item in self.inputs]
        if len(self.keys) != len(self.inputs):
            raise ValueError("inputs and keys must have the same length")

    def __len__(self) -> int:
        return len(self.inputs)

    def summary(self) -> dict:
        return {"source": self.source, "n_examples": len(self), "skipped": [asdict(s) for s in self.skipped]}


def _describe(item) -> str:
    return shorten(str(item), 80)


DEFAULT_COLUMNS = {"text_column": "text", "label_column": "label"}


def load_dataset(
    path: str | Path,
    *,
    label_from_name: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
) -> Dataset:
    """A folder of images (one subfolder per class, or labels from file names) or a CSV/TSV of texts."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist: give a folder of class subfolders of images, or a CSV/TSV file of texts")
    if path.is_dir():
        dataset = load_image_folder(path, label_from_name=label_from_name)
        dataset.load_options = {"label_from_name": label_from_name} if label_from_name else {}
        return dataset
    if path.suffix.lower() in TEXT_SUFFIXES:
        dataset = load_text_csv(path, text_column=text_column, label_column=label_column)
        options = {"text_column": text_column, "label_column": label_column}
        dataset.load_options = {k: v for k, v in options.items() if v != DEFAULT_COLUMNS[k]}
        return dataset
    raise DataError(
        f"{path} is neither a folder of images nor a .csv/.tsv/.txt file of texts: "
        "give a folder with one subfolder of images per class, or a CSV with columns text,label"
    )


def load_image_folder(root: str | Path, *, label_from_name: str | None = None) -> Dataset:
    """Images under `root`: `root/CLASS/...` or, with `label_from_name`, a regex whose first group
    (or whole match) on the file name is the label (e.g. ``'(.+)_\\d+\\.jpg$'`` for Oxford-IIIT Pets)."""
    root = Path(root)
    files, skipped = visible_files(root)
    candidates: list[tuple[Path, str]] = []
    pattern = re.compile(label_from_name) if label_from_name else None
    for file in files:
        relative = file.relative_to(root)
        if pattern is not None:
            match = pattern.search(file.name)
            if match is None:
                skipped.append(Skipped(str(relative), f"file name does not match {label_from_name!r}"))
            else:
                candidates.append((file, match.group(1) if pattern.groups else match.group(0)))
        elif len(relative.parts) < 2:
            skipped.append(Skipped(str(relative), NOT_IN_A_CLASS_FOLDER))
        else:
            candidates.append((file, relative.parts[0]))
    checked = check_images([file for file, _ in candidates])
    inputs, labels, keys = [], [], []
    for (file, label), (key, problem) in zip(candidates, checked):
        if problem:
            skipped.append(Skipped(str(file.relative_to(root)), problem))
        else:
            inputs.append(file)
            labels.append(label)
            keys.append(key)
    if not inputs:
        layout = "files whose names match the --label-from-name pattern" if pattern else "FOLDER/CLASS/IMAGE files"
        raise DataError(f"no usable images found in {root}: expected {layout}; {skipped_summary(skipped)}"
                        + (_FLAT_FOLDER_ADVICE if pattern is None and any(s.reason == NOT_IN_A_CLASS_FOLDER for s in skipped) else ""))
    return _without_duplicates(Dataset(inputs, labels, "image", keys, source=str(root), skipped=skipped))


def skipped_summary(skipped: list[Skipped], shown: int = 3) -> str:
    """How many files were skipped and why the first few were: an error raised before any table is
    printed still says what was wrong with them."""
    listed = "; ".join(f"{entry.what}: {entry.reason}" for entry in skipped[:shown])
    more = f"; and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return f"{len(skipped)} files were skipped" + (f" ({listed}{more})" if skipped else "")


def visible_files(root: Path) -> tuple[list[Path], list[Skipped]]:
    """Every file under `root`, sorted, and the hidden ones (in a hidden folder too) as skipped."""
    files, skipped = [], []
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = file.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            skipped.append(Skipped(str(relative), "hidden file"))
        else:
            files.append(file)
    return files, skipped


def check_images(files: list[Path]) -> list[tuple[str, str | None]]:
    """`_check_image` for each file, in threads (PIL releases the GIL while decoding)."""
    with ThreadPoolExecutor(max_workers=cpu_threads()) as pool:
        return list(pool.map(_check_image, files))


def image_problems(files: list[Path]) -> list[str | None]:
    """`image_problem` for each file, in threads."""
    with ThreadPoolExecutor(max_workers=cpu_threads()) as pool:
        return list(pool.map(image_problem, files))


def _check_image(file: Path) -> tuple[str, str | None]:
    """(content hash, None) for a decodable image, else ("", why not)."""
    problem = image_problem(file)
    # hashed only once it is known to be an image, and in chunks: never the whole file in memory
    return ("", problem) if problem else (hash_file(file), None)


def image_problem(file: Path) -> str | None:
    """Why `file` is no usable image, or None if it is one.

    Judged from its size and header first (PIL opens a path lazily), so that a large file that is
    no image costs a stat and a few bytes read, not its size in memory.
    """
    try:
        if not file.stat().st_size:
            return "empty file"
        check_file_size(file)
        with Image.open(file) as image:
            check_shape(*image.size)
            image.draft("RGB", (64, 64))  # a full decode at low scale catches truncated files cheaply
            image.load()
    except Image.DecompressionBombError:
        return f"image too large (more than {Image.MAX_IMAGE_PIXELS} pixels)"
    except ImageFileError as error:
        return str(error)
    except Exception as error:  # PIL raises many types for bad files; all mean "not usable"
        return f"not a readable image ({type(error).__name__}: {error})"
    return None


def load_text_csv(path: str | Path, *, text_column: str = "text", label_column: str = "label") -> Dataset:
    """Texts and labels from a CSV or TSV file with a header row."""
    path = Path(path)
    rows = read_table(path)
    header = rows[0] if rows else []
    missing = [name for name in (text_column, label_column) if name not in header]
    if not header:
        raise DataError(f"{path} is empty: give a CSV or TSV with a header row, e.g. text,label, and a row per example")
    if len(missing) == 2:  # neither name: most often a first row of data, not of names
        raise DataError(f"{path}'s first row {shorten(str(header), 80)} names no column {text_column!r} or "
                        f"{label_column!r}: add a header row (e.g. {text_column},{label_column}), or name your "
                        "columns with --text-column and --label-column")
    if missing:
        raise DataError(
            f"{path} has no column {missing[0]!r}; its columns are {header}: "
            "name yours with --text-column and --label-column"
        )
    text_at, label_at = header.index(text_column), header.index(label_column)
    texts, labels, skipped = [], [], []
    for number, row in enumerate(rows[1:], start=2):
        text = row[text_at].strip() if text_at < len(row) else ""
        label = row[label_at].strip() if label_at < len(row) else ""
        if not text:
            skipped.append(Skipped(f"line {number}", "empty text"))
        elif not label:
            skipped.append(Skipped(f"line {number}", "no label"))
        else:
            texts.append(text)
            labels.append(label)
    if not texts:
        raise DataError(f"no usable rows in {path}: every row lacked a text or a label")
    return _without_duplicates(Dataset(texts, labels, "text", source=str(path), skipped=skipped))


def read_texts(path: Path, *, text_column: str = "text") -> list[tuple[str, str]]:
    """(where, text) for each row's `text_column` of a CSV/TSV, or each line of any other file; unfiltered."""
    if path.suffix.lower() not in {".csv", ".tsv"}:
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError as error:
            raise DataError(f"{path} is not UTF-8 text ({error}); save it as UTF-8 and try again") from error
        return [(f"line {number}", line) for number, line in enumerate(lines, start=1)]
    rows = read_table(path)
    header = rows[0] if rows else []
    if text_column not in header:
        raise DataError(f"{path} has no column {text_column!r}; its columns are {header}: name yours with --text-column")
    at = header.index(text_column)
    return [(f"line {number}", row[at] if at < len(row) else "") for number, row in enumerate(rows[1:], start=2)]


def read_table(path: Path) -> list[list[str]]:
    """Rows of a CSV/TSV file (delimiter from the extension, else sniffed); a row the csv module
    refuses is a DataError naming the file and line."""
    try:
        content = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text ({error}); save it as UTF-8 and try again") from error
    if path.suffix.lower() == ".tsv":
        delimiter = "\t"
    else:
        try:
            delimiter = csv.Sniffer().sniff(content[:4096], delimiters=",\t;").delimiter
        except csv.Error:
            delimiter = ","
    reader = csv.reader(io.StringIO(content), delimiter=delimiter)
    rows, start = [], 1  # start: the line the row being read begins on (a quoted text may span lines)
    try:
        for row in reader:
            if row:
                rows.append(row)
            start = reader.line_num + 1
    except csv.Error as error:
        raise DataError(_unreadable_row(path, start, error)) from error
    return rows


def _unreadable_row(path: Path, line: int, error: csv.Error) -> str:
    """What to do about a row the csv module refuses."""
    if "field larger than field limit" in str(error):
        # Python's limit (128 Ki characters) is kept, not raised: backbones read a text's first few
        # hundred words anyway, and a field that long is most often an unclosed quote swallowing
        # the rest of the file, which this message points at.
        return (f"a text over {csv.field_size_limit()} characters in the row that starts at line {line} of {path}: "
                "shorten it or split it into several rows; if no text is that long, a double quote (\") in that "
                "row is never closed: close it, or double each quote inside a text (\"\")")
    return f"{path} cannot be read as CSV/TSV at line {line} ({error}): fix that row, or save the file again as CSV"


def _without_duplicates(dataset: Dataset) -> Dataset:
    """Keep one of each exact duplicate with the same label (a copy in two folds would inflate the
    score); report duplicates whose labels disagree, and keep them for the user to resolve."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for index, key in enumerate(dataset.keys):
        by_key[key].append(index)
    keep, dropped, conflicts = [], [], []
    for indices in by_key.values():
        labels = {dataset.labels[i] for i in indices}
        if len(labels) > 1:
            conflicts.append([f"{_describe(dataset.inputs[i])} ({dataset.labels[i]})" for i in indices])
            keep.extend(indices)
            continue
        keep.append(indices[0])
        first = _describe(dataset.inputs[indices[0]])
        dropped.extend(Skipped(_describe(dataset.inputs[i]), f"exact duplicate of {first}") for i in indices[1:])
    if not dropped:
        dataset.conflicting_duplicates = conflicts
        return dataset
    kept = dataset.subset(sorted(keep))
    kept.skipped = dataset.skipped
    kept.dropped_duplicates = dropped
    kept.conflicting_duplicates = conflicts
    return kept


def require_evaluable(dataset: Dataset, *, drop_small_classes: bool = False) -> Dataset:
    """The dataset ready for cross-validation: at least 2 classes, each with at least 2 examples."""
    small = dataset.small_classes()
    if small and drop_small_classes:
        dataset = dataset.drop_classes(list(small))
    elif small:
        listed = ", ".join(f"{label!r} has {n}" for label, n in small.items())
        left = len(dataset.classes) - len(small)
        # Dropping the small classes is advice only where it leaves a classifier to train.
        advice = ("add examples, or drop such classes with --drop-small-classes" if left >= 2 else
                  f"add examples: at least {MIN_PER_CLASS_FOR_CV} per class (dropping the classes with fewer "
                  f"would leave {left} class{'' if left == 1 else 'es'}, and a classifier needs 2)")
        raise DataError(
            f"class {listed} example(s); cross-validation needs at least {MIN_PER_CLASS_FOR_CV} per class: {advice}"
        )
    if len(dataset.classes) < 2:
        raise DataError(
            f"found only {len(dataset.classes)} class ({', '.join(dataset.classes)}); a classifier needs at least 2: "
            "add a folder (or label) for another class"
        )
    return dataset
