"""The one place the tool reads a file: a regular file of bounded size, decoded and parsed with one clear error.

Every file the tool opens goes through here: configs and recipes (YAML), tables, corpora, run folders' JSON,
marks, images, model folders' JSON. So every reader refuses the same things with one ``LayerwiseError`` line:

- anything but a regular file (a FIFO would block ``open``, ``/dev/zero`` would fill memory, a directory or a
  socket cannot be read), checked with ``os.stat`` *before* opening, symlinks followed;
- a file larger than its kind's cap (``LIMITS``), checked from its size before reading, and read at most cap + 1
  bytes, so a file that grows (or lies about its size) still cannot exceed the cap;
- bytes that are not UTF-8 (text), syntax errors and nesting too deep to parse (JSON), a wrong shape (a schema).

``inside`` confines a path to a folder after resolving symlinks: what ``layerwise report`` uses so that a page,
which is meant to be mailed, never holds a file from outside the run folders it was given.
"""

from __future__ import annotations

import csv
import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from layerwise.errors import LayerwiseError

MiB = 1 << 20
# Generous caps per kind of file: far above any file the tool writes or reads in practice, far below memory.
LIMITS = {"config": 4 * MiB, "recipe": 4 * MiB, "json": 256 * MiB, "mark": 4 * MiB, "image": 64 * MiB,
          "table": 4096 * MiB, "corpus": 4096 * MiB, "text": 64 * MiB, "tokenizer": 512 * MiB, "archive": 4096 * MiB,
          "weights": 1 << 40}  # weights are memory-mapped, not read whole
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
M = TypeVar("M", bound=BaseModel)


def check_regular(path: str | Path, kind: str) -> int:
    """The size of ``path`` (symlinks followed), a regular file; anything else → one LayerwiseError line.

    Checked with ``os.stat`` before any ``open``: opening a FIFO blocks until a writer comes, and a device
    (``/dev/zero``, ``/dev/urandom``) reads forever."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise LayerwiseError(f"{path} does not exist: check the path") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        raise LayerwiseError(f"cannot read {shown(path)}: {getattr(e, 'strerror', None) or e}: check the path and "
                             "its permissions") from None
    if not stat.S_ISREG(info.st_mode):
        what = ("a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(info.st_mode)
                else "a socket" if stat.S_ISSOCK(info.st_mode) else "a device file")
        raise LayerwiseError(f"{path} is {what}, not a regular file: pass a {kind} file")
    limit = LIMITS[kind]
    if info.st_size > limit:
        raise LayerwiseError(f"{path} is {_amount(info.st_size)}, over the {_amount(limit)} a{_n(kind)} {kind} file "
                             "may have: pass a smaller file")
    return info.st_size


def read_bytes(path: str | Path, kind: str) -> bytes:
    """The bytes of ``path``, a regular file of at most ``LIMITS[kind]`` bytes (read at most one byte more)."""
    check_regular(path, kind)
    limit = LIMITS[kind]
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    except OSError as e:
        raise LayerwiseError(f"cannot read {path}: {e.strerror or e}: check the path and its permissions") from None
    if len(raw) > limit:
        raise LayerwiseError(f"{path} grew over the {_amount(limit)} a{_n(kind)} {kind} file may have: pass a "
                             "smaller file")
    return raw


def read_text(path: str | Path, kind: str = "text") -> str:
    """The UTF-8 text of ``path``, normalised by ``normalize_text`` (no byte-order mark, ``\\n`` line ends).

    Bytes that are not UTF-8 raise a ``LayerwiseError`` naming the file, the byte offset and the line,
    rather than a ``UnicodeDecodeError`` traceback or text silently decoded some other way.
    """
    raw = read_bytes(path, kind)
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


def parse_json(text: str, source: str) -> Any:
    """``json.loads(text)``; bad syntax or nesting too deep to parse → one line naming ``source``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LayerwiseError(f"{source} is not JSON ({e.msg} at line {e.lineno}, column {e.colno}): "
                             "pass a file written by layerwise") from None
    except RecursionError:
        raise LayerwiseError(f"{source} nests JSON too deeply to read: pass a file written by layerwise") from None
    except ValueError as e:  # a number of more digits than Python converts
        raise LayerwiseError(f"{source} is not JSON the tool can read ({str(e).splitlines()[0]}): pass a file "
                             "written by layerwise") from None


def read_json(path: str | Path, schema: type[M] | None = None, kind: str = "json") -> Any:
    """The JSON value in ``path`` (a bounded regular UTF-8 file), checked against ``schema`` when given.

    The value is returned as parsed (not the schema's model), so a reader keeps any extra keys the schema
    lets through; a wrong shape is one line naming the file and the key (``layerwise.schema.validate``)."""
    from layerwise.schema import validate

    data = parse_json(read_text(path, kind), str(path))
    if schema is not None:
        if not isinstance(data, dict):
            raise LayerwiseError(f"{path} holds a JSON {_json_type(data)}, not an object: pass a file written by "
                                 "layerwise")
        validate(schema, data, str(path))
    return data


def read_png(path: str | Path) -> bytes:
    """The bytes of a PNG image: a bounded regular file starting with the 8-byte PNG signature."""
    raw = read_bytes(path, "image")
    if not raw.startswith(PNG_SIGNATURE):
        raise LayerwiseError(f"{path} is not a PNG image (no PNG signature): remove it or re-draw the figure")
    return raw


def inside(folder: str | Path, name: str | Path) -> Path:
    """``folder / name`` with symlinks resolved, refused (one line) when it leaves ``folder``: an absolute
    ``name``, ``..`` parts, or a symlink pointing outside."""
    root = Path(folder).resolve()
    if Path(name).is_absolute():
        raise LayerwiseError(f"{name} is an absolute path: only files inside {folder} are read")
    try:
        target = (root / name).resolve()
    except (OSError, RuntimeError, ValueError) as e:  # a symlink loop, a NUL byte in the name
        raise LayerwiseError(f"{shown(Path(folder) / name)} cannot be resolved ({e}): only files inside "
                             f"{shown(folder)} are read") from None
    if not target.is_relative_to(root):
        raise LayerwiseError(f"{Path(folder) / name} leads outside {folder}: only files inside it are read")
    return target


def shown(path: str | Path) -> str:
    """``path`` as an error shows it: as is, or quoted with escapes where it holds a NUL byte or a line break."""
    return str(path) if str(path).isprintable() else repr(str(path))


def _amount(size: int) -> str:
    return f"{size} bytes" if size < MiB else f"{size / MiB:.1f} MiB" if size % MiB else f"{size // MiB} MiB"


def _n(word: str) -> str:
    return "n" if word[0] in "aeiou" else ""


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


@contextmanager
def csv_fields(limit: int) -> Iterator[None]:
    """Python's ``csv`` with fields of up to ``limit`` characters (its default, 131072, refuses a long text
    that is valid input); the previous limit is restored. The file itself is already bounded by its cap."""
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)
