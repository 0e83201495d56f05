"""``layerwise gen-eval``: text generated from every layer of one or more language models, scored per layer
(accuracy, perplexity, coherence, diversity; the AlignedGPT paper's Figure 8)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import typer
from pydantic import NonNegativeInt, PositiveInt

from layerwise.cli.app import Flags, app, check_flags, check_out_dir
from layerwise.errors import LayerwiseError

CONVENTIONS = ("tokens", "words", "simctg")  # layerwise.evaluation.generation_metrics.CONVENTIONS (not imported: torch)


class GenEvalFlags(Flags):
    """The flags of ``gen-eval`` checked before anything loads (the decoding checks its own parameters)."""

    num_prompts: PositiveInt
    prefix_len: PositiveInt
    max_new_tokens: PositiveInt
    batch_size: PositiveInt
    eval_batch_size: PositiveInt
    seq_len: PositiveInt | None
    limit: PositiveInt | None
    samples: NonNegativeInt
    diversity: Literal[CONVENTIONS]  # type: ignore[valid-type]


def run_gen_eval(models: Sequence[str], data: str, out: str | Path, *, split: str = "test", num_prompts: int = 100,
                 prefix_len: int = 32, max_new_tokens: int = 128, decoding: str = "nucleus", top_p: float = 0.95,
                 top_k: int | None = None, temperature: float = 1.0, alpha: float = 0.6, batch_size: int = 16,
                 eval_batch_size: int = 16, seq_len: int | None = None, limit: int | None = None,
                 layer_zero: bool = False, embedder: str = "minilm", diversity: str = "words", samples: int = 3,
                 seed: int = 0, device: str = "auto", data_dir: str | Path | None = None) -> dict[str, Any]:
    """``layerwise gen-eval``: write ``out/results.json``, ``layers.csv``, ``generation.png`` and ``samples.txt``.

    Checked before any model is run: the flags, ``--out``, the decoding, the corpus and the number of prompts it
    allows, the embedder, and every model (a language model whose context holds prefix + continuation)."""
    if not models:
        raise LayerwiseError("no model given: pass --model at least once")
    check_flags(GenEvalFlags, num_prompts=num_prompts, prefix_len=prefix_len, max_new_tokens=max_new_tokens,
                batch_size=batch_size, eval_batch_size=eval_batch_size, seq_len=seq_len, limit=limit,
                samples=samples, diversity=diversity)
    out = check_out_dir(Path(out))
    from layerwise.checkpoints import load_model  # after the checks: a bad flag is answered without torch
    from layerwise.data import load_dataset
    from layerwise.device import pick_device
    from layerwise.evaluation.gen_eval import GenEvalSettings, check_corpus, evaluate_generation
    from layerwise.evaluation.generation_metrics import Embedder
    from layerwise.inference.decoding import make_decoding
    from layerwise.report.writers import write_gen_eval

    strategy = make_decoding(decoding, temperature=temperature, top_k=top_k, top_p=top_p, alpha=alpha)
    ds = load_dataset(data, split=split, limit=limit, seed=seed, data_dir=data_dir)
    check_corpus(ds, num_prompts)
    dev = pick_device(device)
    scorer = Embedder(embedder, device=str(dev))
    bundles = []
    for name in models:
        bundle = load_model(name)
        bundle.model.to(dev).eval()
        bundles.append(bundle)
    settings = GenEvalSettings(num_prompts=num_prompts, prefix_len=prefix_len, max_new_tokens=max_new_tokens,
                               batch_size=batch_size, eval_batch_size=eval_batch_size, seq_len=seq_len,
                               layer_zero=layer_zero, diversity=diversity, seed=seed, samples=samples)
    results = evaluate_generation(bundles, ds, scorer, strategy, settings, dev)
    for m, name in zip(results["models"], models):
        m["model"] = name
    results["config"] = dict(models=list(models), data=data, split=split, num_prompts=num_prompts,
                             prefix_len=prefix_len, max_new_tokens=max_new_tokens, decoding=decoding, top_p=top_p,
                             top_k=top_k, temperature=temperature, alpha=alpha, batch_size=batch_size,
                             eval_batch_size=eval_batch_size, seq_len=seq_len, limit=limit, layer_zero=layer_zero,
                             embedder=embedder, diversity=diversity, samples=samples, seed=seed, device=str(dev))
    write_gen_eval(results, out)
    return results


@app.command("gen-eval")
def gen_eval_command(
    model: list[str] = typer.Option(..., "--model", help="language model (repeat --model to compare several)"),
    data: str = typer.Option("wikitext2", help="text corpus: wikitext2, tinyshakespeare or a .txt file"),
    split: str = typer.Option("test"),
    out: Path = typer.Option(Path("runs/gen-eval"), help="output directory"),
    num_prompts: int = typer.Option(100, help="prompts taken from the corpus (at paragraph starts)"),
    prefix_len: int = typer.Option(32, help="prompt length in the model's tokens"),
    max_new_tokens: int = typer.Option(128, help="continuation length in tokens (also the reference's)"),
    decoding: str = typer.Option("nucleus", help="greedy | sample | nucleus | top-k | contrastive"),
    top_p: float = typer.Option(0.95, help="nucleus mass p"),
    top_k: int | None = typer.Option(None, help="top-k (contrastive search: candidates, default 4)"),
    temperature: float = typer.Option(1.0),
    alpha: float = typer.Option(0.6, help="contrastive search's degeneration penalty α"),
    batch_size: int = typer.Option(16, help="prompts generated together"),
    eval_batch_size: int = typer.Option(16, help="blocks per batch when scoring accuracy and perplexity"),
    seq_len: int | None = typer.Option(None, help="tokens per scoring block (default min(128, context))"),
    limit: int | None = typer.Option(None, help="score accuracy/perplexity on this many blocks (seeded)"),
    layer_zero: bool = typer.Option(False, "--layer-zero", help="also generate from layer 0 (the embeddings)"),
    embedder: str = typer.Option("minilm", help="coherence embedder: minilm, a sentence-transformers or HF "
                                                "encoder directory, or a hub name when online"),
    diversity: str = typer.Option("words", help="tokens | words | simctg (all three go to results.json)"),
    samples: int = typer.Option(3, help="prompts whose continuations go to samples.txt"),
    seed: int = typer.Option(0, help="prompt choice and sampling seed"),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:N] | mps"),
    data_dir: Path | None = typer.Option(None, help="real-data root (default: $LAYERWISE_DATA)"),
) -> None:
    """Generate from every layer after corpus prompts and score it (Figure 8): accuracy, perplexity, coherence,
    diversity per layer; writes results.json, layers.csv, generation.png and samples.txt."""
    run_gen_eval(model, data, out, split=split, num_prompts=num_prompts, prefix_len=prefix_len,
                 max_new_tokens=max_new_tokens, decoding=decoding, top_p=top_p, top_k=top_k, temperature=temperature,
                 alpha=alpha, batch_size=batch_size, eval_batch_size=eval_batch_size, seq_len=seq_len, limit=limit,
                 layer_zero=layer_zero, embedder=embedder, diversity=diversity, samples=samples, seed=seed,
                 device=device, data_dir=data_dir)
    typer.echo(f"wrote {out}/results.json")
