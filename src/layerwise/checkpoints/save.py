"""``save_model``: write a bundle so that ``load_model`` gives it back; every file written atomically."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from layerwise.checkpoints.adapters import ADAPTER_FILES, is_peft_model, save_adapters
from layerwise.checkpoints.bundle import ModelBundle
from layerwise.checkpoints.hf import quiet_transformers
from layerwise.data.tokenizer import ByteTokenizer
from layerwise.models import StackModel
from layerwise.report.serialize import atomic_save_tensors, write_json

# Every file ``save_model`` may write (own models; Hugging Face ``save_pretrained`` of a model and its tokenizer),
# as glob patterns: the ``outputs`` of a command that saves a model into its run folder (``layerwise.run_folder``).
MODEL_FILES = ("config.json", "model.safetensors", "layerwise.json", "exit_heads.safetensors", "generation_config.json",
               "model.safetensors.index.json", "model-*-of-*.safetensors", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt",
               "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "chat_template.jinja",
               "chat_template.json", *ADAPTER_FILES)

def save_model(bundle: ModelBundle, out: str | Path) -> Path:
    """safetensors + config (own models) or ``save_pretrained`` (Hugging Face), the tokenizer's files when it
    has any, plus ``layerwise.json`` (inputs, feature and readout pooling, multi-exit heads). A PEFT model
    writes its adapters only (``checkpoints.adapters``; ``layerwise.json`` names the base model)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = bundle.model
    if is_peft_model(model):
        save_adapters(model, out)
    elif isinstance(model, StackModel):
        state = dict(model.state_dict())
        if getattr(model, "head", None) is not None and hasattr(model, "tok") and model.head.weight is model.tok.weight:
            state.pop("head.weight", None)  # tied to tok.weight (a merged, trained readout copy is not)
        atomic_save_tensors(state, out / "model.safetensors")
        write_json(model.config_dict(), out / "config.json")
    else:
        with quiet_transformers():
            model.save_pretrained(str(out))
    tok = bundle.inputs.tokenizer
    saves_files = tok is not None and hasattr(tok, "save_pretrained")
    if saves_files:  # a trained BPE beside an own GPT, or a Hugging Face model's own tokenizer
        tok.save_pretrained(str(out))
    inputs = {k: v for k, v in asdict(bundle.inputs).items() if k != "tokenizer"}
    inputs["tokenizer"] = "byte" if isinstance(tok, ByteTokenizer) else "files" if saves_files else None
    meta = {**bundle.meta, "inputs": inputs, "feature_pooling": bundle.stack.feature_pooling}
    if bundle.stack.task in ("classification", "regression") and bundle.stack.readout.pool_fn is None:
        meta["readout_pooling"] = bundle.stack.readout.pooling  # reloaded by load_model
    if bundle.exit_heads is not None:
        atomic_save_tensors(bundle.exit_heads.state_dict(), out / "exit_heads.safetensors")
        meta["exit_heads"] = len(bundle.exit_heads)
    write_json(meta, out / "layerwise.json")
    return out
