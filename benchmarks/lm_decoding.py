"""The decoding sections of ``benchmarks/generation.py``: self-speculative decoding (full-head and reduced-vocabulary
drafts) and per-token early exit (confidence, hidden-state saturation, the trained exit classifier), each speed
figure printed beside the speed-up that the weights touched per token predict (``measured / predicted``).

Predicted: ``speculative.predicted_speedup`` (blocks and head rows read per generated token at the measured
acceptance) and ``token_exit.compute_speedup`` (blocks, readouts or exit checks, K/V fills per token).
"""

from __future__ import annotations

from pathlib import Path

import torch

from layerwise.inference.generation import generate
from layerwise.inference.speculative import predicted_speedup, speculative_generate, sweep
from layerwise.inference.timing import interleaved
from layerwise.inference.token_exit import weights_per_token


def corpus_prompts(tokenizer, count: int, length: int, seed: int) -> list[list[int]]:
    """``count`` prompts of ``length`` tokens cut at seeded offsets of the WikiText-2 test text."""
    from layerwise.data import load_dataset

    ids = tokenizer.encode(load_dataset("wikitext2", "test").text[:400_000], add_special_tokens=False)
    starts = torch.randint(0, len(ids) - length, (count,), generator=torch.Generator().manual_seed(seed))
    return [ids[s:s + length] for s in starts.tolist()]


def draft_vocab_of(model_dir: str, size: int | None):
    """The ``size`` most frequent training tokens saved beside the model (None when not asked or not saved)."""
    from layerwise.inference.draft_vocab import COUNTS, draft_vocabulary, load_token_counts

    if not size or not (Path(model_dir) / COUNTS).is_file():
        return None
    return draft_vocabulary(load_token_counts(model_dir), size)


def speculative_rows(model_dir: str, batches: tuple[int, ...], new_tokens: int, repeats: int, quick: bool,
                     draft_size: int | None) -> dict:
    """Per draft head (full, and V′ rows when counts are saved): the best (E, n) on 4 held-out prompts, then
    full vs self-speculative greedy tokens/s on other prompts, interleaved, with the predicted speed-up."""
    from layerwise.checkpoints import load_model

    bundle = load_model(model_dir)
    stack, tok = bundle.stack, bundle.inputs.tokenizer
    depth, weights = stack.num_layers, weights_per_token(stack)
    held_out = corpus_prompts(tok, 4, 32, seed=1)
    heads = {"full head": None}
    vocab = draft_vocab_of(model_dir, draft_size)
    if vocab is not None:
        heads[f"V'={vocab.numel()}"] = vocab
    out = {"model": model_dir, "layers": depth, "heads": {}}
    for head, dv in heads.items():
        grid = sweep(stack, held_out, list(range(1, depth)), [2, 4] if quick else [2, 3, 4, 6],
                     max_new_tokens=new_tokens, repeats=1, draft_vocab=dv)
        best = grid["best"] or max(grid["runs"], key=lambda r: r["speedup"])
        e, n = best["exit_layer"], best["num_draft"]
        rows = out["heads"][head] = {"exit_layer": e, "num_draft": n, "sweep": grid["runs"]}
        for batch in batches:
            ids = corpus_prompts(tok, batch, 32, seed=100 + batch)
            full = generate(stack, ids, max_new_tokens=new_tokens).tokens
            spec, stats = speculative_generate(stack, ids, e, n, max_new_tokens=new_tokens, draft_vocab=dv)
            t = interleaved({"full": lambda: generate(stack, ids, max_new_tokens=new_tokens),
                             "speculative": lambda: speculative_generate(stack, ids, e, n, max_new_tokens=new_tokens,
                                                                         draft_vocab=dv)}, repeats)
            measured = t["full"] / t["speculative"]
            predicted = predicted_speedup(weights, depth, e, n, stats.acceptance_rate,
                                          None if dv is None else dv.numel())
            rows[f"batch {batch}"] = {"full_tokens_per_s": batch * new_tokens / t["full"],
                                      "speculative_tokens_per_s": batch * new_tokens / t["speculative"],
                                      "speculative_speedup": measured, "predicted_speedup": predicted,
                                      "measured_over_predicted": None if not predicted else measured / predicted,
                                      "acceptance_rate": stats.acceptance_rate,
                                      "identical": bool(torch.equal(spec.tokens, full))}
    return out


def speculative_section(models: list[str], args, figures: dict) -> None:
    print(f"\nself-speculative greedy decoding, {args.new_tokens} new tokens after 32-token WikiText-2 prompts; "
          "predicted = full / speculative weights touched per token at the measured acceptance")
    print(f"{'model':>22} {'draft head':>10} {'batch':>5} {'E':>2} {'n':>2} {'full tok/s':>10} {'spec tok/s':>10} "
          f"{'speedup':>7} {'predicted':>9} {'meas/pred':>9} {'accept':>6} {'tokens':>9}")
    best = None
    for path in models:
        res = figures.setdefault("speculative", {})[path] = speculative_rows(
            path, (1, 8), args.new_tokens, args.repeats, args.quick, args.draft_vocab)
        for head, rows in res["heads"].items():
            for batch in (1, 8):
                r = rows[f"batch {batch}"]
                pred, ratio = r["predicted_speedup"], r["measured_over_predicted"]
                print(f"{path[-22:]:>22} {head:>10} {batch:>5} {rows['exit_layer']:>2} {rows['num_draft']:>2} "
                      f"{r['full_tokens_per_s']:>10.1f} {r['speculative_tokens_per_s']:>10.1f} "
                      f"{r['speculative_speedup']:>7.2f} {pred or float('nan'):>9.2f} {ratio or float('nan'):>9.2f} "
                      f"{r['acceptance_rate']:>6.2f} {'identical' if r['identical'] else 'DIFFER':>9}")
                if path == models[0] and batch == 1 and r["identical"] and (
                        best is None or r["speculative_speedup"] > best["speculative_speedup"]):
                    best = {**r, "draft_head": head}
    if best is not None:
        figures.update(speculative_speedup=best["speculative_speedup"], identical=best["identical"],
                       acceptance_rate=best["acceptance_rate"], speculative_draft_head=best["draft_head"],
                       speculative_measured_over_predicted=best["measured_over_predicted"])


def exit_policies(model_dir: str, args) -> dict[str, tuple[list[float], dict]]:
    """policy → (thresholds, make_policy options): confidence, saturation, and the classifier when one is saved."""
    from layerwise.inference.exit_classifier import WEIGHTS, load_exit_classifier

    def floats(text: str) -> list[float]:
        return [float(t) for t in text.split(",")]

    every = {"check_every": args.check_every}
    out = {"confidence": (floats(args.exit_thresholds), every),
           "saturation": (floats(args.saturation_thresholds), every)}
    if (Path(model_dir) / WEIGHTS).is_file():
        out["classifier"] = (floats(args.classifier_thresholds), {**every,
                                                                  "classifier": load_exit_classifier(model_dir)})
    return out


def early_exit_section(models: list[str], args, figures: dict, embedder=None) -> None:
    """Per-token early exit, every policy at batch 1 and 8 against full greedy decoding (interleaved)."""
    from layerwise.checkpoints import load_model
    from layerwise.commands.generate import sweep_token_exit

    print(f"\nper-token early exit (state propagation, row compaction), greedy, {args.new_tokens} new tokens after "
          f"8 WikiText-2 prompts of 32 tokens; check every {args.check_every} layer(s); speedup over full greedy, "
          "interleaved; predicted = weights touched per token")
    print(f"{'model':>22} {'policy':>10} {'batch':>5} {'τ':>6} {'tok/s':>8} {'speedup':>7} {'predicted':>9} "
          f"{'meas/pred':>9} {'L/mean':>6} {'exit':>5} {'ppl':>7} {'ppl ratio':>9}")
    headline = None
    for path in models:
        bundle = load_model(path)
        stack, tok = bundle.stack, bundle.inputs.tokenizer
        ids = corpus_prompts(tok, 8, 32, seed=200)
        texts = [tok.decode(p) for p in ids]
        summary = figures.setdefault("early_exit", {})[path] = {}
        for policy, (thresholds, options) in exit_policies(path, args).items():
            for batch in (1, 8):
                res = sweep_token_exit(stack, ids, thresholds, policy=policy, policy_options=options,
                                       max_new_tokens=args.new_tokens, batch_size=batch, repeats=args.repeats,
                                       tokenizer=tok, embedder=embedder, prefix_texts=texts)
                base_ppl = res["full"]["perplexity"]
                for r in [res["full"], *res["sweep"]]:
                    t = "full" if r["threshold"] is None else f"{r['threshold']:g}"
                    ratio = r["perplexity"] / base_ppl
                    meas_pred = r["speedup"] / r["compute_speedup"] if r["compute_speedup"] else None
                    print(f"{path[-22:]:>22} {policy:>10} {batch:>5} {t:>6} {r['tokens_per_s']:>8.1f} "
                          f"{r['speedup']:>7.2f} {r['compute_speedup'] or float('nan'):>9.2f} "
                          f"{meas_pred or float('nan'):>9.2f} {r['layer_speedup']:>6.2f} {r['mean_exit_layer']:>5.2f} "
                          f"{r['perplexity']:>7.1f} {ratio:>9.3f}")
                    row = {k: r.get(k) for k in ("speedup", "tokens_per_s", "perplexity", "mean_exit_layer",
                                                 "layer_speedup", "compute_speedup", "coherence")}
                    row.update(ppl_ratio=ratio, measured_over_predicted=meas_pred)
                    summary.setdefault(policy, {}).setdefault(f"batch {batch}", {})[t] = row
                    if path == models[0] and t != "full" and batch == 1 and ratio <= 1.02 and (
                            headline is None or r["speedup"] > headline["speedup"]):
                        headline = {**row, "policy": policy, "threshold": r["threshold"]}
    if headline is not None:
        b8 = figures["early_exit"][models[0]][headline["policy"]]["batch 8"][f"{headline['threshold']:g}"]
        figures.update(token_exit_speedup=headline["speedup"], token_exit_ppl_ratio=headline["ppl_ratio"],
                       token_exit_policy=headline["policy"], token_exit_threshold=headline["threshold"],
                       token_exit_measured_over_predicted=headline["measured_over_predicted"],
                       token_exit_speedup_batch8=b8["speedup"], token_exit_ppl_ratio_batch8=b8["ppl_ratio"])
    else:
        figures.update(token_exit_speedup=None, token_exit_ppl_ratio=None)
