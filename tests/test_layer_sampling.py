"""The layer-sampled aligned LM loss is unbiased: over many seeded draws, the mean loss and the mean gradient equal
the full objective Σ_ℓ λ_ℓ CE_ℓ within sampling error. Reference: the full objective written out in float64
(``test_lm_loss.reference_logits``: norm and head by formula, CE by log-sum-exp), its gradient by autograd.
The bound: 6 standard errors of the mean, the standard deviation estimated from the same draws."""

from __future__ import annotations

import math

import pytest
import torch
from test_lm_loss import reference_logits

from layerwise.checkpoints import load_model
from layerwise.errors import LayerwiseError
from layerwise.training import objectives as O
from layerwise.training.lm_loss import chunked_lm_loss, sampled_layer_weights

DRAWS = 300


def _setup():
    stack = load_model("gpt-tiny").stack
    stack.model.double().train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 256, (2, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # padding drops targets
    params = [p for p in stack.model.parameters() if p.requires_grad]
    return stack, ids, mask, params


def _full_objective(stack, hs, ids, mask, weights) -> torch.Tensor:
    total = 0.0
    keep = mask[:, 1:].bool()
    for h, w in zip(hs, weights.tolist()):
        logits = reference_logits(stack.readout, h)[:, :-1][keep]
        total = total + w * (torch.logsumexp(logits, -1) - logits.gather(-1, ids[:, 1:][keep][:, None])[:, 0]).mean()
    return total


@pytest.mark.parametrize("k", [1, 2])
def test_sampled_loss_and_gradient_are_unbiased(k):
    stack, ids, mask, params = _setup()
    weights = O.layer_weights(stack.num_layers).double()
    hs = [s.h for s in stack.states({"input_ids": ids, "attention_mask": mask})][1:]
    full = _full_objective(stack, hs, ids, mask, weights)
    full_grad = torch.cat([g.flatten() for g in torch.autograd.grad(full, params, retain_graph=True)])
    generator = torch.Generator().manual_seed(1)
    losses, grads = [], []
    for _ in range(DRAWS):
        w = sampled_layer_weights(weights, k, generator)
        assert int((w != 0).sum()) == k + 1 and w[-1] == weights[-1]
        loss = chunked_lm_loss([stack.readout] * len(hs), hs, mask, ids, w, chunk_size=7)
        losses.append(loss.detach())
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, retain_graph=True)]))
    losses, grads = torch.stack(losses), torch.stack(grads)
    bound = 6 * losses.std() / math.sqrt(DRAWS)
    assert abs(losses.mean() - full.detach()) <= bound + 1e-12
    last = _full_objective(stack, hs[-1:], ids, mask, weights[-1:]).detach()  # λ_L CE_L
    unweighted = (losses.mean() - last) * k / (stack.num_layers - 1) + last  # the draws without (L−1)/k
    assert abs(unweighted - full.detach()) > 3 * bound  # the bound is tight enough to catch a wrong weight
    grad_bound = 6 * grads.std(0) / math.sqrt(DRAWS) + 1e-10
    assert bool(((grads.mean(0) - full_grad).abs() <= grad_bound).all())
    assert float(grads.std(0).max()) > 0


def test_every_layer_is_drawn_equally_often_and_k_of_all_below_gives_the_full_weights():
    weights = O.layer_weights(5).double()
    generator = torch.Generator().manual_seed(0)
    drawn = torch.stack([sampled_layer_weights(weights, 2, generator) != 0 for _ in range(4000)]).double()
    freq = drawn.mean(0)
    assert freq[-1] == 1.0
    assert bool(((freq[:-1] - 0.5).abs() < 6 * math.sqrt(0.25 / 4000)).all())  # P(drawn) = k/(L−1) = 1/2
    torch.testing.assert_close(sampled_layer_weights(weights, 4), weights, rtol=0, atol=1e-15)


def test_seeded_draws_are_reproducible_and_bad_k_is_refused():
    stack = load_model("gpt-tiny").stack
    weights = O.layer_weights(stack.num_layers)
    ids = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    runs = []
    for _ in range(2):
        module = O.ObjectiveModule(stack, None, weights, 0.0, aligned_layers=1, seed=5)
        runs.append([float(module(batch, "aligned").detach()) for _ in range(6)])
    assert runs[0] == runs[1] and len(set(runs[0])) > 1
    for k in (0, stack.num_layers, True):
        with pytest.raises(LayerwiseError, match="`aligned_layers`"):
            O.ObjectiveModule(stack, None, weights, 0.0, aligned_layers=k)


def test_the_seed_changes_the_draws():
    """The generator of step s is seeded by (seed, s): runs with other seeds draw other layers (packing seed·2³² + s
    into torch's CPU generator, which keeps 32 bits of a seed, made every seed draw alike)."""
    stack = load_model("gpt-tiny").stack
    weights = O.layer_weights(stack.num_layers)

    def draws(seed: int) -> list[int]:
        module = O.ObjectiveModule(stack, None, weights, 0.0, aligned_layers=1, seed=seed)
        out = []
        for step in range(8):
            module.draw_for_step(step)
            out.append(int(torch.randint(0, 1 << 30, (1,), generator=module.layer_draws)))
        return out

    assert draws(0) == draws(0)
    assert len({tuple(draws(seed)) for seed in range(4)}) == 4
