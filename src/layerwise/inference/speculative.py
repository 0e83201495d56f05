"""Self-speculative decoding (LayerSkip, Elhoushi et al. 2024; Leviathan et al. 2023): the first E layers and
the shared readout draft n tokens, the full model verifies them in one pass over n + 1 positions.

Round (per row, with the full model's last token x not yet fed):
1. draft: feed x, d₁, …, d_{n−1} through blocks 1..E (their cache grows), dᵢ ~ readout(hᴱ);
2. verify: feed d_n through blocks 1..E too, then run blocks E+1..L on hᴱ of [x, d₁..d_n] (the draft's own
   states: blocks 1..E are never run twice) → the full model's distributions p₀..p_n;
3. accept the longest agreeing prefix d₁..d_a and one token from the full model (greedy: argmax p_a;
   sampling: rejection sampling, accept dᵢ if u < pᵢ₋₁(dᵢ)/qᵢ(dᵢ), else draw from max(p − q, 0), which
   leaves the full model's distribution unchanged).

Rows accept different lengths: every block's cache is cropped to the longest acceptance, and a row that
accepted fewer keeps holes there, masked out (positions count real tokens only, so a hole changes nothing).
Greedy output is therefore the full model's greedy output, token for token.

Reduced-vocabulary draft (``draft_vocab``, ``inference.draft_vocab``): the draft reads out only the head rows of a
token set S (the V′ most frequent tokens of the training corpus), so its distribution q is zero outside S;
verification keeps the full head. Greedy: the output is the verifier's argmax whatever was drafted, so it is
unchanged. Sampling stays exact. With p the full model's distribution at a position, a drafted d ~ q is
accepted with probability min(1, p(d)/q(d)) (q(d) > 0 for every d that can be drafted), and on rejection the
token is drawn from r(x) = (p(x) − q(x))⁺ / Z, Z = Σ_y (p(y) − q(y))⁺ = 1 − Σ_y min(p(y), q(y)). So

    P(x) = q(x)·min(1, p(x)/q(x)) + Z·r(x) = min(p(x), q(x)) + (p(x) − q(x))⁺ = p(x)   for every x,

and for x ∉ S (q(x) = 0) the first term is 0 and the second is p(x): tokens outside the draft vocabulary are
reached through the residual alone, with exactly their probability. Nothing needs q > 0 where p > 0 (Z = 0
only when p = q, where nothing is ever rejected).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from layerwise.errors import LayerwiseError
from layerwise.inference.decoding import Greedy, Sampling
from layerwise.inference.draft_vocab import DraftHead
from layerwise.inference.generation import Generated, check_generation, generate, left_pad, positions
from layerwise.stack import LayerStack, StackState


@dataclass
class SpeculativeStats:
    """Drafted and accepted tokens over all rounds and rows: acceptance rate = accepted / drafted."""

    rounds: int = 0
    drafted: int = 0
    accepted: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else float("nan")


def predicted_speedup(weights: dict[str, int], depth: int, exit_layer: int, num_draft: int, acceptance: float,
                      draft_rows: int | None = None) -> float | None:
    """Full over speculative weights touched per generated token (batch 1, each matrix read once per pass):

        (1 + n·α)(L·W_block + W_head) / ((n + 1)·E·W_block + n·W_draft + (L − E)·W_block + W_head),

    a round drafting n tokens (n + 1 one-position passes through blocks 1..E, n draft heads of V′ rows, W_draft =
    W_head·V′/V) and verifying them in one pass through blocks E+1..L and the full head, yielding 1 + n·α tokens
    at acceptance rate α. ``weights``: ``token_exit.weights_per_token``; ``draft_rows``: V′/V·W_head when given
    as V′ (None: the full head)."""
    if acceptance != acceptance:  # NaN: nothing drafted
        return None
    wb, wh = weights["block"], weights["head"]
    wd = wh if draft_rows is None else wh * draft_rows // weights["vocab"]
    n, e = num_draft, exit_layer
    return (1 + n * acceptance) * (depth * wb + wh) / ((n + 1) * e * wb + n * wd + (depth - e) * wb + wh)


class _Model:
    """The stack run over block ranges against one shared cache."""

    def __init__(self, stack: LayerStack, draft_vocab: Tensor | None = None):
        self.stack, self.cache = stack, stack.new_cache()
        self.vocab = draft_vocab
        self.draft_head = None if draft_vocab is None else DraftHead(stack.readout, draft_vocab)

    def embed(self, ids: Tensor, mask: Tensor) -> StackState:
        """h⁰ of ``ids`` (the last ids.shape[1] positions of ``mask``) and the blocks' masks and positions.

        Only embeds and builds the context: no block runs, so the cache is not touched."""
        inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions(mask)[:, -ids.shape[1]:]}
        return self.stack.embed(inputs, self.cache)

    def run(self, state: StackState, start: int, stop: int) -> StackState:
        for i in range(start, stop):
            state = self.stack.block(i, state)
        return state

    def logits(self, h: Tensor) -> Tensor:
        return self.stack.readout(h).float()

    def draft_logits(self, h: Tensor) -> Tensor:
        """Logits over the draft vocabulary (every token without one)."""
        return self.logits(h) if self.draft_head is None else self.draft_head(h).float()

    def full_vocab(self, draft: Tensor, probs: Tensor | None = None) -> Tensor:
        """Draft-vocabulary indices as token ids, or (with ``probs`` (B, V′)) q over the full vocabulary, 0 off S."""
        if self.vocab is None:
            return draft if probs is None else probs
        if probs is None:
            return self.vocab[draft]
        full = probs.new_zeros((probs.shape[0], self.stack.readout.head.out_features))
        return full.index_copy_(1, self.vocab, probs)


def _probs(decoding: Greedy | Sampling, logits: Tensor) -> Tensor:
    return decoding.filtered(logits).softmax(dim=-1)


def _accept(decoding: Greedy | Sampling, drafts: Tensor, q: Tensor | None, logits: Tensor,
            generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(accepted count a (B,), the full model's token after them (B,)) for drafts (B, n), draft probabilities
    q (B, n, V) and the full model's logits (B, n + 1, V)."""
    b, n = drafts.shape
    rows = torch.arange(b, device=drafts.device)
    if isinstance(decoding, Greedy):
        target = logits.argmax(-1)
        a = (drafts == target[:, :n]).long().cumprod(1).sum(1)
        return a, target[rows, a]
    p = _probs(decoding, logits)  # (B, n + 1, V)
    p_d = p[:, :n].gather(-1, drafts[..., None]).squeeze(-1)
    q_d = q.gather(-1, drafts[..., None]).squeeze(-1)
    u = torch.rand((b, n), generator=generator, device=drafts.device)
    a = (u * q_d < p_d).long().cumprod(1).sum(1)  # u < p/q, without dividing by a zero q
    q_next = torch.cat([q, torch.zeros_like(q[:, :1])], 1)[rows, a]  # after all n accepted: plain p_n
    residual = (p[rows, a] - q_next).clamp_min(0)
    empty = residual.sum(-1, keepdim=True) <= 0
    residual = torch.where(empty, p[rows, a], residual)  # p = q exactly: nothing to correct
    return a, torch.multinomial(residual / residual.sum(-1, keepdim=True), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def speculative_generate(stack: LayerStack, prompts: list[list[int]], exit_layer: int, num_draft: int, *,
                         decoding: Greedy | Sampling | None = None, max_new_tokens: int = 32,
                         eos_token_id: int | None = None, pad_token_id: int = 0, seed: int = 0,
                         draft_vocab: Tensor | None = None) -> tuple[Generated, SpeculativeStats]:
    """Generate like ``generate(stack, prompts)`` from the full model, drafting ``num_draft`` tokens a round
    with blocks 1..``exit_layer`` (and only the head rows of ``draft_vocab``, token ids, when given: see the
    module docstring); returns the tokens and the acceptance statistics."""
    decoding = decoding or Greedy()
    if not isinstance(decoding, (Greedy, Sampling)):
        raise LayerwiseError(f"self-speculative decoding takes greedy or sampled decoding, not {decoding.name}")
    check_generation(stack, stack.num_layers, prompts, max_new_tokens)
    if not 1 <= exit_layer < stack.num_layers:
        raise LayerwiseError(f"exit layer {exit_layer}: draft with layers 1..E for E in 1..{stack.num_layers - 1}")
    if num_draft < 1:
        raise LayerwiseError(f"num_draft={num_draft}: draft at least one token a round")
    if stack.context_length is not None:  # a round's drafts need positions past the request: fewer near the end
        num_draft = min(num_draft, stack.context_length - max(len(p) for p in prompts) - max_new_tokens)
        if num_draft < 1:  # the request fills the context exactly: no room to draft, the full model decodes alone
            full = generate(stack, prompts, decoding=decoding, max_new_tokens=max_new_tokens,
                            eos_token_id=eos_token_id, pad_token_id=pad_token_id, seed=seed)
            return full, SpeculativeStats()
    model, depth, e, n = _Model(stack, draft_vocab), stack.num_layers, exit_layer, num_draft
    device = next(stack.model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    choose = (lambda z: z.argmax(-1)) if isinstance(decoding, Greedy) else None
    was_training = stack.model.training
    stack.model.eval()
    stats = SpeculativeStats()
    try:
        ids, mask = left_pad(prompts, pad_token_id, device)
        h = model.run(model.embed(ids, mask), 0, depth).h
        z = model.logits(h[:, -1])
        pending = choose(z) if choose else decoding.choose(z, generator)
        out = [[int(t)] for t in pending]
        done = [len(o) >= max_new_tokens or (eos_token_id is not None and o[-1] == eos_token_id) for o in out]
        while not all(done):
            ones = torch.ones_like(mask[:, :1])
            verify = model.embed(pending[:, None].expand(-1, n + 1), torch.cat([mask, *[ones] * (n + 1)], 1))
            states, drafts, q, token = [], [], [], pending
            for i in range(n + 1):  # feed x, d₁, …, d_n through blocks 1..E; draft from the first n
                st = model.run(model.embed(token[:, None], torch.cat([mask, *[ones] * (i + 1)], 1)), 0, e)
                states.append(st.h)
                if i == n:
                    break
                z = model.draft_logits(st.h[:, -1])
                if choose:
                    token = model.full_vocab(choose(z))
                else:
                    small = _probs(decoding, z)
                    q.append(model.full_vocab(None, small))
                    token = model.full_vocab(torch.multinomial(small, 1, generator=generator).squeeze(-1))
                drafts.append(token)
            verify.h = torch.cat(states, 1)
            full = model.logits(model.run(verify, e, depth).h)  # (B, n + 1, V)
            drafts_t = torch.stack(drafts, 1)
            a, bonus = _accept(decoding, drafts_t, torch.stack(q, 1) if q else None, full, generator)
            keep = int(a.max())
            past = mask.shape[1]
            if keep < n:
                model.cache.crop(keep - n)  # every block holds past + n + 1 positions; keep past + 1 + keep
            mask = torch.cat([mask, *[ones] * (1 + keep)], 1)
            for r in range(len(out)):  # holes where row r accepted fewer than the longest acceptance
                mask[r, past + 1 + int(a[r]):] = 0
                if done[r]:
                    continue
                stats.drafted += n
                stats.accepted += int(a[r])
                for t in [*drafts_t[r, :int(a[r])].tolist(), int(bonus[r])]:
                    out[r].append(t)
                    if len(out[r]) >= max_new_tokens or t == eos_token_id:
                        done[r] = True
                        break
            stats.rounds += 1
            pending = bonus
    finally:
        stack.model.train(was_training)
    lengths = torch.tensor([len(o) for o in out])
    tokens = torch.full((len(out), max_new_tokens), pad_token_id, dtype=torch.long)
    for r, o in enumerate(out):
        tokens[r, :len(o)] = torch.tensor(o)
    return Generated(tokens[:, :int(lengths.max())], lengths), stats


def speculative_text(stack: LayerStack, tokenizer, texts: list[str], exit_layer: int, num_draft: int,
                     **options) -> tuple[list[str], SpeculativeStats]:
    """``speculative_generate`` on text: encode the prompts, continue them, decode the new tokens."""
    from layerwise.inference.generation import encode_prompts, special_ids

    eos, pad = special_ids(stack, tokenizer)
    out, stats = speculative_generate(stack, encode_prompts(tokenizer, texts), exit_layer, num_draft,
                                      eos_token_id=eos, pad_token_id=pad, **options)
    return [tokenizer.decode(row, skip_special_tokens=True) for row in out.rows()], stats


def sweep(stack: LayerStack, prompts: list[list[int]], exit_layers: list[int], num_drafts: list[int], *,
          max_new_tokens: int = 32, pad_token_id: int = 0, repeats: int = 1, draft_vocab: Tensor | None = None
          ) -> dict:
    """Greedy tokens/s of full decoding and of self-speculative decoding at every (E, n), on held-out prompts;
    ``best`` is the fastest (E, n) whose output is identical to full decoding (greedy always should be)."""
    from layerwise.inference.timing import timed

    def rate(seconds: float, out: Generated) -> float:
        return float(out.lengths.sum()) / seconds

    holder: dict = {}

    def full_run():  # the reference: cached greedy decoding with the full model, no EOS (as the runs below)
        holder["full"] = generate(stack, prompts, max_new_tokens=max_new_tokens, pad_token_id=pad_token_id)

    base_seconds = timed(full_run, repeats)
    full = holder["full"]
    rows = []
    for e in exit_layers:
        for n in num_drafts:
            def run(e=e, n=n):
                holder["spec"] = speculative_generate(stack, prompts, e, n, max_new_tokens=max_new_tokens,
                                                      pad_token_id=pad_token_id, draft_vocab=draft_vocab)

            seconds = timed(run, repeats)
            out, stats = holder["spec"]
            rows.append({"exit_layer": e, "num_draft": n, "tokens_per_s": rate(seconds, out),
                         "speedup": base_seconds / seconds, "acceptance_rate": stats.acceptance_rate,
                         "identical": bool(torch.equal(out.tokens, full.tokens))})
    valid = [r for r in rows if r["identical"]]
    return {"full_tokens_per_s": rate(base_seconds, full), "runs": rows,
            "best": max(valid, key=lambda r: r["speedup"]) if valid else None}

