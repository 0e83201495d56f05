"""Decoding strategies: small classes that choose the next token from one layer's logits.

- ``Greedy``: argmax.
- ``Sampling``: softmax(z / T), restricted to the top-k tokens and then to the nucleus (top-p; Holtzman et
  al. 2020), sampled with a seeded generator. The filters apply in Hugging Face's order: temperature,
  top-k, top-p.
- ``ContrastiveSearch`` (Su et al. 2022, SimCTG): among the top-k candidates v choose
  argmaxᵥ (1 − α)·p(v) − α·maxⱼ cos(hᵥ, hⱼ), hⱼ the (normed) states of the context at the generating layer.
  It must run the candidates through the model, so it drives the runner itself (``advance``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from layerwise.errors import LayerwiseError

DECODINGS = ("greedy", "sample", "nucleus", "top-k", "contrastive")


class Runner(Protocol):  # what ContrastiveSearch needs of inference.generation.LayerRunner
    hidden: Tensor | None
    mask: Tensor

    def step(self, new_ids: Tensor) -> Tensor: ...
    def select(self, rows: Tensor) -> None: ...
    def repeat(self, times: int) -> None: ...


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Logits outside each row's k largest set to −inf (ties at the k-th value are kept)."""
    if k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, -math.inf)


def nucleus_mask(logits: Tensor, p: float) -> Tensor:
    """True for the nucleus: the fewest most-probable tokens whose probability mass reaches p.

    In descending order of probability, token i is kept iff the mass before it is < p (so the token that
    crosses p is kept, and the top token always is)."""
    probs, order = logits.softmax(dim=-1).sort(dim=-1, descending=True)
    before = probs.cumsum(dim=-1) - probs
    keep_sorted = before < p
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Logits outside the nucleus (``nucleus_mask``) set to −inf."""
    return logits if p >= 1.0 else logits.masked_fill(~nucleus_mask(logits, p), -math.inf)


class Greedy:
    """The most probable token."""

    name = "greedy"
    needs_hidden = False

    def choose(self, logits: Tensor, generator: torch.Generator | None) -> Tensor:
        return logits.argmax(dim=-1)


@dataclass(frozen=True)
class Sampling:
    """Sample from softmax(z / temperature), restricted to the top_k tokens and the top_p nucleus."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    name = "sample"
    needs_hidden = False

    def __post_init__(self) -> None:
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise LayerwiseError(f"temperature {self.temperature}: pass a number > 0 (use greedy decoding for 0)")
        if not 0.0 < self.top_p <= 1.0:
            raise LayerwiseError(f"top-p {self.top_p}: pass a probability mass in (0, 1]")
        if self.top_k is not None and self.top_k < 1:
            raise LayerwiseError(f"top-k {self.top_k}: pass a positive number of tokens")

    def filtered(self, logits: Tensor) -> Tensor:
        """The logits sampling draws from: temperature, then top-k, then top-p."""
        z = logits.float() / self.temperature
        if self.top_k is not None:
            z = top_k_filter(z, self.top_k)
        return top_p_filter(z, self.top_p)

    def choose(self, logits: Tensor, generator: torch.Generator | None) -> Tensor:
        probs = self.filtered(logits).softmax(dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@dataclass(frozen=True)
class ContrastiveSearch:
    """Su et al. (2022): score (1 − α)·p(v) − α·maxⱼ cos(hᵥ, hⱼ) over the top-k candidates v."""

    k: int = 4
    alpha: float = 0.6
    name = "contrastive"
    needs_hidden = True

    def __post_init__(self) -> None:
        if self.k < 1:
            raise LayerwiseError(f"contrastive search with k={self.k}: pass k ≥ 1 candidates")
        if not 0.0 <= self.alpha <= 1.0:
            raise LayerwiseError(f"contrastive search with alpha={self.alpha}: pass α in [0, 1]")

    def advance(self, runner: Runner, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Run the k candidates of every row one step, keep the best: (tokens (B,), their next logits (B, V))."""
        b = logits.shape[0]
        probs, candidates = logits.float().softmax(dim=-1).topk(self.k, dim=-1)  # (B, k)
        context, context_mask = runner.hidden, runner.mask  # (B, T, D), (B, T) before the candidates
        runner.repeat(self.k)
        next_logits = runner.step(candidates.reshape(-1, 1))  # (B·k, V)
        h = F.normalize(runner.hidden[:, -1].float(), dim=-1).view(b, self.k, -1)
        ctx = F.normalize(context.float(), dim=-1)
        similarity = torch.einsum("bkd,btd->bkt", h, ctx).masked_fill(~context_mask.bool()[:, None, :], -math.inf)
        score = (1 - self.alpha) * probs - self.alpha * similarity.max(dim=-1).values
        best = score.argmax(dim=-1)
        rows = torch.arange(b, device=logits.device) * self.k + best
        runner.select(rows)
        return candidates.gather(1, best[:, None]).squeeze(1), next_logits[rows]


def make_decoding(name: str, *, temperature: float = 1.0, top_k: int | None = None, top_p: float = 0.95,
                  alpha: float = 0.6) -> Greedy | Sampling | ContrastiveSearch:
    """A strategy by name: greedy; sample (temperature, optional top-k/top-p); nucleus (top-p, default 0.95);
    top-k (k, default 50); contrastive (k default 4, α default 0.6)."""
    if name == "greedy":
        return Greedy()
    if name == "sample":
        return Sampling(temperature, top_k, 1.0 if top_p is None else top_p)
    if name == "nucleus":
        return Sampling(temperature, top_k, top_p)
    if name == "top-k":
        return Sampling(temperature, top_k or 50, 1.0)
    if name == "contrastive":
        return ContrastiveSearch(top_k or 4, alpha)
    raise LayerwiseError(f"unknown decoding {name!r}: use one of {', '.join(DECODINGS)}")
