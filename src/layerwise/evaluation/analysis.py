"""Similarity across layers, with the readout evaluation and residual statistics of the same pass.

One forward pass per batch feeds, at the same time: the streaming linear-CKA statistics (memory
independent of N), the layer-wise readout evaluation, the residual statistics, and a fixed random
subset of samples for measures that need N×N structure. COS needs each layer's global mean first, so
it runs over the kept features, or a second pass when N·ΣD floats exceed ``feature_budget_bytes``.
"""

from __future__ import annotations

import warnings
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from layerwise.checkpoints import ModelBundle
from layerwise.data import LayerwiseDataset
from layerwise.errors import LayerwiseError
from layerwise.evaluation.capture import capture, model_loader
from layerwise.evaluation.per_layer import LayerScores
from layerwise.training.scores import task_metric_name
from layerwise.evaluation.probing import probe_layers
from layerwise.measures import json_name, layer_matrix
from layerwise.measures.residual import ResidualStats
from layerwise.measures.streaming import CosineAccumulator, LinearStats
from layerwise.stack import POOLINGS


def _at_least_float32(x: Tensor) -> Tensor:
    """Half-precision features widened to float32; float64 ones (a float64 model) kept."""
    return x if x.dtype == torch.float64 else x.float()


def pooled_features(batch, pooling: str | None) -> list[Tensor]:
    """Per-layer (B, D) features; pooling 'all' makes every non-padding token a row."""
    if pooling != "all":
        return [_at_least_float32(f) for f in batch.features(pooling)]
    states = batch.states
    keep = None if states[0].mask is None else states[0].mask.bool()
    return [_at_least_float32(s.h[keep] if keep is not None else s.h.flatten(0, 1)) for s in states]


def check_finite(feats: list[Tensor]) -> None:
    for ell, x in enumerate(feats):
        if not torch.isfinite(x).all():
            raise LayerwiseError(f"layer {ell} features contain NaN/Inf: check the model weights and inputs "
                                 "(e.g. run in float32, lower the learning rate of the checkpoint)")


class FeatureStore:
    """Keeps the pooled features of the first pass, in budget; plus a fixed random subset for N×N measures."""

    def __init__(self, n_total: int, sample_cap: int, seed: int, budget_bytes: int):
        self.budget, self.kept, self.bytes, self.complete = budget_bytes, [], 0, True
        perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))
        self.subset_mask = torch.zeros(n_total, dtype=torch.bool)
        self.subset_mask[perm[:sample_cap]] = True
        self.subset: list[list[Tensor]] = []
        self.offset = 0

    def add(self, feats: list[Tensor]) -> None:
        b = feats[0].shape[0]
        rows = self.subset_mask[self.offset:self.offset + b].nonzero().squeeze(1)
        self.offset += b
        if len(rows):
            self.subset.append([f[rows.to(f.device)].cpu() for f in feats])
        size = sum(f.numel() * f.element_size() for f in feats)
        if self.complete and self.bytes + size <= self.budget:
            self.kept.append([f.cpu() for f in feats])
            self.bytes += size
        else:
            self.complete, self.kept = False, []

    def gather(self) -> None:
        """The subset rows of every process, in data-set order (``layerwise.parallel``; a process may hold none)."""
        from layerwise.parallel import gather_list

        mine = [torch.cat(layer) for layer in zip(*self.subset)] if self.subset else None
        parts = [p for p in gather_list([mine]) if p is not None]
        self.subset = [[torch.cat(layer) for layer in zip(*parts)]] if parts else []

    def subset_features(self) -> list[Tensor]:
        return [torch.cat(layer) for layer in zip(*self.subset)] if self.subset else []


def _batches_of(bundles: list[ModelBundle], loaders, device, pooling) -> Iterator[list[list[Tensor]]]:
    """Per batch, each model's per-layer features (models see the same samples in the same order)."""
    streams = [capture(b.stack, loader, device=device, progress=(i == 0), desc=f"capture {b.name}")
               for i, (b, loader) in enumerate(zip(bundles, loaders))]
    for captured in zip(*streams):
        feats = [pooled_features(c, pooling) for c in captured]
        for f in feats:
            check_finite(f)
        yield captured, feats


def layer_measures(
    bundles: list[ModelBundle],
    make_loaders,
    measures: list[str],
    *,
    device: torch.device,
    pooling: str | None,
    n_total: int,
    sample_cap: int,
    seed: int,
    feature_budget_bytes: int = 2 << 30,
    skip_inapplicable: bool = False,
    metrics: Sequence[str] | None = None,
    lens=None,
) -> dict:
    """Capture every model's layers over the data and compute the requested measures over all of them
    stacked (models' layers concatenated), plus per-model readout evaluation and residual statistics.
    With ``skip_inapplicable`` (``measures="all"``) a measure that cannot run on this data (e.g. CCA with
    fewer samples than features) is skipped with a warning instead of failing the run.

    Data-parallel (``layerwise.parallel``): ``make_loaders`` gives this process's shard; the sums are reduced and
    the per-sample outputs gathered in data-set order before any measure is computed, so every process computes
    the results of the whole data set."""
    from layerwise.parallel import all_true, split_record

    stats = LinearStats()
    evals = [LayerScores(b.stack.task, metrics, lens) for b in bundles]  # the readouts through ``lens``
    residuals = [ResidualStats() for _ in bundles]
    store = FeatureStore(n_total, sample_cap, seed, feature_budget_bytes)
    loaders = make_loaders()
    store.offset = getattr(loaders[0], "first_sample", 0)  # the subset is drawn over the whole data set
    for captured, feats in _batches_of(bundles, loaders, device, pooling):
        flat = [f for model_feats in feats for f in model_feats]
        stats.update(flat)
        store.add(flat)
        for ev, res, c, f in zip(evals, residuals, captured, feats):
            ev.update(c.stack, c.states, c.labels)
            res.update(f)
    split = split_record(getattr(loaders[0], "n_local", stats.n))
    stats.all_reduce()
    for acc in (*evals, *residuals):
        acc.all_reduce()
    store.gather()
    store.complete = all_true(store.complete)
    if stats.n < 2:
        raise LayerwiseError(f"only {stats.n} sample(s): the measures need at least 2 (debiased CKA needs 4)")
    out: dict = {"n_samples": int(stats.n), **split}
    for name in measures:
        if name == "cka":
            out[name] = stats.cka()
        elif name == "cka_debiased":
            out[name] = stats.cka_debiased()
        elif name == "cos":
            out["cos"], out["cos_per_sample_to_last"] = _cosine(stats, store, bundles, make_loaders, device, pooling)
        else:
            if stats.n > sample_cap:  # only COS and linear CKA are streamed over every sample
                warnings.warn(f"{name} computed on a random subset of {sample_cap} of {stats.n} samples (seed {seed}): "
                              "raise the sample cap to use them all", stacklevel=2)
            try:
                out[name] = layer_matrix(name, store.subset_features(), sample_cap=sample_cap, seed=seed)
            except LayerwiseError as e:
                if not skip_inapplicable:
                    raise
                warnings.warn(f"{name} skipped: {e}", stacklevel=2)
    out["evaluation"] = [ev.result() for ev in evals]
    out["residual"] = [res.result() for res in residuals]
    return out


def _cosine(stats, store, bundles, make_loaders, device, pooling):
    means = stats.means()
    if len({m.shape[0] for m in means}) > 1:
        raise LayerwiseError("COS needs equal widths across the compared layers: drop 'cos' from `measures` "
                             "and use CKA for models of different widths", option="measures")
    acc = CosineAccumulator(means)
    if store.complete:
        for flat in store.kept:
            acc.update(flat)
    else:  # over budget: a second pass, now that the global means are known
        for _, feats in _batches_of(bundles, make_loaders(), device, pooling):
            acc.update([f for model_feats in feats for f in model_feats])
    return acc.all_reduce().result()


def _check_pooling(pooling: str | None) -> None:
    if pooling is not None and pooling not in POOLINGS:
        raise LayerwiseError(f"unknown pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")


def analyze(bundle: ModelBundle, ds: LayerwiseDataset, measures: list[str], *, batch_size: int = 64,
            pooling: str | None = None, sample_cap: int = 2000, seed: int = 0, device: torch.device | None = None,
            skip_inapplicable: bool = False, probe_train: LayerwiseDataset | None = None, probe_cv: int = 3,
            lens=None) -> dict:
    """Everything for one model: similarity matrices, per-layer readout loss, accuracy and the task's metrics
    (``metric`` names its own), residual statistics, and with ``probe_train`` (labelled) the per-layer probe
    accuracy and NC1 of ``evaluation.probing`` on the same pooled features (a regression task: the ridge probe's
    Pearson and Spearman correlations per layer).

    The per-layer readout metrics read every layer through ``lens`` (a ``stack.Lens``; None: the logit lens).
    Warnings (undefined layers, subsampling) are raised as Python warnings; results hold no file names.
    """
    _check_pooling(pooling)
    if len(ds) == 0:
        raise LayerwiseError("the data set is empty: check the data path, split and `limit`")
    device = device or next(bundle.model.parameters()).device
    res = layer_measures([bundle], lambda: [model_loader(bundle, ds, batch_size, shard=True)], measures, device=device,
                         pooling=pooling, n_total=len(ds), sample_cap=sample_cap, seed=seed,
                         skip_inapplicable=skip_inapplicable, metrics=ds.metrics, lens=lens)
    results = {
        "layers": list(range(bundle.stack.num_layers + 1)),
        **{json_name(n): res[n] for n in measures if n in res},
        **res["evaluation"][0],
        "residual": res["residual"][0],
        "n_samples": res["n_samples"], "world_size": res["world_size"], "rank_samples": res["rank_samples"],
    }
    if "cos" in measures:
        results["cos_per_sample_to_last"] = res["cos_per_sample_to_last"]
    if res["evaluation"][0]:
        results["metric"] = task_metric_name(bundle.stack.task, ds.metrics)
    if probe_train is not None:  # a regression task gets the ridge probe (Pearson, Spearman), without NC1
        if ds.labels is None:
            warnings.warn(f"probe and NC1 skipped: {ds.name} is unlabelled", stacklevel=2)
        else:
            results.update(probe_layers(bundle, probe_train, ds, pooling=pooling, batch_size=batch_size,
                                        device=device, cv=probe_cv, seed=seed))
    return results


def compare(a: ModelBundle, b: ModelBundle, ds: LayerwiseDataset, measures: list[str], *, batch_size: int = 64,
            pooling: str | None = None, sample_cap: int = 2000, seed: int = 0, device: torch.device | None = None,
            skip_inapplicable: bool = False) -> dict:
    """L_a × L_b matrices between two models' layers on the same inputs (rows: model a)."""
    _check_pooling(pooling)
    if len(ds) == 0:
        raise LayerwiseError("the data set is empty: check the data path, split and `limit`")
    if "cos" in measures and a.stack.hidden_size != b.stack.hidden_size:
        raise LayerwiseError(f"COS needs equal widths ({a.stack.hidden_size} vs {b.stack.hidden_size}): "
                             "drop 'cos' from `measures`; CKA and the others compare any widths", option="measures")
    device = device or next(a.model.parameters()).device
    la = a.stack.num_layers + 1
    res = layer_measures([a, b], lambda: [model_loader(m, ds, batch_size, shard=True) for m in (a, b)], measures,
                         device=device, pooling=pooling, n_total=len(ds), sample_cap=sample_cap, seed=seed,
                         skip_inapplicable=skip_inapplicable)
    return {
        "layers_a": list(range(la)), "layers_b": list(range(b.stack.num_layers + 1)),
        **{json_name(n): np.asarray(res[n])[:la, la:] for n in measures if n in res},
        "evaluation_a": res["evaluation"][0], "evaluation_b": res["evaluation"][1],
        "n_samples": res["n_samples"], "world_size": res["world_size"], "rank_samples": res["rank_samples"],
    }
