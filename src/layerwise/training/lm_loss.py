"""The aligned language-model loss without L layers of (tokens × vocabulary) logits.

    loss = Σ_ℓ w_ℓ · (1/N) Σ_{(b,t) kept} CE(Rₗ(hˡ_{b,t}), y_{b,t+1})

with the next-token shift and the kept positions of ``training.losses.lm_targets`` (padding targets
dropped by the attention mask; targets equal to ``IGNORE_INDEX``, the Hugging Face collators' padding label,
dropped as ``F.cross_entropy`` drops them), N the number of kept targets, Rₗ the readout serving layer ℓ
(final norm + LM head, applied per token).

Computed naively (``losses.layer_losses``) every layer keeps its (N, V) logits and softmax for the
backward pass: L times the logit memory of standard training (12 × 0.4 GB for GPT-2 at 2,048 tokens).
``chunked_lm_loss`` instead walks the kept tokens ``chunk_size`` at a time and, inside the forward pass,
differentiates each chunk's loss at once (``torch.autograd.grad`` through the readout), keeping only the
gradients: one (B, T, D) tensor per layer and one per readout parameter. No chunk's logits survive the
chunk, nothing is recomputed in the backward pass (which just scales the stored gradients by the incoming
one), so the readout costs the same three matrix products per layer as the naive loss. This is the
"gradient in the forward pass" scheme of fused linear-plus-cross-entropy kernels (Liger-Kernel's
``FusedLinearCrossEntropy``), written with torch's autograd so any token-wise readout (LayerNorm or
RMSNorm, tied or untied head, bias or none) works unchanged.

Layer sampling (``sampled_layer_weights``, LayerSkip's rotating early exits made unbiased): a step computes the
loss at the last layer and at k layers drawn uniformly without replacement from 1..L−1, weighted

    w̃_L = λ_L,   w̃_ℓ = λ_ℓ·(L−1)/k for each drawn ℓ,   w̃_ℓ = 0 otherwise,

so P(ℓ drawn) = k/(L−1) and E[w̃_ℓ] = λ_ℓ for every ℓ: E[Σ_ℓ w̃_ℓ CE_ℓ] = Σ_ℓ λ_ℓ CE_ℓ exactly, loss and gradient
alike. Layers of weight 0 cost nothing here, so a step pays k + 1 readouts instead of L.

Limits: the result cannot be differentiated twice; parameters are taken from ``readout.parameters()``,
which FSDP's flattened parameters hide (use the naive loss there).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from layerwise.errors import LayerwiseError

IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index, Hugging Face's padding label
LOGIT_BUDGET = 2**25  # elements of one chunk's logits (128 MiB in float32) when no chunk size is given


def next_token_rows(labels: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """(b, t, y): the positions (b, t) whose next token y = labels[b, t+1] is a target (mask[b, t+1] set and
    y ≠ IGNORE_INDEX), row-major as ``losses.lm_targets`` orders them."""
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    if mask is not None:
        keep &= mask[:, 1:].bool()
    b, t = keep.nonzero(as_tuple=True)
    return b, t, targets[b, t]


def default_chunk(vocab_size: int) -> int:
    """Tokens per chunk so one chunk's logits hold about ``LOGIT_BUDGET`` numbers: ⌊2²⁵ / V⌋ (667 for GPT-2)."""
    return max(1, LOGIT_BUDGET // max(1, vocab_size))


def _ce_sum(logits: Tensor, targets: Tensor) -> Tensor:
    """Σ CE of one chunk; half-precision logits (autocast) are summed in float32, float64 stays float64."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(logits, targets, reduction="sum")


def _params(readout: nn.Module) -> list[Tensor]:
    return [p for p in readout.parameters() if p.requires_grad]


class _Plan:
    """What the autograd function needs besides tensors: readouts, weights, rows, chunk size."""

    def __init__(self, readouts: Sequence[nn.Module], weights: list[float], rows: tuple[Tensor, Tensor, Tensor],
                 chunk: int, params: list[Tensor]):
        self.readouts, self.weights, self.rows, self.chunk, self.params = readouts, weights, rows, chunk, params


class _ChunkedLMLoss(torch.autograd.Function):
    """Forward: the loss, and its gradients w.r.t. every hˡ and readout parameter, chunk by chunk.
    Backward: those gradients times the incoming (scalar) gradient."""

    @staticmethod
    def forward(ctx, plan: _Plan, *tensors: Tensor) -> Tensor:  # tensors: hs..., params...
        hs = tensors[: len(plan.readouts)]
        b, t, y = plan.rows
        n = y.numel()
        index = {id(p): i for i, p in enumerate(plan.params)}
        g_h = [torch.zeros_like(h) if h.requires_grad else None for h in hs]
        g_p: list[Tensor | None] = [None] * len(plan.params)
        total = None
        for readout, h, w, gh in zip(plan.readouts, hs, plan.weights, g_h):
            own = _params(readout)
            hd = h.detach()
            for s in range(0, n, plan.chunk):
                bi, ti = b[s:s + plan.chunk], t[s:s + plan.chunk]
                x = hd[bi, ti].requires_grad_(gh is not None)
                with torch.enable_grad():
                    part = _ce_sum(readout(x), y[s:s + plan.chunk]) * (w / n)
                wrt = ([x] if gh is not None else []) + own
                grads = list(torch.autograd.grad(part, wrt)) if wrt else []
                total = part.detach() if total is None else total + part.detach()
                if gh is not None:
                    gh[bi, ti] = grads.pop(0).to(gh.dtype)
                for p, g in zip(own, grads):
                    i = index[id(p)]
                    g_p[i] = g if g_p[i] is None else g_p[i].add_(g)
        g_p = [torch.zeros_like(p) if g is None else g for p, g in zip(plan.params, g_p)]
        ctx.save_for_backward(*g_h, *g_p)
        return total

    @staticmethod
    def backward(ctx, grad: Tensor):
        saved = ctx.saved_tensors
        return (None, *(None if g is None else grad * g for g in saved))


def chunked_lm_loss(readouts: Sequence[nn.Module], hs: Sequence[Tensor], mask: Tensor | None, labels: Tensor,
                    weights: Tensor | Sequence[float], chunk_size: int | None = None) -> Tensor:
    """Σ_ℓ w_ℓ · mean next-token CE of Rₗ(hˡ), never holding more than ``chunk_size`` tokens' logits.

    ``readouts`` (one per layer, may repeat one shared module) must be token-wise (pooling "none");
    ``hs`` are (B, T, D), ``labels`` and ``mask`` (B, T). Equals ``aligned(layer_losses(...), weights)`` of
    ``losses.layer_losses`` in value and gradients (up to summation order); layers of weight 0 are skipped.
    """
    weights = [float(w) for w in (weights.tolist() if isinstance(weights, Tensor) else weights)]
    if not len(readouts) == len(hs) == len(weights):
        raise LayerwiseError(f"{len(readouts)} readouts, {len(hs)} layers and {len(weights)} weights: "
                             "pass one of each per layer")
    for r in readouts:
        if getattr(r, "pooling", "none") != "none":
            raise LayerwiseError(f"the chunked LM loss needs a per-token readout, not one pooling {r.pooling!r}: "
                                 "use the naive loss for this model")
    rows = next_token_rows(labels, mask)
    chunk = chunk_size or default_chunk(_vocab_size(readouts[0]))
    if chunk < 1:
        raise LayerwiseError(f"chunk size {chunk}: use at least one token per chunk")
    used = [(r, h, w) for r, h, w in zip(readouts, hs, weights) if w != 0]
    seen: dict[int, Tensor] = {}
    for r, _, _ in used:
        seen.update((id(p), p) for p in _params(r))
    params = list(seen.values())
    plan = _Plan([u[0] for u in used], [u[2] for u in used], rows, chunk, params)
    layer_hs = [u[1] for u in used]
    if not used or not rows[2].numel():  # like F.cross_entropy's mean over no targets: NaN, nothing to learn
        return torch.full((), float("nan") if used else 0.0, device=labels.device)
    if torch.is_grad_enabled() and any(x.requires_grad for x in (*layer_hs, *params)):
        return _ChunkedLMLoss.apply(plan, *layer_hs, *params)
    return _value(plan, layer_hs)


def sampled_layer_weights(weights: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """The importance weights w̃ of one step (module docstring): λ_L at the last layer, λ_ℓ·(L−1)/k at k layers
    drawn uniformly without replacement from 1..L−1 with ``generator``, 0 elsewhere; k = L − 1 gives λ itself."""
    depth = weights.numel()
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= depth - 1:
        raise LayerwiseError(f"`aligned_layers` {k!r}: draw 1..{depth - 1} of the layers below the last "
                             f"(this model has {depth})", option="aligned_layers")
    drawn = torch.randperm(depth - 1, generator=generator)[:k].to(weights.device)
    out = torch.zeros_like(weights)
    out[drawn] = weights[drawn] * ((depth - 1) / k)
    out[-1] = weights[-1]
    return out


def _value(plan: _Plan, hs: Sequence[Tensor]) -> Tensor:
    """The loss alone (no gradient wanted), chunk by chunk."""
    b, t, y = plan.rows
    n, total = y.numel(), None
    with torch.no_grad():
        for readout, h, w in zip(plan.readouts, hs, plan.weights):
            for s in range(0, n, plan.chunk):
                part = _ce_sum(readout(h[b[s:s + plan.chunk], t[s:s + plan.chunk]]), y[s:s + plan.chunk]) * (w / n)
                total = part if total is None else total + part
    return total


def _vocab_size(readout: nn.Module) -> int:
    """V: the output features of the readout's head (a Linear), else 2¹⁵ (a large vocabulary, small chunks)."""
    return int(getattr(getattr(readout, "head", None), "out_features", None) or 2**15)


__all__ = ["IGNORE_INDEX", "chunked_lm_loss", "default_chunk", "next_token_rows", "sampled_layer_weights"]
