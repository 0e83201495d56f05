"""The layer stack: any supported model viewed as embed → blocks → readout.

    h⁰ = embed(x),   hˡ = blockₗ(hˡ⁻¹) for ℓ = 1..L,   logits = readout(hˡ) = head(pool(norm(hˡ)))

Everything else (capture, measures, aligned training, early exit, truncation, interpolation)
goes through this class, so adding an architecture means adding one adapter (``adapters.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Literal

import torch
from torch import Tensor, nn

from layerwise.errors import LayerwiseError

Pooling = Literal["cls", "last", "mean", "all"]
POOLINGS: tuple[str, ...] = ("cls", "last", "mean", "all")
Task = Literal["classification", "lm", "encoder"]


def pool(h: Tensor, mask: Tensor | None, how: str) -> Tensor:
    """Pick the token(s) predictions use from (B, T, D) features.

    cls: token 0; last: the last non-padding token (left or right padding); mean: masked mean; all: unchanged.
    """
    if how == "all":
        return h
    if how == "cls":
        return h[:, 0]
    if how == "last":
        if mask is None:
            return h[:, -1]
        positions = torch.arange(h.shape[1], device=h.device)
        last = (mask.to(positions.dtype) * (positions + 1)).argmax(dim=1)
        return h[torch.arange(h.shape[0], device=h.device), last]
    if how == "mean":
        if mask is None:
            return h.mean(dim=1)
        m = mask.to(h.dtype).unsqueeze(-1)
        return (h * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
    raise LayerwiseError(f"unknown pooling {how!r}: choose one of {', '.join(POOLINGS)}")


@dataclass
class StackState:
    """Hidden states between blocks plus what each block needs besides them (masks, positions)."""

    h: Tensor
    mask: Tensor | None = None  # (B, T) padding mask of the inputs, 1 = real token
    block_args: tuple = ()
    block_kwargs: dict[str, Any] = field(default_factory=dict)

    def select(self, rows: Tensor) -> StackState:
        """Keep only the given batch rows (early-exit compaction); shared broadcast tensors are kept whole."""
        b = self.h.shape[0]

        def take(x: Any) -> Any:
            if isinstance(x, Tensor) and x.ndim >= 2 and x.shape[0] == b:
                return x[rows]
            if isinstance(x, tuple):
                return tuple(take(v) for v in x)
            if isinstance(x, list):
                return [take(v) for v in x]
            return x

        return StackState(
            h=self.h[rows],
            mask=None if self.mask is None else self.mask[rows],
            block_args=take(self.block_args),
            block_kwargs={k: take(v) for k, v in self.block_kwargs.items()},
        )


class Readout(nn.Module):
    """The model's own last-layer readout, applicable after any layer: head(pool(norm(h))).

    The normalisation is recomputed on the features it is given (never the last layer's statistics,
    cf. TransformerLens #1076). For token-wise norms and cls/last pooling, norm and pool commute, so we
    pool first and normalise one token, which is what makes per-layer exits cheap.
    """

    def __init__(self, norm: nn.Module | None, head: nn.Module | None, pooling: str, pool_fn: Callable | None = None):
        super().__init__()
        self.norm = norm if norm is not None else nn.Identity()
        self.head = head
        self.pooling = pooling  # "none" = per-token (language-model head)
        self.pool_fn = pool_fn

    def forward(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.pooling == "none":
            x = self.norm(h)
        elif self.pool_fn is not None:
            x = self.pool_fn(self.norm(h), mask)
        elif self.pooling in ("cls", "last"):
            x = self.norm(pool(h, mask, self.pooling))
        else:
            x = pool(self.norm(h), mask, self.pooling)
        return x if self.head is None else self.head(x)


@dataclass
class StackParts:
    """What an adapter hands the stack."""

    embed: Callable[[dict[str, Tensor]], StackState]
    blocks: nn.ModuleList
    readout: Readout
    task: Task
    feature_pooling: str  # the model's own token choice for features (cls / last / mean)
    hidden_size: int
    num_classes: int | None = None
    call_block: Callable[[nn.Module, StackState], Tensor] | None = None


def default_call_block(block: nn.Module, state: StackState) -> Tensor:
    out = block(state.h, *state.block_args, **state.block_kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


class LayerStack(nn.Module):
    """A model viewed as embed → L blocks → readout. Wraps the model; its weights are untouched.

    >>> stack = LayerStack(model)
    >>> hs = stack.hidden_states(inputs)          # [h⁰, …, hᴸ], each (B, T, D)
    >>> logits = stack.readout(hs[3], mask)       # the model's own readout after block 3
    """

    def __init__(self, model: nn.Module, adapter: Any = None, parts: StackParts | None = None):
        super().__init__()
        from layerwise.adapters import find_adapter

        self.model = model
        self.adapter = adapter or (None if parts is not None else find_adapter(model))
        p = parts or self.adapter.parts(model)
        self._embed = p.embed
        self.blocks = p.blocks
        self.readout = p.readout
        self.task: Task = p.task
        self.feature_pooling = p.feature_pooling
        self.hidden_size = p.hidden_size
        self.num_classes = p.num_classes
        self._call_block = p.call_block or default_call_block

    @property
    def num_layers(self) -> int:
        """L, the number of blocks; features exist for layers 0..L."""
        return len(self.blocks)

    def embed(self, inputs: dict[str, Tensor]) -> StackState:
        """h⁰ and the per-block context (attention masks, position information)."""
        return self._embed({k: v for k, v in inputs.items() if k != "labels"})

    def block(self, index: int, state: StackState) -> StackState:
        """Run block ``index`` (0-based, producing h^{index+1})."""
        return replace(state, h=self._call_block(self.blocks[index], state))

    def states(self, inputs: dict[str, Tensor], upto: int | None = None) -> Iterator[StackState]:
        """Yield the state at layers 0, 1, …, upto (default L), one block at a time."""
        upto = self.num_layers if upto is None else upto
        if not 0 <= upto <= self.num_layers:
            raise LayerwiseError(f"layer {upto} out of range: this model has layers 0..{self.num_layers}")
        state = self.embed(inputs)
        yield state
        for i in range(upto):
            state = self.block(i, state)
            yield state

    def hidden_states(self, inputs: dict[str, Tensor], upto: int | None = None) -> list[Tensor]:
        """[h⁰, …, h^upto], each (B, T, D)."""
        return [s.h for s in self.states(inputs, upto)]

    def forward(self, inputs: dict[str, Tensor], upto: int | None = None) -> Tensor:
        """readout(h^upto): with upto = L this is the wrapped model's own output."""
        for state in self.states(inputs, upto):
            pass
        return self.readout(state.h, state.mask)

    def layer_logits(self, inputs: dict[str, Tensor]) -> list[Tensor]:
        """readout(hˡ) for every layer ℓ = 0..L in one forward pass."""
        return [self.readout(s.h, s.mask) for s in self.states(inputs)]

    def features(self, state: StackState, pooling: str | None = None) -> Tensor:
        """The feature of the token predictions use (raw residual stream, before the final norm)."""
        return pool(state.h, state.mask, pooling or self.feature_pooling)
