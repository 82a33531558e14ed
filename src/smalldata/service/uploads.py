"""Checks on everything a request brings: sizes, counts, pixels, and what a file is by its content.

A file's name is never trusted: an image is what Pillow can open and decode, a zip is what
`zipfile` can read, and a CSV is UTF-8 text with a header. Names inside a zip only give the class
(the folder a file sits in); they never become paths.
"""

from __future__ import annotations

import csv
import io
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from PIL import Image

from smalldata.images import ImageShapeError, check_shape
from smalldata.text_utils import shorten
from smalldata.unknown import UNKNOWN

IMAGE_FORMATS = {"JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF"}


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int = 64 * 2**20  # one request body, whatever it holds
    max_file_bytes: int = 16 * 2**20  # one image
    max_files: int = 500  # images in one request, or members of one zip
    max_pixels: int = 40_000_000  # width x height of one image (a decompression bomb is refused)
    max_zip_bytes: int = 256 * 2**20  # all members of a zip, uncompressed
    max_rows: int = 20_000  # rows of one CSV, or texts in one request
    max_text_chars: int = 5_000
    max_label_chars: int = 100
    max_predict_batch: int = 64


class UploadError(Exception):
    """Input the service will not take; `status` is the HTTP code (4xx) and the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Rejected:
    name: str
    reason: str


def display_name(name: str | None) -> str:
    """A file name to show, never to open: its last part, printable, at most 255 characters (what
    the database keeps)."""
    base = (name or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in base if ch.isprintable())[:255] or "upload"


def shown(path: str) -> str:
    """A zip member's whole name, for messages: printable, and cut at 255 characters."""
    return shorten("".join(ch for ch in path if ch.isprintable()), 255)


def check_label(label: str, limits: Limits) -> str:
    label = (label or "").strip()
    if not label:
        raise UploadError(422, "the label is empty: give each example a class name")
    if len(label) > limits.max_label_chars:
        raise UploadError(422, f"the label is longer than {limits.max_label_chars} characters: use a shorter class name")
    if any(unicodedata.category(ch).startswith("C") for ch in label):
        raise UploadError(422, "the label contains control characters: use plain text for class names")
    if label == UNKNOWN:
        raise UploadError(422, f"{UNKNOWN!r} is what a model answers when no class fits: name the class otherwise "
                               "(e.g. 'other')")
    return label


def check_text(text: str, limits: Limits) -> str:
    text = (text or "").strip()
    if not text:
        raise UploadError(422, "the text is empty")
    if len(text) > limits.max_text_chars:
        raise UploadError(413, f"a text is longer than {limits.max_text_chars} characters: shorten it")
    if "\x00" in text:  # PostgreSQL cannot store it, and no tokenizer means anything by it
        raise UploadError(422, "the text contains a NUL character (\\u0000): remove it")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate, e.g. "\udfff": the tokenizer would raise
        raise UploadError(422, f"the text is not valid Unicode ({error.reason} at position {error.start}): "
                               "send UTF-8 text") from error
    return text


def check_image(data: bytes, limits: Limits) -> None:
    """Raise UploadError unless `data` is one decodable image within the size and pixel limits."""
    if not data:
        raise UploadError(422, "the file is empty")
    if len(data) > limits.max_file_bytes:
        raise UploadError(413, f"the image is larger than {limits.max_file_bytes // 2**20} MiB")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in IMAGE_FORMATS:
                raise UploadError(415, f"{image.format} images are not accepted; send {', '.join(sorted(IMAGE_FORMATS))}")
            width, height = image.size
            if width * height > limits.max_pixels:
                raise UploadError(413, f"the image has {width}x{height} pixels, more than the {limits.max_pixels} allowed")
            try:
                check_shape(width, height)
            except ImageShapeError as error:
                raise UploadError(422, str(error)) from error
            image.verify()  # checksums and structure, without decoding
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (64, 64))  # a full decode at low scale catches truncated files cheaply
            image.load()
    except UploadError:
        raise
    except Image.DecompressionBombError as error:
        raise UploadError(413, f"the image is a decompression bomb or far too large ({error})") from error
    except Exception as error:  # Pillow raises many types for bad files; all mean "not an image"
        raise UploadError(415, f"not a readable image ({type(error).__name__}); send a JPEG, PNG, GIF, BMP, WebP or TIFF file") from error


def read_zip(data: bytes, limits: Limits) -> tuple[list[tuple[str, str, bytes]], list[Rejected]]:
    """(class, file name, bytes) for each image in a zip of CLASS/IMAGE folders, and what was left out."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as error:
        raise UploadError(415, "not a zip file: send a .zip with one folder of images per class") from error
    members = [info for info in archive.infolist() if not info.is_dir()]
    if len(members) > limits.max_files:
        raise UploadError(413, f"the zip holds {len(members)} files, more than the {limits.max_files} allowed: split it")
    if sum(info.file_size for info in members) > limits.max_zip_bytes:
        raise UploadError(413, f"the zip unpacks to more than {limits.max_zip_bytes // 2**20} MiB: split it")
    images, rejected, total = [], [], 0
    for info in members:
        parts = PurePosixPath(info.filename.replace("\\", "/")).parts
        if info.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise UploadError(422, f"the zip has an unsafe member name {shown(info.filename)!r} (absolute or with '..'): "
                                   "make it again from a folder")
        if any(part.startswith(".") or part == "__MACOSX" for part in parts):
            continue  # hidden files and macOS resource forks are not examples
        if len(parts) < 2:
            rejected.append(Rejected(shown(info.filename), "not inside a class folder (expected CLASS/IMAGE)"))
            continue
        if info.file_size > limits.max_file_bytes:
            rejected.append(Rejected(shown(info.filename), f"larger than {limits.max_file_bytes // 2**20} MiB"))
            continue
        with archive.open(info) as member:
            content = member.read(limits.max_file_bytes + 1)  # a lying header cannot make us read more
        total += len(content)
        if len(content) > limits.max_file_bytes or total > limits.max_zip_bytes:
            raise UploadError(413, "the zip unpacks to more than its headers say: it is refused")
        try:
            label = check_label(parts[-2], limits)
            check_image(content, limits)
        except UploadError as error:
            rejected.append(Rejected(shown(info.filename), error.message))
            continue
        images.append((label, display_name(parts[-1]), content))
    return images, rejected


def read_csv(data: bytes, limits: Limits) -> tuple[list[tuple[str, str]], list[Rejected]]:
    """(text, label) rows of a CSV/TSV with a header naming the columns `text` and `label`."""
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UploadError(415, "the CSV is not UTF-8 text: save it as UTF-8 and try again") from error
    if "\x00" in content:
        raise UploadError(415, "the file holds binary data, not CSV text")
    try:
        delimiter = csv.Sniffer().sniff(content[:4096], delimiters=",\t;").delimiter
    except csv.Error:
        delimiter = ","
    try:
        rows = [row for row in csv.reader(io.StringIO(content), delimiter=delimiter) if row]
    except csv.Error as error:
        raise UploadError(422, f"the CSV cannot be parsed ({error})") from error
    header = [name.strip().lower() for name in rows[0]] if rows else []
    if "text" not in header or "label" not in header:
        raise UploadError(422, f"the CSV needs a header row with columns 'text' and 'label'; its first row is {rows[0] if rows else []}")
    if len(rows) - 1 > limits.max_rows:
        raise UploadError(413, f"the CSV has {len(rows) - 1} rows, more than the {limits.max_rows} allowed: split it")
    text_at, label_at = header.index("text"), header.index("label")
    examples, rejected = [], []
    for number, row in enumerate(rows[1:], start=2):
        try:
            text = check_text(row[text_at] if text_at < len(row) else "", limits)
            label = check_label(row[label_at] if label_at < len(row) else "", limits)
        except UploadError as error:
            rejected.append(Rejected(f"line {number}", error.message))
            continue
        examples.append((text, label))
    return examples, rejected
