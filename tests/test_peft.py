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


# ---------------------------------------------------------------- layerwise train --peft lora


@pytest.fixture(scope="module")
def base_gpt(tmp_path_factory):
    """A saved own GPT (4 blocks, 128 wide, bytes): a base model folder adapters can name."""
    from layerwise.checkpoints import save_model

    out = tmp_path_factory.mktemp("base") / "gpt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_model(load_model("gpt-tiny"), out)
    return out


def lora_config(tmp_path, base, name="run", **overrides):
    from fixtures import train_config

    settings = dict(model=str(base), data="tinyshakespeare", limit=48, eval_limit=8, epochs=1, batch_size=4,
                    seq_len=32, objective="aligned", peft="lora", lora_r=4, layer_dropout=0.5, checkpoint_every=2)
    return train_config(tmp_path, name, **{**settings, **overrides})


def adapter_tensors(run):
    from safetensors.torch import load_file

    return load_file(str(run / "adapter_model.safetensors"))


def log_records(run):
    import json

    return [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"}
            for line in (run / "log.jsonl").read_text().splitlines()]


def test_lora_training_resumes_bitwise_and_leaves_the_base_alone(tmp_path, base_gpt):
    from layerwise.training import train
    from layerwise.training.lora import trainable_parameters
    from layerwise.training.trainer import Trainer

    full = lora_config(tmp_path, base_gpt, "full")
    trainer = Trainer(full)
    trainable, total = trainable_parameters(trainer.module)
    assert 0 < trainable <= 0.05 * total  # the adapters only: base and readout frozen
    trainer.fit()

    class Interrupted(Exception):
        pass

    def stop(t):
        if t.pos.step == 3:  # after the step-2 checkpoint, before the next one
            raise Interrupted

    cut = lora_config(tmp_path, base_gpt, "cut")
    killed = Trainer(cut)
    killed.step_hooks.append(stop)
    with pytest.raises(Interrupted):
        killed.fit()
    assert not (tmp_path / "cut" / "adapter_model.safetensors").exists()
    train(cut)  # resumes from step 2 in its own folder
    a, b = adapter_tensors(tmp_path / "full"), adapter_tensors(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert log_records(tmp_path / "full") == log_records(tmp_path / "cut")
    assert any("lora_B" in k and a[k].abs().max() > 0 for k in a)  # B starts at 0: the adapters trained

    run, base = load_model(str(tmp_path / "full")), load_model(str(base_gpt))
    assert isinstance(run.model, peft.PeftModel)
    base_state = base.model.state_dict()
    inner = {k.replace("base_layer.", ""): v for k, v in unwrap(run.model).state_dict().items() if "lora_" not in k}
    assert inner.keys() == base_state.keys() and all(torch.equal(inner[k], base_state[k]) for k in inner)
    x = {"input_ids": torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))}
    with torch.no_grad():
        assert (run.stack(x) - base.stack(x)).abs().max() > 1e-4  # the loaded folder applies its adapters


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny", "bert-tiny"])
def test_default_targets_are_the_attention_and_mlp_projections(name):
    from layerwise.training.lora import default_targets

    model = load_model(name, num_classes=2 if name == "bert-tiny" else None).model
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=default_targets(model),
                                                         fan_in_fan_out=name == "gpt2-tiny"))
    adapted = {n.split(".")[-1] for n, m in wrapped.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)}
    want = {"gpt2-tiny": {"c_attn", "c_proj", "c_fc"},
            "llama-tiny": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
            "bert-tiny": {"query", "key", "value", "dense"}}[name]
    assert adapted == want
    per_block = sum(isinstance(m, peft.tuners.lora.LoraLayer) for n, m in wrapped.named_modules() if ".0." in n)
    assert per_block == {"gpt2-tiny": 4, "llama-tiny": 7, "bert-tiny": 6}[name]  # c_proj twice: attention and MLP


def test_missing_peft_and_bad_lora_options_are_one_line(tmp_path, base_gpt, monkeypatch, capsys):
    import sys

    from fixtures import run_cli

    from layerwise.errors import LayerwiseError
    from layerwise.training import train

    with pytest.raises(LayerwiseError, match="drawn from the run's seed"):
        train(lora_config(tmp_path, "gpt-tiny", "builtin"))
    with pytest.raises(LayerwiseError, match="`train_readout` applies to LoRA"):
        train(lora_config(tmp_path, base_gpt, "readout", peft=None, train_readout=True, layer_dropout=0.0))
    monkeypatch.setitem(sys.modules, "peft", None)  # as if the extra were not installed
    code, _, err = run_cli(monkeypatch, capsys, "train", "--model", base_gpt, "--data", "tinyshakespeare",
                           "--peft", "lora", "--out", tmp_path / "nopeft", "--cpu", "--no-progress")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error:") and "layerwise[peft]" in err
