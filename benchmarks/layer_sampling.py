"""The layer-sampled aligned loss against the full one at equal steps: per-layer test perplexity of quick GPTs.

    python benchmarks/layer_sampling.py [--json]

Trains (once, cached like ``quick_gpt.py``) the quick GPT recipe with the aligned loss drawn over k = 1 and k = 2
layers besides the last per step (``training.lm_loss.sampled_layer_weights``, unbiased) and with every layer
(the full Σ_ℓ λ_ℓ CE_ℓ), the same steps, data order and initialisation, then prints each model's WikiText-2 test
perplexity of the readout at every layer, exp(mean CE(readout(hˡ), next token)), and its training time.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from quick_gpt import dumps, quick_gpt


@torch.no_grad()
def layer_perplexities(stack, ids: torch.Tensor, length: int = 128, batch: int = 16) -> list[float]:
    """exp(mean next-token CE) of readout(hˡ) for ℓ = 1..L over consecutive windows of ``ids``."""
    rows = ids[: ids.numel() // length * length].view(-1, length)
    totals, count = [0.0] * stack.num_layers, 0
    for i in range(0, rows.shape[0], batch):
        x = rows[i:i + batch]
        for ell, state in enumerate(list(stack.states({"input_ids": x}))[1:]):
            logits = stack.readout(state.h[:, :-1]).float()
            totals[ell] += float(F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="sum"))
        count += x[:, 1:].numel()
    return [math.exp(t / count) for t in totals]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line, last on stdout")
    args = ap.parse_args()
    from layerwise.checkpoints import load_model
    from layerwise.checkpoints.new import corpus_texts

    torch.set_num_threads(1)
    out = {}
    for label, k in (("k=1", 1), ("k=2", 2), ("full", None)):
        folder = quick_gpt("aligned", aligned_layers=k)
        bundle = load_model(folder)
        bundle.model.eval()
        test = torch.tensor(bundle.inputs.tokenizer.encode(corpus_texts(["wikitext2:test"])[0],
                                                           add_special_tokens=False))[:40_000]
        meta = json.loads((Path(folder) / "quick.json").read_text())
        out[label] = {"layer_perplexity": layer_perplexities(bundle.stack, test), "steps": meta["steps"],
                      "training_s": meta["seconds"]}
        print(f"{label:>5}  {meta['steps']} steps in {meta['seconds']:.0f} s; test perplexity at layers 1..L: "
              + " ".join(f"{p:.1f}" for p in out[label]["layer_perplexity"]))
    if args.json:
        print(dumps(out))


if __name__ == "__main__":
    main()
