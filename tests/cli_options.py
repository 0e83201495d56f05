"""What the CLI declares, for tests that check command lines written outside it (recipes, README, docs)."""

from __future__ import annotations

import shlex

import typer.main

from layerwise.cli.app import app


def declared_commands() -> set[str]:
    """Every command name the CLI declares (``analyze``, ``gen-eval``, …)."""
    return set(typer.main.get_command(app).commands)


def declared_options(command: str) -> set[str]:
    """Every option string the CLI declares for ``command`` (``--model``, ``--no-progress``, …)."""
    click_command = typer.main.get_command(app).commands[command]
    return {opt for p in click_command.params for opt in (*p.opts, *p.secondary_opts)}


def layerwise_argv(line: str) -> list[str] | None:
    """The arguments after ``layerwise`` (or ``-m layerwise.cli``) of one shell line, or None when the line does
    not run layerwise. Leading ``VAR=value`` settings and ``nice -n N`` are skipped; ``#`` starts a comment."""
    words = shlex.split(line, comments=True)
    while words and "=" in words[0] and not words[0].startswith("-"):
        words = words[1:]
    if words[:2] == ["nice", "-n"]:
        words = words[3:]
    if words[:1] == ["layerwise"]:
        return words[1:]
    if "layerwise.cli" in words and words[words.index("layerwise.cli") - 1] == "-m":
        return words[words.index("layerwise.cli") + 1:]
    return None


def unknown_parts(argv: list[str]) -> list[str]:
    """The command or flags of ``argv`` (the arguments after ``layerwise``) that the CLI does not declare."""
    if not argv or argv[0] not in declared_commands():
        return argv[:1] or ["(no command)"]
    words = [a.lstrip("[") for a in argv[1:]]  # `[--min-layer 1]`: an optional part written as in usage lines
    flags = {a.split("=", 1)[0].rstrip("]") for a in words if a.startswith("--")}
    return sorted(flags - declared_options(argv[0]))
