"""Per-token early exit (CALM) against full generation, generation from a fixed layer, the blocks' own cache writes
and one prompt at a time. Models run in float64 so that no comparison rests on rounding luck.

References: ``generate`` from the last layer and from layer k (itself checked against Hugging Face ``generate``
in test_generation.py); each block's own forward writing its cache (for the key/value hooks); the same prompt
alone (per-sample exits); a plain cached full-model runner (the caches of ``kv_fill="recompute"``).
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from layerwise.checkpoints import load_model
from layerwise.errors import LayerwiseError
from layerwise.evaluation.generation_metrics import continuation_nll
from layerwise.inference.decoding import ContrastiveSearch, Sampling
from layerwise.inference.generation import LayerRunner, generate, left_pad, positions
from layerwise.inference.policies import make_policy
from layerwise.inference.token_exit import TokenExitRunner, token_exit_generate

PAD = 256
PROMPTS = [[72, 101, 108, 108, 111, 44, 32], [84, 104, 101], [1, 2, 3, 4, 5], [9] * 9]
MODELS = ["gpt-tiny", "gpt2-tiny", "llama-tiny"]
ALWAYS = 1e-12  # a confidence every token reaches: exit at min_layer


@pytest.fixture(scope="module")
def stacks():
    out = {}
    for name in MODELS:
        with torch.random.fork_rng(devices=[]):  # init_seed 0: the weights the thresholds below were chosen for,
            stack = load_model(name, init_seed=0).stack  # under which the rows exit at different layers
        stack.model.double().eval()
        out[name] = stack
    return out


def _kv(cache, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of one block: the own ``KVCache`` or Hugging Face's ``DynamicCache``."""
    if isinstance(getattr(cache, "keys", None), dict):
        return cache.keys[layer], cache.values[layer]
    return cache.layers[layer].keys, cache.layers[layer].values


@pytest.mark.parametrize("name", MODELS)
def test_threshold_nothing_reaches_equals_full_generation(stacks, name):
    stack = stacks[name]
    full = generate(stack, PROMPTS, max_new_tokens=10, pad_token_id=PAD).tokens
    for prompts, ref in ((PROMPTS, full), (PROMPTS[:1], full[:1])):
        for kv_fill in ("propagate", "recompute"):
            out = token_exit_generate(stack, prompts, make_policy("confidence", 1.0), kv_fill=kv_fill,
                                      max_new_tokens=10, pad_token_id=PAD)
            assert torch.equal(out.generated.tokens, ref)
            assert out.stats()["exit_histogram"] == [0] * (stack.num_layers - 1) + [ref.numel()]


def test_nothing_exiting_with_nucleus_sampling_draws_what_full_generation_draws(stacks):
    """A token is drawn only where its row leaves, so with no early exit the seeded draws are generate's own."""
    stack, decoding = stacks["gpt-tiny"], Sampling(top_p=0.9)
    ref = generate(stack, PROMPTS, decoding=decoding, max_new_tokens=10, pad_token_id=PAD, seed=3).tokens
    out = token_exit_generate(stack, PROMPTS, make_policy("confidence", 1.0), decoding=decoding, max_new_tokens=10,
                              pad_token_id=PAD, seed=3)
    assert torch.equal(out.generated.tokens, ref)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("kv_fill", ["propagate", "recompute"])
def test_always_exiting_at_min_layer_k_equals_generation_from_layer_k(stacks, name, kv_fill):
    stack = stacks[name]
    for k in (1, 2):
        ref = generate(stack, PROMPTS, layer=k, max_new_tokens=10, pad_token_id=PAD).tokens
        out = token_exit_generate(stack, PROMPTS, make_policy("confidence", ALWAYS, min_layer=k), kv_fill=kv_fill,
                                  max_new_tokens=10, pad_token_id=PAD)
        assert torch.equal(out.generated.tokens, ref), k
        assert out.stats()["mean_exit_layer"] == k


@pytest.mark.parametrize("name", MODELS)
def test_kv_hook_writes_what_the_block_itself_writes(stacks, name):
    """After a padded prompt, two new positions with arbitrary hidden states: the hook's cache (K/V projections
    only; RoPE at the right positions for Llama) against the cache the whole block writes on the same input."""
    stack = stacks[name]
    assert stack.has_kv_hook
    ids, mask = left_pad(PROMPTS[:2], PAD)
    caches = []
    for use_hook in (False, True):
        cache = stack.new_cache()
        for _ in stack.states({"input_ids": ids, "attention_mask": mask, "position_ids": positions(mask)},
                              cache=cache):
            pass
        grown = torch.cat([mask, torch.ones_like(mask[:, :2])], 1)
        state = stack.embed({"input_ids": torch.tensor([[5, 6], [7, 8]]), "attention_mask": grown,
                             "position_ids": positions(grown)[:, -2:]}, cache)
        h = torch.randn(state.h.shape, dtype=state.h.dtype, generator=torch.Generator().manual_seed(0))
        for i in range(stack.num_layers):
            (stack.fill_kv if use_hook else stack.block)(i, replace(state, h=h))
        caches.append(cache)
    for i in range(stack.num_layers):
        (k_block, v_block), (k_hook, v_hook) = _kv(caches[0], i), _kv(caches[1], i)
        assert k_block.shape == k_hook.shape and k_block.shape[-2] == ids.shape[1] + 2
        torch.testing.assert_close(k_hook, k_block, rtol=0, atol=1e-12)
        torch.testing.assert_close(v_hook, v_block, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name,policy", [("gpt-tiny", ("entropy", 5.52)), ("llama-tiny", ("patience", 2))])
@pytest.mark.parametrize("kv_fill", ["propagate", "recompute"])
def test_each_row_of_a_batch_generates_what_it_generates_alone(stacks, name, policy, kv_fill):
    stack = stacks[name]
    batch = token_exit_generate(stack, PROMPTS, make_policy(*policy), kv_fill=kv_fill, max_new_tokens=10,
                                pad_token_id=PAD)
    assert sum(m > 0 for m in batch.stats()["exit_histogram"]) >= 2, "the rows should exit at different layers"
    for r, prompt in enumerate(PROMPTS):
        alone = token_exit_generate(stack, [prompt], make_policy(*policy), kv_fill=kv_fill, max_new_tokens=10,
                                    pad_token_id=PAD)
        assert alone.generated.tokens[0].tolist() == batch.generated.tokens[r].tolist()
        assert alone.exit_layers[0].tolist() == batch.exit_layers[r].tolist()


def test_without_the_hook_the_same_tokens(stacks):
    """An adapter without a key/value hook runs the whole block instead: same cache, same tokens."""
    stack = stacks["gpt2-tiny"]
    policy = make_policy("confidence", ALWAYS, min_layer=2)
    with_hook = token_exit_generate(stack, PROMPTS, policy, max_new_tokens=8, pad_token_id=PAD).generated.tokens
    hook, stack._fill_kv = stack._fill_kv, None
    try:
        assert not stack.has_kv_hook
        without = token_exit_generate(stack, PROMPTS, policy, max_new_tokens=8, pad_token_id=PAD).generated.tokens
    finally:
        stack._fill_kv = hook
    assert torch.equal(with_hook, without)


@pytest.mark.parametrize("name", ["gpt-tiny", "llama-tiny"])
def test_propagate_and_recompute_caches_differ_only_above_the_exit(stacks, name):
    """One step with every row exiting at layer 2: recompute's cache is the full model's (a plain cached runner
    through all layers); propagate's equals it at every earlier position and in blocks 1..3 (block 3's input is
    h² in both), and differs only at the new position of blocks 4..L (fed h² instead of h³…)."""
    stack = stacks[name]
    ids, mask = left_pad(PROMPTS, PAD)
    policy = make_policy("confidence", ALWAYS, min_layer=2)
    caches, tokens = {}, {}
    with torch.no_grad():
        for kv_fill in ("propagate", "recompute"):
            runner = TokenExitRunner(stack, policy, kv_fill)
            first, _ = runner.start(ids, mask)
            tokens[kv_fill], layer = runner.step(first)
            assert layer.tolist() == [2] * len(PROMPTS)
            caches[kv_fill] = runner.cache
        full = LayerRunner(stack, stack.num_layers)
        full.start(ids, mask)
        full.step(first[:, None])
    assert torch.equal(tokens["propagate"], tokens["recompute"])
    for i in range(stack.num_layers):
        for a, b, ref in zip(_kv(caches["propagate"], i), _kv(caches["recompute"], i), _kv(full.cache, i)):
            torch.testing.assert_close(b, ref, rtol=0, atol=1e-12)
            torch.testing.assert_close(a[..., :-1, :], ref[..., :-1, :], rtol=0, atol=1e-12)
            if i < 3:
                torch.testing.assert_close(a[..., -1:, :], ref[..., -1:, :], rtol=0, atol=1e-12)
            else:
                assert (a[..., -1, :] - ref[..., -1, :]).abs().amax(-1).min() > 1e-6


def test_continuation_perplexity_is_the_full_models(stacks):
    """Σ −log p(continuation | prompt) from the model's own unpadded forward, one sequence at a time."""
    stack = stacks["gpt2-tiny"]
    prompts, continuations = PROMPTS[:3], [[5, 6, 7], [8], [9, 10]]
    nll, count = continuation_nll(stack, prompts, continuations, PAD, batch_size=2)
    ref = 0.0
    for p, c in zip(prompts, continuations):
        with torch.no_grad():
            logits = stack.model(input_ids=torch.tensor([p + c])).logits[0].log_softmax(-1)
        ref -= sum(float(logits[len(p) - 1 + j, t]) for j, t in enumerate(c))
    assert count == 6
    assert math.isclose(nll, ref, rel_tol=1e-9)


def test_bad_input(stacks):
    stack = stacks["gpt-tiny"]
    with pytest.raises(LayerwiseError, match="kv_fill 'copy'"):
        token_exit_generate(stack, PROMPTS, make_policy("confidence", 0.9), kv_fill="copy")
    with pytest.raises(LayerwiseError, match="not contrastive"):
        token_exit_generate(stack, PROMPTS, make_policy("confidence", 0.9), decoding=ContrastiveSearch())
    with pytest.raises(LayerwiseError, match="out of range"):
        token_exit_generate(stack, PROMPTS, make_policy("confidence", 0.9, 2, 9))
    with pytest.raises(LayerwiseError, match="never trigger"):
        token_exit_generate(stack, PROMPTS, make_policy("patience", 3, 3, 4))
