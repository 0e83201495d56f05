"""``new-gpt``: a fresh own GPT plus a byte-level BPE trained on its corpora, saved ready for ``train``."""

from __future__ import annotations

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


def run(options: NewGPTOptions) -> dict[str, Any]:
    """Initialise the GPT, train its tokenizer, save both to ``out``; returns the bundle and its size."""
    o = options
    out = Path(o.out)
    if o.dim % o.heads:
        raise LayerwiseError(f"`heads` {o.heads} does not divide `dim` {o.dim}: pick a divisor")
    from layerwise.checkpoints import save_model
    from layerwise.checkpoints.save import MODEL_FILES

    folder = open_run_folder(out, "new-gpt", overwrite=o.overwrite, outputs=MODEL_FILES)
    from layerwise.checkpoints.new import corpus_texts, new_gpt
    from layerwise.models import GPTConfig

    texts = corpus_texts(o.corpus, o.data_dir)
    bundle = new_gpt(texts, o.vocab_size, GPTConfig(max_len=o.max_len, dim=o.dim, depth=o.depth, heads=o.heads), o.seed)
    save_model(bundle, out)
    folder.record()
    return {"bundle": bundle, "parameters": sum(p.numel() for p in bundle.model.parameters()),
            "tokens": len(bundle.inputs.tokenizer)}
