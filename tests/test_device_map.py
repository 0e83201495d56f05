"""Models placed across devices (``device_map``): on a CPU machine the one multi-device path is offload, so a
device map sends some blocks to disk (their weights leave memory and are loaded for each forward) and the
results must equal the plain model's. The multi-GPU check is ``tools/gpu-check-device-map.sh``."""

from __future__ import annotations

import json

import pytest
import torch
from fixtures import run_cli

from layerwise.checkpoints import load_model, save_model
from layerwise.errors import LayerwiseError


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory):
    """A saved own GPT (4 blocks): the plain and the placed model load the same weights."""
    path = tmp_path_factory.mktemp("gpt") / "model"
    save_model(load_model("gpt-tiny"), path)
    return path


def disk_map(tmp_path, gpt_dir):
    placement = {"tok": "cpu", "pos": "cpu", "drop": "cpu", "blocks.0": "cpu", "blocks.1": "disk",
                 "blocks.2": "disk", "blocks.3": "cpu", "norm": "cpu", "head": "cpu"}
    path = tmp_path / "map.json"
    path.write_text(json.dumps(placement))
    return path


def test_disk_offload_gives_the_plain_models_hidden_states_and_logits(tmp_path, gpt_dir):
    plain = load_model(str(gpt_dir))
    placed = load_model(str(gpt_dir), device_map=str(disk_map(tmp_path, gpt_dir)), offload_folder=tmp_path / "off")
    # the offloaded blocks really left memory: their weights are on the meta device, their files on disk
    assert {p.device.type for p in placed.stack.blocks[1].parameters()} == {"meta"}
    assert any((tmp_path / "off").iterdir())
    ids = torch.randint(0, 250, (3, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = plain.model.eval()(input_ids=ids)  # the wrapped model's own forward
        states = placed.stack.hidden_states({"input_ids": ids})
        ref = plain.stack.hidden_states({"input_ids": ids})
        got = placed.stack({"input_ids": ids})
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    for a, b in zip(states, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_analyze_with_blocks_on_disk_equals_the_plain_analysis(tmp_path, gpt_dir):
    from layerwise.commands.analyze import AnalyzeOptions, run

    common = dict(model=str(gpt_dir), data="tinyshakespeare", split="test", limit=24, batch_size=8,
                  measures="cka_linear,cos", device="cpu", probe=False)
    plain = run(AnalyzeOptions(**common, out=tmp_path / "plain"))
    placed = run(AnalyzeOptions(**common, out=tmp_path / "placed", device_map=str(disk_map(tmp_path, gpt_dir)),
                                offload_folder=tmp_path / "off"))
    for key in ("cka_linear", "cos", "loss", "accuracy"):
        assert key in plain
        assert placed[key] == pytest.approx(plain[key], abs=1e-12, nan_ok=True), key


def test_auto_map_on_cpu_and_bad_maps(tmp_path, gpt_dir, monkeypatch, capsys):
    placed = load_model(str(gpt_dir), device_map="auto")
    assert placed.stack.carry
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"": "cpu", "blocks": "disk"}))
    with pytest.raises(LayerwiseError, match="holds whole blocks"):
        load_model(str(gpt_dir), device_map=str(bad))
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"blocks.0": "cpu"}))
    with pytest.raises(LayerwiseError, match="places only part"):
        load_model(str(gpt_dir), device_map=str(partial))
    code, _, err = run_cli(monkeypatch, capsys, "analyze", "--model", str(gpt_dir), "--device-map", "nowhere",
                           "--out", tmp_path / "x")
    assert code == 2 and err.count("\n") == 1 and "--device-map" in err
    assert not (tmp_path / "x").exists()


def test_hugging_face_folder_placed_through_from_pretrained(tmp_path):
    """A saved GPT-2 goes through ``from_pretrained(device_map=…, offload_folder=…)``: half its blocks on disk
    (``spread_blocks``), the hidden states and logits of the plain model."""
    from layerwise.checkpoints.dispatch import spread_blocks

    folder = tmp_path / "gpt2"
    save_model(load_model("gpt2-tiny"), folder)
    plain = load_model(str(folder))
    placement = spread_blocks(plain.model, plain.stack.blocks, ["cpu", "disk"])
    assert sorted(set(placement.values())) == ["cpu", "disk"]
    (tmp_path / "map.json").write_text(json.dumps(placement))
    placed = load_model(str(folder), device_map=str(tmp_path / "map.json"), offload_folder=tmp_path / "off")
    assert placed.model.hf_device_map == placement
    assert {p.device.type for p in placed.stack.blocks[-1].parameters()} == {"meta"}
    ids = torch.randint(0, 100, (2, 10), generator=torch.Generator().manual_seed(1))
    plain.model.eval(), placed.model.eval()
    with torch.no_grad():
        want = plain.model(input_ids=ids).logits  # the wrapped model's own forward
        ref = plain.stack.hidden_states({"input_ids": ids})
        got = placed.stack.hidden_states({"input_ids": ids})
        logits = placed.stack({"input_ids": ids})
    torch.testing.assert_close(logits, want, rtol=0, atol=0)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
