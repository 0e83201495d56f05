"""The eNTK's backbone kernel in float64 (issue 24, item 6): on a float32 model, the kernel does not depend on the
Jacobian chunk (1, 2 and 8 samples) to 1e-10 relative, which float32 products of the Jacobians miss by orders of
magnitude, and on a float64 copy it equals a Gram matrix of Jacobians computed in the test by
``torch.autograd.grad``, one backward pass per logit, summed in float64."""

from __future__ import annotations

import pytest
import torch

from layerwise.checkpoints import load_model
from layerwise.data import load_dataset, make_loader
from layerwise.data.batches import model_inputs
from layerwise.evaluation.lpft.ntk import backbone_parameters, ft_kernel, gram64
from layerwise.training.probe import readout_linear

N, C = 9, 3  # nine samples: chunks of 8 leave a ragged chunk of 1, chunks of 2 one of 1


@pytest.fixture(scope="module")
def mlp():
    """A seeded float32 residual MLP with a 3-class head and nine single-sample digit batches."""
    torch.manual_seed(0)
    bundle = load_model("mlp-residual", num_classes=C)
    batches = list(make_loader(load_dataset("digits", "train", limit=N, seed=1), bundle.inputs, 1))
    return bundle.stack.eval(), batches


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _float64_copy(stack):
    """A second mlp-residual with ``stack``'s weights, in float64 (a deepcopy would keep the adapter's closures
    pointing at the float32 model)."""
    ref = load_model("mlp-residual", num_classes=C).stack
    ref.load_state_dict(stack.state_dict())
    return ref.double().eval()


def _reference(stack, batches) -> torch.Tensor:
    """(N, C, N, C) float64: rows ∂f_a(xᵢ)/∂θ by torch.autograd.grad on a float64 copy, Gram by a float64 einsum."""
    ref = _float64_copy(stack)
    head = readout_linear(ref)
    theta = [p for p in ref.parameters() if all(p is not q for q in head.parameters())]
    rows = []
    for b in batches:
        inputs = {k: v.double() if v.is_floating_point() else v for k, v in model_inputs(b).items()}
        logits = ref(inputs)[0]
        rows.append(torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(logits[a], theta,
                                                                                         retain_graph=True)])
                                 for a in range(C)]))
    jac = torch.stack(rows)  # (N, C, P) float64
    return torch.einsum("iap,jbp->iajb", jac, jac)


def test_kernel_does_not_depend_on_the_chunk_and_matches_float64_autograd(mlp):
    stack, batches = mlp
    assert next(stack.parameters()).dtype == torch.float32
    head = readout_linear(stack)
    kernels = {c: ft_kernel(stack, head, batches, chunk=c) for c in (1, 2, 8)}
    for c in (1, 2):
        assert _relative(kernels[c], kernels[8]) < 1e-10, c
    expected = _reference(stack, batches)
    # the float32 model's Jacobians carry float32 rounding (~1e-7), nothing more
    assert _relative(kernels[8], expected) < 1e-5
    # enough parameters that float32 sums would move with the chunk (measured here: 9e-6 relative, not 1e-10)
    assert sum(p.numel() for p in backbone_parameters(stack, head).values()) > 100_000


def test_float64_model_kernel_equals_the_autograd_gram(mlp):
    stack, batches = mlp
    ref = _float64_copy(stack)
    wide = [{k: v.double() if v.is_floating_point() else v for k, v in b.items()} for b in batches]
    kernel = ft_kernel(ref, readout_linear(ref), wide, chunk=2)
    assert kernel.dtype == torch.float64 and kernel.shape == (N, C, N, C)
    assert _relative(kernel, _reference(stack, batches)) < 1e-10


def test_gram64_sums_in_float64_across_slices():
    # float32 rows whose dot product 1 + 2^-30·(P-1) is exact in float64 (not in float32: 2^-30 < ε₃₂ = 2^-23),
    # and a cross product with a second row, whatever the slice width
    p = 1 + 2**12
    a = torch.full((2, p), 2.0**-15, dtype=torch.float32)
    a[0, 0], a[1, 0] = 1.0, -3.0
    expected = torch.tensor([[1.0 + (p - 1) * 2.0**-30, -3.0 + (p - 1) * 2.0**-30],
                             [-3.0 + (p - 1) * 2.0**-30, 9.0 + (p - 1) * 2.0**-30]], dtype=torch.float64)
    for step in (1, 7, p, 2**20):
        out = gram64(a, a, step=step)
        assert out.dtype == torch.float64 and torch.equal(out, expected), step
