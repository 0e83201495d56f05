"""Hugging Face models: from a ``save_pretrained`` directory or, when online, the hub."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from huggingface_hub.errors import StrictDataclassError
from torch import nn

from layerwise.checkpoints.bundle import ModelBundle, make_bundle
from layerwise.checkpoints.files import read_json, read_meta
from layerwise.checkpoints.schemas import HFSizes
from layerwise.checkpoints.tokenizers import folder_tokenizer
from layerwise.data.spec import InputSpec, image_spec, input_spec_from_meta
from layerwise.data.tokenizer import ByteTokenizer
from layerwise.errors import LayerwiseError
from layerwise.files import check_regular
from layerwise.schema import validate

# What transformers raises on a folder whose config.json has mistyped values (strict config dataclasses) or
# inconsistent ones (an id2label that is no mapping, a width not divisible by the heads, a negative size).
_BAD_FOLDER = (OSError, ValueError, TypeError, AttributeError, KeyError, RuntimeError, StrictDataclassError)


def _architecture(config: dict, source: str) -> str | None:
    """The class name ``config.json`` gives under ``architectures`` (a list of names), if any."""
    names = config.get("architectures")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise LayerwiseError(f"{source}: architectures is {names!r}, not a list of class names: fix it or "
                             "re-save the model")
    return names[0] if names else None


def hf_class(config: dict, num_classes: int | None, source: str = "config.json") -> type:
    """The transformers class named by ``config.json`` (a bare BERT gains a classifier with ``num_classes``);
    ``source`` names the file in errors."""
    import transformers as T

    arch = _architecture(config, source)
    if num_classes is not None and arch in ("BertModel", None) and config.get("model_type") == "bert":
        arch = "BertForSequenceClassification"
    if arch is None:
        raise LayerwiseError(f"{source} names no architecture (layerwise_arch for this project's models, "
                             "architectures for Hugging Face ones): re-save the model")
    cls = getattr(T, arch, None)
    if not (isinstance(cls, type) and issubclass(cls, T.PreTrainedModel)):  # `pipeline` is no model class
        raise LayerwiseError(f"unknown architecture {arch!r} in {source}; see `layerwise models`")
    return cls


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Without transformers' progress bars (local weights load or save in a moment; the bars would only add
    lines around the command's own output and errors); the previous setting is restored."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


def _head_args(cls: type, config: dict, num_classes: int | None) -> dict:
    """``from_pretrained``'s arguments: the weights in the dtype they were saved in (``dtype="auto"``, said
    explicitly since transformers' default changed from float32 to "auto" in 5.0), and a head of
    ``num_classes`` outputs where one is asked for."""
    extra: dict = {"dtype": "auto"}
    if num_classes is None or "Classification" not in cls.__name__:
        return extra
    extra["num_labels"] = num_classes
    if config.get("num_labels", len(config.get("id2label", {})) or 2) != num_classes:
        extra["ignore_mismatched_sizes"] = True
    return extra


def _placement_args(placement: dict | None) -> dict:
    """``from_pretrained``'s big-model arguments (``checkpoints.dispatch``): the device map, the offload folder
    and the dtype to load in."""
    if not placement:
        return {}
    return {k: v for k, v in placement.items() if v is not None}


def load_hf_dir(path: Path, name: str, num_classes: int | None, placement: dict | None = None) -> ModelBundle:
    """A ``save_pretrained`` directory (``num_classes`` adds or resizes a classification head; ``placement``:
    ``device_map``, ``offload_folder`` and ``dtype`` for ``from_pretrained``, Accelerate's big-model loading)."""
    config, meta = read_json(path / "config.json"), read_meta(path)  # both checked before the weights load
    validate(HFSizes, config, str(path / "config.json"))
    for entry in path.iterdir():  # transformers opens what it finds: a FIFO among them would block it
        if not entry.is_dir():
            check_regular(entry, "weights")
    cls = hf_class(config, num_classes, str(path / "config.json"))
    try:
        with quiet_transformers():
            model = cls.from_pretrained(str(path), **{**_head_args(cls, config, num_classes),
                                                       **_placement_args(placement)})
    except _BAD_FOLDER as e:
        raise LayerwiseError(f"cannot load {path} ({' '.join(str(e).split())}): fix its config.json or "
                             "re-save the model") from e
    return hf_bundle(name, model, path, meta)


def load_hub(spec: str, num_classes: int | None, placement: dict | None = None) -> ModelBundle:
    """A hub model by name (needs the network)."""
    import transformers as T

    try:
        config = T.AutoConfig.from_pretrained(spec).to_dict()
        cls = hf_class(config, num_classes)
        model = cls.from_pretrained(spec, **{**_head_args(cls, {}, num_classes), **_placement_args(placement)})
    except OSError as e:
        raise LayerwiseError(f"unknown model {spec!r}: not a built-in name (see `layerwise models`), not a "
                             "directory, and not loadable from the Hugging Face hub (offline?)") from e
    return hf_bundle(spec, model, spec, {})


def _default_inputs(model: nn.Module, path: Path | str) -> InputSpec:
    from transformers import AutoTokenizer

    cfg = model.config
    if hasattr(cfg, "image_size"):
        return image_spec(cfg.image_size, cfg.num_channels, (0.5,) * 3, (0.5,) * 3)
    if Path(str(path)).is_dir():
        tokenizer = folder_tokenizer(Path(str(path)))
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path))
        except Exception:  # no tokenizer files on the hub (tiny models built from a config)
            tokenizer = ByteTokenizer()
    return InputSpec(modality="text", tokenizer=tokenizer, max_length=128)


def hf_bundle(name: str, model: nn.Module, path: Path | str, meta: dict) -> ModelBundle:
    """Bundle a loaded HF model: inputs from ``layerwise.json`` or the model's own tokenizer/config, and a
    sentence-embedding model's pooling from its ``1_Pooling/config.json``."""
    inputs = input_spec_from_meta(meta, _default_inputs(model, path))
    pooling = meta.get("feature_pooling")
    if pooling is None and Path(str(path), "1_Pooling", "config.json").exists():
        pooled = read_json(Path(str(path), "1_Pooling", "config.json"))
        pooling = "mean" if pooled.get("pooling_mode_mean_tokens") else "cls"
    bundle = make_bundle(name, model, inputs, pooling)
    if bundle.stack.task == "lm":
        bundle.inputs = replace(bundle.inputs, modality="tokens")
    if pooling and bundle.stack.task == "encoder":
        bundle.stack.readout.pooling = pooling  # a sentence-embedding model's output is its pooled feature
    bundle.meta = meta
    return bundle
