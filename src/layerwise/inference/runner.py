"""Early exit over the layer stack: run blocks one at a time and stop each sample when its policy says so.

The runner computes only the blocks it needs. Batched, it compacts: after block ℓ the samples that exited
are dropped (``StackState.select``) and blocks ℓ+1.. run on the rest only; results are written back at each
sample's original index. Per layer it pays one readout on the pooled token (``fast_readout``) and one host
sync (how many samples stay), all under ``torch.inference_mode()``.

Layer-count speedup S_layers = Σᵢ L·mᵢ / Σᵢ i·mᵢ (mᵢ = samples exiting at layer i).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import Tensor, nn

from layerwise.data.batches import Batch
from layerwise.errors import LayerwiseError
from layerwise.inference.policies import Decision, ExitPolicy
from layerwise.stack import LayerStack, Lens, fast_readout, layer_readouts


@dataclass
class ExitResult:
    """Per sample, in input order: predicted class, exit layer (1..L) and max softmax probability there."""

    prediction: Tensor  # (N,) long
    layer: Tensor  # (N,) long
    confidence: Tensor  # (N,) float32

    @staticmethod
    def cat(parts: Sequence[ExitResult]) -> ExitResult:
        if not parts:
            raise LayerwiseError("the data set is empty: check the data path, split and `limit`")
        return ExitResult(*(torch.cat([getattr(p, f) for p in parts]) for f in ("prediction", "layer", "confidence")))

    def histogram(self, num_layers: int) -> list[int]:
        """m_ℓ for ℓ = 1..L."""
        return torch.bincount(self.layer.cpu(), minlength=num_layers + 1)[1:].tolist()


def layer_speedup(histogram: Sequence[int]) -> float:
    """Σ L·mᵢ / Σ i·mᵢ with layers i = 1..L."""
    L = len(histogram)
    used = sum(i * m for i, m in enumerate(histogram, start=1))
    return L * sum(histogram) / used if used else float("nan")


class FirstExit:
    """The first-exit rule over all samples at once: a sample's result is the decision at the first layer
    where it exits, or at the last layer ``hi`` if it never does. Used where every sample sees every layer
    (simulation from precomputed logits, the uncompacted reference runner)."""

    def __init__(self, n: int, hi: int, device: torch.device | str = "cpu"):
        self.hi = hi
        self.done = torch.zeros(n, dtype=torch.bool, device=device)
        self.result = ExitResult(torch.zeros(n, dtype=torch.long, device=device),
                                 torch.zeros(n, dtype=torch.long, device=device), torch.zeros(n, device=device))

    def update(self, layer: int, d: Decision) -> None:
        first = (d.exit | (layer == self.hi)) & ~self.done
        r = self.result
        r.prediction = torch.where(first, d.prediction, r.prediction)
        r.confidence = torch.where(first, d.confidence, r.confidence)
        r.layer = torch.where(first, layer, r.layer)
        self.done |= first


class EarlyExitRunner:
    """Run ``stack`` with early exit under ``policy``; ``runner(batch) -> ExitResult``.

    >>> runner = EarlyExitRunner(bundle.stack, ConfidencePolicy(0.9), bundle.exit_heads)
    >>> out = runner(batch)      # out.prediction, out.layer, out.confidence
    """

    def __init__(self, stack: LayerStack, policy: ExitPolicy, exit_heads: nn.ModuleList | None = None,
                 compact: bool = True, lens: Lens | None = None):
        self.stack, self.policy, self.compact = stack, policy, compact
        self.lo, self.hi = policy.check(stack)
        self.heads = [fast_readout(h) for h in layer_readouts(stack, exit_heads, lens)]

    @torch.inference_mode()
    def __call__(self, inputs: Batch) -> ExitResult:
        stack, policy, heads, hi = self.stack, self.policy, self.heads, self.hi
        state = stack.embed(inputs)
        n, device = state.h.shape[0], state.h.device
        memory = policy.start(n, device)
        if not self.compact:
            return self._reference(state, memory)
        where = None  # original index of each row still in flight; None while that is all of 0..n-1
        parts: list[tuple[Tensor, Tensor, Tensor, int]] = []  # (rows, prediction, confidence, layer) per exit
        for i in range(hi):
            state = stack.block(i, state)
            if i + 1 < self.lo or not policy.evaluates(i + 1, hi):
                continue
            d = policy.decide(heads[i](state.h, state.mask), memory)
            rows = state.h.shape[0]
            if i + 1 == hi:  # everyone left exits here
                parts.append((where, d.prediction, d.confidence, hi))
                break
            stay = (0 if d.exit.item() else 1) if rows == 1 else rows - int(d.exit.sum())  # the one host sync
            if stay == rows:
                continue
            # A stable sort puts staying rows first, in their original relative order, without a second sync.
            order = torch.argsort(d.exit.to(torch.uint8), stable=True)
            out, keep = order[stay:], order[:stay]
            idx = out if where is None else where[out]
            parts.append((idx, d.prediction[out], d.confidence[out], i + 1))
            if stay == 0:
                break
            where = keep if where is None else where[keep]
            state = state.select(keep)
            memory = {k: v[keep] for k, v in memory.items()}
        return self._assemble(parts, n, device)

    @staticmethod
    def _assemble(parts, n: int, device: torch.device) -> ExitResult:
        if len(parts) == 1 and parts[0][0] is None:  # nobody exited early: already in order
            _, pred, conf, ell = parts[0]
            return ExitResult(pred, torch.full((n,), ell, dtype=torch.long, device=device), conf)
        prediction = torch.empty(n, dtype=torch.long, device=device)
        layer = torch.empty(n, dtype=torch.long, device=device)
        confidence = torch.empty(n, dtype=torch.float32, device=device)
        for idx, pred, conf, ell in parts:
            prediction[idx], confidence[idx], layer[idx] = pred, conf, ell
        return ExitResult(prediction, layer, confidence)

    def _reference(self, state, memory) -> ExitResult:
        """Without compaction: every sample runs every block up to max_layer (tests, comparisons)."""
        first = FirstExit(state.h.shape[0], self.hi, state.h.device)
        for i in range(self.hi):
            state = self.stack.block(i, state)
            if i + 1 >= self.lo and self.policy.evaluates(i + 1, self.hi):
                first.update(i + 1, self.policy.decide(self.heads[i](state.h, state.mask), memory))
        return first.result

    def run(self, batches: Iterable[Batch]) -> ExitResult:
        """All batches, concatenated in order (labels ignored)."""
        return ExitResult.cat([self(b) for b in batches])
