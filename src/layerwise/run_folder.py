"""The one rule for where a command may write: its run folder ``out``, and the manifest that says what is its own.

The rule
- Every writing command calls ``open_run_folder(out, command, overwrite=…, outputs=…)`` before any work, and
  ``RunFolder.record()`` after writing. ``outputs`` are glob patterns of the top-level entries it may write.
- The manifest ``out/.layerwise.json`` (schema ``Manifest``) lists the entries the tool wrote (``files``), the
  patterns the last command claimed (``outputs``), whether that command is still ``running`` (killed, or not yet
  recorded: then entries matching its ``outputs`` are its own too) and the user's entries kept (``kept``).
- An entry is the tool's only if it is a regular file or a folder (never a symlink, FIFO or device) that the
  manifest lists, or a temporary file of an interrupted atomic write of such an entry (``.NAME.xxxxxxxx``).
  A folder that is the tool's is the tool's as a whole. Everything else is foreign.
- Without ``overwrite``: a folder holding a foreign entry is refused. A folder holding only the tool's entries
  is accepted (re-running a command, resuming a training run).
- With ``overwrite``: the command may replace the tool's entries, never a foreign one. A foreign entry that
  matches one of ``outputs`` (it would be replaced) is refused up front; the others are recorded as ``kept``.
- Writes never follow a symlink found in the folder: such an entry is foreign, so it is refused or kept
  (``out`` itself may be a link to a folder). Only the top level is checked: inside a folder of its own, a
  command writes only names it owns (checkpoints prune only ``step-*``).
- A single output file outside a run folder (``report``'s page) is checked by ``check_output_file``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from layerwise.errors import LayerwiseError
from layerwise.report.serialize import atomic_write_text
from layerwise.schema import Options, validate

MANIFEST = ".layerwise.json"
ATOMIC_TEMP = re.compile(r"\.(.+)\.[a-z0-9_]{8}")  # report.serialize.atomic_write's temporary file names
PROBE_PREFIX = ".layerwise-probe-"
SHOWN = 3  # foreign entries named in an error
MANIFEST_CAP = 1 << 24  # bytes: a manifest lists names, far less


class Manifest(Options):
    """``.layerwise.json``: what the tool wrote into a run folder (read from disk, so checked strictly)."""

    command: str
    outputs: list[str]
    running: bool
    files: list[str]
    kept: list[str]


# ---------------------------------------------------------------- pure helpers


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether ``name`` matches one of the glob ``patterns`` (case-sensitive, as file systems mostly are)."""
    return any(fnmatchcase(name, p) for p in patterns)


def temp_target(name: str) -> str | None:
    """The entry an interrupted atomic write was writing, for a temporary file's name; None for other names."""
    match = ATOMIC_TEMP.fullmatch(name)
    return match.group(1) if match else None


def is_bookkeeping(name: str) -> bool:
    """The manifest, and the leftovers of its atomic write or of a writability probe killed mid-way."""
    return name == MANIFEST or temp_target(name) == MANIFEST or name.startswith(PROBE_PREFIX)


def listable(name: str, kind: str) -> bool:
    """Whether an entry of the tool's goes in the manifest's ``files`` (not bookkeeping, temporaries or links)."""
    return kind != "other" and not is_bookkeeping(name) and temp_target(name) is None


def is_own(name: str, kind: str, manifest: Manifest | None) -> bool:
    """Whether the entry ``name`` of kind ``file``, ``dir`` or ``other`` (symlink, FIFO, device) is the tool's."""
    if is_bookkeeping(name):
        return kind == "file"
    if manifest is None or kind == "other":
        return False
    pending = manifest.outputs if manifest.running else []

    def claimed(n: str) -> bool:
        return n not in manifest.kept and (n in manifest.files or matches(n, pending))

    target = temp_target(name)
    return claimed(name) or (kind == "file" and target is not None and claimed(target))


def foreign_names(entries: dict[str, str], manifest: Manifest | None) -> list[str]:
    """The entries (name → kind) that the tool did not write, sorted."""
    return sorted(n for n, kind in entries.items() if not is_own(n, kind, manifest))


def shown(names: Sequence[str]) -> str:
    """Up to ``SHOWN`` names for an error message."""
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def refusal(out: Path, command: str, foreign: Sequence[str], overwrite: bool, outputs: Sequence[str]) -> str | None:
    """The error for a folder holding ``foreign`` entries (None: the command may write there)."""
    if not foreign:
        return None
    if not overwrite:
        return (f"`out` {out} holds files {command} did not write ({shown(foreign)}): pass an empty or new `out`, "
                "or `overwrite` to write beside them (they are kept)")
    colliding = [n for n in foreign if matches(n, outputs)]
    if colliding:
        return (f"`out` {out} holds files {command} did not write that it would replace ({shown(colliding)}): "
                "move them away or pass another `out` (`overwrite` never replaces a file the tool did not write)")
    return None


# ---------------------------------------------------------------- the folder on disk


def entry_kind(path: Path) -> str:
    """``file``, ``dir`` or ``other``, without following a symlink."""
    mode = path.lstat().st_mode
    return "file" if stat.S_ISREG(mode) else "dir" if stat.S_ISDIR(mode) else "other"


def scan(out: Path) -> dict[str, str]:
    """The top-level entries of ``out``, name → kind ({} when ``out`` does not exist)."""
    if not out.exists():
        return {}
    try:
        return {entry.name: entry_kind(entry) for entry in out.iterdir()}
    except OSError as e:
        raise LayerwiseError(f"`out` {out} cannot be read ({e.strerror or e}): pass a readable folder") from e


def read_manifest(out: Path) -> Manifest | None:
    """``out/.layerwise.json`` (None when absent); a file of another shape is a one-line error naming it and
    the key."""
    path = out / MANIFEST
    if not os.path.lexists(path):
        return None
    if entry_kind(path) != "file":
        raise LayerwiseError(f"`out` {out}: {MANIFEST} is not a regular file: pass another `out`")
    try:
        with path.open("rb") as f:
            text = f.read(MANIFEST_CAP + 1)
        if len(text) > MANIFEST_CAP:
            raise ValueError(f"over {MANIFEST_CAP} bytes")
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise LayerwiseError(f"{path} is not a manifest of ours ({type(e).__name__}: {str(e)[:80]}): delete it or "
                             "pass another `out`") from e
    return validate(Manifest, data, str(path))


def probe_writable(out: Path) -> Path:
    """Whether ``out`` can be written: create it (and its parents) and a file in it, then remove all that was
    created. Permissions alone do not tell (root, read-only mounts, a file where a parent folder should be)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LayerwiseError(f"`out` {out} is an existing file: pass a folder")
    created = [p for p in (out, *out.parents) if not p.exists()]  # deepest first
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=out, prefix=PROBE_PREFIX)
        os.close(handle)
        os.unlink(probe)
    except OSError as e:
        raise LayerwiseError(f"`out` {out} cannot be written ({e.strerror or e}): pass a writable folder") from e
    finally:
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()
    return out


def write_manifest(out: Path, manifest: Manifest) -> None:
    atomic_write_text(json.dumps(manifest.model_dump(), indent=2) + "\n", out / MANIFEST)


@dataclass
class RunFolder:
    """A run folder opened by ``open_run_folder``: ``record()`` lists what the command wrote."""

    path: Path
    command: str
    outputs: tuple[str, ...]

    def record(self, *, done: bool = True) -> None:
        """List in the manifest the tool's entries now present (those listed before that still exist, and those
        matching this command's ``outputs``). ``done=False`` (the trainer after a checkpoint) keeps the command
        ``running``, so that what it writes next is still its own if it is killed. Idempotent."""
        manifest = read_manifest(self.path)
        if manifest is None:
            raise LayerwiseError(f"`out` {self.path}: {MANIFEST} disappeared during the run: pass another `out`")
        entries = scan(self.path)
        own = [n for n, kind in entries.items() if listable(n, kind) and n not in manifest.kept
               and (n in manifest.files or matches(n, self.outputs))]
        write_manifest(self.path, manifest.model_copy(update={"files": sorted(own), "running": not done}))


def check_run_folder(out: Path, command: str, *, overwrite: bool, outputs: Sequence[str]) -> list[str]:
    """The check of ``open_run_folder`` alone, writing nothing (a command whose remaining checks read its data
    first); returns the foreign entries that ``overwrite`` keeps."""
    out = Path(out)
    if os.path.lexists(out) and not out.is_dir():
        raise LayerwiseError(f"`out` {out} is an existing file: pass a folder")
    foreign = foreign_names(scan(out), read_manifest(out))
    message = refusal(out, command, foreign, overwrite, tuple(outputs))
    if message:
        raise LayerwiseError(message)
    return foreign


def open_run_folder(out: Path, command: str, *, overwrite: bool, outputs: Sequence[str]) -> RunFolder:
    """Check ``out`` for ``command`` before any work (see the module's rule), create it (writability probed) and
    write its manifest; ``outputs``: glob patterns of the top-level entries the command may write."""
    out, outputs = Path(out), tuple(outputs)
    foreign = check_run_folder(out, command, overwrite=overwrite, outputs=outputs)
    entries = scan(out)
    probe_writable(out)
    out.mkdir(parents=True, exist_ok=True)
    own = [n for n, kind in entries.items() if n not in foreign and listable(n, kind)]
    write_manifest(out, Manifest(command=command, outputs=list(outputs), running=True, files=sorted(own), kept=foreign))
    return RunFolder(out, command, outputs)


def check_output_file(out: Path, is_ours: Callable[[bytes], bool], writer: str = "layerwise",
                      what: str = "a file") -> Path:
    """A single output file (not a run folder): absent, or a regular file the tool wrote, told by its first
    4 KiB (``is_ours``) or by the manifest of its folder; never a folder, symlink or device; its folder exists."""
    out = Path(out)
    manifest = read_manifest(out.parent) if out.parent.is_dir() else None
    if os.path.lexists(out):
        kind = entry_kind(out)
        if kind != "file":
            raise LayerwiseError(f"`out` {out} is {'a folder' if kind == 'dir' else 'not a regular file'}: "
                                 f"pass the path of {what}")
        listed = manifest is not None and out.name in manifest.files
        kept = manifest is not None and out.name in manifest.kept  # a user's file, whatever it holds
        try:
            with out.open("rb") as f:
                head = f.read(4096)
        except OSError as e:
            raise LayerwiseError(f"`out` {out} cannot be read ({e.strerror or e}): pass another file") from e
        if kept or not (listed or is_ours(head)):
            raise LayerwiseError(f"`out` {out} exists and was not written by {writer}: pass another file "
                                 "(a file of ours is the only one ever replaced)")
    if not out.parent.is_dir():
        raise LayerwiseError(f"`out` {out} is in a folder that does not exist: create it or pass another file")
    return out


def record_file(path: Path) -> None:
    """List ``path`` in the manifest of its folder, when that folder is a run folder (a page written into it)."""
    path = Path(path)
    manifest = read_manifest(path.parent)
    if manifest is not None and path.name not in manifest.files and entry_kind(path) == "file":
        write_manifest(path.parent, manifest.model_copy(update={"files": sorted([*manifest.files, path.name])}))
