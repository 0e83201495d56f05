"""``new_gpt``: a freshly initialised own GPT with a byte-level BPE trained on the corpora it will read."""

from __future__ import annotations

from pathlib import Path

from layerwise.checkpoints.bundle import ModelBundle, make_bundle
from layerwise.data.load import load_dataset, split_spec
from layerwise.data.spec import InputSpec
from layerwise.data.tokenizer import train_bpe
from layerwise.errors import LayerwiseError
from layerwise.models import GPTConfig, build_own


def corpus_texts(corpora: list[str], data_dir: str | Path | None = None) -> list[str]:
    """The text of each ``NAME[:SPLIT]`` corpus (split default ``train``), e.g. ``wikitext2:valid``; an existing
    file is a name whatever colons it holds (``data.split_spec``)."""
    texts = []
    for spec in corpora:
        name, split = split_spec(spec)
        ds = load_dataset(name, split or "train", data_dir=data_dir)
        if ds.kind != "corpus":
            raise LayerwiseError(f"{spec} is not a text corpus: use tinyshakespeare, wikitext2:valid or a .txt path")
        texts.append(ds.text or "")
    return texts


def new_gpt(texts: list[str], vocab_size: int, config: GPTConfig, seed: int = 0) -> ModelBundle:
    """An own GPT of shape ``config`` (its ``vocab_size`` set to the tokenizer's), initialised from ``seed``,
    with a byte-level BPE of ``vocab_size`` tokens trained on ``texts``; ``save_model`` writes both."""
    import torch

    tokenizer = train_bpe(texts, vocab_size)
    config = GPTConfig(**{**config.__dict__, "vocab_size": len(tokenizer)})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_own({"layerwise_arch": "gpt", **config.__dict__})
    return make_bundle("gpt", model, InputSpec(modality="tokens", tokenizer=tokenizer, max_length=config.max_len))
