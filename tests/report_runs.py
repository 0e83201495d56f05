"""Small real run folders, one per command, for the report tests: each written by the command's own code
on tiny built-in models and data (digits; a few lines of text), a few seconds in all."""

from __future__ import annotations

from pathlib import Path

from fixtures import CORPUS


def make_runs(root: Path, *, gen_eval: bool = True) -> dict[str, Path]:
    """Folders written by ``analyze`` (two models), ``compare``, ``train``, ``exit``, ``connect``, ``lpft`` and
    ``gen-eval``, under ``root``; keyed by a short name."""
    from layerwise.commands import analyze, compare, connect, exit, lpft
    from layerwise.training import resolve_config, train

    runs = {"analyze_residual": root / "analyze-residual", "analyze_plain": root / "analyze-plain",
            "compare": root / "compare", "train": root / "train", "exit": root / "exit", "connect": root / "connect",
            "lpft": root / "lpft"}
    analyze.run(analyze.AnalyzeOptions(model="mlp-residual", data="digits", out=runs["analyze_residual"], limit=64,
                                       probe_limit=100, device="cpu"))
    # RSA on a subset of 32 of the 64 samples: a run with a warning of its own
    analyze.run(analyze.AnalyzeOptions(model="mlp-plain", data="digits", out=runs["analyze_plain"], limit=64,
                                       probe_limit=100, measures="cos,cka,rsa", sample_cap=32, device="cpu"))
    compare.run(compare.CompareOptions(model_a="mlp-residual", model_b="mlp-plain", data="digits", out=runs["compare"],
                                       limit=64, device="cpu"))
    train(resolve_config(model="mlp-residual", data="digits", limit=64, eval_limit=32, epochs=2,
                         out=str(runs["train"]), progress=False))
    exit.run(exit.ExitOptions(model=["mlp-residual"], data="digits", out=runs["exit"], limit=64, device="cpu"))
    connect.run(connect.ConnectOptions(model_a="mlp-plain", model_b="mlp-plain", data="digits", out=runs["connect"],
                                       mode=["full", "single"], alphas="0,0.5,1", limit=16, batch_size=8,
                                       progress=False, device="cpu"))
    lpft.run(lpft.LpftOptions(model="mlp-residual", data="digits", out=runs["lpft"], limit=80, eval_limit=40,
                              ntk_subset=4, ft_lrs=[1e-3], lpft_lrs=[1e-4], batch_size=32, progress=False,
                              device="cpu"))
    if gen_eval:
        from layerwise.commands import gen_eval as gen_eval_command

        corpus = root / "corpus.txt"
        corpus.write_text(CORPUS, encoding="utf-8")
        runs["gen_eval"] = root / "gen-eval"
        gen_eval_command.run(gen_eval_command.GenEvalOptions(
            model=["gpt-tiny"], data=str(corpus), out=runs["gen_eval"], num_prompts=2, prefix_len=4,
            max_new_tokens=6, diversity="tokens", device="cpu"))
    return runs
