"""Text generation from any layer k of a decoder: logits = readout(hᵏ), the model's own final norm recomputed
on hᵏ and then its LM head, with blocks 1..k only and a key/value cache for them.

Prompts of different lengths are left-padded; positions count real tokens only (Hugging Face's rule,
position = cumsum(mask) − 1), so a padded batch generates what each prompt generates alone. Rows stop at
EOS (then emit padding) or after ``max_new_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from layerwise.errors import LayerwiseError
from layerwise.inference.decoding import ContrastiveSearch, Greedy, Sampling
from layerwise.stack import LayerStack, Lens, LogitLens

Decoding = Greedy | Sampling | ContrastiveSearch


def left_pad(prompts: list[list[int]], pad_id: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """(ids, mask), each (B, T_max): prompts right-aligned, padding (mask 0) on the left."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt):] = torch.tensor(prompt)
            mask[row, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


def positions(mask: Tensor) -> Tensor:
    """Position ids of a left-padded batch: cumsum(mask) − 1 on real tokens, 1 on padding (as HF)."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)


class LayerRunner:
    """Runs embed + blocks 1..k on a growing batch of sequences and returns the next-token logits at layer k.

    With a cache, each step feeds only the new tokens; without, the whole sequence again (the reference
    the cached path must match). ``hidden`` keeps norm(hᵏ) of every position when asked (contrastive search).
    """

    def __init__(self, stack: LayerStack, layer: int, use_cache: bool = True, keep_hidden: bool = False,
                 lens: Lens | None = None):
        self.stack, self.layer, self.use_cache, self.keep_hidden = stack, layer, use_cache, keep_hidden
        self.readout = (lens or LogitLens()).readout(stack, layer)  # logits = readout(hᵏ), through the lens
        self.norm = stack.readout.without_head()
        self.cache = stack.new_cache() if use_cache else None
        self.ids: Tensor | None = None
        self.mask: Tensor | None = None
        self.hidden: Tensor | None = None

    def start(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Prefill with the (left-padded) prompts; logits for the first new token, (B, V)."""
        self.ids, self.mask = ids[:, :0], mask[:, :0]
        return self._run(ids, mask)

    def step(self, new_ids: Tensor) -> Tensor:
        """Append ``new_ids`` (B, n), all real tokens; logits for the token after them, (B, V)."""
        return self._run(new_ids, torch.ones_like(new_ids))

    def _run(self, new_ids: Tensor, new_mask: Tensor) -> Tensor:
        self.ids = torch.cat([self.ids, new_ids], dim=1)
        self.mask = torch.cat([self.mask, new_mask.to(self.mask.dtype)], dim=1)
        feed = new_ids if self.use_cache else self.ids
        inputs = {"input_ids": feed, "attention_mask": self.mask, "position_ids": positions(self.mask)[:, -feed.shape[1]:]}
        for state in self.stack.states(inputs, upto=self.layer, cache=self.cache):
            pass
        h = state.h
        if self.keep_hidden:
            normed = self.norm(h)
            self.hidden = normed if not self.use_cache or self.hidden is None else torch.cat([self.hidden, normed], 1)
        return self.readout(h[:, -1:])[:, -1]

    def select(self, rows: Tensor) -> None:
        """Keep these batch rows (contrastive search keeps one candidate per prompt)."""
        self.ids, self.mask = self.ids[rows], self.mask[rows]
        self.hidden = None if self.hidden is None else self.hidden[rows]
        if self.cache is not None:
            self.cache.batch_select_indices(rows)

    def repeat(self, times: int) -> None:
        """Each row ``times`` times in a row (contrastive search's candidates)."""
        self.ids, self.mask = self.ids.repeat_interleave(times, 0), self.mask.repeat_interleave(times, 0)
        self.hidden = None if self.hidden is None else self.hidden.repeat_interleave(times, 0)
        if self.cache is not None:
            self.cache.batch_repeat_interleave(times)


@dataclass
class Generated:
    """New tokens (B, N) after each prompt, padding after a row's EOS; ``lengths`` counts each row's tokens
    up to and including its EOS."""

    tokens: Tensor
    lengths: Tensor

    def rows(self) -> list[list[int]]:
        return [t[:n].tolist() for t, n in zip(self.tokens, self.lengths)]


def check_generation(stack: LayerStack, layer: int, prompts: list[list[int]], max_new_tokens: int) -> None:
    """Refuse what cannot generate, before any work: a classifier, a layer out of range, an empty prompt, a
    prompt plus continuation longer than the model's context."""
    if stack.task != "lm":
        raise LayerwiseError(f"{type(stack.model).__name__} is a {stack.task} model, not a language model: "
                             "generation needs a decoder with an LM head")
    if not 0 <= layer <= stack.num_layers:
        raise LayerwiseError(f"layer {layer} out of range: this model has layers 0..{stack.num_layers}")
    if not prompts or any(len(p) == 0 for p in prompts):
        raise LayerwiseError("an empty prompt: give every prompt at least one token of text")
    if max_new_tokens < 1:
        raise LayerwiseError(f"max_new_tokens={max_new_tokens}: ask for at least one new token")
    longest = max(len(p) for p in prompts)
    if stack.context_length is not None and longest + max_new_tokens > stack.context_length:
        raise LayerwiseError(f"a prompt of {longest} tokens plus {max_new_tokens} new tokens exceeds the model's "
                             f"context of {stack.context_length}: shorten the prompt or ask for fewer tokens")


@torch.no_grad()
def generate(stack: LayerStack, prompts: list[list[int]], layer: int | None = None, *,
             decoding: Decoding | None = None, max_new_tokens: int = 32, eos_token_id: int | None = None,
             pad_token_id: int = 0, seed: int = 0, use_cache: bool = True, lens: Lens | None = None) -> Generated:
    """Continue every prompt (token ids) from layer ``layer`` (default L): next token ~ decoding(readout(hᵏ)),
    the readout through ``lens`` when given (a tuned lens translates hᵏ first).

    Sampling draws from a ``torch.Generator`` seeded with ``seed``, so a run is reproducible and leaves the
    global RNG alone."""
    layer = stack.num_layers if layer is None else layer
    check_generation(stack, layer, prompts, max_new_tokens)
    decoding = decoding or Greedy()
    device = next(stack.model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    runner = LayerRunner(stack, layer, use_cache, keep_hidden=decoding.needs_hidden, lens=lens)
    was_training = stack.model.training
    stack.model.eval()
    try:
        logits = runner.start(*left_pad(prompts, pad_token_id, device))
        out, finished = [], torch.zeros(len(prompts), dtype=torch.bool, device=device)
        lengths = torch.zeros(len(prompts), dtype=torch.long, device=device)
        for step in range(max_new_tokens):
            if isinstance(decoding, ContrastiveSearch):
                token, next_logits = decoding.advance(runner, logits)
            else:
                token, next_logits = decoding.choose(logits, generator), None
            token = token.masked_fill(finished, pad_token_id)
            out.append(token)
            lengths += (~finished).long()
            if eos_token_id is not None:
                finished |= token == eos_token_id
            if bool(finished.all()) or step == max_new_tokens - 1:
                break
            # Contrastive search has already run its chosen candidates (a finished row's, replaced by padding
            # in the output, is never read again).
            logits = runner.step(token[:, None]) if next_logits is None else next_logits
    finally:
        stack.model.train(was_training)
    return Generated(torch.stack(out, dim=1), lengths)


def special_ids(stack: LayerStack, tokenizer) -> tuple[int | None, int]:
    """(EOS, padding) ids: the model config's EOS, else the tokenizer's; padding is the tokenizer's, else EOS, else 0."""
    config = getattr(stack.model, "config", None)
    eos = getattr(config, "eos_token_id", None)
    eos = eos if isinstance(eos, int) else getattr(tokenizer, "eos_token_id", None)
    pad = getattr(tokenizer, "pad_token_id", None)
    return eos, pad if pad is not None else eos if eos is not None else 0


def encode_prompts(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each prompt, without special tokens (a continuation follows the text itself)."""
    return [list(tokenizer.encode(t, add_special_tokens=False)) for t in texts]


def generate_text(stack: LayerStack, tokenizer, texts: list[str], layer: int | None = None, **options) -> list[str]:
    """``generate`` on text: encode the prompts, continue them from ``layer``, decode the new tokens."""
    eos, pad = special_ids(stack, tokenizer)
    out = generate(stack, encode_prompts(tokenizer, texts), layer, eos_token_id=eos, pad_token_id=pad, **options)
    return [tokenizer.decode(row, skip_special_tokens=True) for row in out.rows()]
