"""How far fine-tuning moved each layer's features from the pretrained model's, on the same inputs.

For every layer ℓ = 0..L, with hˡ(x) the example's pooled feature (``LayerStack.features``):
    change_ℓ = mean_x ‖hˡ_ft(x) − hˡ_pre(x)‖ / ‖hˡ_pre(x)‖
and COS_ℓ = COS(hˡ_ft, hˡ_pre), the project's sample-wise cosine of globally centred features
(``measures.cosine``). Both models run in eval mode (``evaluation.capture``) on the same batches.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from layerwise.errors import LayerwiseError
from layerwise.evaluation.capture import capture
from layerwise.measures.cosine import cosine
from layerwise.stack import LayerStack


def relative_change(h_ft: Tensor, h_pre: Tensor) -> Tensor:
    """(N,) ‖h_ft − h_pre‖ / ‖h_pre‖ per row of two (N, D) feature matrices (NaN where ‖h_pre‖ = 0)."""
    h_ft, h_pre = h_ft.double(), h_pre.double()
    norm = h_pre.norm(dim=1)
    return torch.where(norm > 0, (h_ft - h_pre).norm(dim=1) / norm, torch.full_like(norm, float("nan")))


def feature_change(pre: LayerStack, tuned: LayerStack, loader: Iterable[dict[str, Tensor]], *,
                   device: torch.device | str | None = None, progress: bool = False) -> dict[str, list[float]]:
    """Per layer 0..L: ``relative`` (mean relative change) and ``cos`` (COS against the pretrained layer).

    ``loader`` is iterated twice (once per model) and must yield the same batches each time (no shuffling).
    Features are kept in memory (N × D per layer, float32) for COS, which centres by the global mean. Under a
    launcher each process captures its contiguous shard of the batches and the features are gathered in data-set
    order (``layerwise.parallel``) before either measure.
    """
    from layerwise.parallel import gather_rows, shard_list

    if pre.num_layers != tuned.num_layers or pre.hidden_size != tuned.hidden_size:
        raise LayerwiseError(f"the fine-tuned model ({tuned.num_layers} layers of {tuned.hidden_size}) does not "
                             f"match the pretrained one ({pre.num_layers} of {pre.hidden_size}): compare a model with "
                             "its own pretrained start")
    pooling = pre.feature_pooling
    feats: dict[str, list[list[Tensor]]] = {"pre": [[] for _ in range(pre.num_layers + 1)],
                                           "ft": [[] for _ in range(pre.num_layers + 1)]}
    loader = shard_list(list(loader))
    for key, stack in (("pre", pre), ("ft", tuned)):
        for batch in capture(stack, loader, device=device, progress=progress, desc=f"features ({key})") if loader \
                else ():
            for ell, f in enumerate(batch.features(pooling)):
                feats[key][ell].append(f.float().cpu())
    out: dict[str, list[float]] = {"relative": [], "cos": []}
    for ell in range(pre.num_layers + 1):
        h_pre, h_ft = (gather_rows(torch.cat(feats[k][ell]) if loader else None) for k in ("pre", "ft"))
        if h_pre.shape != h_ft.shape:
            raise LayerwiseError("the two passes over the data gave different batches: pass a loader without "
                                 "shuffling")
        out["relative"].append(float(relative_change(h_ft, h_pre).nanmean()))
        out["cos"].append(cosine(h_ft, h_pre))
    return out
