"""The "add an objective" and "add an exit policy" pages: their code runs as written, and what it registers
trains (the loss of each step equals the page's formula in float64) and exits (the layers a float64
computation of the margins predicts)."""

from __future__ import annotations

import re

import _refs as ref
import pytest
import torch
from fixtures import ROOT, data_batches, train_aligned

from layerwise.checkpoints import load_model
from layerwise.errors import LayerwiseError
from layerwise.evaluation import layer_logits
from layerwise.inference import POLICIES, EarlyExitRunner, calibrate, make_policy, simulate
from layerwise.training import Trainer, resolve_config
from layerwise.training.hf_trainer import hf_objectives
from layerwise.training.objectives import OBJECTIVES, PHASES

FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def run_page(name: str) -> dict:
    """Execute every ```python block of docs/NAME, in order, in one namespace."""
    blocks = FENCE.findall((ROOT / "docs" / name).read_text(encoding="utf-8"))
    assert blocks, f"docs/{name} has no python block"
    namespace: dict = {"__name__": f"docs.{name}"}
    exec(compile("\n".join(blocks), str(ROOT / "docs" / name), "exec"), namespace)
    return namespace


@pytest.fixture
def registries():
    """Leave the registries as they were: the pages add to them."""
    saved = [(r, dict(r)) for r in (OBJECTIVES, PHASES, POLICIES)]
    yield
    for registry, entries in saved:
        registry.clear()
        registry.update(entries)


def mlp_terms64(model, batch):
    """Per-layer CE of the shared readout (final LayerNorm + head) and raw features, from the weights in float64."""
    with torch.no_grad():
        hs = ref.own_mlp_hidden64(model, batch["inputs"])[1:]
        ces = torch.stack([ref.cross_entropy64(ref.linear64(ref.layer_norm64(h, model.norm.weight, model.norm.bias,
                                                                             model.norm.eps),
                                                            model.head.weight, model.head.bias), batch["labels"])
                           for h in hs])
    return hs, ces


def test_objective_page_trains_its_schedule(tmp_path, registries):
    with pytest.raises(LayerwiseError, match="objective"):
        resolve_config(objective="aligned-cos")  # not registered yet
    page = run_page("extend-objective.md")
    assert page["config"].objective == "aligned-cos" and "aligned-cos" in hf_objectives()
    beta = 0.5
    cfg = resolve_config(model="mlp-residual", data="digits", out=str(tmp_path / "run"), objective="aligned-cos",
                         cos_beta=beta, epochs=1, batch_size=32, limit=64, eval_limit=32, lr=1e-2, cpu=True,
                         progress=False)
    trainer = Trainer(cfg)
    model = trainer.bundle.model
    batch = data_batches("digits", trainer.bundle.inputs, "train", limit=32)[0]

    hs, ces = mlp_terms64(model, batch)  # step 0: Σ λ CE_ℓ + β Σ λ (1 − cos(zˡ, zᴸ))
    lam = ref.linear_layer_weights(len(hs))
    gap = torch.stack([1 - ref.mean_cosine64(h, hs[-1]) for h in hs])
    assert (lam * gap).sum() > 1e-3  # the regulariser is not trivially zero here
    assert trainer.step([batch]) == pytest.approx(((lam * ces).sum() + beta * (lam * gap).sum()).item(), abs=1e-5)

    _, after = mlp_terms64(model, batch)  # step 1: the standard loss, on the updated weights
    assert abs(after[-1] - ces[-1]) > 1e-4  # the first step changed the model
    assert trainer.step([batch]) == pytest.approx(after[-1].item(), abs=1e-5)


def first_exits64(logits: torch.Tensor, tau: float, lo: int) -> torch.Tensor:
    """The first layer ℓ ≥ lo with p₍₁₎ − p₍₂₎ ≥ τ (float64 softmax), else L, for each sample."""
    top = logits.double().softmax(-1).topk(2, dim=-1).values
    hit = (top[..., 0] - top[..., 1] >= tau) & (torch.arange(1, len(logits) + 1)[:, None] >= lo)
    hit[-1] = True
    return hit.double().argmax(0) + 1  # the first True along the layers


def test_exit_policy_page_drives_simulation_and_runner(registries):
    run_page("extend-exit-policy.md")
    with pytest.raises(LayerwiseError, match="margin threshold 1.5 out of range"):
        make_policy("margin", 1.5)
    bundle = load_model("mlp-residual", num_classes=10)
    train_aligned(bundle)
    batches = data_batches("digits", bundle.inputs, limit=96)
    logits = layer_logits(bundle.stack, batches)
    L, lo = logits.shape[0], 2
    top = logits.double().softmax(-1).topk(2, dim=-1).values
    margins = (top[lo - 1, :, 0] - top[lo - 1, :, 1]).sort().values
    i = int(torch.argmax(margins[len(margins) // 2 + 1:] - margins[len(margins) // 2:-1])) + len(margins) // 2
    tau = float(margins[i] + margins[i + 1]) / 2  # between two observed margins, far from both
    want = first_exits64(logits, tau, lo)
    assert want.min() == lo and want.max() == L and len(set(want.tolist())) > 2  # exits spread over layers

    policy = make_policy("margin", tau, min_layer=lo)
    assert torch.equal(simulate(policy, logits, lo, L).layer, want)
    assert torch.equal(EarlyExitRunner(bundle.stack, policy).run(batches).layer, want)
    labels = torch.cat([b["labels"] for b in batches])
    cal = calibrate(policy, logits, labels, 0.02, lo, L)
    full = (logits[-1].argmax(-1) == labels).double().mean().item()
    assert cal["val_full_accuracy"] == pytest.approx(full) and cal["val_accuracy"] >= full - 0.02 - 1e-12
