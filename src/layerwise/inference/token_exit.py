"""Per-token early-exit generation (CALM, Schuster et al. 2022): every new token runs block by block, and after
each layer ℓ in [min_layer, max_layer] an exit policy (``inference.policies``: confidence, entropy, patience)
looks at readout(hˡ) of each row; a row that exits takes its token from readout(hˡ), per sample.

The layers ℓ+1..max_layer that an exited row skips still need its keys and values (later tokens attend to
them). ``kv_fill``:
- ``"propagate"`` (CALM's state propagation): the exited hˡ, frozen, is the input of every skipped block, so
  block j writes K/V projections of norm_j(hˡ). Once every row has exited, the remaining blocks run only their
  key/value projections (``LayerStack.fill_kv``, an adapter hook; without one the whole block runs and its
  output is dropped, same cache). While some rows are still going, the exited rows ride along in the full
  block on their frozen hˡ (the cache write is the same; the saving is lost for them).
- ``"recompute"``: the skipped blocks run in full on the real hidden states, so the cache is the full model's;
  only the token comes from the exit layer.

The prompt (prefill) always runs in full; its first new token exits by the same rule. Blocks above max_layer
are never run: no query is ever computed there, so their cache would never be read.
Theoretical block saving = L / mean exit layer (``runner.layer_speedup``). Each layer evaluated also costs one
readout (final norm + LM head) per active row, which that ratio leaves out; ``compute_speedup`` counts it, in
weights touched per token (the multiply-adds of a single new token, attention over the context left out):
full = L·W_block + W_head; exiting at ℓ = ℓ·W_block + (ℓ − min_layer + 1)·W_head + (max_layer − ℓ)·W_kv with
propagation (W_kv = 2·D², the K and V projections) or (max_layer − ℓ)·W_block with recomputation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from layerwise.errors import LayerwiseError
from layerwise.inference.decoding import Greedy, Sampling
from layerwise.inference.generation import Generated, check_generation, left_pad, positions
from layerwise.inference.policies import ExitPolicy, Memory
from layerwise.inference.runner import layer_speedup
from layerwise.stack import LayerStack

KV_FILLS = ("propagate", "recompute")


@dataclass
class TokenExitResult:
    """The generated tokens and, per token, the layer it exited at ((B, N) like ``tokens``; 0 on padding after a
    row's EOS). ``full_layers[s]``: the deepest block step s ran in full for any row (a batch's compute)."""

    generated: Generated
    exit_layers: Tensor
    num_layers: int
    full_layers: list[int]
    min_layer: int = 1
    max_layer: int | None = None
    kv_fill: str = "propagate"
    weights: dict[str, int] | None = None  # ``weights_per_token``: for ``compute_speedup``

    def histogram(self) -> list[int]:
        """Generated tokens exiting at each layer 1..L."""
        real = self.exit_layers[self.exit_layers > 0]
        return torch.bincount(real.cpu(), minlength=self.num_layers + 1)[1:].tolist()

    def stats(self) -> dict:
        """mean exit layer, histogram, theoretical block speedup L / mean exit layer, the batch's L·steps /
        Σ_steps (deepest block run in full), and ``compute_speedup`` (readouts and K/V fills counted)."""
        hist = self.histogram()
        tokens = sum(hist)
        out = {"tokens": tokens, "mean_exit_layer": sum(i * m for i, m in enumerate(hist, 1)) / tokens,
               "exit_histogram": hist, "layer_speedup": layer_speedup(hist),
               "batch_layer_speedup": self.num_layers * len(self.full_layers) / max(1, sum(self.full_layers))}
        if self.weights is not None:
            out["compute_speedup"] = compute_speedup(hist, self.weights, self.min_layer,
                                                     self.max_layer or self.num_layers, self.kv_fill)
        return out


def weights_per_token(stack: LayerStack) -> dict[str, int]:
    """Matrix entries (multiply-adds for one token) of one block, of the readout's head, and of one block's K/V
    projections (2·D²; fewer with grouped-query attention)."""
    def matrices(module) -> int:
        return sum(p.numel() for p in module.parameters() if p.ndim == 2)

    return {"block": matrices(stack.blocks[0]), "head": matrices(stack.readout), "kv": 2 * stack.hidden_size ** 2}


def compute_speedup(histogram: list[int], weights: dict[str, int], min_layer: int, max_layer: int,
                    kv_fill: str = "propagate") -> float:
    """Σ_tokens cost(full) / Σ_tokens cost(exit layer), the costs of the module docstring; histogram over 1..L."""
    depth = len(histogram)
    full = depth * weights["block"] + weights["head"]
    skipped = weights["kv"] if kv_fill == "propagate" else weights["block"]
    used = sum(m * (ell * weights["block"] + (ell - min_layer + 1) * weights["head"] + (max_layer - ell) * skipped)
               for ell, m in enumerate(histogram, start=1))
    return full * sum(histogram) / used if used else float("nan")


def check_token_exit(stack: LayerStack, policy: ExitPolicy, kv_fill: str,
                     decoding: Greedy | Sampling) -> tuple[int, int]:
    """The policy's (min_layer, max_layer) on this decoder, refusing what cannot run."""
    if kv_fill not in KV_FILLS:
        raise LayerwiseError(f"kv_fill {kv_fill!r}: choose one of {', '.join(KV_FILLS)}")
    if not isinstance(decoding, (Greedy, Sampling)):
        raise LayerwiseError(f"early-exit generation takes greedy or sampled decoding, not {decoding.name}")
    depth = stack.num_layers
    hi = depth if policy.max_layer is None else policy.max_layer
    if not 1 <= policy.min_layer <= hi <= depth:
        raise LayerwiseError(f"exit layers {policy.min_layer}..{hi} out of range: this model has layers 1..{depth}")
    policy.check_window(policy.min_layer, hi)
    return policy.min_layer, hi


class TokenExitRunner:
    """Feeds tokens through the stack with a key/value cache and chooses each row's next token at its exit layer.

    ``start(ids, mask)`` prefills the prompts, ``step(tokens)`` feeds one token per row; both return
    (next token (B,), its exit layer (B,))."""

    def __init__(self, stack: LayerStack, policy: ExitPolicy, kv_fill: str = "propagate",
                 decoding: Greedy | Sampling | None = None, generator: torch.Generator | None = None):
        self.decoding = decoding or Greedy()
        self.lo, self.hi = check_token_exit(stack, policy, kv_fill, self.decoding)
        self.stack, self.policy, self.kv_fill, self.generator = stack, policy, kv_fill, generator
        self.cache = stack.new_cache()
        self.mask: Tensor | None = None
        self.full_layers: list[int] = []

    def start(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        self.mask = mask[:, :0]
        return self._run(ids, mask, prefill=True)

    def step(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        new = tokens[:, None]
        return self._run(new, torch.ones_like(new), prefill=False)

    def _decide(self, h: Tensor, rows: Tensor | None, memory: Memory, last: bool) -> tuple[Tensor, Tensor]:
        """(who leaves, the logits) of the given rows (None: all) from readout(h) at their last position; at the
        last allowed layer every row leaves."""
        logits = self.stack.readout(h[:, -1:] if rows is None else h[rows, -1:])[:, -1]
        if rows is None:
            decision = self.policy.decide(logits, memory)
        else:
            sub = {k: v[rows] for k, v in memory.items()}
            decision = self.policy.decide(logits, sub)
            for k, v in sub.items():
                memory[k][rows] = v
        return decision.exit | last, logits

    def _run(self, new_ids: Tensor, new_mask: Tensor, prefill: bool) -> tuple[Tensor, Tensor]:
        self.mask = torch.cat([self.mask, new_mask.to(self.mask.dtype)], dim=1)
        state = self.stack.embed({"input_ids": new_ids, "attention_mask": self.mask,
                                  "position_ids": positions(self.mask)[:, -new_ids.shape[1]:]}, self.cache)
        b, device = new_ids.shape[0], new_ids.device
        memory = self.policy.start(b, device)
        token = torch.zeros(b, dtype=torch.long, device=device)
        layer = torch.zeros(b, dtype=torch.long, device=device)
        active = torch.ones(b, dtype=torch.bool, device=device)
        left = b  # rows still running (a Python count: one host sync per layer, not several)
        propagate = self.kv_fill == "propagate" and not prefill  # the prompt's cache is always the full model's
        frozen, deepest = state.h, self.hi
        for i in range(self.hi):
            ell = i + 1
            if propagate and left == 0:
                self.stack.fill_kv(i, replace(state, h=frozen))
                continue
            if propagate and left < b:
                state = replace(state, h=torch.where(active[:, None, None], state.h, frozen))
            state = self.stack.block(i, state)
            if ell < self.lo or left == 0:
                continue
            rows = None if left == b else active.nonzero().squeeze(1)
            leave, logits = self._decide(state.h, rows, memory, ell == self.hi)
            if rows is None:
                rows = torch.arange(b, device=device)
            rows = rows[leave]
            if rows.numel():  # a token is drawn only for the rows leaving, from their layer-ℓ logits
                token[rows], layer[rows] = self.decoding.choose(logits[leave], self.generator), ell
            active[rows] = False
            left -= rows.numel()
            if propagate:  # only the rows leaving now: earlier leavers keep their own, shallower state
                frozen = torch.where((layer == ell)[:, None, None], state.h, frozen)
            if propagate and left == 0:
                deepest = ell
        self.full_layers.append(deepest)
        return token, layer


@torch.no_grad()
def token_exit_generate(stack: LayerStack, prompts: list[list[int]], policy: ExitPolicy, *,
                        kv_fill: str = "propagate", decoding: Greedy | Sampling | None = None,
                        max_new_tokens: int = 32, eos_token_id: int | None = None, pad_token_id: int = 0,
                        seed: int = 0) -> TokenExitResult:
    """Continue every prompt with per-token early exit under ``policy`` (its min/max layers bound the exits);
    sampled decoding draws from a generator seeded with ``seed``."""
    check_generation(stack, stack.num_layers, prompts, max_new_tokens)
    device = next(stack.model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    runner = TokenExitRunner(stack, policy, kv_fill, decoding, generator)
    was_training = stack.model.training
    stack.model.eval()
    try:
        token, layer = runner.start(*left_pad(prompts, pad_token_id, device))
        out, layers = [], []
        finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
        lengths = torch.zeros(len(prompts), dtype=torch.long, device=device)
        for step in range(max_new_tokens):
            token = token.masked_fill(finished, pad_token_id)
            out.append(token)
            layers.append(layer.masked_fill(finished, 0))
            lengths += (~finished).long()
            if eos_token_id is not None:
                finished |= token == eos_token_id
            if bool(finished.all()) or step == max_new_tokens - 1:
                break
            token, layer = runner.step(token)
    finally:
        stack.model.train(was_training)
    return TokenExitResult(Generated(torch.stack(out, 1), lengths), torch.stack(layers, 1), stack.num_layers,
                           runner.full_layers, runner.lo, runner.hi, kv_fill, weights_per_token(stack))


def token_exit_text(stack: LayerStack, tokenizer, texts: list[str], policy: ExitPolicy,
                    **options) -> tuple[list[str], TokenExitResult]:
    """``token_exit_generate`` on text: encode the prompts, continue them, decode the new tokens."""
    from layerwise.inference.generation import encode_prompts, special_ids

    eos, pad = special_ids(stack, tokenizer)
    out = token_exit_generate(stack, encode_prompts(tokenizer, texts), policy, eos_token_id=eos, pad_token_id=pad,
                              **options)
    return [tokenizer.decode(row, skip_special_tokens=True) for row in out.generated.rows()], out
