"""Per-token early-exit generation (CALM, Schuster et al. 2022): every new token runs block by block, and after
each layer ℓ in [min_layer, max_layer] an exit policy (``inference.policies``) looks at readout(hˡ) of each row
(confidence, entropy, patience) or at hˡ alone (saturation, classifier: no readout until the row exits); a row
that exits takes its token from readout(hˡ), per sample.

The layers ℓ+1..max_layer that an exited row skips still need its keys and values (later tokens attend to
them). ``kv_fill``:
- ``"propagate"`` (CALM's state propagation): the exited hˡ, frozen, is the input of every skipped block, so
  block j writes K/V projections of norm_j(hˡ). Once every row has exited, the remaining blocks run only their
  key/value projections (``LayerStack.fill_kv``, an adapter hook; without one the whole block runs and its
  output is dropped, same cache). While some rows are still going, the exited rows get the same K/V fill
  (row compaction, below).
- ``"recompute"``: the skipped blocks run in full on the real hidden states, so the cache is the full model's;
  only the token comes from the exit layer.

Row compaction (``compact``, the default): once some rows of a batch have exited, a block runs in full only for
the rows still going; the exited rows get only their K/V fill (``propagate``), so a row costs what it costs
alone. With ``recompute`` every row needs the full block anyway.

The prompt (prefill) always runs in full; its first new token exits by the same rule. Blocks above max_layer
are never run: no query is ever computed there, so their cache would never be read.
Theoretical block saving = L / mean exit layer (``runner.layer_speedup``). ``compute_speedup`` also counts the
exit checks and readouts, in weights touched per token (the multiply-adds of a single new token, attention over
the context left out): full = L·W_block + W_head; exiting at ℓ =
ℓ·W_block + c(ℓ)·W_check + [readout-free policy]·W_head + (max_layer − ℓ)·W_skip, where c(ℓ) counts the layers
evaluated up to ℓ (every ``check_every``-th from min_layer), W_check = W_head for policies that read logits
(one readout per check) and D for readout-free ones (saturation, classifier: a D-vector product), and
W_skip = W_kv = 2·D² (K and V projections) with propagation or W_block with recomputation.
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
from layerwise.stack import LayerStack, StackState

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
    policy: ExitPolicy | None = None

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
                                                     self.max_layer or self.num_layers, self.kv_fill, self.policy)
        return out


def weights_per_token(stack: LayerStack) -> dict[str, int]:
    """Matrix entries (multiply-adds for one token) of one block, of the readout's head, and of one block's K/V
    projections (2·D²; fewer with grouped-query attention)."""
    def matrices(module) -> int:
        return sum(p.numel() for p in module.parameters() if p.ndim == 2)

    head = getattr(stack.readout, "head", None)
    return {"block": matrices(stack.blocks[0]), "head": matrices(stack.readout), "kv": 2 * stack.hidden_size ** 2,
            "state_check": stack.hidden_size, "vocab": getattr(head, "out_features", 0)}


def compute_speedup(histogram: list[int], weights: dict[str, int], min_layer: int, max_layer: int,
                    kv_fill: str = "propagate", policy: ExitPolicy | None = None) -> float | None:
    """Σ_tokens cost(full) / Σ_tokens cost(exit layer), the costs of the module docstring; histogram over 1..L;
    ``policy`` (default: one that reads logits at every layer) sets the checks' cost and spacing."""
    depth = len(histogram)
    full = depth * weights["block"] + weights["head"]
    skipped = weights["kv"] if kv_fill == "propagate" else weights["block"]
    reads = policy is None or policy.reads_logits
    check = weights["head"] if reads else weights["state_check"]
    evaluated = [policy is None and ell >= min_layer or policy is not None and policy.evaluates(ell, max_layer)
                 for ell in range(1, depth + 1)]
    used = sum(m * (ell * weights["block"] + sum(evaluated[:ell]) * check + (0 if reads else weights["head"])
                    + (max_layer - ell) * skipped) for ell, m in enumerate(histogram, start=1))
    return full * sum(histogram) / used if used else None


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
    policy.check_decoder(stack)
    return policy.min_layer, hi


class _RowCache:
    """The cache a block sees when it runs for ``rows`` only: an update merges their new keys/values with the
    other rows' (``fill``: from ``fill_kv`` on their frozen states), appends the whole batch's to the real cache
    and hands the block back its own rows."""

    def __init__(self, cache, batch: int, rows: Tensor, others: Tensor, fill: tuple[Tensor, Tensor] | None):
        self.cache, self.batch, self.rows, self.others, self.fill = cache, batch, rows, others, fill

    def update(self, key: Tensor, value: Tensor, layer_idx: int, *args, **kwargs) -> tuple[Tensor, Tensor]:
        if self.fill is None:  # capturing the other rows' fill: keep it, write nothing
            self.fill = (key, value)
            return key, value
        merged = []
        for mine, theirs in zip((key, value), self.fill):
            full = mine.new_empty((self.batch, *mine.shape[1:]))
            full[self.rows], full[self.others] = mine, theirs
            merged.append(full)
        keys, values = self.cache.update(*merged, layer_idx, *args, **kwargs)
        return keys[self.rows], values[self.rows]

    def __getattr__(self, name: str):
        return getattr(self.cache, name)


def _with_cache(state: StackState, cache) -> StackState:
    """``state`` with every reference to its cache (``cache`` field, block arguments) replaced by ``cache``."""
    def swap(x):
        return cache if x is state.cache else x

    return replace(state, cache=cache, block_args=tuple(swap(a) for a in state.block_args),
                   block_kwargs={k: swap(v) for k, v in state.block_kwargs.items()})


class TokenExitRunner:
    """Feeds tokens through the stack with a key/value cache and chooses each row's next token at its exit layer.

    ``start(ids, mask)`` prefills the prompts, ``step(tokens)`` feeds one token per row; both return
    (next token (B,), its exit layer (B,)). ``compact=False``: exited rows ride along in the full block on
    their frozen state (the reference that compaction must match)."""

    def __init__(self, stack: LayerStack, policy: ExitPolicy, kv_fill: str = "propagate",
                 decoding: Greedy | Sampling | None = None, generator: torch.Generator | None = None,
                 compact: bool = True):
        self.decoding = decoding or Greedy()
        self.lo, self.hi = check_token_exit(stack, policy, kv_fill, self.decoding)
        self.stack, self.policy, self.kv_fill, self.generator = stack, policy, kv_fill, generator
        self.compact = compact
        self.cache = stack.new_cache()
        self.mask: Tensor | None = None
        self.full_layers: list[int] = []

    def start(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        self.mask = mask[:, :0]
        return self._run(ids, mask, prefill=True)

    def step(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        new = tokens[:, None]
        return self._run(new, torch.ones_like(new), prefill=False)

    def _decide(self, h: Tensor, previous: Tensor, rows: Tensor | None, memory: Memory, layer: int
                ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(who leaves (n,), the rows' last-position states (n, D), their logits (n, V) or None) for the given
        rows (None: all); at max_layer every row leaves. Readout-free policies read out nothing here: the caller
        reads out only the rows leaving, and only when there are some."""
        last = h[:, -1] if rows is None else h[rows, -1]
        sub = memory if rows is None else {k: v[rows] for k, v in memory.items()}
        if self.policy.reads_logits:
            logits = self.stack.readout(last[:, None])[:, -1]
            leave = self.policy.decide(logits, sub).exit
        else:
            before = previous[:, -1] if rows is None else previous[rows, -1]
            leave = self.policy.exits(self.policy.state_scores(last, before, layer, sub))
            logits = None
        if rows is not None:
            for k, v in sub.items():
                memory[k][rows] = v
        return leave | (layer == self.hi), last, logits

    def _compact_block(self, i: int, state: StackState, frozen: Tensor, active: Tensor) -> StackState:
        """Block i in full for the active rows, only its K/V fill (of their frozen state) for the others."""
        rows, others = active.nonzero().squeeze(1), (~active).nonzero().squeeze(1)
        capture = _RowCache(state.cache, 0, rows, others, None)
        self.stack.fill_kv(i, replace(_with_cache(state, capture).select(others), h=frozen[others]))
        mine = _with_cache(state, _RowCache(state.cache, state.h.shape[0], rows, others, capture.fill))
        out = self.stack.block(i, mine.select(rows))
        return replace(state, h=frozen.index_copy(0, rows, out.h))

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
            ell, previous = i + 1, state.h
            if propagate and left == 0:
                self.stack.fill_kv(i, replace(state, h=frozen))
                continue
            if propagate and left < b and self.compact and self.stack.has_kv_hook:
                state = self._compact_block(i, state, frozen, active)
            else:
                if propagate and left < b:
                    state = replace(state, h=torch.where(active[:, None, None], state.h, frozen))
                state = self.stack.block(i, state)
            if ell < self.lo or left == 0 or not self.policy.evaluates(ell, self.hi):
                continue
            rows = None if left == b else active.nonzero().squeeze(1)
            leave, last, logits = self._decide(state.h, previous, rows, memory, ell)
            rows = (torch.arange(b, device=device) if rows is None else rows)[leave]
            leaving = rows.numel()
            if not leaving:
                continue
            # a token is drawn only for the rows leaving, from their layer-ℓ logits
            logits = self.stack.readout(last[leave][:, None])[:, -1] if logits is None else logits[leave]
            token[rows], layer[rows] = self.decoding.choose(logits, self.generator), ell
            active[rows] = False
            left -= leaving
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
                        seed: int = 0, compact: bool = True) -> TokenExitResult:
    """Continue every prompt with per-token early exit under ``policy`` (its min/max layers bound the exits);
    sampled decoding draws from a generator seeded with ``seed``; ``compact``: row compaction (module doc)."""
    check_generation(stack, stack.num_layers, prompts, max_new_tokens)
    device = next(stack.model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    runner = TokenExitRunner(stack, policy, kv_fill, decoding, generator, compact)
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
                           runner.full_layers, runner.lo, runner.hi, kv_fill, weights_per_token(stack), policy)


def token_exit_text(stack: LayerStack, tokenizer, texts: list[str], policy: ExitPolicy,
                    **options) -> tuple[list[str], TokenExitResult]:
    """``token_exit_generate`` on text: encode the prompts, continue them, decode the new tokens."""
    from layerwise.inference.generation import encode_prompts, special_ids

    eos, pad = special_ids(stack, tokenizer)
    out = token_exit_generate(stack, encode_prompts(tokenizer, texts), policy, eos_token_id=eos, pad_token_id=pad,
                              **options)
    return [tokenizer.decode(row, skip_special_tokens=True) for row in out.generated.rows()], out
