"""Text as messages and tables show it. Imports nothing: the command line, the library and the
service all use it."""

from __future__ import annotations


def shorten(text: str | None, width: int = 60) -> str:
    """`text` cut to at most `width` characters, "..." marking a cut (None: "")."""
    text = "" if text is None else str(text)
    return text if len(text) <= width else text[: width - 3] + "..."
