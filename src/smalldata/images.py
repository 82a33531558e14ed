"""Fast, uniform image decoding: every image enters the models the same way."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps

from smalldata.errors import ImageFileError  # noqa: F401  (defined there; callers import it from here too)

# Decompression bombs: refuse images above this many pixels instead of filling memory.
Image.MAX_IMAGE_PIXELS = 80_000_000
# A strip far longer than it is wide: resizing its shorter side to a backbone's 224-260 px would
# scale the longer one past memory (a 99-byte PNG of 20000x1 pixels took 25 s and 4.9 GB).
# Panoramas and receipts stay well under this.
MAX_ASPECT_RATIO = 20
# Whole-file reads of an image (its content hash, its decoding) are bounded by this: a 100-megapixel
# JPEG is about 50 MiB, so a bigger file is a video, an archive or a disk image under an image name
# (a 3 GB one named .jpg was read whole, 3 GB of memory and 8-12 s, before PIL said it was no image).
MAX_IMAGE_BYTES = 256 * 2**20


class ImageShapeError(ImageFileError):
    """An image whose shape no model can use; the message says what is wrong with it."""


def check_file_size(path: str | Path) -> None:
    """Raise ImageFileError for a file too large to be an image worth reading; only stats the file."""
    size = Path(path).stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise ImageFileError(f"the file is {size / 2**20:.0f} MiB, more than the {MAX_IMAGE_BYTES // 2**20} MiB "
                             "an image may be: give a smaller image (a file this large is rarely a photo)")


def check_shape(width: int, height: int) -> None:
    """Raise ImageShapeError for an image of no pixels, too many, or too long a strip."""
    if width < 1 or height < 1:
        raise ImageShapeError(f"the image is {width}x{height} pixels: it has no pixels")
    if width * height > Image.MAX_IMAGE_PIXELS:
        raise ImageShapeError(f"the image is {width}x{height} pixels, more than {Image.MAX_IMAGE_PIXELS}: make it smaller")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageShapeError(f"the image is {width}x{height} pixels, more than {MAX_ASPECT_RATIO} times longer than "
                              "it is wide: crop it to what should be classified")


def load_rgb(path: str | Path | BinaryIO, size: int) -> Image.Image:
    """The image at `path` (or in a file object), its shorter side resized (bicubic) to `size`,
    centre-cropped to a square.

    JPEGs are decoded at reduced scale (PIL's draft mode), which makes decoding cost little next
    to the network.
    """
    if isinstance(path, (str, Path)):  # a file object's bytes are in memory already (the service's uploads)
        check_file_size(path)  # PIL opens lazily, but decoding a huge file would read it all
    with Image.open(path) as image:
        check_shape(*image.size)  # before any decoding or resizing
        image.draft("RGB", (size, size))  # JPEG only: decode at 1/2, 1/4, 1/8 scale when large
        image = ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF
        image = image.convert("RGB")
    width, height = image.size
    scale = size / min(width, height)
    resized = (max(size, round(width * scale)), max(size, round(height * scale)))
    # Bicubic, as in EfficientNet's own (TensorFlow) preprocessing: +0.8 points over bilinear with
    # 10 clothing10 photos per class, the same on flowers12.
    image = image.resize(resized, Image.BICUBIC, reducing_gap=3.0)
    left = (resized[0] - size) // 2
    top = (resized[1] - size) // 2
    return image.crop((left, top, left + size, top + size))
