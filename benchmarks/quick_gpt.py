"""The quick benchmarks' language model: a small aligned GPT that has learned something, cached outside the checkout.

``quick_gpt()`` trains an own GPT (6 blocks × 128 wide, byte-level BPE of 2,048 tokens, so one readout costs
≈ 1.3 blocks) on WikiText-2 valid with the aligned loss Σ_ℓ λ_ℓ CE_ℓ (λ_ℓ ∝ ℓ; layer-sampled, 2 drawn layers and
the last a step: unbiased and cheaper) for ``RECIPE["steps"]`` steps (capped at ``BUDGET_S`` seconds), then
scores it on WikiText-2 test against the unigram model of the same training text (add-one smoothed): a model
that beats that has learned more than token frequencies. Beside the model it saves
the training text's token counts (the draft vocabulary) and an exit classifier trained on the model's own
outputs. Everything lives under ``cache_dir()`` (``$LAYERWISE_BENCH_CACHE``, else ``$XDG_CACHE_HOME`` or
``~/.cache``, then ``layerwise/bench``) and is reused while ``quick.json`` says the recipe is the same.

``quick_figures``: the perplexities and, per layer, how often its greedy token on the training text (teacher-forced)
agrees with the last layer's: the acceptance and exit rates free text would give, where greedy decoding of a
model this small falls into loops on which every layer agrees.
``degenerate(stack, prompts)``: whether greedy decoding from every layer emits one repeated token per row (a
model whose speculative or early-exit figures would measure nothing). ``strict_json``: NaN and ±inf as null.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch

RECIPE = {"corpus": "wikitext2:valid", "vocab_size": 2048, "depth": 6, "dim": 128, "heads": 4, "max_len": 256,
          "seq_len": 128, "batch": 8, "steps": 320, "lr": 3e-3, "aligned_layers": 2, "seed": 0, "version": 3}
BUDGET_S = 300.0  # of training steps (≈ 0.5 s each on one free core); a loaded machine stops early (logged)


def cache_dir() -> Path:
    """Where benchmark models are cached: never inside the checkout."""
    if os.environ.get("LAYERWISE_BENCH_CACHE"):
        return Path(os.environ["LAYERWISE_BENCH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "layerwise" / "bench"


def strict_json(obj):
    """``obj`` with every non-finite float replaced by None (JSON has no NaN), ready for allow_nan=False."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def dumps(obj) -> str:
    return json.dumps(strict_json(obj), allow_nan=False)


def _windows(ids: torch.Tensor, count: int, length: int, generator: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, ids.numel() - length, (count,), generator=generator)
    return torch.stack([ids[s:s + length] for s in starts.tolist()])


@torch.no_grad()
def perplexity(stack, ids: torch.Tensor, length: int = 128, batch: int = 16) -> float:
    """exp(mean next-token CE) of the last layer over consecutive windows of ``ids``."""
    rows = ids[: ids.numel() // length * length].view(-1, length)
    total, count = 0.0, 0
    for i in range(0, rows.shape[0], batch):
        x = rows[i:i + batch]
        logits = stack({"input_ids": x}).float()
        total += float(torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten(),
                                                         reduction="sum"))
        count += x[:, 1:].numel()
    return math.exp(total / count)


def unigram_perplexity(train: torch.Tensor, test: torch.Tensor, vocab: int) -> float:
    """exp(−mean log p(y)) over the test tokens, p(t) = (count_train(t) + 1) / (N + V)."""
    p = (torch.bincount(train, minlength=vocab).double() + 1) / (train.numel() + vocab)
    return math.exp(-float(p.log()[test].mean()))


def quick_gpt(objective: str = "aligned", log=print, aligned_layers: int | None = RECIPE["aligned_layers"]) -> Path:
    """The trained quick model's folder (trained here the first time, about 3 minutes); ``objective``: aligned
    (the recipe's layer-sampled aligned loss) or standard (the last layer's CE only, for comparison);
    ``aligned_layers``: k layers drawn per step besides the last (None: every layer, the full aligned loss)."""
    from layerwise.checkpoints import load_model, save_model
    from layerwise.checkpoints.new import corpus_texts, new_gpt
    from layerwise.inference.draft_vocab import save_token_counts, token_counts
    from layerwise.inference.exit_classifier import train_exit_classifier
    from layerwise.models import GPTConfig
    from layerwise.training import make_optimizer
    from layerwise.training.objectives import ObjectiveModule, layer_weights

    name = "quick-gpt" if objective == "aligned" else f"quick-gpt-{objective}"
    if objective == "aligned" and aligned_layers != RECIPE["aligned_layers"]:
        name += f"-k{aligned_layers}" if aligned_layers else "-full"
    folder = cache_dir() / name
    meta = folder / "quick.json"
    r = {**RECIPE, "objective": objective, "aligned_layers": aligned_layers}
    if meta.is_file() and json.loads(meta.read_text()).get("recipe") == r:
        return folder
    log(f"training the quick GPT into {folder} (once; about 3 minutes on one free core)")
    start, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a shared 2-core machine are several times slower, not faster
    train_text, test_text = corpus_texts([r["corpus"], "wikitext2:test"])
    bundle = new_gpt([train_text], r["vocab_size"], GPTConfig(max_len=r["max_len"], dim=r["dim"], depth=r["depth"],
                                                              heads=r["heads"]), seed=r["seed"])
    tok, stack = bundle.inputs.tokenizer, bundle.stack
    train = torch.tensor(tok.encode(train_text, add_special_tokens=False))
    test = torch.tensor(tok.encode(test_text, add_special_tokens=False))[:40_000]
    module = ObjectiveModule(stack, None, layer_weights(stack.num_layers), 0.0, aligned_layers=r["aligned_layers"],
                             seed=r["seed"])
    opt = make_optimizer(module, r["lr"], 0.01)
    g = torch.Generator().manual_seed(r["seed"])
    stack.model.train()
    steps, begun = 0, time.perf_counter()
    for steps in range(1, r["steps"] + 1):
        lr = r["lr"] * min(1.0, steps / 50) * 0.5 * (1 + math.cos(math.pi * steps / r["steps"]))
        for group in opt.param_groups:
            group["lr"] = lr
        x = _windows(train, r["batch"], r["seq_len"], g)
        loss = module({"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x}, objective)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if steps % 50 == 0:
            log(f"  step {steps}: {objective} loss {float(loss.detach()):.3f} ({time.perf_counter() - start:.0f} s)")
        if time.perf_counter() - begun > BUDGET_S:
            log(f"  stopped at step {steps} of {r['steps']}: the {BUDGET_S:.0f} s budget is spent (a loaded machine)")
            break
    stack.model.eval()
    ppl, uni = perplexity(stack, test), unigram_perplexity(train, test, len(tok))
    save_model(bundle, folder)
    save_token_counts(folder, token_counts([train], len(tok)), corpus=r["corpus"], overwrite=True)
    clf = train_exit_classifier(stack, [{"input_ids": x, "attention_mask": torch.ones_like(x)}
                                        for x in _windows(train, 64, r["seq_len"], g).split(16)], corpus=r["corpus"])
    clf.save(folder, overwrite=True)
    meta.write_text(json.dumps({"recipe": r, "steps": steps, "seconds": time.perf_counter() - start,
                                "test_perplexity": ppl, "unigram_perplexity": uni, "test_tokens": test.numel()}))
    log(f"  {steps} steps in {time.perf_counter() - start:.0f} s: test perplexity {ppl:.1f}, unigram {uni:.1f}")
    torch.set_num_threads(threads)
    load_model(folder)  # fails here, not later, if the folder does not load
    return folder


def quick_figures(folder: Path) -> dict:
    """quick_model_perplexity, unigram_perplexity, steps and training seconds of the cached quick model."""
    m = json.loads((Path(folder) / "quick.json").read_text())
    agreement = json.loads((Path(folder) / "exit_classifier.json").read_text())["agreement_with_last_layer"]
    return {"quick_model_perplexity": m["test_perplexity"], "unigram_perplexity": m["unigram_perplexity"],
            "quick_model_steps": m["steps"], "quick_model_training_s": m["seconds"],
            "quick_model_layer_agreement": agreement}


@torch.no_grad()
def degenerate(stack, prompts: list[list[int]], new_tokens: int = 16) -> bool:
    """True when greedy decoding from every layer 1..L emits a single repeated token in every row."""
    from layerwise.inference.generation import generate

    for layer in range(1, stack.num_layers + 1):
        out = generate(stack, prompts, layer, max_new_tokens=new_tokens)
        if any(len(set(row)) > 1 for row in out.rows()):
            return False
    return True
