"""No transformers FutureWarning or DeprecationWarning from `generate`, `gen-eval` or `analyze` (issue 20).

Each command runs in its own interpreter started with ``-W error::FutureWarning -W error::DeprecationWarning``,
so a warning raised anywhere on the way (a renamed keyword such as ``past_key_values``, a deprecated cache
argument) becomes an exception and the command fails. The cause must be removed; nothing here filters it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from fixtures import CORPUS, subprocess_env

AS_ERRORS = ["-W", "error::FutureWarning", "-W", "error::DeprecationWarning"]
DECODERS = ["gpt2-tiny", "llama-tiny"]


def _run(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *AS_ERRORS, "-m", "layerwise.cli", *args], capture_output=True,
                          text=True, cwd=cwd, env=subprocess_env(), timeout=600)


@pytest.mark.parametrize("model", DECODERS)
@pytest.mark.parametrize("mode", [[], ["--layer", "1"], ["--speculative"], ["--early-exit", "--threshold", "0.5"]])
def test_generate_prints_no_transformers_warning(model, mode, tmp_path):
    done = _run("generate", "--model", model, "--prompt", "hello there", "--max-new-tokens", "6", *mode, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr


@pytest.mark.parametrize("model", DECODERS)
def test_gen_eval_and_analyze_print_no_transformers_warning(model, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    done = _run("gen-eval", "--model", model, "--data", str(corpus), "--num-prompts", "2", "--prefix-len", "4",
                "--max-new-tokens", "6", "--out", str(tmp_path / "gen"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    long_corpus = tmp_path / "long.txt"
    long_corpus.write_text(CORPUS * 40, encoding="utf-8")  # enough blocks of tokens for the similarity measures
    done = _run("analyze", "--model", model, "--data", str(long_corpus), "--split", "all", "--out", str(tmp_path / "an"),
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr
