"""Generation from any layer, against the wrapped model's own ``generate`` and forward.

References: Hugging Face ``generate(do_sample=False)`` on the model (last layer) and on a copy truncated to k
blocks (layer k); the model's own uncached forward for the nucleus and contrastive-search rules, written out
here in float64. Models run in float64 so that no comparison rests on rounding luck.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from layerwise.checkpoints import load_model, save_model, truncate
from layerwise.errors import LayerwiseError
from layerwise.inference.decoding import ContrastiveSearch, Sampling
from layerwise.inference.generation import generate
from layerwise.stack import LayerStack

PAD = 256  # the byte tokenizer's padding id, also the tiny HF models' EOS
PROMPTS = [[72, 101, 108, 108, 111, 44, 32], [84, 104, 101], [1, 2, 3, 4, 5]]
HF = ["gpt2-tiny", "llama-tiny"]
ALL = ["gpt-tiny", *HF]


def _model(name: str):
    bundle = load_model(name)
    bundle.model.double().eval()
    return bundle


def _hf_greedy(model, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                         min_new_tokens=n, pad_token_id=PAD, eos_token_id=None)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("name", HF)
def test_greedy_last_layer_equals_hf_generate(name):
    bundle = _model(name)
    ours = generate(bundle.stack, PROMPTS, max_new_tokens=12, pad_token_id=PAD).tokens
    for prompt, row in zip(PROMPTS, ours):
        assert row.tolist() == _hf_greedy(bundle.model, prompt, 12)


@pytest.mark.parametrize("name", HF)
@pytest.mark.parametrize("k", [1, 3])
def test_greedy_layer_k_equals_hf_generate_of_truncated_copy(name, k):
    bundle = _model(name)
    cut = truncate(bundle, k).model.double().eval()
    ours = generate(bundle.stack, PROMPTS, layer=k, max_new_tokens=10, pad_token_id=PAD).tokens
    for prompt, row in zip(PROMPTS, ours):
        assert row.tolist() == _hf_greedy(cut, prompt, 10)


@pytest.mark.parametrize("name", ALL)
def test_cached_equals_uncached_and_padded_batch_equals_one_at_a_time(name):
    stack = _model(name).stack
    for layer, decoding in ((2, None), (stack.num_layers, ContrastiveSearch(k=3, alpha=0.5))):
        cached = generate(stack, PROMPTS, layer, decoding=decoding, max_new_tokens=10, pad_token_id=PAD)
        uncached = generate(stack, PROMPTS, layer, decoding=decoding, max_new_tokens=10, pad_token_id=PAD,
                            use_cache=False)
        assert torch.equal(cached.tokens, uncached.tokens)
        for prompt, row in zip(PROMPTS, cached.tokens):
            alone = generate(stack, [prompt], layer, decoding=decoding, max_new_tokens=10, pad_token_id=PAD)
            assert alone.tokens[0].tolist() == row.tolist()


def test_own_gpt_cached_forward_equals_its_plain_forward():
    """The own GPT's cache path against its own training forward (no cache, no mask) on one sequence."""
    model = _model("gpt-tiny").model
    ids = torch.tensor([PROMPTS[0] + [5, 6, 7]])
    full = model(input_ids=ids)
    from layerwise.stack import KVCache

    cache = KVCache()
    first = model(input_ids=ids[:, :4], cache=cache)
    rest = [model(input_ids=ids[:, t:t + 1], cache=cache) for t in range(4, ids.shape[1])]
    torch.testing.assert_close(torch.cat([first, *rest], dim=1), full, rtol=0, atol=1e-12)


def _nucleus(probs: np.ndarray, p: float) -> set[int]:
    order = np.argsort(-probs, kind="stable")
    mass_before = np.cumsum(probs[order]) - probs[order]
    return set(order[mass_before < p].tolist())


@pytest.mark.parametrize("name", ["gpt2-tiny", "gpt-tiny"])
def test_nucleus_sampling_is_reproducible_and_stays_in_the_nucleus(name):
    bundle = _model(name)
    stack = bundle.stack
    sampling = Sampling(temperature=1.0, top_p=0.3)
    run = lambda seed: generate(stack, PROMPTS[:2], decoding=sampling, max_new_tokens=16, pad_token_id=PAD,  # noqa: E731
                                seed=seed, eos_token_id=None).tokens
    first, again, other = run(5), run(5), run(6)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)  # the seed matters
    for prompt, row in zip(PROMPTS[:2], first.tolist()):
        for t, token in enumerate(row):
            with torch.no_grad():  # the model's own forward on the whole prefix, no cache
                logits = bundle.model(input_ids=torch.tensor([prompt + row[:t]]))
            logits = getattr(logits, "logits", logits)[0, -1]
            probs = torch.softmax(logits.double(), -1).numpy()
            assert token in _nucleus(probs, 0.3)


def test_contrastive_search_equals_its_definition():
    """Su et al. (2022) written out on GPT-2's own forward: for each step, score every top-k candidate by
    (1 − α)·p − α·max cos(h_candidate, h_context) with h the final-norm hidden states, no cache."""
    bundle = _model("gpt2-tiny")
    k, alpha, prompt = 3, 0.6, PROMPTS[0]
    ours = generate(bundle.stack, [prompt], decoding=ContrastiveSearch(k, alpha), max_new_tokens=8,
                    pad_token_id=PAD, eos_token_id=None).tokens[0].tolist()
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(8):
            out = bundle.model(input_ids=torch.tensor([seq]), output_hidden_states=True)
            probs = torch.softmax(out.logits[0, -1], -1)
            top_p, top = probs.topk(k)
            context = out.hidden_states[-1][0]  # GPT-2's last hidden state is after ln_f
            scores = []
            for p, v in zip(top_p, top):
                h = bundle.model(input_ids=torch.tensor([seq + [int(v)]]), output_hidden_states=True).hidden_states[-1][0, -1]
                scores.append((1 - alpha) * p - alpha * F.cosine_similarity(context, h[None], dim=-1).max())
            seq.append(int(top[int(torch.stack(scores).argmax())]))
    assert ours == seq[len(prompt):]


def test_generation_stops_at_eos_and_pads_after_it():
    stack = _model("gpt-tiny").stack
    free = generate(stack, PROMPTS, max_new_tokens=12, pad_token_id=PAD).tokens
    eos = int(free[0, 3])  # the token the first row emits fourth
    out = generate(stack, PROMPTS, max_new_tokens=12, pad_token_id=PAD, eos_token_id=eos)
    for row, free_row, n in zip(out.tokens.tolist(), free.tolist(), out.lengths.tolist()):
        stop = free_row.index(eos) + 1 if eos in free_row else len(free_row)
        assert n == stop and row[:n] == free_row[:n]
        assert all(t == PAD for t in row[n:])


def test_bpe_tokenizer_is_saved_beside_the_model_and_restored(tmp_path):
    from layerwise.checkpoints.new import new_gpt
    from layerwise.models import GPTConfig

    text = "the cat sat on the mat. the dog sat on the log. " * 40
    bundle = new_gpt([text], 300, GPTConfig(dim=32, depth=2, heads=2, max_len=64))
    assert bundle.model.config.vocab_size == len(bundle.inputs.tokenizer) <= 300  # fewer when merges run out
    sample = "the cat sat on the log."
    ids = bundle.inputs.tokenizer.encode(sample, add_special_tokens=False)
    assert len(ids) < len(sample.encode())  # merges learnt
    loaded = load_model(str(save_model(bundle, tmp_path / "m")))
    assert loaded.inputs.tokenizer.encode(sample, add_special_tokens=False) == ids
    assert loaded.inputs.tokenizer.decode(ids) == sample
    for a, b in zip(bundle.model.state_dict().values(), loaded.model.state_dict().values()):
        assert torch.equal(a, b)


def test_bad_generation_input_raises():
    stack = LayerStack(load_model("gpt-tiny").model)
    with pytest.raises(LayerwiseError, match="layer 5 out of range"):
        generate(stack, PROMPTS, layer=5)
    with pytest.raises(LayerwiseError, match="empty prompt"):
        generate(stack, [[1, 2], []])
    with pytest.raises(LayerwiseError, match="exceeds the model's context of 256"):
        generate(stack, [[1] * 250], max_new_tokens=10)
    with pytest.raises(LayerwiseError, match="top-p 1.5"):
        Sampling(top_p=1.5)
    with pytest.raises(LayerwiseError, match="temperature 0"):
        Sampling(temperature=0)
    with pytest.raises(LayerwiseError, match="not a language model"):
        generate(load_model("bert-tiny").stack, PROMPTS)


CLI_CASES = {
    "layer-out-of-range": (["--model", "gpt-tiny", "--prompt", "hi", "--layer", "7"], "layer 7 out of range"),
    "empty-prompt": (["--model", "gpt-tiny", "--prompt", " "], "--prompt is empty"),
    "prompt-too-long": (["--model", "gpt-tiny", "--prompt", "x" * 300], "exceeds the model's context of 256"),
    "top-p": (["--model", "gpt-tiny", "--prompt", "hi", "--top-p", "0"], "--top-p"),
    "temperature": (["--model", "gpt-tiny", "--prompt", "hi", "--temperature", "-1"], "--temperature"),
    "classifier": (["--model", "bert-tiny", "--prompt", "hi"], "not a language model"),
}


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``layerwise generate ARGS`` through the real entry point, in this process (no torch import per case)."""
    from layerwise.cli import main

    monkeypatch.setattr("sys.argv", ["layerwise", "generate", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", CLI_CASES)
def test_generate_cli_bad_input_is_one_line_error(name, monkeypatch, capsys):
    args, message = CLI_CASES[name]
    code, _, err = _cli(monkeypatch, capsys, *args)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_generate_cli_prints_one_continuation_per_layer(monkeypatch, capsys):
    code, out, err = _cli(monkeypatch, capsys, "--model", "gpt2-tiny", "--prompt", "Hello", "--layer", "all",
                          "--decoding", "greedy", "--max-new-tokens", "4")
    assert code == 0, err
    assert [line.split("]")[0] for line in out.splitlines()] == [f"[layer {k}" for k in range(1, 5)]
