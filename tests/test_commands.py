"""The Python API of the commands (``layerwise.commands``): ``run(options)`` writes what the command line writes,
a bad option is a ``LayerwiseError`` naming its key in backticks (which the command line shows as the flag), the
options carry the command line's defaults, and ``training`` does not depend on ``evaluation``."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer
from fixtures import subprocess_env

import layerwise
from layerwise.errors import LayerwiseError

PER_LAYER = ("cka_linear", "cos", "accuracy", "loss", "probe_accuracy", "nc1")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layerwise.cli", *map(str, args)], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=600)


def test_analyze_run_writes_what_the_command_line_writes(tmp_path):
    from layerwise.commands.analyze import AnalyzeOptions, run

    common = dict(model="minilm", data="sentences", split="all", measures="cka_linear,cos", device="cpu")
    returned = run(AnalyzeOptions(**common, out=tmp_path / "api"))
    flags = [x for key, value in common.items() for x in (f"--{key}", value)]
    done = cli("analyze", *flags, "--out", tmp_path / "cli", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    api = json.loads((tmp_path / "api" / "results.json").read_text())
    by_cli = json.loads((tmp_path / "cli" / "results.json").read_text())
    compared = [k for k in PER_LAYER if k in by_cli]
    assert {"cka_linear", "cos", "probe_accuracy"} <= set(compared)  # minilm is an encoder: no readout accuracy
    for key in compared:
        assert api[key] == by_cli[key], key
    assert len(returned["cka_linear"]) == len(api["cka_linear"]) == 7  # minilm: embeddings + 6 blocks
    assert (tmp_path / "api" / "layers.csv").read_text() == (tmp_path / "cli" / "layers.csv").read_text()


def test_a_bad_option_names_its_key_and_the_command_line_its_flag(tmp_path):
    from layerwise.commands.analyze import AnalyzeOptions
    from layerwise.commands.exit import ExitOptions, run

    with pytest.raises(LayerwiseError, match=r"`batch_size`: Input should be greater than 0"):
        AnalyzeOptions(batch_size=0)
    options = AnalyzeOptions()
    with pytest.raises(LayerwiseError, match=r"`sample_cap`"):
        options.sample_cap = -1
    with pytest.raises(LayerwiseError, match=r"^`transfer_splits` 'train': pass two split names"):
        run(ExitOptions(model=["mlp-residual"], data="digits", out=tmp_path / "exit", transfer_splits="train"))
    assert not (tmp_path / "exit").exists()  # refused before anything was written
    done = cli("analyze", "--batch-size", "0", "--out", tmp_path / "a", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: bad options: --batch-size: Input should be greater than 0 (got 0)"


def test_backticked_keys_render_as_flags():
    from layerwise.cli.app import as_flags

    assert as_flags("`val_split` 1.5: pass `out` (see `layerwise models`)") == \
        "--val-split 1.5: pass --out (see `layerwise models`)"


def _commands() -> dict[str, click.Command]:
    import layerwise.cli  # noqa: F401  (registers the commands)
    from layerwise.cli.app import app

    return typer.main.get_command(app).commands  # type: ignore[attr-defined]


def _options(name: str) -> type:
    import importlib

    module = importlib.import_module(f"layerwise.commands.{name.replace('-', '_')}")
    return next(v for k, v in vars(module).items() if k.endswith("Options") and v.__module__ == module.__name__)


@pytest.mark.parametrize("name", ["analyze", "compare", "exit", "connect", "gen-eval", "generate", "lpft", "train",
                                  "truncate", "new-gpt", "report", "reproduce", "train-exit-classifier"])
def test_options_hold_every_flag_with_its_default(name):
    command = _commands()[name]
    fields = _options(name).model_fields
    flags = {p.name: p for p in command.params if p.name != "list_"}  # reproduce --list only prints the figures
    assert set(flags) <= set(fields), set(flags) - set(fields)
    for key, param in flags.items():
        if param.required or key in ("ft_lrs", "lpft_lrs"):  # no default, or parsed from text by the CLI
            continue
        default = fields[key].get_default(call_default_factory=True)
        given = param.default if not isinstance(param.default, (list, tuple)) else list(param.default)
        assert given == default or str(given) == str(default), (key, given, default)


def test_training_does_not_import_evaluation_commands_or_cli():
    root = Path(layerwise.__file__).parent
    for path in (root / "training").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not name.startswith(("layerwise.evaluation", "layerwise.commands", "layerwise.cli")), \
                    f"{path.name} imports {name}"
