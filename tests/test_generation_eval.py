"""Generation evaluation (issue 10): diversity and coherence against hand-computed values and an independent
float64 embedding cosine; prompt choice; ``gen-eval`` end to end; its bad input as one-line errors."""

from __future__ import annotations

import csv
import json
import math
import sys

import numpy as np
import pytest
import torch
from fixtures import CORPUS

from layerwise.data import ByteTokenizer
from layerwise.errors import LayerwiseError
from layerwise.evaluation.prompts import GenEvalSettings, model_prompts, select_offsets, text_boundaries
from layerwise.evaluation.generation_metrics import (
    Embedder,
    coherence_values,
    diversity,
    nan_mean,
    ngram_counts,
    sequence_diversity,
    simctg_diversity,
)

TEXTS = ["the cat sat on the cat sat", "a b c d", "too short"]


# ---------------------------------------------------------------- diversity, by hand


def test_ngram_counts_and_token_diversity_by_hand():
    # [1,2,1,2,1,2]: 2-grams 12,21,12,21,12 → 2 of 5; 3-grams 121,212,121,212 → 2 of 4; 4-grams → 2 of 3.
    assert ngram_counts([1, 2, 1, 2, 1, 2], 2) == (2, 5)
    assert ngram_counts([1, 2, 1, 2, 1, 2], 2, simctg=True) == (2, 4)  # SimCTG never counts the last window
    assert sequence_diversity([1, 2, 1, 2, 1, 2]) == pytest.approx(2 / 5 * 2 / 4 * 2 / 3, abs=1e-15)
    assert math.isnan(sequence_diversity([1, 2, 3]))  # no 4-gram
    assert diversity([], "tokens", [[1, 2, 1, 2, 1, 2], [5, 6, 7, 8], [9]]) == pytest.approx(
        (2 / 15 + 1.0) / 2, abs=1e-15)


def test_word_diversity_by_hand():
    # "the cat sat on the cat sat": 2-grams 4 unique of 6, 3-grams 4 of 5, 4-grams 4 of 4; "a b c d": 1;
    # "too short" has no 4-gram and is left out of the mean.
    assert diversity(TEXTS, "words") == pytest.approx((4 / 6 * 4 / 5 + 1.0) / 2, abs=1e-15)


def test_simctg_diversity_by_hand():
    # SimCTG pools the counts over texts and drops each text's last n-gram: 2-grams (4 + 2 + 0) unique of
    # (5 + 2 + 0); 3-grams 4 + 1 of 4 + 1; 4-grams 3 of 3. rep-2 = round(100/7, 2) = 14.29, then div = 1 − 0.1429.
    out = simctg_diversity(TEXTS)
    assert out["rep-2"] == 14.29 and out["rep-3"] == 0.0 and out["rep-4"] == 0.0
    assert out["diversity"] == pytest.approx(0.8571, abs=1e-12)  # rounded: 6/7 would be 0.857142…
    assert diversity(TEXTS, "simctg") == out["diversity"]
    assert math.isnan(simctg_diversity(["one two"])["diversity"])  # SimCTG would divide by zero


def test_diversity_bad_input():
    with pytest.raises(LayerwiseError, match="unknown diversity convention"):
        diversity(TEXTS, "chars")
    with pytest.raises(LayerwiseError, match="token ids"):
        diversity(TEXTS, "tokens")


# ---------------------------------------------------------------- coherence against a float64 reference


@pytest.fixture(scope="module")
def embedder():
    return Embedder("minilm")


def test_coherence_matches_float64_cosine_of_mean_pooled_encoder(embedder):
    """The reference embeds with transformers directly: MiniLM's token states, mean-pooled over the mask (its
    sentence-transformers pooling), cosine in float64."""
    from transformers import AutoModel, AutoTokenizer

    prefixes = ["The cat sat on the mat.", "Stock markets fell sharply on Monday.", "He sang a song."]
    continuations = ["A dog lay on the rug nearby.", "Investors feared a recession.", "  "]
    tok = AutoTokenizer.from_pretrained(embedder.source)
    model = AutoModel.from_pretrained(embedder.source).eval()

    def embed(texts):
        enc = tok(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state.double()
        m = enc["attention_mask"].double()[..., None]
        return ((h * m).sum(1) / m.sum(1)).numpy()

    a, b = embed(prefixes[:2]), embed(continuations[:2])
    expected = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    values = coherence_values(embedder, prefixes, continuations)
    assert values[:2] == pytest.approx(expected.tolist(), abs=1e-5)
    assert math.isnan(values[2])  # an empty continuation has no coherence
    assert nan_mean(values) == pytest.approx(expected.mean(), abs=1e-5)  # gen-eval's mean skips the NaN
    assert embedder.describe()["name"] == "minilm" and embedder.describe()["pooling"]["pooling_mode"] == "mean"


def test_unknown_embedder_is_one_error():
    with pytest.raises(LayerwiseError, match="cannot load the embedder 'no-such/embedder-xyz'"):
        Embedder("no-such/embedder-xyz")


# ---------------------------------------------------------------- prompts from the corpus


def test_prompts_start_at_paragraphs_and_reference_is_the_next_tokens():
    starts = text_boundaries(CORPUS)
    assert [CORPUS[s:s + 6] for s in starts] == ["First ", "Second", "Third "]  # no headings, no second lines
    tok = ByteTokenizer()
    settings = GenEvalSettings(num_prompts=2, prefix_len=5, max_new_tokens=7)
    offsets = select_offsets(CORPUS, [tok], settings)
    assert len(offsets) == 2 and set(offsets) <= set(starts) and offsets == sorted(offsets)
    prompts = model_prompts(tok, CORPUS, offsets, settings)
    for o, p, r in zip(offsets, prompts.prefix_ids, prompts.reference_ids):
        assert p + r == list(CORPUS[o:o + 12].encode())  # the corpus's true next tokens
    with pytest.raises(LayerwiseError, match="leave room"):
        select_offsets(CORPUS, [tok], GenEvalSettings(num_prompts=3, prefix_len=30, max_new_tokens=30))
    with pytest.raises(LayerwiseError, match="only 3 paragraph starts"):
        select_offsets(CORPUS, [tok], GenEvalSettings(num_prompts=4))


# ---------------------------------------------------------------- the command, end to end


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    from layerwise.cli import main

    monkeypatch.setattr(sys, "argv", ["layerwise", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def test_gen_eval_end_to_end(shared_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    code, err = _cli(monkeypatch, capsys, "gen-eval", "--model", "gpt-tiny", "--data", "wikitext2", "--split", "test",
                     "--num-prompts", "2", "--prefix-len", "8", "--max-new-tokens", "12", "--limit", "4",
                     "--seq-len", "32", "--diversity", "tokens", "--out", str(out))
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {"results.json", "layers.csv", "generation.png", "samples.txt",
                                             ".layerwise.json"}  # the run folder's manifest
    results = json.loads((out / "results.json").read_text())
    assert results["embedder"]["name"] == "minilm" and results["diversity_convention"] == "tokens"
    (m,) = results["models"]
    assert m["model"] == "gpt-tiny" and m["layers"] == [1, 2, 3, 4]
    for key in ("accuracy", "perplexity", "coherence", "diversity"):
        assert len(m[key]) == 4
    # The reference ceiling is the corpus's own next 12 bytes after each 8-byte prefix, scored by hand here.
    text = (shared_data / "wikitext-2" / "test.txt").read_text(encoding="utf-8").encode()
    starts = [len(text.decode()[:o].encode()) for o in results["prompt_offsets"]]
    refs = [list(text[s + 8:s + 20]) for s in starts]
    by_hand = [math.prod(len({tuple(r[i:i + n]) for i in range(13 - n)}) / (13 - n) for n in (2, 3, 4)) for r in refs]
    assert m["reference"]["diversity"] == pytest.approx(sum(by_hand) / 2, abs=1e-9)
    rows = list(csv.DictReader((out / "layers.csv").read_text().splitlines()))
    assert [r["layer"] for r in rows] == ["1", "2", "3", "4"] and rows[0]["model"] == "gpt-tiny"
    samples = (out / "samples.txt").read_text()
    assert "REFERENCE:" in samples and "LAYER 4:" in samples


def _corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return str(path)


BAD = {
    "unknown embedder": (["--embedder", "no-such/embedder-xyz"], "cannot load the embedder"),
    "a classifier": (["--model", "bert-tiny"], "not a language model"),
    "more prompts than paragraphs": (["--num-prompts", "5"], "only 3 paragraph starts"),
    "no room for the tokens": (["--num-prompts", "3", "--prefix-len", "40"], "leave room"),
    "longer than the context": (["--prefix-len", "200", "--max-new-tokens", "100"], "exceeds the model's context"),
    "top-p out of range": (["--top-p", "1.5"], "top-p 1.5"),
    "temperature zero": (["--temperature", "0"], "temperature 0"),
    "zero prompts": (["--num-prompts", "0"], "--num-prompts"),
    "unknown diversity": (["--diversity", "chars"], "--diversity"),
    "not a corpus": (["--data", "sentences"], "text corpus"),
}


@pytest.mark.parametrize("case", BAD)
def test_gen_eval_bad_input_is_one_line_error(case, tmp_path, monkeypatch, capsys):
    extra, message = BAD[case]
    args = {"--model": "gpt-tiny", "--data": _corpus(tmp_path), "--num-prompts": "2", "--prefix-len": "4",
            "--max-new-tokens": "6", "--out": str(tmp_path / "out")}
    for flag, value in zip(extra[::2], extra[1::2]):
        args[flag] = value
    code, err = _cli(monkeypatch, capsys, "gen-eval", *[x for kv in args.items() for x in kv])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not (tmp_path / "out" / "results.json").exists()
