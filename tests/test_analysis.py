"""`layerwise analyze` / `compare` end to end, checked against an independent float64 computation."""

import json
import re

import _refs as ref
import numpy as np
import pytest
import torch
from fixtures import data_batches, run_cli

from layerwise.checkpoints import load_model, save_model
from layerwise.data import load_dataset, make_loader


def hf_mean_pooled_features(model, loader) -> list[np.ndarray]:
    """Features through the model's own forward (output_hidden_states), not through the layer stack."""
    per_layer = None
    with torch.no_grad():
        for batch in loader:
            hs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       token_type_ids=batch.get("token_type_ids"), output_hidden_states=True).hidden_states
            m = batch["attention_mask"].unsqueeze(-1).float()
            pooled = [((h * m).sum(1) / m.sum(1).clamp_min(1.0)).double().numpy() for h in hs]
            per_layer = pooled if per_layer is None else [np.concatenate([a, b]) for a, b in zip(per_layer, pooled)]
    return per_layer


def test_minilm_sst2_matches_independent_float64(tmp_path, monkeypatch, capsys, shared_data):
    code, _, err = run_cli(monkeypatch, capsys, "analyze", "--model", "minilm", "--data", "sst2", "--split", "dev",
                           "--limit", "160", "--batch-size", "32", "--out", tmp_path)
    assert code == 0, err
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["layers"] == list(range(7))
    for key in ("cos", "cka_linear", "cka_linear_debiased"):
        assert np.asarray(results[key]).shape == (7, 7)
    bundle = load_model("minilm")
    bundle.model.eval()
    ds = load_dataset("sst2", split="dev", limit=160)
    feats = hf_mean_pooled_features(bundle.model, make_loader(ds, bundle.inputs, 32))
    for key, reference in (("cos", ref.cosine), ("cka_linear", ref.cka), ("cka_linear_debiased", ref.cka_debiased)):
        expected = [[reference(a, b) for b in feats] for a in feats]
        assert np.allclose(results[key], expected, atol=1e-8, rtol=0), key
    per_sample = np.asarray(results["cos_per_sample_to_last"])
    assert per_sample.shape == (160, 7)
    assert np.allclose(per_sample.mean(0), np.asarray(results["cos"])[:, -1], atol=1e-8)
    for fig in ("heatmap_cos.png", "heatmap_cka_linear.png", "similarity_vs_last.png", "cos_boxplot.png"):
        assert (tmp_path / fig).stat().st_size > 1000
    assert (tmp_path / "layers.csv").read_text().count("\n") == 8


def test_constant_cls_layer_is_null_with_warning(tmp_path, monkeypatch, capsys):
    """[CLS] at the embedding layer is the same for every input: undefined, not NaN, not a crash."""
    code, _, err = run_cli(monkeypatch, capsys, "analyze", "--model", "minilm", "--data", "sentences", "--split",
                           "all", "--pooling", "cls", "--out", tmp_path)
    assert code == 0, err
    text = (tmp_path / "results.json").read_text()
    assert "NaN" not in text
    results = json.loads(text)
    for key in ("cos", "cka_linear", "cka_linear_debiased"):
        assert results[key][0][3] is None and results[key][3][0] is None, key
        assert results[key][3][4] is not None
    warnings = re.findall(r"warning: (.*)", err)  # progress bars share stderr, so not split by line
    assert warnings and all(w.startswith("layer(s) [0]: ") for w in warnings), warnings  # layer 0 only
    assert any("features are constant across samples" in w for w in warnings), warnings


def test_classifier_and_residual_outputs(tmp_path):
    from layerwise.commands.analyze import AnalyzeOptions, run

    bundle = load_model("mlp-residual")
    model_dir = save_model(bundle, tmp_path / "model")
    results = run(AnalyzeOptions(model=str(model_dir), data="digits", out=tmp_path / "out", limit=100, batch_size=32))
    assert len(results["accuracy"]) == len(results["loss"]) == 9
    assert len(results["residual"]["norm_ratio"]) == 8
    # Residual block: h¹ = h⁰ + f(h⁰); check the statistics against features computed from the weights.
    batch = data_batches("digits", bundle.inputs, limit=100, batch_size=100)[0]
    with torch.no_grad():
        hs = ref.own_mlp_hidden64(bundle.model, batch["inputs"])
    f = hs[1] - hs[0]
    ratio = (hs[0].norm(dim=1) / f.norm(dim=1)).mean().item()
    assert results["residual"]["norm_ratio"][0] == pytest.approx(ratio, rel=1e-6)


def test_compare_cross_model_matrices(tmp_path):
    from layerwise.commands.compare import CompareOptions, run

    a, b = tmp_path / "a", tmp_path / "b"
    save_model(load_model("mlp-residual", init_seed=1), a)
    save_model(load_model("mlp-residual", init_seed=2), b)
    results = run(CompareOptions(model_a=str(a), model_b=str(b), data="digits", out=tmp_path / "cmp", limit=120))
    m = np.asarray(results["cka_linear"])
    # Rows are model a's layers: the reference takes each model's h⁰..h⁸ from its weights in float64 (the library
    # captures float32 features, hence 1e-6).
    x = torch.cat([batch["inputs"] for batch in data_batches("digits", load_model(str(a)).inputs, limit=120)])
    with torch.no_grad():
        fa, fb = ([h.numpy() for h in ref.own_mlp_hidden64(load_model(str(path)).model, x)] for path in (a, b))
    np.testing.assert_allclose(m, [[ref.cka(p, q) for q in fb] for p in fa], atol=1e-6, rtol=0)
    assert not np.allclose(m, m.T)  # two different models
    same = run(CompareOptions(model_a=str(a), model_b=str(a), data="digits", out=tmp_path / "same", limit=120))
    assert np.allclose(np.diag(np.asarray(same["cka_linear"])), 1.0, atol=1e-8)


# ---- bad input: one line, exit 2, no traceback ---------------------------------------------------------------


def _nan_model(tmp_path):
    bundle = load_model("mlp-residual")
    with torch.no_grad():
        bundle.model.blocks[2].fc.weight.fill_(float("nan"))
    return save_model(bundle, tmp_path / "nan-model")


@pytest.mark.parametrize("case", ["unknown-model", "missing-data", "nan-features", "too-few", "cos-widths",
                                  "bad-measure", "bad-pooling"])
def test_bad_input(case, tmp_path, monkeypatch, capsys):
    args = {
        "unknown-model": ["analyze", "--model", "no-such-model", "--data", "digits"],
        "missing-data": ["analyze", "--model", "mlp-residual", "--data", tmp_path / "missing.txt"],
        "nan-features": ["analyze", "--model", _nan_model(tmp_path) if case == "nan-features" else "",
                         "--data", "digits", "--limit", "20"],
        "too-few": ["analyze", "--model", "mlp-residual", "--data", "digits", "--limit", "3"],
        "cos-widths": ["compare", "--model-a", "mlp-residual", "--model-b", "vit-digits", "--data", "digits",
                       "--limit", "20", "--measures", "cos"],
        "bad-measure": ["analyze", "--model", "mlp-residual", "--data", "digits", "--measures", "cka,foo"],
        "bad-pooling": ["analyze", "--model", "mlp-residual", "--data", "digits", "--pooling", "max"],
    }[case]
    code, _, err = run_cli(monkeypatch, capsys, *args, "--out", tmp_path / "out")
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err
    expected = {"unknown-model": "unknown model", "missing-data": "not found", "nan-features": "NaN",
                "too-few": "at least 4", "cos-widths": "equal widths", "bad-measure": "unknown measure",
                "bad-pooling": "unknown pooling"}[case]
    assert expected in lines[0]


def test_language_model_layerwise_perplexity_matches_hf_loss(tmp_path):
    """Per-layer next-token perplexity; at the last layer it equals exp(the model's own LM loss)."""
    from layerwise.commands.analyze import AnalyzeOptions, run

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("To be, or not to be, that is the question. " * 40)
    results = run(AnalyzeOptions(model="gpt2-tiny", data=str(corpus), out=tmp_path / "out", batch_size=4))
    bundle = load_model("gpt2-tiny")  # seeded: the same weights as the run above
    bundle.model.eval()
    losses, tokens = 0.0, 0
    with torch.no_grad():
        for batch in make_loader(load_dataset(str(corpus)), bundle.inputs, 4):
            n = batch["input_ids"][:, 1:].numel()
            losses += bundle.model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss.item() * n
            tokens += n
    assert len(results["perplexity"]) == 5
    assert results["perplexity"][-1] == pytest.approx(np.exp(losses / tokens), rel=1e-5)


def test_half_precision_checkpoint_is_analysed_in_float32(tmp_path):
    """A model saved in bfloat16 (which transformers loads as bfloat16) is analysed in float32 by default: the
    same numbers as after an explicit float32 cast. ``dtype="bfloat16"`` keeps the half precision."""
    from layerwise.commands.analyze import AnalyzeOptions, run
    from layerwise.evaluation import analyze

    bundle = load_model("bert-tiny")
    bundle.model.to(torch.bfloat16)
    saved = str(save_model(bundle, tmp_path / "bf16"))
    loaded = load_model(saved)
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    common = dict(model=saved, data="sentences", limit=64, measures="cka_linear,cos")
    default = run(AnalyzeOptions(**common, out=tmp_path / "default"))
    half = run(AnalyzeOptions(**common, out=tmp_path / "half", dtype="bfloat16"))
    loaded.model.float()
    reference = analyze(loaded, load_dataset("sentences", limit=64), ["cka", "cos"])
    for key in ("cka_linear", "cos", "accuracy", "loss"):
        np.testing.assert_array_equal(default[key], reference[key], err_msg=key)
    assert not np.allclose(half["cka_linear"], default["cka_linear"], rtol=0, atol=1e-6)


def test_float64_runs_an_own_image_model(tmp_path):
    """Floating inputs follow the model's dtype (a float64 ViT would reject float32 pixels)."""
    from layerwise.commands.analyze import AnalyzeOptions, run

    saved = save_model(load_model("vit-digits"), tmp_path / "vit")  # built-in own models start at random
    common = dict(model=str(saved), data="digits", limit=48, measures="cka_linear")
    single = run(AnalyzeOptions(**common, out=tmp_path / "f32"))
    double = run(AnalyzeOptions(**common, out=tmp_path / "f64", dtype="float64"))
    assert double["config"]["dtype"] == "float64"
    np.testing.assert_allclose(double["cka_linear"], single["cka_linear"], atol=1e-4)
