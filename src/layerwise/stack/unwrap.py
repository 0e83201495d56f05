"""Seeing through wrappers: the architecture inside a PEFT, ``torch.compile`` or data-parallel wrapper.

The adapter registry recognises a model by its class (``registry.is_class``), so a wrapped model must be
unwrapped before the lookup. The wrappers peeled, outermost first, until none is left:

- data parallel (``DistributedDataParallel``, ``DataParallel``, DeepSpeed) and ``torch.compile``'s
  ``OptimizedModule`` (``_orig_mod``): ``accelerate.utils.extract_model_from_parallel``, the field's helper;
- PEFT's ``PeftModel`` (LoRA and the other tuners): its public ``get_base_model()``, the model *with the
  adapters injected in place*, so the stack's blocks run the LoRA-injected modules and the adapters count.

The module is imported lazily and peft is never imported: a PEFT model is recognised by its public method.
"""

from __future__ import annotations

from torch import nn


def is_peft_model(model: nn.Module) -> bool:
    """A peft wrapper (``PeftModel`` and its task subclasses), recognised without importing peft."""
    return type(model).__module__.startswith("peft.") and callable(getattr(model, "get_base_model", None))


def unwrap(model: nn.Module) -> nn.Module:
    """The architecture inside every data-parallel, compiled and PEFT wrapper around ``model``."""
    from accelerate.utils import extract_model_from_parallel

    while True:
        try:
            inner = extract_model_from_parallel(model, keep_fp32_wrapper=True, keep_torch_compile=False)
        except KeyError:  # accelerate 1.10 looks for `_orig_mod` on a parallel wrapper around a compiled model (fixed later)
            inner = model.module
        if is_peft_model(inner):
            inner = inner.get_base_model()
        if inner is model:
            return model
        model = inner


def has_unmerged_adapters(model: nn.Module) -> bool:
    """Whether ``model`` holds PEFT tuner layers whose update is not folded into the base weights: their
    ``weight`` is the base layer's, so code that reads a projection's weight directly (the key/value hooks of
    ``StackParts.fill_kv``) would miss the adapter."""
    for module in unwrap(model).modules():
        if type(module).__module__.startswith("peft.") and hasattr(module, "merged") and hasattr(module, "base_layer"):
            if not module.merged and not module.disable_adapters:
                return True
    return False
