"""LoRA through peft: the layer stack sees through PEFT, ``torch.compile`` and data-parallel wrappers.

References: peft's own ``merge_and_unload`` on a deep copy (the adapters folded into plain weights), and the
plain model's own forward for the compiled / DataParallel wrappers. LoRA's B is initialised non-zero
(``init_lora_weights=False``), so a stack that skipped the adapters would differ from the merged model.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

peft = pytest.importorskip("peft")

from layerwise.checkpoints import load_model  # noqa: E402
from layerwise.stack import LayerStack  # noqa: E402
from layerwise.stack.unwrap import has_unmerged_adapters, unwrap  # noqa: E402

TARGETS = {"gpt2-tiny": ["c_attn", "c_proj", "c_fc"], "llama-tiny": ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                      "gate_proj", "up_proj", "down_proj"]}


def lora(model: nn.Module, name: str, task_type: str | None = None) -> nn.Module:
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS[name], init_lora_weights=False,
                             fan_in_fan_out=name == "gpt2-tiny", task_type=task_type)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return peft.get_peft_model(model, config)


def batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding in the second row
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny"])
def test_lora_stack_equals_the_merged_model_layer_by_layer(name):
    wrapped = lora(load_model(name).model, name).eval()
    merged = copy.deepcopy(wrapped).merge_and_unload().eval()
    assert type(merged).__name__ in ("GPT2LMHeadModel", "LlamaForCausalLM")
    plain = LayerStack(load_model(name).model.eval())
    stack, ref = LayerStack(wrapped), LayerStack(merged)
    assert stack.adapter.name == ref.adapter.name and has_unmerged_adapters(wrapped)
    assert not stack.has_kv_hook and ref.has_kv_hook  # the K/V hook would read the base weights only
    x = batch()
    with torch.no_grad():
        hs, hs_ref, hs_plain = stack.hidden_states(x), ref.hidden_states(x), plain.hidden_states(x)
        logits, logits_ref = stack.layer_logits(x), ref.layer_logits(x)
        own = merged(**x).logits
    assert len(hs) == len(hs_ref) == 5
    for h, r in zip(hs, hs_ref):
        torch.testing.assert_close(h, r, atol=1e-5, rtol=0)
    for z, r in zip(logits, logits_ref):
        torch.testing.assert_close(z, r, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits[-1], own, atol=1e-5, rtol=0)  # the merged model's own output
    assert (hs[-1] - hs_plain[-1]).abs().max() > 1e-2  # the adapters matter: without them the stack differs


def test_compiled_and_data_parallel_models_are_unwrapped():
    model = load_model("gpt2-tiny").model.eval()
    x = batch()
    with torch.no_grad():
        want = model(**x).logits
        for wrapper in (torch.compile(model), nn.DataParallel(model)):
            assert unwrap(wrapper) is model
            torch.testing.assert_close(LayerStack(wrapper)(x), want, atol=1e-6, rtol=0)
    wrapped = lora(model, "gpt2-tiny", "CAUSAL_LM")  # injects its layers into `model`, in place
    for wrapper in (wrapped, nn.DataParallel(torch.compile(wrapped))):
        assert unwrap(wrapper) is model


def test_aligned_trainer_takes_a_peft_model(tmp_path):
    """Its loss on the LoRA model equals its loss on the merged copy (per-layer readouts through the adapters);
    a training step moves the adapters only."""
    from torch.utils.data import Dataset
    from transformers import TrainingArguments

    from layerwise.training.hf_trainer import AlignedTrainer

    ids = torch.randint(0, 256, (8, 12), generator=torch.Generator().manual_seed(0))

    class Blocks(Dataset):
        def __len__(self):
            return len(ids)

        def __getitem__(self, i):
            return {"input_ids": ids[i], "attention_mask": torch.ones_like(ids[i]), "labels": ids[i]}

    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to="none",
                             use_cpu=True, save_strategy="no", disable_tqdm=True, learning_rate=1e-2,
                             remove_unused_columns=False)
    wrapped = lora(load_model("gpt2-tiny").model, "gpt2-tiny", "CAUSAL_LM")
    merged = copy.deepcopy(wrapped).merge_and_unload()
    trainer = AlignedTrainer(model=wrapped, args=args, train_dataset=Blocks(), objective="aligned-joint")
    reference = AlignedTrainer(model=merged, args=args, objective="aligned-joint")
    x = {"input_ids": ids[:4], "attention_mask": torch.ones_like(ids[:4]), "labels": ids[:4]}
    wrapped.eval(), merged.eval()
    with torch.no_grad():
        got, want = trainer.compute_loss(wrapped, x), reference.compute_loss(merged, x)
    assert got.item() == pytest.approx(want.item(), abs=1e-5)
    before = {k: v.clone() for k, v in wrapped.state_dict().items()}
    trainer.train()
    changed = {k for k, v in wrapped.state_dict().items() if not torch.equal(before[k], v)}
    assert changed and all("lora_" in k for k in changed)
