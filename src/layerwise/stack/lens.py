"""Lenses: how a layer's hidden state hˡ is read out as the model's output (cf. the ``tuned-lens`` package).

    logit lens:  logitsₗ = R(hˡ)                          (R the model's own readout: final norm, pooling, head)
    tuned lens:  logitsₗ = R(hˡ + Aₗhˡ + bₗ),  ℓ < L;      logits_L = R(hᴸ)

The tuned lens (Belrose et al., 2023, "Eliciting Latent Predictions from Transformers with the Tuned Lens")
learns one affine translator per layer, initialised at zero (the identity map, so an untrained tuned lens *is*
the logit lens), trained to minimise KL(R(hᴸ) ‖ R(translatorₗ(hˡ))). The last layer's translator is the identity
by construction: it has no parameters. Every per-layer readout of the library goes through a ``Lens``
(``readouts``); ``LogitLens`` is the default.

A tuned lens is saved in a folder (beside a model or a run folder) as ``lens.safetensors`` (``weight`` (L, D, D),
``bias`` (L, D): translators of layers 0..L−1) and ``lens.json`` (shape and how it was trained).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from layerwise.errors import LayerwiseError
from layerwise.stack.layer_stack import LayerStack

WEIGHTS, META = "lens.safetensors", "lens.json"
ReadoutFn = Callable[..., Tensor]


class Lens(nn.Module):
    """Reads layer ℓ = 0..L of a stack as the model's output: ``stack.readout(translate(ℓ, hˡ), mask)``."""

    kind = "logit"

    def translate(self, layer: int, h: Tensor) -> Tensor:
        """The hidden state handed to the readout for layer ``layer`` (the identity here)."""
        return h

    def check(self, stack: LayerStack) -> None:
        """Refuse a stack this lens was not made for (nothing to check for the logit lens)."""

    def readout(self, stack: LayerStack, layer: int) -> ReadoutFn:
        """A callable (h, mask=None) → logits for layer ``layer``."""
        return stack.readout

    def readouts(self, stack: LayerStack, layers: Sequence[int] | None = None) -> list[ReadoutFn]:
        """``readout`` for each of ``layers`` (default 0..L)."""
        layers = range(stack.num_layers + 1) if layers is None else layers
        return [self.readout(stack, i) for i in layers]

    def logits(self, stack: LayerStack, layer: int, h: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.readout(stack, layer)(h, mask)

    def describe(self) -> str:
        return self.kind


class LogitLens(Lens):
    """The model's own readout applied to every layer (what ``LayerStack.readout`` computes)."""


class _Translated(nn.Module):
    """R(h + A h + b): one layer's translator followed by the shared readout."""

    def __init__(self, translator: nn.Linear, readout: nn.Module):
        super().__init__()
        self.translator, self.readout = translator, readout

    def forward(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.readout(translate(self.translator, h), mask)


def translate(translator: nn.Linear, h: Tensor) -> Tensor:
    """h + A h + b, computed in the translator's precision and returned in h's."""
    return h + translator(h.to(translator.weight.dtype)).to(h.dtype)


class TunedLens(Lens):
    """One affine translator h ↦ h + Aₗh + bₗ per layer ℓ = 0..L−1 (zero-initialised: the identity), then the
    model's own readout; layer L is read as is."""

    kind = "tuned"

    def __init__(self, hidden_size: int, num_layers: int, meta: dict | None = None):
        super().__init__()
        if hidden_size < 1 or num_layers < 1:
            raise LayerwiseError(f"a tuned lens needs a hidden size and a layer count ≥ 1, got {hidden_size}, {num_layers}")
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.translators = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in range(num_layers))
        for t in self.translators:  # zero: the identity map h ↦ h, so training starts at the logit lens
            nn.init.zeros_(t.weight)
            nn.init.zeros_(t.bias)
        self.meta = dict(meta or {})

    @classmethod
    def for_stack(cls, stack: LayerStack, meta: dict | None = None) -> TunedLens:
        return cls(stack.hidden_size, stack.num_layers, meta)

    def translate(self, layer: int, h: Tensor) -> Tensor:
        return h if layer >= self.num_layers else translate(self.translators[layer], h)

    def check(self, stack: LayerStack) -> None:
        if (self.num_layers, self.hidden_size) != (stack.num_layers, stack.hidden_size):
            raise LayerwiseError(f"the tuned lens was trained for {self.num_layers} layers × {self.hidden_size} wide, "
                                 f"but this model has {stack.num_layers} × {stack.hidden_size}: train one on this "
                                 "model with `layerwise lens`", option="lens")

    def readout(self, stack: LayerStack, layer: int) -> ReadoutFn:
        if not 0 <= layer <= self.num_layers:
            raise LayerwiseError(f"layer {layer} out of range: this lens reads layers 0..{self.num_layers}")
        return stack.readout if layer == self.num_layers else _Translated(self.translators[layer], stack.readout)

    def describe(self) -> str:
        return f"tuned:{self.meta.get('folder', '')}"

    def save(self, folder: str | Path, overwrite: bool = False) -> list[Path]:
        """``lens.safetensors`` + ``lens.json`` in ``folder``, each written atomically."""
        from layerwise.report.serialize import save_beside_model

        weight = torch.stack([t.weight.detach().float().cpu() for t in self.translators])
        bias = torch.stack([t.bias.detach().float().cpu() for t in self.translators])
        meta = {"kind": "tuned", "layers": self.num_layers, "hidden_size": self.hidden_size,
                "formula": "logits_l = readout(h^l + weight[l] h^l + bias[l]) for l < layers; readout(h^L)",
                **{k: v for k, v in self.meta.items() if k != "folder"}}
        return save_beside_model(Path(folder), (WEIGHTS, {"weight": weight.contiguous(), "bias": bias.contiguous()}),
                                 (META, meta), "a tuned lens", overwrite)


def load_tuned_lens(folder: str | Path) -> TunedLens:
    """The tuned lens saved in ``folder`` (``TunedLens.save``), read as untrusted files."""
    from layerwise.files import read_json
    from layerwise.report.serialize import load_beside_model

    folder = Path(folder)
    if not (folder / WEIGHTS).is_file():
        raise LayerwiseError(f"`lens`: {folder} holds no {WEIGHTS}: train one with `layerwise lens`", option="lens")
    t = load_beside_model(folder / WEIGHTS, ("weight", "bias"))
    w, b = t["weight"], t["bias"]
    if w.ndim != 3 or w.shape[1] != w.shape[2] or b.shape != (w.shape[0], w.shape[1]) or w.shape[0] < 1:
        raise LayerwiseError(f"{folder / WEIGHTS} holds weight {tuple(w.shape)} and bias {tuple(b.shape)}, not "
                             "(L, D, D) and (L, D): write it again", option="lens")
    if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
        raise LayerwiseError(f"{folder / WEIGHTS} holds non-finite numbers: train the lens again", option="lens")
    meta = read_json(folder / META) if (folder / META).is_file() else {}
    if not isinstance(meta, dict):
        raise LayerwiseError(f"{folder / META} holds a JSON {type(meta).__name__}, not an object: write it again")
    lens = TunedLens(w.shape[1], w.shape[0], {**meta, "folder": str(folder)})
    with torch.no_grad():
        for i, tr in enumerate(lens.translators):
            tr.weight.copy_(w[i].float())
            tr.bias.copy_(b[i].float())
    return lens


def layer_readouts(stack: LayerStack, exit_heads: nn.ModuleList | None = None, lens: Lens | None = None
                   ) -> list[ReadoutFn]:
    """The readout serving each layer 1..L: a multi-exit model's own heads or the shared readout (the logit lens),
    or the lens's. A tuned lens translates into the shared readout, so a model with its own exit heads refuses it."""
    from layerwise.stack.heads import exit_readouts

    if lens is None or type(lens) in (Lens, LogitLens):
        return exit_readouts(stack, exit_heads)
    if exit_heads is not None:
        raise LayerwiseError("a tuned lens translates each layer into the shared readout, and this model has its "
                             "own exit heads (multi-exit): use the logit lens", option="lens")
    lens.check(stack)
    return lens.readouts(stack, range(1, stack.num_layers + 1))


def parse_lens(spec: str) -> tuple[str, Path | None]:
    """``logit`` → ("logit", None); ``tuned:DIR`` → ("tuned", DIR). Pure: answers a bad value before torch runs."""
    text = spec.strip()
    if text == "logit":
        return "logit", None
    if text.startswith("tuned:") and text[len("tuned:"):].strip():
        folder = Path(text[len("tuned:"):].strip())
        if not (folder / WEIGHTS).is_file():
            raise LayerwiseError(f"`lens` {spec!r}: {folder} holds no {WEIGHTS}: train one with `layerwise lens`",
                                 option="lens")
        return "tuned", folder
    raise LayerwiseError(f"`lens` {spec!r}: use logit or tuned:DIR (a folder written by `layerwise lens`)",
                         option="lens")


def make_lens(spec: str | Lens | None, stack: LayerStack | None = None) -> Lens:
    """The lens a ``lens`` option names (None: the logit lens), checked against ``stack`` when given."""
    if isinstance(spec, Lens):
        lens = spec
    else:
        kind, folder = parse_lens(spec or "logit")
        lens = LogitLens() if kind == "logit" else load_tuned_lens(folder)
    if stack is not None:
        lens.check(stack)
        param = next(stack.readout.parameters(), None)
        if param is not None:
            lens.to(param.device)
    return lens


__all__ = ["Lens", "LogitLens", "TunedLens", "layer_readouts", "load_tuned_lens", "make_lens", "parse_lens", "translate", "WEIGHTS", "META"]
