"""The layer stack: any supported model viewed as embed → blocks → readout.

    h⁰ = embed(x),   hˡ = blockₗ(hˡ⁻¹) for ℓ = 1..L,   logits = readout(hˡ) = head(pool(norm(hˡ)))

Everything else (capture, measures, aligned training, early exit, truncation) goes through this class,
so adding an architecture means adding one adapter (``layerwise/stack/adapters/``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterator

from torch import Tensor, nn

from layerwise.data.batches import model_inputs
from layerwise.errors import LayerwiseError
from layerwise.stack.readout import pool
from layerwise.stack.registry import Adapter, find_adapter
from layerwise.stack.state import StackParts, StackState, Task, default_call_block, execution_device
from layerwise.stack.unwrap import has_unmerged_adapters, unwrap


class LayerStack(nn.Module):
    """A model viewed as embed → L blocks → readout. Wraps the model; its weights are untouched.

    >>> stack = LayerStack(model)
    >>> hs = stack.hidden_states(inputs)          # [h⁰, …, hᴸ], each (B, T, D)
    >>> logits = stack.readout(hs[3], mask)       # the model's own readout after block 3
    """

    def __init__(self, model: nn.Module, adapter: Adapter | None = None, parts: StackParts | None = None):
        super().__init__()
        self.model = model
        # The adapter is looked up, and the parts built, on the architecture inside any PEFT, compile or DDP
        # wrapper (``stack.unwrap``); a PEFT model's blocks are its LoRA-injected modules, so adapters count.
        inner = unwrap(model)
        self.adapter = adapter or (None if parts is not None else find_adapter(inner))
        p = parts or self.adapter.parts(inner)
        self._embed = p.embed
        self.blocks = p.blocks
        self.readout = p.readout
        # A classification head with one output (Hugging Face num_labels = 1) is a regression head.
        self.task: Task = "regression" if p.task == "classification" and p.num_classes == 1 else p.task
        self.feature_pooling = p.feature_pooling
        self.hidden_size = p.hidden_size
        self.num_classes = p.num_classes
        self._call_block = p.call_block or default_call_block
        self._new_cache = p.new_cache
        self.context_length = p.context_length
        # A key/value hook reads projection weights directly and would miss unmerged adapters: run whole blocks.
        self._fill_kv = None if has_unmerged_adapters(inner) else p.fill_kv
        self.permutations = p.permutations  # the permutable hidden units, where the adapter declares them
        self.carry = False  # a model placed across devices: carry states to each block's device (carry_devices)
        self._readout_hook = None

    def carry_devices(self) -> None:
        """For a model placed across devices (``checkpoints.dispatch``): from now on each hidden state is carried
        to its block's device before the block runs, and the readout's input to the readout's device."""
        from accelerate.hooks import AlignDevicesHook, add_hook_to_module

        self.carry = True
        if self._readout_hook is None:  # the readout's output goes back to where its input came from
            self._readout_hook = AlignDevicesHook(execution_device=execution_device(self.readout), io_same_device=True)
            add_hook_to_module(self.readout, self._readout_hook, append=True)

    @property
    def num_layers(self) -> int:
        """L, the number of blocks; features exist for layers 0..L."""
        return len(self.blocks)

    def new_cache(self) -> Any:
        """An empty key/value cache for decoding: pass it to ``states`` or ``embed`` as ``cache`` and every block
        that runs appends its keys and values to it (the stack hands it to the model in the model's own form)."""
        if self._new_cache is None:
            raise LayerwiseError(f"{type(self.model).__name__} is not a decoder language model: it has no "
                                 "key/value cache to generate with")
        return self._new_cache()

    def embed(self, inputs: dict[str, Tensor], cache: Any = None) -> StackState:
        """h⁰ and the per-block context (attention masks, position information, the ``cache`` when decoding)."""
        inputs = model_inputs(inputs)
        return self._embed(inputs) if cache is None else self._embed(inputs, cache)  # encoders' embed takes no cache

    def block(self, index: int, state: StackState) -> StackState:
        """Run block ``index`` (0-based, producing h^{index+1})."""
        if self.carry:
            state = state.to(execution_device(self.blocks[index]))
        return replace(state, h=self._call_block(self.blocks[index], state))

    @property
    def has_kv_hook(self) -> bool:
        """Whether the adapter can write a block's keys/values without running the block (``fill_kv``)."""
        return self._fill_kv is not None

    def fill_kv(self, index: int, state: StackState) -> None:
        """Append block ``index``'s keys and values for ``state.h`` to ``state.cache`` (decoders).

        With the adapter's hook only the key/value projections run (and RoPE where the model has it); without
        one the whole block runs and its output is dropped: the cache ends up the same either way."""
        if self._fill_kv is None:
            self.block(index, state)
        else:
            self._fill_kv(self.blocks[index], state)

    def states(self, inputs: dict[str, Tensor], upto: int | None = None, cache: Any = None) -> Iterator[StackState]:
        """Yield the state at layers 0, 1, …, upto (default L), one block at a time; blocks 1..upto append their
        keys and values to ``cache`` when one is given (``new_cache``)."""
        upto = self.num_layers if upto is None else upto
        if not 0 <= upto <= self.num_layers:
            raise LayerwiseError(f"layer {upto} out of range: this model has layers 0..{self.num_layers}")
        state = self.embed(inputs, cache)
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

