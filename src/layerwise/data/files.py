"""Reading the text files data sets are made of: UTF-8 only, with one clear error for anything else.

Every text file a data set reads (a ``.txt`` corpus, tinyshakespeare and wikitext files, GLUE TSVs)
goes through ``read_text``, so they all accept the same files and fail with the same message.
"""

from __future__ import annotations

from pathlib import Path

from layerwise.errors import LayerwiseError


def read_text(path: str | Path) -> str:
    """The UTF-8 text of ``path``, normalised by ``normalize_text`` (no byte-order mark, ``\\n`` line ends).

    Bytes that are not UTF-8 raise a ``LayerwiseError`` naming the file, the byte offset and the line,
    rather than a ``UnicodeDecodeError`` traceback or text silently decoded some other way.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise LayerwiseError(f"cannot read {path}: {e.strerror or e}: check the path and its permissions") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise LayerwiseError(
            f"{path} is not UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start} (line {line}) cannot be decoded: "
            "re-save the file as UTF-8"
        ) from None
    return normalize_text(text)


def normalize_text(text: str) -> str:
    """``text`` without a leading UTF-8 byte-order mark, with CRLF and lone CR line ends turned into ``\\n``.

    The same line ends Python's text mode gives, so files saved on Windows read like any other, and a
    BOM (added by some editors and spreadsheet exports) never ends up glued to the first word or column.
    """
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
