"""The README and docs/: the site builds strictly, every code fence closes, every ``layerwise`` command line in
them is one the CLI accepts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli_options import declared_commands, layerwise_argv, unknown_parts

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^\s*(```|~~~)")
SHELL = {"bash", "console", "sh", "shell"}


def fences(text: str) -> list[tuple[int, str]]:
    """(line number, info string) of every line opening or closing a fenced code block."""
    return [(i, FENCE.sub("", line).strip()) for i, line in enumerate(text.splitlines(), 1) if FENCE.match(line)]


def shell_lines(text: str) -> list[tuple[int, str]]:
    """(line number, command) of each line of the fenced bash/console/sh blocks; ``\\`` continuations joined and
    a console's ``$`` prompt dropped."""
    lines, block, pending = [], None, ""
    for i, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            block = FENCE.sub("", line).strip().split(" ")[0] if block is None else None
            continue
        if block not in SHELL:
            continue
        pending += re.sub(r"^\s*\$ ", "", line) if not pending else " " + line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        lines.append((i, pending))
        pending = ""
    return lines


def bad_command_lines(text: str) -> list[str]:
    return [f"line {i}: {parts} in {line!r}" for i, line in shell_lines(text)
            if (argv := layerwise_argv(line)) is not None and (parts := unknown_parts(argv))]


def test_the_checks_can_fail():
    page = "```bash\nlayerwise analyze --model x [--no-such-flag 1]\nlayerwise frobnicate --out y\n```\n```python\n"
    assert len(fences(page)) % 2 == 1
    assert bad_command_lines(page) == ["line 2: ['--no-such-flag'] in 'layerwise analyze --model x [--no-such-flag 1]'",
                                       "line 3: ['frobnicate'] in 'layerwise frobnicate --out y'"]
    joined = "```console\n$ OMP_NUM_THREADS=1 nice -n 10 layerwise exit --model m \\\n    --thresold 0.9  # typo\n```\n"
    assert bad_command_lines(joined) == [
        "line 3: ['--thresold'] in 'OMP_NUM_THREADS=1 nice -n 10 layerwise exit --model m --thresold 0.9  # typo'"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_code_fence_is_closed(page):
    marks = fences(page.read_text(encoding="utf-8"))
    assert len(marks) % 2 == 0, f"{page.name}: an odd number of code fences; the last opens at line {marks[-1][0]}"
    assert all(info == "" for _, info in marks[1::2]), f"{page.name}: a closing fence carries a language: {marks}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_line_parses_against_the_cli(page):
    assert bad_command_lines(page.read_text(encoding="utf-8")) == []


def test_the_docs_show_every_command():
    shown = {argv[0] for page in PAGES for _, line in shell_lines(page.read_text(encoding="utf-8"))
             if (argv := layerwise_argv(line))}
    assert declared_commands() <= shown, declared_commands() - shown


def test_the_site_builds_strictly(tmp_path):
    """A broken link or anchor, a page missing from the nav or a docstring mkdocstrings cannot render fails.
    Not ``-q``: it drops warnings before ``--strict`` counts them, and the build passes whatever is broken."""
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                             "-d", str(tmp_path / "site")], capture_output=True, text=True,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "commands" / "gen-eval" / "index.html").is_file()


def test_the_readme_links_to_files_that_exist():
    """The README is not part of the site, so mkdocs does not check its links."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text(encoding="utf-8"))
    assert targets
    assert [t for t in targets if "://" not in t and not (ROOT / t).exists()] == []


def test_the_readme_python_example_runs():
    """The README's API example, as written: the packaged MiniLM on the embedded sentences (offline)."""
    code = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    cka = scope["stats"].cka()
    layers = scope["bundle"].stack.num_layers + 1
    assert cka.shape == (layers, layers)
    assert abs(cka.diagonal() - 1).max() < 1e-9  # a layer is identical to itself under linear CKA
