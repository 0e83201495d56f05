"""LayerSkip's layer dropout: the schedule against its formula, the empirical skip rates against the schedule,
skipped blocks in training forwards only (a block-by-block reference), and the (seed, step) seeding."""

from __future__ import annotations

import math

import pytest
import torch

from layerwise.checkpoints import load_model
from layerwise.errors import LayerwiseError
from layerwise.training.layer_dropout import LayerDropout, layerskip_rates


@pytest.mark.parametrize("depth,p", [(8, 0.2), (12, 0.5), (2, 0.1)])
def test_schedule_is_layerskips_formula(depth, p):
    want = [p * (math.exp(ell * math.log(2) / (depth - 1)) - 1) for ell in range(depth)]  # Elhoushi et al. D(ℓ)
    got = layerskip_rates(depth, p)
    assert got == pytest.approx(want, abs=1e-15)
    assert got[0] == 0 and got[-1] == pytest.approx(p) and all(a < b for a, b in zip(got, got[1:]))
    assert layerskip_rates(1, p) == [p]
    with pytest.raises(LayerwiseError, match="layer dropout"):
        layerskip_rates(depth, 1.0)


def test_empirical_skip_rates_match_the_schedule_and_draws_are_seeded_by_step():
    stack = load_model("gpt2-tiny").stack  # 4 blocks
    dropout = LayerDropout(stack, 0.6, seed=3)
    n = 4000
    counts = torch.zeros(stack.num_layers)
    for step in range(n):
        counts += torch.tensor(dropout.draw(step), dtype=torch.float)
    rates = torch.tensor(layerskip_rates(stack.num_layers, 0.6))
    sigma = (rates * (1 - rates) / n).sqrt()
    assert ((counts / n - rates).abs() <= 4 * sigma + 1e-12).all(), (counts / n, rates)
    assert counts[0] == 0 and counts[-1] > 0.5 * n
    again = LayerDropout(load_model("gpt2-tiny").stack, 0.6, seed=3)
    assert [again.draw(s) for s in (17, 5)] == [dropout.draw(s) for s in (17, 5)]  # by step, not by order
    other = LayerDropout(load_model("gpt2-tiny").stack, 0.6, seed=4)
    assert [other.draw(s) for s in range(50)] != [dropout.draw(s) for s in range(50)]


def test_skipped_blocks_in_training_forwards_only():
    bundle = load_model("llama-tiny")
    stack, model = bundle.stack, bundle.model.eval()
    x = {"input_ids": torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(0))}
    with torch.no_grad():
        plain = [z.clone() for z in stack.layer_logits(x)]
    dropout = LayerDropout(stack, 0.9, seed=0)
    step = next(s for s in range(1000) if dropout.draw(s)[1] and not dropout.draw(s)[2])
    skip = dropout.draw(step)
    with torch.no_grad():  # evaluation: every block runs
        for a, b in zip(stack.layer_logits(x), plain):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
    # Reference: the model's own decoder layers run one by one, the skipped ones left out.
    out = model(**x, output_hidden_states=True)
    state = stack.embed(x)
    h, want = out.hidden_states[0], []
    for i, layer in enumerate(model.model.layers):
        if not skip[i]:
            h = layer(h, *state.block_args, **state.block_kwargs)
            h = h[0] if isinstance(h, tuple) else h
        want.append(h)
    got = [s.h for s in stack.states(x)][1:]  # grad enabled: a training forward
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w.detach(), atol=1e-6, rtol=0)
    assert (got[1] - out.hidden_states[2]).abs().max() > 1e-3  # block 2 (index 1) really was skipped
