"""Typed schemas of a model folder's JSON files: ``config.json`` of the project's own models and
``layerwise.json``. A file that breaks one is reported as one ``LayerwiseError`` line naming the file and key.

The own-model schemas are built from the config dataclasses themselves, so they cannot drift from them;
Hugging Face configs are checked by transformers (see ``checkpoints.hf``).
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, Field, NonNegativeInt, PositiveInt, create_model

from layerwise.data.spec import InputSpec
from layerwise.errors import LayerwiseError
from layerwise.models import OWN_MODELS
from layerwise.schema import Options, Record, validate
from layerwise.stack import POOLINGS


def dataclass_schema(cls: type, **overrides: tuple[Any, Any]) -> type[Options]:
    """A strict schema with the fields, types and defaults of dataclass ``cls``; ``overrides`` maps a field
    name to (type, default), replacing that field or adding one."""
    hints = get_type_hints(cls)
    spec: dict[str, Any] = {}
    for f in fields(cls):
        default = f.default if f.default is not MISSING else (
            Field(default_factory=f.default_factory) if f.default_factory is not MISSING else ...)
        spec[f.name] = (hints[f.name], default)
    return create_model(f"{cls.__name__}Schema", __base__=Options, **{**spec, **overrides})


# ``save_model`` writes an InputSpec with lists for tuples and the tokenizer as "byte", "files" (its own files
# beside the model) or null.
SavedInputs = dataclass_schema(InputSpec, mean=(list[float] | None, None), std=(list[float] | None, None),
                               tokenizer=(Literal["byte", "files"] | None, None))


class Truncation(Options):
    """``layerwise.json`` → ``truncated``: where a ``truncate``d model came from."""

    source: str = Field(alias="from")
    k: PositiveInt
    of: PositiveInt
    exit_head: bool


class PeftMeta(Options):
    """``layerwise.json`` → ``peft``: a LoRA run folder's base model (built-in name or absolute path) and settings."""

    method: Literal["lora"]
    base: str
    r: PositiveInt
    alpha: float
    targets: list[str]
    train_readout: bool = False


class SavedMeta(Options):
    """``layerwise.json``: what ``save_model`` (and the trainer, through the bundle's meta) writes."""

    inputs: SavedInputs | None = None  # type: ignore[valid-type]
    feature_pooling: Literal[POOLINGS] | None = None  # type: ignore[valid-type]
    readout_pooling: Literal["mean", "cls", "last"] | None = None  # a classifier's readout pooling (train --pooling)
    exit_heads: NonNegativeInt | None = None  # how many multi-exit heads (0 or absent: none)
    training: dict[str, Any] | None = None  # the training options, a record (not read back)
    truncated: Truncation | None = None
    peft: PeftMeta | None = None  # a LoRA run folder (checkpoints.adapters)
    merged_from: str | None = None  # the LoRA run folder `merge` folded into these weights


class TokenizerModel(Record):
    vocab: dict[str, int] | list[Any] | None = None  # BPE/WordPiece: token → id; Unigram: [piece, score] pairs
    merges: list[Any] | None = None


class TokenizerFile(Record):
    """``tokenizer.json`` (Hugging Face ``tokenizers``), at the level of shape: what its loader takes apart."""

    model: TokenizerModel
    added_tokens: list[dict[str, Any]]


class HFSizes(Record):
    """The sizes of a Hugging Face ``config.json`` that shape its tensors, checked before transformers builds the
    model: transformers 5 refuses a mistyped one itself, 4.x fails deep inside ``torch.empty``."""

    hidden_size: PositiveInt | None = None
    num_hidden_layers: PositiveInt | None = None
    num_attention_heads: PositiveInt | None = None
    intermediate_size: PositiveInt | None = None
    vocab_size: PositiveInt | None = None
    max_position_embeddings: PositiveInt | None = None
    n_embd: PositiveInt | None = None
    n_layer: PositiveInt | None = None
    n_head: PositiveInt | None = None
    n_positions: PositiveInt | None = None


@cache
def own_config_schema(arch: str) -> type[Options]:
    """The schema of ``config.json`` for own architecture ``arch``: its config dataclass plus the arch tag."""
    config_cls = OWN_MODELS[arch][1]
    return dataclass_schema(config_cls, layerwise_arch=(Literal[arch], ...))


def _checked(schema: type[BaseModel], values: dict, file: Path) -> BaseModel:
    try:
        return validate(schema, values, str(file))
    except LayerwiseError as e:
        raise LayerwiseError(f"{e}: fix that key or re-save the model") from None


def check_own_config(config: dict, file: Path) -> dict:
    """An own model's ``config.json``, validated: a known ``layerwise_arch``, no unknown keys, strict types.

    Returns the config with every field (defaults filled in), ready for ``build_own``.
    """
    arch = config.get("layerwise_arch")
    if not isinstance(arch, str) or arch not in OWN_MODELS:
        raise LayerwiseError(f"{file} names layerwise_arch {arch!r}: use one of {', '.join(OWN_MODELS)}, "
                             "or re-save the model")
    return _checked(own_config_schema(arch), config, file).model_dump()


def check_meta(meta: dict, file: Path) -> dict:
    """``layerwise.json``, validated against ``SavedMeta``; returned unchanged (it is saved back as read)."""
    _checked(SavedMeta, meta, file)
    return meta
