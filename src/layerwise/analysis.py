"""``layerwise analyze`` and ``layerwise compare``: thin orchestration of capture → measures → report.

One forward pass per batch feeds, at the same time: the streaming linear-CKA statistics (memory
independent of N), the layer-wise readout evaluation, the residual statistics, and a fixed random
subset of samples for measures that need N×N structure. COS needs each layer's global mean first, so
it runs over the kept features, or a second pass when N·ΣD floats exceed ``feature_budget_bytes``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from layerwise.capture import capture, pick_device
from layerwise.data import load_dataset, make_loader
from layerwise.errors import LayerwiseError
from layerwise.evaluate import LayerwiseEval
from layerwise.measures import MEASURES, layer_matrix
from layerwise.measures.cka import LinearStats
from layerwise.measures.cosine import CosineAccumulator
from layerwise.residual import ResidualStats
from layerwise.stack import POOLINGS
from layerwise.zoo import ModelBundle, load_model

STREAMED = ("cos", "cka", "cka_debiased")  # exact over all samples, whatever N
DEFAULT_MEASURES = "cos,cka,cka_debiased"


def parse_measures(spec: str) -> list[str]:
    from layerwise.report import JSON_NAMES

    aliases = {v: k for k, v in JSON_NAMES.items()}
    names = list(MEASURES) if spec.strip() == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    names = [aliases.get(n, n) for n in names]
    unknown = [n for n in names if n not in MEASURES]
    if unknown or not names:
        raise LayerwiseError(f"unknown measure(s) {unknown or spec!r}: choose from {', '.join(MEASURES)} or 'all'")
    return names


def pooled_features(batch, pooling: str | None) -> list[Tensor]:
    """Per-layer (B, D) features; pooling 'all' makes every non-padding token a row."""
    if pooling != "all":
        return [f.float() for f in batch.features(pooling)]
    states = batch.states
    keep = None if states[0].mask is None else states[0].mask.bool()
    return [(s.h[keep] if keep is not None else s.h.flatten(0, 1)).float() for s in states]


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
        size = sum(f.numel() * 4 for f in feats)
        if self.complete and self.bytes + size <= self.budget:
            self.kept.append([f.cpu() for f in feats])
            self.bytes += size
        else:
            self.complete, self.kept = False, []

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
) -> dict:
    """Capture every model's layers over the data and compute the requested measures over all of them
    stacked (models' layers concatenated), plus per-model readout evaluation and residual statistics.
    With ``skip_inapplicable`` (``--measures all``) a measure that cannot run on this data (e.g. CCA with
    fewer samples than features) is skipped with a warning instead of failing the run."""
    stats = LinearStats()
    evals = [LayerwiseEval(b.stack.task) for b in bundles]
    residuals = [ResidualStats() for _ in bundles]
    store = FeatureStore(n_total, sample_cap, seed, feature_budget_bytes)
    for captured, feats in _batches_of(bundles, make_loaders(), device, pooling):
        flat = [f for model_feats in feats for f in model_feats]
        stats.update(flat)
        store.add(flat)
        for ev, res, c, f in zip(evals, residuals, captured, feats):
            ev.update(c)
            res.update(f)
    if stats.n < 2:
        raise LayerwiseError(f"only {stats.n} sample(s): the measures need at least 2 (debiased CKA needs 4)")
    out: dict = {"n_samples": int(stats.n)}
    for name in measures:
        if name == "cka":
            out[name] = stats.cka()
        elif name == "cka_debiased":
            out[name] = stats.cka_debiased()
        elif name == "cos":
            out["cos"], out["cos_per_sample_to_last"] = _cosine(stats, store, bundles, make_loaders, device, pooling)
        else:
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
        raise LayerwiseError("COS needs equal widths across the compared layers: drop 'cos' from --measures "
                             "and use CKA for models of different widths")
    acc = CosineAccumulator(means)
    if store.complete:
        for flat in store.kept:
            acc.update(flat)
    else:  # over budget: a second pass, now that the global means are known
        for _, feats in _batches_of(bundles, make_loaders(), device, pooling):
            acc.update([f for model_feats in feats for f in model_feats])
    return acc.result()


def _prepare(model: str, data: str, split: str, limit: int | None, seed: int, data_dir, pooling: str | None,
             device: str):
    if pooling is not None and pooling not in POOLINGS:
        raise LayerwiseError(f"unknown pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
    dev = pick_device(device)
    bundle = load_model(model)
    bundle.model.to(dev).eval()
    ds = load_dataset(data, split=split, limit=limit, seed=seed, data_dir=data_dir)
    return bundle, ds, dev


def _config(**kwargs) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in kwargs.items()}


def run_analysis(*, model: str, data: str, out: Path, split: str = "test", limit: int | None = None,
                 batch_size: int = 64, pooling: str | None = None, measures: str = DEFAULT_MEASURES,
                 sample_cap: int = 2000, data_dir=None, device: str = "auto", seed: int = 0) -> dict:
    """Everything for one model: similarity matrices, per-layer readout accuracy/loss, residual stats."""
    from layerwise import report

    names = parse_measures(measures)
    bundle, ds, dev = _prepare(model, data, split, limit, seed, data_dir, pooling, device)
    if len(ds) == 0:
        raise LayerwiseError("the data set is empty: check the data path, split and --limit")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = layer_measures([bundle], lambda: [make_loader(ds, bundle.inputs, batch_size)], names, device=dev,
                             pooling=pooling, n_total=len(ds), sample_cap=sample_cap, seed=seed,
                             skip_inapplicable=measures.strip() == "all")
    results = {
        "layers": list(range(bundle.stack.num_layers + 1)),
        **{report.json_name(n): res[n] for n in names if n in res},
        **res["evaluation"][0],
        "residual": res["residual"][0],
        "n_samples": res["n_samples"],
        "warnings": report.unique_messages(caught),
        "config": _config(model=model, data=data, split=split, limit=limit, batch_size=batch_size,
                          pooling=pooling or bundle.stack.feature_pooling, measures=names, sample_cap=sample_cap,
                          device=str(dev), seed=seed, task=bundle.stack.task),
    }
    if "cos" in names:
        results["cos_per_sample_to_last"] = res["cos_per_sample_to_last"]
    report.write_analysis(results, Path(out))
    return results


def run_compare(*, model_a: str, model_b: str, data: str, out: Path, split: str = "test",
                limit: int | None = None, batch_size: int = 64, pooling: str | None = None,
                measures: str = DEFAULT_MEASURES, sample_cap: int = 2000, data_dir=None, device: str = "auto",
                seed: int = 0) -> dict:
    """L_a×L_b matrices between two models' layers on the same inputs (rows: model a)."""
    from layerwise import report

    names = parse_measures(measures)
    a, ds, dev = _prepare(model_a, data, split, limit, seed, data_dir, pooling, device)
    b = load_model(model_b)
    b.model.to(dev).eval()
    if len(ds) == 0:
        raise LayerwiseError("the data set is empty: check the data path, split and --limit")
    la = a.stack.num_layers + 1
    if "cos" in names and a.stack.hidden_size != b.stack.hidden_size:
        raise LayerwiseError(f"COS needs equal widths ({a.stack.hidden_size} vs {b.stack.hidden_size}): "
                             "drop 'cos' from --measures; CKA and the others compare any widths")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaders = lambda: [make_loader(ds, m.inputs, batch_size) for m in (a, b)]  # noqa: E731
        res = layer_measures([a, b], loaders, names, device=dev, pooling=pooling, n_total=len(ds),
                             sample_cap=sample_cap, seed=seed, skip_inapplicable=measures.strip() == "all")
    results = {
        "layers_a": list(range(la)), "layers_b": list(range(b.stack.num_layers + 1)),
        **{report.json_name(n): np.asarray(res[n])[:la, la:] for n in names if n in res},
        "evaluation_a": res["evaluation"][0], "evaluation_b": res["evaluation"][1],
        "n_samples": res["n_samples"],
        "warnings": report.unique_messages(caught),
        "config": _config(model_a=model_a, model_b=model_b, data=data, split=split, limit=limit,
                          batch_size=batch_size, pooling=pooling, measures=names, sample_cap=sample_cap,
                          device=str(dev), seed=seed),
    }
    report.write_compare(results, Path(out))
    return results
