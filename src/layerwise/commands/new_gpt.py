"""``new-gpt``: a fresh own GPT plus a byte-level BPE trained on its corpora, saved ready for ``train``, with the
corpora's token counts (``inference.draft_vocab``: the reduced-vocabulary draft of ``generate``'s
``draft_vocab``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from layerwise.commands.common import CommandOptions, Folder
from layerwise.errors import LayerwiseError
from layerwise.run_folder import open_run_folder



class NewGPTOptions(CommandOptions):
    """The options of ``new-gpt``."""

    corpus: Annotated[list[str], Field(min_length=1)]  # NAME[:SPLIT] the tokenizer is trained on
    out: Folder  # the new model's folder
    overwrite: bool = False  # replace a model this command wrote there before
    vocab_size: int = Field(8192, ge=257)  # BPE vocabulary, including the end-of-text token
    depth: int = Field(8, gt=0)
    dim: int = Field(256, gt=0)
    heads: int = Field(8, gt=0)  # must divide dim
    max_len: int = Field(256, gt=0)  # context length in tokens
    seed: int = 0
    data_dir: Folder | None = None


def gpt_bytes(vocab_size: int, depth: int, dim: int, max_len: int) -> int:
    """float32 bytes of an own GPT's weights: token and position embeddings (V·D + T·D, the head tied to the
    token embedding) and per block 12·D² + 13·D (QKV, output, 4× MLP, two LayerNorms), plus the final norm."""
    return 4 * (vocab_size * dim + max_len * dim + depth * (12 * dim * dim + 13 * dim) + 2 * dim)


def machine_memory() -> int | None:
    """Physical memory in bytes, where the system says."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def run(options: NewGPTOptions) -> dict[str, Any]:
    """Initialise the GPT, train its tokenizer, save both to ``out``; returns the bundle and its size."""
    o = options
    out = Path(o.out)
    if o.dim % o.heads:
        raise LayerwiseError(f"`heads` {o.heads} does not divide `dim` {o.dim}: pick a divisor")
    need, have = gpt_bytes(o.vocab_size, o.depth, o.dim, o.max_len), machine_memory()
    if have is not None and need > have:  # refused from the estimate, before torch tries to allocate it
        raise LayerwiseError(f"a GPT of {o.depth} blocks × {o.dim} wide with {o.vocab_size} tokens and context "
                             f"{o.max_len} needs {need / 2**30:.1f} GiB for its float32 weights alone, more than "
                             f"this machine's {have / 2**30:.1f} GiB: pick a smaller `depth`, `dim`, `vocab_size` "
                             "or `max_len`")
    from layerwise.checkpoints import save_model
    from layerwise.checkpoints.save import MODEL_FILES
    from layerwise.inference.draft_vocab import FILES

    folder = open_run_folder(out, "new-gpt", overwrite=o.overwrite, outputs=(*MODEL_FILES, *FILES))
    from layerwise.checkpoints.new import corpus_texts, new_gpt
    from layerwise.data.corpora import encode_text
    from layerwise.inference.draft_vocab import save_token_counts, token_counts
    from layerwise.models import GPTConfig

    texts = corpus_texts(o.corpus, o.data_dir)
    bundle = new_gpt(texts, o.vocab_size, GPTConfig(max_len=o.max_len, dim=o.dim, depth=o.depth, heads=o.heads), o.seed)
    save_model(bundle, out)
    tok = bundle.inputs.tokenizer
    counts = token_counts([encode_text(tok, t) for t in texts], len(tok))
    save_token_counts(out, counts, corpus=",".join(o.corpus), overwrite=True)  # the run folder rule checked `out`
    folder.record()
    return {"bundle": bundle, "parameters": sum(p.numel() for p in bundle.model.parameters()),
            "tokens": len(bundle.inputs.tokenizer)}
