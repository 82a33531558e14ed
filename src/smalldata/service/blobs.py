"""Uploaded files, stored by content hash: the same bytes are kept once, and a file name is always
a sha256 the service computed, never anything a request said."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import uuid
from pathlib import Path

HEX64 = re.compile(r"[0-9a-f]{64}")


class DiskFull(OSError):
    """The blob store could not write a file: the disk (or the user's quota) is full."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        if not HEX64.fullmatch(digest):  # only the service's own hashes can become paths
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> str:
        digest = sha256(data)
        target = self.path(digest)
        if not target.exists():
            target.parent.mkdir(exist_ok=True)
            partial = target.with_name(f".{uuid.uuid4().hex}.partial")
            try:
                partial.write_bytes(data)
                os.replace(partial, target)  # atomic: a reader never sees half a file
            except OSError as error:
                partial.unlink(missing_ok=True)  # no half-written file stays behind
                if error.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise DiskFull(error.errno, "the server's disk is full") from error
                raise
        return digest

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()
