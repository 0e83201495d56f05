"""The empirical NTK of a classifier, split into the head's part and the backbone's part
(Tomihari & Sato, "Understanding Linear Probing then Fine-tuning Language Models from NTK Perspective", 2024).

For logits f(x) = W φ(x; θ) + b, with φ the input of the head's last Linear and θ every other parameter,

    Θ(x, x') = ∂f(x)/∂(W, b) ∂f(x')/∂(W, b)ᵀ + ∂f(x)/∂θ ∂f(x')/∂θᵀ = K_pt(x, x') + K_ft(x, x')
    K_pt(x, x') = (φ(x)·φ(x') + 1) I_C                        (the head's part)
    K_ft(x, x') = (W J(x)) (W J(x'))ᵀ,   J(x) = ∂φ(x)/∂θ       (the backbone's part)

Kernels are (N, C, N, C) float64 tensors: K[i, a, j, b] = K(xᵢ, xⱼ)_{ab}. ``ft_kernel`` computes W J(x) = ∂f(x)/∂θ
exactly, over all backbone parameters (embeddings included, no subsampling), one sample at a time with
``torch.func.jacrev`` on ``functional_call`` (vmapped over the C logits), and accumulates the Gram matrix in
chunks of samples: a chunk's Jacobians stay in memory while the later chunks stream past, so the peak memory is
about ``ntk_bytes`` whatever N is (the price is recomputing Jacobians, n_chunks(n_chunks+1)/2 chunk passes).

The Jacobians are held in the model's dtype; ``gram64`` widens them to float64 a slice of parameters at a time
before multiplying, so every dot product over the P backbone parameters (22.7M for MiniLM) is summed in float64
at the memory cost of float32 Jacobians. Summed in float32, the rounding grew with P and with the BLAS blocking,
which depends on the chunk: MiniLM's fine-tuned trace moved by 8e-4 relative between chunk sizes. In float64 the
kernel does not depend on ``chunk`` (to ~1e-15 relative) and is exact for the Jacobians it is given.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev
from tqdm.auto import tqdm

from layerwise.data.batches import Batch, model_inputs
from layerwise.errors import LayerwiseError
from layerwise.parallel import speaks
from layerwise.stack import LayerStack


class _Owner(nn.Module):
    """The wrapped model as the only child, running the stack's forward. A ``LayerStack`` registers the model's
    blocks and readout modules a second time; ``functional_call`` on it would leave the aliased parameters
    swapped out after the call, so parameters are swapped through the one path that owns them."""

    def __init__(self, stack: nn.Module):
        super().__init__()
        self.model = stack.model
        self.train(stack.training)
        object.__setattr__(self, "_stack", stack)  # not a child: its parameters are reached through model

    def forward(self, inputs: Batch) -> Tensor:
        return self._stack(inputs)


def functional_model(model: nn.Module) -> nn.Module:
    """``model``, or for a ``LayerStack`` an equivalent module that owns each parameter once."""
    if not isinstance(model, LayerStack):
        return model
    owner = _Owner(model)
    if {id(p) for p in owner.parameters()} != {id(p) for p in model.parameters()}:
        raise LayerwiseError("this stack has parameters outside its wrapped model: the eNTK cannot reach them")
    return owner


def backbone_parameters(model: nn.Module, head: nn.Linear) -> dict[str, Tensor]:
    """Every parameter of ``model`` except the head Linear's weight and bias: θ of J = ∂φ/∂θ (detached)."""
    skip = {id(p) for p in head.parameters()}
    return {name: p.detach() for name, p in model.named_parameters() if id(p) not in skip}


GRAM_SLICE = 1 << 20  # parameters per float64 slice in ``gram64``: 8 MiB per Jacobian row


def ntk_bytes(n: int, chunk: int, num_classes: int, num_params: int, itemsize: int = 4) -> int:
    """Peak memory estimate of ``ft_kernel``: two chunks of Jacobians (held + streamed) and the two temporaries of
    one sample's Jacobian, (2·chunk + 2)·C·P·itemsize, the float64 slices of both chunks in ``gram64``,
    2·chunk·C·min(P, GRAM_SLICE)·8, plus the float64 kernels K_ft and K_pt, 2·(N·C)²·8."""
    return ((2 * chunk + 2) * num_classes * num_params * itemsize
            + 2 * chunk * num_classes * min(num_params, GRAM_SLICE) * 8 + 2 * (n * num_classes) ** 2 * 8)


def gram64(a: Tensor, b: Tensor, step: int = GRAM_SLICE) -> Tensor:
    """a bᵀ in float64 for (M, P) and (M', P) matrices of any float dtype: Σ_s a[:, s] b[:, s]ᵀ over slices s of
    ``step`` columns, each slice widened to float64 before the product, so every sum over P runs in float64 while
    only one slice of each is held in float64."""
    out = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    for s in range(0, a.shape[1], step):
        out += a[:, s:s + step].double() @ b[:, s:s + step].double().T
    return out


def pt_kernel(phi: Tensor, num_classes: int) -> Tensor:
    """K_pt[i, a, j, b] = (φᵢ·φⱼ + 1) δ_ab from (N, D) head inputs φ."""
    phi = phi.double()
    k = phi @ phi.T + 1.0
    return torch.einsum("ij,ab->iajb", k, torch.eye(num_classes, dtype=torch.float64))


def logit_jacobian(model: nn.Module, params: dict[str, Tensor], batch: Batch) -> Tensor:
    """(C, P) Jacobian ∂f(x)/∂θ of one sample's logits w.r.t. ``params`` (flattened in their order)."""
    inputs = model_inputs(batch)

    def logits(p: dict[str, Tensor]) -> Tensor:
        out = functional_call(model, p, (inputs,))
        if out.shape[0] != 1:
            raise LayerwiseError(f"logit_jacobian takes one sample per batch, got {out.shape[0]}")
        return out[0]

    with warnings.catch_warnings(), torch.no_grad():  # jacrev ignores the outer no_grad; the result keeps no graph
        warnings.filterwarnings("ignore", message=".*batching rule.*")  # functorch's loop fallback for some kernels
        jac = jacrev(logits)(params)
    return torch.cat([j.reshape(j.shape[0], -1) for j in jac.values()], dim=1)


def ft_kernel(model: nn.Module, head: nn.Linear, samples: Sequence[Batch], *, chunk: int = 4,
              progress: bool = False) -> Tensor:
    """K_ft[i, a, j, b] = ∂f_a(xᵢ)/∂θ · ∂f_b(xⱼ)/∂θ over all backbone parameters θ (every parameter of ``model``
    but ``head``), from single-sample batches, in eval mode; Gram blocks of ``chunk`` samples at a time, every
    product of Jacobians formed in float64 (``gram64``), so the result does not depend on ``chunk``."""
    if chunk < 1:
        raise LayerwiseError(f"chunk={chunk}: pass a positive number of samples per chunk")
    was = model.training
    model.eval()
    owner = functional_model(model)
    params = backbone_parameters(owner, head)
    n, num_classes = len(samples), head.out_features
    spans = [range(s, min(s + chunk, n)) for s in range(0, n, chunk)]
    total = len(spans) * (len(spans) + 1) // 2
    kernel = torch.zeros(n * num_classes, n * num_classes, dtype=torch.float64)

    def jacobians(span: range) -> Tensor:  # (|span|·C, P)
        return torch.cat([logit_jacobian(owner, params, samples[i]) for i in span])

    def rows(span: range) -> slice:
        return slice(span[0] * num_classes, (span[-1] + 1) * num_classes)

    try:
        with tqdm(total=total, desc="eNTK chunks", disable=not (progress and speaks()), leave=False) as bar:
            for i, span_i in enumerate(spans):
                held = jacobians(span_i)
                kernel[rows(span_i), rows(span_i)] = gram64(held, held).cpu()
                bar.update(1)
                for span_j in spans[i + 1:]:
                    block = gram64(held, jacobians(span_j)).cpu()
                    kernel[rows(span_i), rows(span_j)] = block
                    kernel[rows(span_j), rows(span_i)] = block.T
                    bar.update(1)
                del held
    finally:
        model.train(was)
    return kernel.reshape(n, num_classes, n, num_classes)


def kernel_loo_accuracy(kernel: Tensor, labels: Tensor, ridge: float = 1e-3) -> float:
    """Leave-one-out accuracy of kernel ridge regression on centred one-hot targets with a matrix-valued kernel.

    A = K + λ I with λ = ridge · tr(K)/(N·C) (so the fit does not depend on the kernel's scale), α = A⁻¹ y.
    Leaving sample i out gives the residual y_i − f₋ᵢ(xᵢ) = [A⁻¹]ᵢᵢ⁻¹ αᵢ, with [A⁻¹]ᵢᵢ its C×C diagonal block
    (the block form of the ridge LOO identity), so no refit is needed. Prediction: argmax of f₋ᵢ(xᵢ).
    """
    n, num_classes = kernel.shape[:2]
    if n < 2:
        raise LayerwiseError("leave-one-out needs at least two samples: use a larger NTK subset")
    k = kernel.reshape(n * num_classes, n * num_classes).double()
    lam = ridge * torch.diagonal(k).mean().clamp_min(torch.finfo(torch.float64).tiny)
    y = torch.nn.functional.one_hot(labels.long(), num_classes).double() - 1.0 / num_classes
    inv = torch.linalg.inv(k + lam * torch.eye(n * num_classes, dtype=torch.float64))
    alpha = (inv @ y.reshape(-1)).reshape(n, num_classes, 1)
    blocks = inv.reshape(n, num_classes, n, num_classes)[torch.arange(n), :, torch.arange(n), :]  # (N, C, C)
    loo = y - torch.linalg.solve(blocks, alpha).squeeze(-1)
    return float((loo.argmax(-1) == labels).double().mean())


def ntk_summary(k_pt: Tensor, k_ft: Tensor, labels: Tensor, ridge: float = 1e-3) -> dict[str, float]:
    """Each part's trace tr(K) = Σᵢ Σ_a K[i, a, i, a] and share tr(K_part)/tr(K_pt + K_ft), and the leave-one-out
    kernel-regression accuracy of each part and of their sum (the eNTK itself)."""
    n, c = k_pt.shape[:2]
    trace_pt = float(torch.diagonal(k_pt.reshape(n * c, n * c)).sum())
    trace_ft = float(torch.diagonal(k_ft.reshape(n * c, n * c)).sum())
    total = trace_pt + trace_ft
    return {"n": n, "trace_pt": trace_pt, "trace_ft": trace_ft, "share_pt": trace_pt / total,
            "share_ft": trace_ft / total, "ft_to_pt": trace_ft / trace_pt, "ridge": ridge,
            "accuracy_pt": kernel_loo_accuracy(k_pt, labels, ridge),
            "accuracy_ft": kernel_loo_accuracy(k_ft, labels, ridge),
            "accuracy_sum": kernel_loo_accuracy(k_pt + k_ft, labels, ridge)}
