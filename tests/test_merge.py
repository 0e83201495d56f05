"""``layerwise merge``: a LoRA run's adapters folded into plain weights decode exactly as the unmerged model.

References: Hugging Face ``generate`` (greedy) on the unmerged model with the adapters injected, against the
merged folder; and the layer stack's greedy decoding from the last and an intermediate layer.
"""

from __future__ import annotations

import pytest
import torch

peft = pytest.importorskip("peft")

from fixtures import run_cli, train_config  # noqa: E402

from layerwise.checkpoints import load_model, save_model  # noqa: E402
from layerwise.inference.generation import generate  # noqa: E402
from layerwise.stack.unwrap import unwrap  # noqa: E402
from layerwise.training import train  # noqa: E402

PROMPTS = [[72, 101, 108, 108, 111], [84, 104, 101]]


def lora_run(tmp_path, model, name):
    """A few LoRA steps at a large learning rate, the readout trained too (a copy of a tied head)."""
    cfg = train_config(tmp_path, name, model=model, data="tinyshakespeare", limit=32, eval_limit=4, epochs=1,
                       batch_size=4, seq_len=32, objective="aligned", peft="lora", lora_r=4, lr=3e-2,
                       train_readout=True, layer_dropout=0.3)
    train(cfg)
    return tmp_path / name


def decode(stack, layer=None):
    return generate(stack, PROMPTS, layer, max_new_tokens=12, pad_token_id=0).rows()


@pytest.fixture(scope="module")
def own_base(tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "gpt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_model(load_model("gpt-tiny"), out)
    return out


@pytest.mark.parametrize("base", ["gpt2-tiny", "own"])
def test_merged_model_decodes_like_the_unmerged_one(tmp_path, monkeypatch, capsys, base, own_base):
    run = lora_run(tmp_path, str(own_base) if base == "own" else base, "run")
    code, out, err = run_cli(monkeypatch, capsys, "merge", "--model", run, "--out", tmp_path / "merged")
    assert code == 0, err
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    lora, merged = load_model(str(run)), load_model(str(tmp_path / "merged"))
    assert isinstance(lora.model, peft.PeftModel) and not isinstance(merged.model, peft.PeftModel)
    plain = load_model(str(own_base) if base == "own" else base)
    head = unwrap(merged.model).get_output_embeddings() if base != "own" else merged.model.head
    embedding = unwrap(merged.model).get_input_embeddings() if base != "own" else merged.model.tok
    assert not torch.equal(head.weight, embedding.weight)  # the trained readout copy survived the save
    x = {"input_ids": torch.tensor(PROMPTS[:1])}
    with torch.no_grad():
        for a, b in zip(lora.stack.layer_logits(x), merged.stack.layer_logits(x)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        assert (lora.stack(x) - plain.stack(x)).abs().max() > 1e-3  # the adapters changed the model
    assert decode(lora.stack) == decode(merged.stack)
    assert decode(lora.stack, 2) == decode(merged.stack, 2)
    if base == "gpt2-tiny":  # Hugging Face's own greedy decoding, adapters injected vs merged
        ids = torch.tensor(PROMPTS[:1])
        kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
        a = unwrap(lora.model).generate(ids, attention_mask=torch.ones_like(ids), **kw)
        b = merged.model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
        assert torch.equal(a, b) and a.shape[1] == ids.shape[1] + 12


def test_merge_refuses_a_run_without_adapters(tmp_path, monkeypatch, capsys, own_base):
    code, out, err = run_cli(monkeypatch, capsys, "merge", "--model", own_base, "--out", tmp_path / "m")
    assert code == 2 and err.startswith("error:") and err.count("\n") == 1 and "no adapters" in err
    assert not (tmp_path / "m").exists()
