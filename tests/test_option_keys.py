"""Library errors name options by their keys (`` `batch_size` ``), never by CLI flags; the CLI prints each key as
its flag (``--batch-size``). Only ``cli/`` knows flag names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from fixtures import ROOT, run_cli, train_config, train_flags

from layerwise.cli.app import as_flags
from layerwise.errors import LayerwiseError
from layerwise.training import train

FLAG = re.compile(r"--[a-z]")


def message_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string constant in a raise, a ``warn``/``warning`` call or an exception built by
    name (``LayerwiseError(...)``, ``…Warning(...)``; a helper may return the exception for its caller to raise)."""
    found = {}  # by node: a raise and the exception call inside it hold the same strings
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            site = node.exc
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name not in ("warn", "warning") and not name.endswith(("Error", "Warning")):
                continue
            site = node
        else:
            continue
        strings = [c for c in ast.walk(site) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
        found |= {id(c): (c.lineno, c.value) for c in strings}
    return sorted(found.values())


def library_files() -> list[Path]:
    package = ROOT / "src" / "layerwise"
    return [p for p in sorted(package.rglob("*.py")) if "cli" not in p.relative_to(package).parts]


def test_library_messages_name_no_flags():
    hits, seen = [], 0
    for path in library_files():
        strings = message_strings(ast.parse(path.read_text()))
        seen += len(strings)
        hits += [f"{path.relative_to(ROOT)}:{line}: {text!r}" for line, text in strings if FLAG.search(text)]
    assert seen > 200  # the scan reads the package's messages (not an empty or wrong folder)
    assert not hits, "name the option by its key in backticks (`batch_size`), not its flag:\n" + "\n".join(hits)


def test_the_scan_finds_flag_text():
    """The scan above would see a flag in each kind of site it reads."""
    planted = ast.parse('raise LayerwiseError("pass another --out")\n'
                        'warnings.warn(f"lower --lr {lr}")\n'
                        'def corrupt(p): return LayerwiseError(f"{p}: use another --out", option="out")\n'
                        'raise LayerwiseError("pass another `out`", option="out")\n')
    assert [line for line, text in message_strings(planted) if FLAG.search(text)] == [1, 2, 3]


def test_keys_in_backticks_become_flags():
    assert as_flags("`val_split` 1.5: pass a fraction; lower `batch_size` or `lr`") == \
        "--val-split 1.5: pass a fraction; lower --batch-size or --lr"
    # Only a backticked snake_case key is a flag: a command line or a flag already spelled out stays as it is.
    assert as_flags("see `layerwise models`, or `--out`; K_X") == "see `layerwise models`, or `--out`; K_X"


def test_a_library_error_prints_its_key_as_a_flag(tmp_path, monkeypatch, capsys):
    """``resume`` without a checkpoint: the trainer (library) names the key and carries it; the CLI prints the
    flag, on one line, with exit status 2."""
    with pytest.raises(LayerwiseError) as e:
        train(train_config(tmp_path, "py", resume=True))
    assert e.value.option == "resume" and str(e.value).startswith("`resume`: no checkpoint in ")
    out = tmp_path / "cli"
    code, _, err = run_cli(monkeypatch, capsys, *train_flags(out, resume=True))
    assert code == 2
    assert err == f"error: --resume: no checkpoint in {out / 'checkpoint'}; run without --resume to start\n"


def test_exit_val_split_out_of_range_names_the_flag(tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "exit", "--model", "mlp-residual", "--data", "digits", "--limit", "50",
                        "--val-split", "1.5", "--out", tmp_path / "out")
    assert code == 2
    assert err == "error: --val-split 1.5: pass a fraction in (0, 1) or a split name\n"
