"""``log.jsonl``: one JSON record per line, per epoch (and one for the LP stage), of a training run.

Written by the main process only. A resumed run keeps the records of the epochs its checkpoint had completed;
a fresh run starts a fresh log. A kill mid-write leaves a partial last line, which reading drops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerwise.errors import LayerwiseError
from layerwise.files import read_bytes
from layerwise.report.serialize import atomic_write_text

LOG, METRICS = "log.jsonl", "metrics.json"


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of ``log.jsonl`` ([] when absent). A last line without its newline was cut short by a kill
    and is dropped; any other line that is not a JSON object is an error."""
    if not path.exists():
        return []
    lines = read_bytes(path, "json").decode("utf-8", errors="replace").split("\n")
    records = []
    for number, line in enumerate(lines[:-1], start=1):  # lines[-1]: "" or the unterminated partial line
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise LayerwiseError(f"line {number} of {path} is not a JSON record: delete {path.parent} to start "
                                 "over, or use another `out`")
        records.append(record)
    return records


def append_log(path: Path, record: dict[str, Any]) -> None:
    """One record as one line (a kill mid-write leaves a partial last line, which ``read_log`` drops)."""
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def trim_log(path: Path, epoch: int) -> None:
    """On resume, keep only the records of epochs the checkpoint had completed (the others are redone)."""
    if path.exists():
        keep = [r for r in read_log(path) if r.get("epoch", 0) <= epoch]
        atomic_write_text("".join(json.dumps(r) + "\n" for r in keep), path)


@dataclass
class TrainLog:
    """The run's ``log.jsonl``; ``writer``: whether this process writes it (the main process)."""

    path: Path
    writer: bool

    def start(self, resumed_epoch: int | None) -> None:
        """Trim the log to the epochs a resumed checkpoint completed, or remove the log of an earlier fresh run."""
        if not self.writer:
            return
        if resumed_epoch is not None:
            trim_log(self.path, resumed_epoch)
        elif self.path.exists():
            self.path.unlink()

    def append(self, record: dict[str, Any]) -> None:
        if self.writer:
            append_log(self.path, record)

    def last(self) -> dict[str, Any] | None:
        """The last complete record (None when the log is empty or gone)."""
        records = read_log(self.path)
        return records[-1] if records else None
