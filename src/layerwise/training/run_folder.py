"""The run folder ``--out``: which files the trainer writes there, whether a fresh run may use it, and its log.

The rule for ``--out``
- A folder with ``checkpoint/latest.json`` holds a run of ours: training resumes it (or, when every epoch is
  done, only re-saves the model and ``metrics.json``). ``overwrite`` plays no part there.
- Otherwise the run is fresh. It may write into a folder that does not exist, is empty, or holds only
  files the trainer writes: ``log.jsonl``, ``metrics.json``, ``checkpoint/`` (with ``step-*``,
  ``.tmp-step-*`` and ``latest.json``), the saved model (``MODEL_FILE``: own and Hugging Face model and
  tokenizer files) and the temporary files of their atomic writes. That covers our own run killed before
  its first checkpoint, or an ``lp`` run, which keeps none.
- Anything else (a user's notes, data, their own folder under ``checkpoint/``) makes a fresh run stop with
  an error, unless ``overwrite`` is given. Even then the trainer deletes nothing it did not write: a fresh
  run replaces ``log.jsonl``, checkpoints prune only ``step-*`` / ``.tmp-step-*``, and the model files are
  overwritten in place.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from layerwise.errors import LayerwiseError
from layerwise.files import read_bytes
from layerwise.report.serialize import atomic_write_text
from layerwise.training.checkpointing import is_ours

LOG, METRICS, CHECKPOINTS = "log.jsonl", "metrics.json", "checkpoint"
MODEL_FILE = re.compile(
    r"config\.json|model\.safetensors|layerwise\.json|exit_heads\.safetensors"  # save_model
    r"|generation_config\.json|model\.safetensors\.index\.json|model-\d+-of-\d+\.safetensors"  # save_pretrained
    r"|tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|added_tokens\.json|vocab\.(txt|json)"
    r"|merges\.txt|(tokenizer|spiece|sentencepiece\.bpe)\.model|chat_template\.(jinja|json)")
ATOMIC_TEMP = re.compile(r"\.(.+)\.[a-z0-9_]{8}")  # report.serialize.atomic_write's tempfile names


def _untemp(name: str) -> str:
    """The file an interrupted atomic write was writing (the name itself for any other entry)."""
    match = ATOMIC_TEMP.fullmatch(name)
    return match.group(1) if match else name


def foreign_entries(out: Path) -> list[Path]:
    """Entries of ``out`` (and of ``out/checkpoint``) that the trainer does not write."""
    foreign = []
    for entry in sorted(out.iterdir()):
        name = _untemp(entry.name)
        if name == CHECKPOINTS and entry.is_dir() and not entry.is_symlink():
            foreign += [e for e in sorted(entry.iterdir()) if not is_ours(_untemp(e.name))]
        elif not (entry.is_file() and (name in (LOG, METRICS) or MODEL_FILE.fullmatch(name))):
            foreign.append(entry)
    return foreign


def check_fresh_out(out: Path, overwrite: bool) -> None:
    """A fresh run refuses a folder holding files it did not write, unless ``overwrite`` (see the module)."""
    if overwrite or not out.is_dir():
        return
    foreign = foreign_entries(out)
    if foreign:
        shown = ", ".join(str(p.relative_to(out)) for p in foreign[:3]) + (", …" if len(foreign) > 3 else "")
        raise LayerwiseError(f"{out} holds files a training run does not write ({shown}): pass an empty or new "
                             "--out, or --overwrite to train there anyway (those files are kept)")


# ---------------------------------------------------------------- log.jsonl


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
                                 "over, or use another --out")
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
