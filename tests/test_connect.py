"""``layerwise connect`` (layer-wise linear mode connectivity) against independent references: the models' own
forward passes, state-dict interpolations and barrier values written out here, and torch's own BatchNorm
re-estimation (``torch.optim.swa_utils.update_bn``)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from layerwise.checkpoints import load_model, make_bundle, save_model
from layerwise.commands.connect import ConnectOptions, run
from layerwise.data import InputSpec, load_dataset, make_loader, materialize
from layerwise.evaluation.barriers import barrier, excess
from layerwise.evaluation.connectivity import connect, detached, filter_normalise, mode_paths, random_target
from layerwise.models import MLP, MLPConfig
from layerwise.stack.matching import permute, weight_matching
from layerwise.stack.surgery import named_tensors, reestimate_batchnorm, stack_groups, write_mix

VECTOR = InputSpec(modality="vector", input_dim=64)


def _mlp(seed: int, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return MLP(MLPConfig(**{"dim": 16, "depth": 3, **kw})).double().eval()


def _digits(n: int = 48, batch_size: int = 20) -> list[dict]:
    """Batches of 20, 20 and 8: a short last batch, so a mean of batch means would differ from the sample mean."""
    batches = materialize(make_loader(load_dataset("digits", "test", limit=n), VECTOR, batch_size), "cpu")
    return [{k: v.double() if v.is_floating_point() else v for k, v in b.items()} for b in batches]


def _mean_ce(model: nn.Module, batches: list[dict]) -> tuple[float, float]:
    """Per-sample mean CE and error of the model's own forward, over all samples (the reference)."""
    logits = torch.cat([model(inputs=b["inputs"]) for b in batches])
    labels = torch.cat([b["labels"] for b in batches])
    return F.cross_entropy(logits, labels).item(), 1.0 - (logits.argmax(-1) == labels).double().mean().item()


# ---------------------------------------------------------------- groups


@pytest.mark.parametrize("name", ["mlp-plain", "gpt-tiny", "gpt2-tiny", "bert-tiny", "llama-tiny", "vit-hf-tiny"])
def test_every_tensor_is_in_exactly_one_group(name):
    bundle = load_model(name)
    groups = stack_groups(bundle.model, bundle.stack)
    assert list(groups) == ["embed", *(f"block{i}" for i in range(1, bundle.stack.num_layers + 1)), "readout"]
    listed = [n for names in groups.values() for n in names]
    assert len(listed) == len(set(listed))
    state = {**dict(bundle.model.named_parameters(remove_duplicate=False)),
             **dict(bundle.model.named_buffers(remove_duplicate=False))}  # non-persistent buffers too
    # every parameter and buffer is one listed tensor (tied names are the same object as a listed one)
    by_id = {id(named_tensors(bundle.model)[n]): n for n in listed}
    assert {by_id[id(t)] for t in state.values()} == set(listed)
    # block 2's tensors are those under the module that is stack.blocks[1], named as the model names it (where
    # that is moves between transformers releases: vit.encoder.layer.1 in 4.x, vit.layers.1 in 5.x)
    prefix = next(n for n, m in bundle.model.named_modules() if m is bundle.stack.blocks[1]) + "."
    assert prefix.endswith(".1.") and groups["block2"] == [n for n in state if n.startswith(prefix)]


@pytest.mark.parametrize("name,embedding,head", [("gpt-tiny", "tok.weight", "head.weight"),
                                                 ("gpt2-tiny", "transformer.wte.weight", "lm_head.weight")])
def test_tied_embedding_moves_with_embed_and_stays_tied(name, embedding, head):
    a, b = load_model(name), load_model(name)
    with torch.no_grad():
        for p in b.model.parameters():
            p.add_(torch.randn_like(p))
    groups = stack_groups(a.model, a.stack)
    assert embedding in groups["embed"] and head not in groups["readout"]
    work = copy.deepcopy(a.model)
    write_mix(named_tensors(work), detached(a.model), detached(b.model), dict.fromkeys(groups["embed"], 0.25))
    expected = 0.75 * a.model.state_dict()[embedding] + 0.25 * b.model.state_dict()[embedding]
    sd = work.state_dict()
    torch.testing.assert_close(sd[embedding], expected, rtol=1e-6, atol=1e-7)
    assert sd[head].data_ptr() == sd[embedding].data_ptr()


# ---------------------------------------------------------------- interpolation


def test_interpolation_equals_state_dict_formula():
    a, b = _mlp(0), _mlp(1)
    bundle = make_bundle("a", a, VECTOR)
    groups = stack_groups(a, bundle.stack)
    work = copy.deepcopy(a)
    alpha = 0.3
    write_mix(named_tensors(work), detached(a), detached(b), dict.fromkeys(groups["block2"], alpha))
    sa, sb = a.state_dict(), b.state_dict()
    expected = {k: (1 - alpha) * sa[k] + alpha * sb[k] if k.startswith("blocks.1.") else sa[k] for k in sa}
    got = work.state_dict()
    assert set(got) == set(expected)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-15, atol=0)


@pytest.mark.parametrize("name", ["gpt-tiny", "bert-tiny"])
def test_alpha_zero_and_one_reproduce_the_models(name):
    a, b = load_model(name, num_classes=2 if name == "bert-tiny" else None), load_model(name)
    with torch.no_grad():
        for p in b.model.parameters():
            p.mul_(1.5).add_(0.01)
    ids = torch.randint(0, 256, (2, 12))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    groups = stack_groups(a.model, a.stack)
    work = copy.deepcopy(a.model).eval()
    names = [n for g in groups.values() for n in g]
    for w, ref in ((0.0, a.model), (1.0, b.model)):
        write_mix(named_tensors(work), detached(a.model), detached(b.model), dict.fromkeys(names, w))
        with torch.no_grad():
            out, want = work.eval()(**inputs), ref.eval()(**inputs)
        out, want = (o if torch.is_tensor(o) else o.logits for o in (out, want))
        assert torch.equal(out, want)


def test_identical_models_have_zero_barrier_everywhere():
    a = _mlp(0)
    batches = _digits()
    res = connect(make_bundle("a", a, VECTOR), make_bundle("b", copy.deepcopy(a), VECTOR), batches,
                  modes=["full", "single", "cumulative"], alphas=np.linspace(0, 1, 5).tolist(), progress=False)
    for mode in ("full", "single", "cumulative"):
        for variant in (res["modes"][mode], *(v for v in res["modes"][mode].values() if isinstance(v, dict))):
            assert np.abs(variant["excess_loss"]).max() < 1e-12
            assert np.abs(variant["excess_error"]).max() == 0


def test_losses_are_per_sample_means_of_the_models_own_forward():
    a, b = _mlp(0), _mlp(1)
    batches = _digits()
    res = connect(make_bundle("a", a, VECTOR), make_bundle("b", b, VECTOR), batches, modes=["full"],
                  alphas=[0.0, 0.5, 1.0], progress=False)
    mid = copy.deepcopy(a)
    sa, sb = a.state_dict(), b.state_dict()
    mid.load_state_dict({k: 0.5 * sa[k] + 0.5 * sb[k] for k in sa})
    for j, model in enumerate((a, mid, b)):
        loss, err = _mean_ce(model, batches)
        assert res["modes"]["full"]["loss"][0][j] == pytest.approx(loss, rel=1e-6)  # logits scored in float32
        assert res["modes"]["full"]["error"][0][j] == pytest.approx(err, abs=1e-12)
    assert res["targets"] == 48


# ---------------------------------------------------------------- barrier mathematics


def test_barrier_of_a_hand_made_curve():
    alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
    curve = [1.0, 2.0, 3.5, 2.0, 3.0]  # the straight line from 1 to 3: 1, 1.5, 2, 2.5, 3
    np.testing.assert_allclose(excess(alphas, curve, 1.0, 3.0), [0.0, 0.5, 1.5, -0.5, 0.0])
    assert barrier(alphas, curve, 1.0, 3.0) == (1.5, 0.5)
    # a single-group path ends off model B: its excess at α = 1 counts against the full models' line
    assert barrier(alphas, [1.0, 1.2, 1.4, 1.6, 5.0], 1.0, 3.0) == (2.0, 1.0)
    # a path below the line everywhere (convex basin) has a negative barrier, not a zero one
    assert barrier([0.0, 0.5, 1.0], [2.0, 1.0, 2.0], 2.0, 2.0)[0] == pytest.approx(0.0)
    assert barrier([0.0, 0.5, 1.0], [2.5, 1.0, 2.5], 2.0, 2.0) == (0.5, 0.0)


def test_mode_paths():
    groups = ["embed", "block1", "block2", "readout"]
    assert [p.moving for p in mode_paths("full", groups)["full"]] == [tuple(groups)]
    single = mode_paths("single", groups)
    assert [p.moving for p in single["single"]] == [(g,) for g in groups]
    assert single["rest_from_b"][1].group_alphas(groups, 0.3) == {"embed": 1.0, "block1": 0.3, "block2": 1.0,
                                                                  "readout": 1.0}
    cumulative = mode_paths("cumulative", groups)
    assert [p.moving for p in cumulative["cumulative"]][1] == ("embed", "block1")
    assert [p.moving for p in cumulative["deep_to_shallow"]][1] == ("block1", "block2", "readout")


def test_random_target_distance_and_filter_normalisation():
    a = {"w": torch.randn(5, 3, dtype=torch.float64), "b": torch.randn(5, dtype=torch.float64)}
    b = {k: v + torch.randn_like(v) for k, v in a.items()}
    for filt in (False, True):
        t = random_target(a, b, ["w", "b"], torch.Generator().manual_seed(0), filt)
        step = torch.sqrt(sum(((t[k] - a[k]) ** 2).sum() for k in a))
        dist = torch.sqrt(sum(((b[k] - a[k]) ** 2).sum() for k in a))
        assert step.item() == pytest.approx(dist.item(), rel=1e-12)
    d = filter_normalise(torch.randn(5, 3, dtype=torch.float64), a["w"])
    np.testing.assert_allclose(d.norm(dim=1), a["w"].norm(dim=1), rtol=1e-12)


# ---------------------------------------------------------------- BatchNorm


class _Inputs(nn.Module):
    """``model(inputs=x)`` as ``module(x)``: the calling convention ``update_bn`` uses."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(inputs=x)


def test_bn_reestimation_equals_torch_update_bn():
    model = _mlp(0, batchnorm=True)
    batches = _digits()
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm1d)):
        bn.running_mean.fill_(3.0)
        bn.running_var.fill_(7.0)
    reference = copy.deepcopy(model)
    torch.optim.swa_utils.update_bn([b["inputs"] for b in batches], _Inputs(reference))
    reestimate_batchnorm(model, lambda batch: model(inputs=batch["inputs"]), batches)
    assert not model.training
    for (n, got), want in zip(model.named_buffers(), reference.buffers()):
        if got.is_floating_point():
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=n)
    assert [bn.momentum for bn in model.modules() if isinstance(bn, nn.BatchNorm1d)] == [0.1] * 3


def test_connect_reestimates_bn_at_interpolated_points_only():
    a, b = _mlp(0, batchnorm=True), _mlp(1, batchnorm=True)
    for m in (a, b):  # trained-looking running statistics that re-estimation must replace
        for bn in (x for x in m.modules() if isinstance(x, nn.BatchNorm1d)):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
    batches, bn_batches = _digits(), _digits(60, 25)
    res = {reset: connect(make_bundle("a", a, VECTOR), make_bundle("b", b, VECTOR), batches, modes=["full"],
                          alphas=[0.0, 0.5, 1.0], bn_batches=bn_batches, bn_reset=reset, progress=False)
           for reset in (True, False)}
    sa, sb = a.state_dict(), b.state_dict()
    mid = copy.deepcopy(a)
    mid.load_state_dict({k: 0.5 * sa[k] + 0.5 * sb[k] if sa[k].is_floating_point() else sa[k] for k in sa})
    plain_loss = _mean_ce(mid, batches)[0]
    torch.optim.swa_utils.update_bn([x["inputs"] for x in bn_batches], _Inputs(mid))
    mid.eval()
    reset_loss = _mean_ce(mid, batches)[0]
    assert res[True]["modes"]["full"]["loss"][0][1] == pytest.approx(reset_loss, rel=1e-6)  # float32 scoring
    assert res[False]["modes"]["full"]["loss"][0][1] == pytest.approx(plain_loss, rel=1e-6)
    assert reset_loss != pytest.approx(plain_loss, rel=1e-3)
    for j, model in ((0, a), (2, b)):  # the models themselves keep their own statistics
        assert res[True]["modes"]["full"]["loss"][0][j] == pytest.approx(_mean_ce(model, batches)[0], rel=1e-6)


# ---------------------------------------------------------------- weight matching


@pytest.mark.parametrize("kw", [{"residual": False}, {"residual": True}, {"residual": False, "batchnorm": True},
                                {"residual": True, "batchnorm": True}])
def test_permuted_mlp_computes_the_same_function(kw):
    model = _mlp(0, **kw)
    bundle = make_bundle("m", model, VECTOR)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm1d)):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    g = torch.Generator().manual_seed(1)
    units = {p for axes in bundle.stack.permutations.values() for p in axes if p}
    perms = {p: torch.randperm(16, generator=g) for p in units}
    permuted = copy.deepcopy(model)
    permuted.load_state_dict(permute(model.state_dict(), bundle.stack.permutations, perms))
    x = torch.randn(32, 64, dtype=torch.float64)
    torch.testing.assert_close(permuted(inputs=x), model(inputs=x), rtol=1e-12, atol=1e-12)
    assert not torch.equal(permuted.state_dict()["blocks.0.fc.weight"], model.state_dict()["blocks.0.fc.weight"])


@pytest.mark.parametrize("residual", [False, True])
def test_matching_a_permuted_copy_recovers_it_and_zero_barrier(residual):
    a = _mlp(0, residual=residual)
    spec = make_bundle("a", a, VECTOR).stack.permutations
    g = torch.Generator().manual_seed(2)
    perms = {p: torch.randperm(16, generator=g) for axes in spec.values() for p in axes if p}
    b = copy.deepcopy(a)
    b.load_state_dict(permute(a.state_dict(), spec, perms))
    found = weight_matching(spec, dict(a.named_parameters()), dict(b.named_parameters()))
    back = permute(b.state_dict(), spec, found)
    for k, v in a.state_dict().items():
        assert torch.equal(back[k], v), k
    res = connect(make_bundle("a", a, VECTOR), make_bundle("b", b, VECTOR), _digits(), modes=["full", "single"],
                  alphas=[0.0, 0.5, 1.0], match=True, progress=False)
    assert abs(res["matched"]["modes"]["full"]["barrier_loss"][0]) < 1e-12
    assert max(abs(x) for x in res["matched"]["modes"]["single"]["barrier_loss"]) < 1e-12


# ---------------------------------------------------------------- the command


@pytest.mark.parametrize("name,data", [("mlp-plain", "digits"), ("vit-digits", "digits"), ("gpt-tiny", "corpus"),
                                       ("gpt2-tiny", "corpus"), ("bert-tiny", "sentences")])
def test_connect_of_a_model_with_itself_has_zero_barrier(name, data, tmp_path):
    """Every mode runs and writes its figures; a model connected with itself has no barrier. The model is saved
    once and read twice: loading a built-in twice gives two random initialisations, not one model.

    Exactly zero: with equal endpoints every path point is bit for bit the model's own weights (w + α·0, or
    ½w + ½w, at α ∈ {0, ½, 1}; the random direction is scaled to ‖B − A‖ = 0), so each loss equals the endpoints'
    and the excess (1 − α)·L + α·L − L vanishes exactly at these α."""
    model = save_model(load_model(name), tmp_path / name)
    if data == "corpus":
        corpus = tmp_path / "corpus.txt"
        corpus.write_text("Now is the winter of our discontent made glorious summer. " * 30)
        data = str(corpus)
    out = tmp_path / "out"
    res = run(ConnectOptions(model_a=str(model), model_b=str(model), data=data, out=out,
                             mode=["full", "single", "cumulative", "random"], alphas="0,0.5,1", limit=16, batch_size=8,
                             seq_len=32, random_seeds=1, match=name == "mlp-plain", progress=False))
    saved = json.loads((out / "results.json").read_text())
    assert saved["alphas"] == [0.0, 0.5, 1.0]
    n_groups = res["stack_depth"] + 2 if "stack_depth" in res else len(res["groups"])
    runs = [saved["modes"], *([saved["matched"]["modes"]] if name == "mlp-plain" else [])]
    for modes in runs:
        assert set(modes) == {"full", "single", "cumulative", "random"}
        for mode, m in modes.items():
            assert len(m["groups"]) == (1 if mode == "full" else n_groups)
            assert np.shape(m["loss"]) == np.shape(m["error"]) == (len(m["groups"]), 3)
            assert m["barrier_loss"] == m["barrier_error"] == [0.0] * len(m["groups"]), mode
            assert all(row == [row[0]] * 3 for row in m["loss"]), mode  # the path never leaves the model
    assert saved["modes"]["full"]["groups"] == ["all"]
    assert {"barriers.png", "cumulative.png", "excess.png"} <= {p.name for p in out.iterdir()}
    if name == "mlp-plain":
        assert (out / "matched_barriers.png").exists()


# ---------------------------------------------------------------- training: initialisation vs data order


def test_data_seed_changes_the_data_order_but_not_the_initial_weights(tmp_path):
    from fixtures import train_config

    from layerwise.training.trainer import Trainer

    trainers = {key: Trainer(train_config(tmp_path, f"run-{i}", **kw))
                for i, (key, kw) in enumerate({"seed0": {"seed": 0}, "order1": {"seed": 0, "data_seed": 1},
                                               "order0": {"seed": 0, "data_seed": 0}}.items())}
    weights = {k: t.stack.model.state_dict() for k, t in trainers.items()}
    first = {k: next(iter(t._epoch_loader(0)))["labels"] for k, t in trainers.items()}
    for name in weights["seed0"]:
        assert torch.equal(weights["seed0"][name], weights["order1"][name])
    assert not torch.equal(first["seed0"], first["order1"])
    assert torch.equal(first["seed0"], first["order0"])  # data_seed defaults to seed
