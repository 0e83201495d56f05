"""Self-speculative decoding: greedy output equals the full model's greedy output (itself checked against HF
``generate`` in test_generation.py), and speculative sampling draws from the full model's distribution."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from layerwise.checkpoints import load_model
from layerwise.errors import LayerwiseError
from layerwise.inference.decoding import Sampling
from layerwise.inference.draft_vocab import DraftHead, draft_vocabulary, token_counts
from layerwise.inference.generation import generate
from layerwise.inference.speculative import speculative_generate
from layerwise.models import GPTConfig, build_own
from layerwise.stack import LayerStack

PAD = 256
PROMPTS = [[72, 101, 108, 108, 111, 44, 32], [84, 104, 101], [1, 2, 3, 4, 5], [9] * 9]


@pytest.mark.parametrize("name", ["gpt-tiny", "gpt2-tiny", "llama-tiny"])
def test_greedy_speculative_equals_full_greedy(name):
    stack = load_model(name).stack
    stack.model.double()
    full = generate(stack, PROMPTS, max_new_tokens=16, pad_token_id=PAD).tokens
    for exit_layer, num_draft in ((1, 3), (2, 1), (3, 4)):
        batch, stats = speculative_generate(stack, PROMPTS, exit_layer, num_draft, max_new_tokens=16, pad_token_id=PAD)
        assert torch.equal(batch.tokens, full), (exit_layer, num_draft)
        alone, _ = speculative_generate(stack, PROMPTS[:1], exit_layer, num_draft, max_new_tokens=16, pad_token_id=PAD)
        assert alone.tokens[0].tolist() == full[0].tolist()
        assert 0.0 <= stats.acceptance_rate <= 1.0 and stats.drafted > 0


def _pooled(observed: np.ndarray, expected: np.ndarray, least: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Cells expected fewer than ``least`` times pooled into one, as the chi-square approximation needs."""
    small = expected < least
    return (np.append(observed[~small], observed[small].sum()), np.append(expected[~small], expected[small].sum()))


def test_speculative_sampling_keeps_the_full_models_distribution():
    """Joint frequencies of the first two sampled tokens over 4,000 rows against p(t₁)·p(t₂ | t₁) from the
    model's own forward; the second token goes through drafting (blocks 1..1) and acceptance. The same test
    rejects the draft's distribution, so it has the power to fail."""
    torch.manual_seed(0)
    vocab, rows = 6, 4000
    model = build_own({"layerwise_arch": "gpt", **GPTConfig(vocab_size=vocab, dim=16, depth=3, heads=2,
                                                              max_len=16).__dict__}).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.6)  # peaked distributions that differ between layers
    stack = LayerStack(model)
    out, stats = speculative_generate(stack, [[1, 2]] * rows, 1, 2, decoding=Sampling(), max_new_tokens=2,
                                      pad_token_id=0, seed=0)
    assert 0.2 < stats.acceptance_rate < 0.95  # both branches (accept, resample) are exercised
    observed = np.zeros((vocab, vocab))
    np.add.at(observed, (out.tokens[:, 0].numpy(), out.tokens[:, 1].numpy()), 1)
    with torch.no_grad():
        first = torch.softmax(model(input_ids=torch.tensor([[1, 2]]))[0, -1], -1)
        prefixes = torch.tensor([[1, 2, x] for x in range(vocab)])
        second = torch.softmax(model(input_ids=prefixes)[:, -1], -1)
        draft = torch.softmax(stack(dict(input_ids=prefixes), upto=1)[:, -1], -1)
    full = (first[:, None] * second).numpy().ravel() * rows
    drafted = (first[:, None] * draft).numpy().ravel() * rows
    assert chisquare(*_pooled(observed.ravel(), full)).pvalue > 0.01
    assert chisquare(*_pooled(observed.ravel(), drafted)).pvalue < 1e-6


def test_a_request_that_fits_the_context_is_never_refused_for_its_drafts():
    """gpt-tiny's context is 256 positions: a request 2 short of it drafts 2 tokens a round, not the 4 asked for,
    and one that fills it exactly is decoded by the full model alone; greedy output is the full model's either way."""
    stack = load_model("gpt-tiny").stack
    stack.model.double()
    assert stack.context_length == 256
    for room in (2, 0):
        prompt = [[7, 8, 9] * ((256 - 12 - room) // 3)]
        prompt[0] += [5] * (256 - 12 - room - len(prompt[0]))  # exactly 256 - 12 - room tokens
        full = generate(stack, prompt, max_new_tokens=12, pad_token_id=PAD).tokens
        out, stats = speculative_generate(stack, prompt, 2, 4, max_new_tokens=12, pad_token_id=PAD)
        assert torch.equal(out.tokens, full), room
        assert (stats.drafted > 0) == (room > 0)


def test_bad_speculative_input_raises():
    stack = load_model("gpt-tiny").stack
    with pytest.raises(LayerwiseError, match="exit layer 4"):
        speculative_generate(stack, PROMPTS, 4, 2)
    with pytest.raises(LayerwiseError, match="num_draft=0"):
        speculative_generate(stack, PROMPTS, 2, 0)


def test_generate_cli_speculative_prints_the_full_models_greedy_text(monkeypatch, capsys):
    from test_generation import _cli

    args = ["--model", "gpt2-tiny", "--prompt", "Hello", "--prompt", "The cat", "--decoding", "greedy",
            "--max-new-tokens", "8"]
    code, full, _ = _cli(monkeypatch, capsys, *args)
    code_s, fast, err = _cli(monkeypatch, capsys, *args, "--speculative", "--exit-layer", "2", "--num-draft", "3")
    assert code == code_s == 0 and fast == full and "acceptance" in err
    code, _, err = _cli(monkeypatch, capsys, *args, "--speculative", "--exit-layer", "4")
    assert code == 2 and err.startswith("error: --exit-layer 4")


@pytest.mark.parametrize("name", ["gpt-tiny", "gpt2-tiny", "llama-tiny"])
def test_greedy_with_a_reduced_draft_vocabulary_equals_full_greedy(name):
    """The draft reads out only the 8 tokens most frequent in the prompts; the full model's greedy output must
    come out, tokens outside the draft vocabulary included (they can only come from verification)."""
    with torch.random.fork_rng(devices=[]):  # the own builtin GPT's weights are unseeded: fix them
        torch.manual_seed(0)
        stack = load_model(name).stack
    stack.model.double()
    full = generate(stack, PROMPTS, max_new_tokens=16, pad_token_id=PAD).tokens
    vocab = draft_vocabulary(token_counts(PROMPTS, stack.readout.head.out_features), 8)
    assert not bool(torch.isin(full, vocab).all()), "some full-model tokens should lie outside the draft vocabulary"
    for exit_layer, num_draft in ((1, 3), (2, 2)):
        out, stats = speculative_generate(stack, PROMPTS, exit_layer, num_draft, max_new_tokens=16,
                                          pad_token_id=PAD, draft_vocab=vocab)
        assert torch.equal(out.tokens, full), (exit_layer, num_draft)
        assert stats.drafted > 0


def test_draft_head_is_the_full_heads_columns():
    stack = load_model("gpt2-tiny").stack
    stack.model.double()
    vocab = torch.tensor([3, 7, 100, 255])
    h = torch.randn(2, 5, stack.hidden_size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = stack.model.lm_head(stack.model.transformer.ln_f(h))[..., vocab]
        torch.testing.assert_close(DraftHead(stack.readout, vocab)(h), ref, rtol=0, atol=1e-12)


def test_draft_vocabulary_is_the_most_frequent_tokens():
    counts = token_counts([[5, 5, 5, 1, 1, 2], torch.tensor([[2, 2, 2, 2]])], 8)
    assert counts.tolist() == [0, 2, 5, 0, 0, 3, 0, 0]
    assert draft_vocabulary(counts, 2).tolist() == [2, 5]
    assert draft_vocabulary(counts, 4).tolist() == [0, 1, 2, 5]  # the tie at 0 goes to the lowest id
    with pytest.raises(LayerwiseError, match="`draft_vocab`"):
        draft_vocabulary(counts, 9)


def test_speculative_sampling_with_a_reduced_draft_vocabulary_keeps_the_full_models_distribution():
    """As above, with the draft restricted to tokens {0, 2, 3}: q = 0 on {1, 4, 5}, yet the joint frequencies
    match p(t₁)·p(t₂ | t₁); the restricted draft's own distribution is rejected."""
    torch.manual_seed(0)
    vocab, rows, draft = 6, 4000, torch.tensor([0, 2, 3])
    model = build_own({"layerwise_arch": "gpt", **GPTConfig(vocab_size=vocab, dim=16, depth=3, heads=2,
                                                              max_len=16).__dict__}).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.6)
    stack = LayerStack(model)
    out, stats = speculative_generate(stack, [[1, 2]] * rows, 1, 2, decoding=Sampling(), max_new_tokens=2,
                                      pad_token_id=0, seed=0, draft_vocab=draft)
    assert 0.1 < stats.acceptance_rate < 0.95
    observed = np.zeros((vocab, vocab))
    np.add.at(observed, (out.tokens[:, 0].numpy(), out.tokens[:, 1].numpy()), 1)
    assert observed[:, [1, 4, 5]].sum() > 100  # tokens the draft cannot propose do come out
    with torch.no_grad():
        first = torch.softmax(model(input_ids=torch.tensor([[1, 2]]))[0, -1], -1)
        prefixes = torch.tensor([[1, 2, x] for x in range(vocab)])
        second = torch.softmax(model(input_ids=prefixes)[:, -1], -1)
        draft_logits = stack(dict(input_ids=prefixes), upto=1)[:, -1]
        q = torch.zeros_like(draft_logits)
        q[:, draft] = torch.softmax(draft_logits[:, draft], -1)
    full = (first[:, None] * second).numpy().ravel() * rows
    drafted = (first[:, None] * q).numpy().ravel() * rows
    assert chisquare(*_pooled(observed.ravel(), full)).pvalue > 0.01
    keep = drafted > 0  # the restricted draft's own distribution, on its support, cannot explain the draws
    assert observed.ravel()[~keep].sum() > 0 and chisquare(*_pooled(observed.ravel()[keep],
                                                                    drafted[keep] * observed.ravel()[keep].sum()
                                                                    / drafted[keep].sum())).pvalue < 1e-6
