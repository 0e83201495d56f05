"""Cached greedy generation through the layer stack against Hugging Face ``generate``, and the cache's flat cost.

    python benchmarks/generation.py [--threads 1] [--repeats 3] [--new-tokens 64] [--long 544] [--quick] [--json]
        [--lm-model DIR …] [--skip-hf] [--skip-speculative] [--skip-exit] [--exit-thresholds 0.5,0.9]
        [--saturation-thresholds 0.9,0.95] [--classifier-thresholds 0.5,0.8] [--check-every 1] [--draft-vocab 512]

On a random-weight HF ``GPT2LMHeadModel`` (GPT-2 small's shape, 12 blocks × 768 wide, vocabulary 50257;
--quick: 4 blocks × 256 wide) and random prompts of 32 tokens, one run prints side by side:
- tokens/s of ``layerwise.inference.generate`` (greedy, key/value cache, last layer, on ``LayerStack(model)``)
  and of ``model.generate(do_sample=False)`` at batch 1 and batch 8, their ratio (target ≥ 0.9), and whether
  the tokens are identical;
- tokens/s at new-token positions 32 and 512 within one long run (per-step times, each averaged over the 16
  steps up to the position; median over the repeats), and the slow-down later/earlier (target ≤ 1.5: the cache keeps a step's cost flat).
Timings: a warm-up, then ours and HF's interleaved per repeat (steadier on a shared machine), median.
--json: after the table, print the figures as one JSON object on the last line of stdout.

Decoding sections (``lm_decoding.py``) on trained decoders: ``--lm-model``, else runs/gpt/aligned and
runs/gpt/standard from examples/evidence_gpt.sh when they exist, else (and always with --quick) the quick GPTs
of ``quick_gpt.py``, aligned and standard, trained once and cached under the user's cache folder; a model whose
greedy output from every layer is one repeated token is refused (exit status 2):
- self-speculative decoding, with the full head and with the head rows of the ``--draft-vocab`` most frequent
  training tokens as the draft: the best (E, n) on held-out WikiText-2 prompts (``speculative.sweep``), then timed
  at batch 1 and 8 against full greedy decoding, with the acceptance rate and a check that the tokens are
  identical (target ≥ 1.5× at batch 1);
- per-token early exit (``inference.token_exit``, state propagation, row compaction) by confidence, hidden-state
  saturation and the trained exit classifier (``--exit-thresholds``, ``--saturation-thresholds``,
  ``--classifier-thresholds``, ``--check-every``): 8 WikiText-2 prompts at batch 1 and 8, timed interleaved with
  full greedy decoding (``commands.generate.sweep_token_exit``), with the full-model perplexity of the text.
Every decoding speed-up is printed beside the one predicted by the weights touched per token (measured / predicted;
target ≥ 0.85). --json keys include speculative_speedup, identical, acceptance_rate, token_exit_speedup,
token_exit_ppl_ratio, quick_model_perplexity, unigram_perplexity; NaN is written as null.

Structured as functions (``gpt2``, ``prompts``, ``ours``, ``hf``, ``throughput``, ``step_times``, ``lm_models``,
``refuse_degenerate``; the decoding rows in ``lm_decoding.py``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from layerwise.inference.decoding import Greedy
from layerwise.inference.generation import generate
from layerwise.inference.timing import interleaved
from layerwise.stack import LayerStack

FULL = dict(n_layer=12, n_embd=768, n_head=12)
QUICK = dict(n_layer=4, n_embd=256, n_head=4)


def gpt2(shape: dict, seed: int = 0):
    """A random-weight ``GPT2LMHeadModel`` (vocabulary 50257, context 1024) in eval mode, with no EOS, so
    both generators run every requested step."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=1024, **shape)).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def prompts(batch: int, length: int, vocab: int, seed: int = 0) -> Tensor:
    """(batch, length) random token ids (no padding: every prompt has the same length)."""
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def ours(stack: LayerStack, ids: Tensor, new_tokens: int, decoding=None) -> Tensor:
    """Our cached greedy generation from the last layer: (B, new_tokens)."""
    return generate(stack, ids.tolist(), decoding=decoding or Greedy(), max_new_tokens=new_tokens,
                    eos_token_id=None, pad_token_id=0).tokens


def hf(model, ids: Tensor, new_tokens: int) -> Tensor:
    """HF's own greedy generation: (B, new_tokens)."""
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False)
    return out[:, ids.shape[1]:]



def throughput(model, stack: LayerStack, ids: Tensor, new_tokens: int, repeats: int) -> dict:
    """tokens/s (B · new_tokens / median seconds) of ours and HF's, their ratio, and token identity."""
    same = bool(torch.equal(ours(stack, ids, new_tokens), hf(model, ids, new_tokens)))
    t = interleaved({"ours": lambda: ours(stack, ids, new_tokens), "hf": lambda: hf(model, ids, new_tokens)}, repeats)
    n = ids.shape[0] * new_tokens
    return {"batch": ids.shape[0], "new_tokens": new_tokens, "seconds": t, "tokens_per_s_ours": n / t["ours"],
            "tokens_per_s_hf": n / t["hf"], "ratio": t["hf"] / t["ours"], "identical_tokens": same}


class TimedGreedy(Greedy):
    """Greedy decoding that records the clock each time it chooses a token (once per generation step)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def choose(self, logits: Tensor, generator: torch.Generator | None) -> Tensor:
        token = super().choose(logits, generator)
        self.stamps.append(time.perf_counter())
        return token


def step_times(stack: LayerStack, ids: Tensor, new_tokens: int, positions: tuple[int, ...], repeats: int,
               window: int = 16) -> dict:
    """tokens/s at each new-token position p within one run: window / (time of steps p−window+1 .. p), where step
    i runs from choosing token i−1 to choosing token i (one token through the cache); the median over
    ``repeats`` runs after a warm-up run."""
    rates: dict[int, list[float]] = {p: [] for p in positions}
    for run in range(repeats + 1):
        decoding = TimedGreedy()
        ours(stack, ids, new_tokens, decoding)
        stamps = decoding.stamps  # stamps[i]: when new token i+1 was chosen
        for p in positions:
            if run:
                rates[p].append(window / (stamps[p - 1] - stamps[p - 1 - window]))
    return {p: statistics.median(r) for p, r in rates.items()}


def lm_models(args) -> list[str]:
    """The trained decoders of the decoding sections: --lm-model, else (without --quick) the evidence run's
    aligned and standard GPTs when they exist, else the cached quick GPT (``quick_gpt``), trained once."""
    from quick_gpt import quick_gpt

    if args.lm_model:
        return args.lm_model
    found = [] if args.quick else [m for m in ("runs/gpt/aligned", "runs/gpt/standard") if Path(m).is_dir()]
    return found or [str(quick_gpt("aligned")), str(quick_gpt("standard"))]


def refuse_degenerate(models: list[str]) -> None:
    """Stop (exit status 2) before any speculative or early-exit figure of a model whose greedy output from
    every layer is one repeated token: acceptance and exits would be perfect and mean nothing."""
    from layerwise.checkpoints import load_model
    from lm_decoding import corpus_prompts
    from quick_gpt import degenerate

    for path in models:
        bundle = load_model(path)
        if degenerate(bundle.stack, corpus_prompts(bundle.inputs.tokenizer, 4, 32, seed=3)):
            sys.exit(f"error: {path} greedily emits one repeated token from every layer: its speculative and "
                     "early-exit figures would measure nothing; train it longer")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64, help="new tokens per run in the throughput comparison")
    ap.add_argument("--long", type=int, default=520, help="new tokens of the run timed at positions 32 and 512")
    ap.add_argument("--quick", action="store_true", help="smoke test: a 4 × 256 GPT-2, --repeats 2 --new-tokens 16")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line, last on stdout")
    ap.add_argument("--lm-model", action="append", default=None,
                    help="trained decoder(s) for self-speculative decoding [runs/gpt/aligned, runs/gpt/standard]")
    ap.add_argument("--skip-hf", action="store_true", help="leave out the comparison with HF generate")
    ap.add_argument("--skip-speculative", action="store_true", help="leave out self-speculative decoding")
    ap.add_argument("--skip-exit", action="store_true", help="leave out per-token early exit")
    ap.add_argument("--exit-thresholds", default="0.5,0.9", help="confidence thresholds of the early-exit section")
    ap.add_argument("--saturation-thresholds", default="0.9,0.95", help="cos(h^l, h^l-1) thresholds")
    ap.add_argument("--classifier-thresholds", default="0.5,0.8", help="exit-classifier probability thresholds")
    ap.add_argument("--check-every", type=int, default=1, help="evaluate the exit signal every k layers")
    ap.add_argument("--draft-vocab", type=int, default=512, help="V': rows of the reduced draft head (0: none)")
    ap.add_argument("--coherence", action="store_true", help="also score coherence with the packaged MiniLM")
    args = ap.parse_args()
    if args.quick:
        ap.set_defaults(repeats=2, new_tokens=16)
        args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shape = QUICK if args.quick else FULL
    model = gpt2(shape)
    stack = LayerStack(model)
    print(f"random-weight GPT2LMHeadModel {shape['n_layer']}×{shape['n_embd']}, vocabulary 50257; prompts of "
          f"{args.prompt_len} tokens; threads={args.threads}; median of {args.repeats} after a warm-up\n")
    figures: dict = {"model": {**shape, "vocab_size": 50257}, "threads": args.threads, "repeats": args.repeats,
                     "prompt_len": args.prompt_len}
    if not args.skip_hf:
        hf_section(args, model, stack, figures)
    if not (args.skip_speculative and args.skip_exit):
        from lm_decoding import early_exit_section, speculative_section
        from quick_gpt import quick_figures

        models = lm_models(args)
        refuse_degenerate(models)
        for path in reversed(models):  # the first model's figures are the headline
            if (Path(path) / "quick.json").is_file():
                q = figures.setdefault("quick_models", {})[path] = quick_figures(Path(path))
                figures.update(q)
                print(f"\nquick GPT ({path}): quick_model_perplexity {q['quick_model_perplexity']:.1f} on WikiText-2 "
                      f"test, unigram_perplexity {q['unigram_perplexity']:.1f}; teacher-forced agreement of each "
                      f"layer's greedy token with the last layer's: "
                      f"{', '.join(f'{a:.2f}' for a in q['quick_model_layer_agreement'])}")
        if not args.skip_speculative:
            speculative_section(models, args, figures)
        if not args.skip_exit:
            embedder = None
            if args.coherence:
                from layerwise.evaluation.generation_metrics import Embedder

                embedder = Embedder("minilm")
            early_exit_section(models, args, figures, embedder)
    if args.json:
        from quick_gpt import dumps

        print(dumps(figures))


def hf_section(args, model, stack: LayerStack, figures: dict) -> None:
    print(f"{'batch':>5} {'new':>5} {'ours tok/s':>11} {'HF tok/s':>9} {'ours/HF':>8} {'target':>7} {'tokens':>10}")
    for batch in (1, 8):
        row = throughput(model, stack, prompts(batch, args.prompt_len, 50257, seed=batch), args.new_tokens, args.repeats)
        figures[f"batch {batch}"] = row
        print(f"{batch:>5} {args.new_tokens:>5} {row['tokens_per_s_ours']:>11.1f} {row['tokens_per_s_hf']:>9.1f} "
              f"{row['ratio']:>8.2f} {'≥0.9':>7} {'identical' if row['identical_tokens'] else 'DIFFER':>10}  "
              f"{'PASS' if row['ratio'] >= 0.9 and row['identical_tokens'] else 'MISS'}")
    early, late = 32, 512
    if args.long >= late:
        rates = step_times(stack, prompts(1, args.prompt_len, 50257), args.long, (early, late), args.repeats)
        slowdown = rates[early] / rates[late]
        figures["positions"] = {"tokens_per_s": {str(p): r for p, r in rates.items()}, "slowdown": slowdown,
                                "long_run_new_tokens": args.long}
        print(f"\none run of {args.long} new tokens at batch 1: {rates[early]:.1f} tok/s at position {early}, "
              f"{rates[late]:.1f} tok/s at position {late} → later/earlier step time {slowdown:.2f}× "
              f"(target ≤ 1.5: {'PASS' if slowdown <= 1.5 else 'MISS'})")


if __name__ == "__main__":
    main()
