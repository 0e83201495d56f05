"""Features from a half-precision forward pass (bf16 / fp16), measured against float32 on a small subset.

The accumulators stay float64 whatever the forward pass runs in (``measures.streaming.LinearStats`` casts each
batch), so what half precision changes is the features themselves. ``precision_gap`` runs the first batch
through the float32 model and through its half-precision copy and reports

    feature gap  = max_ℓ ‖F_ℓ^half − F_ℓ^32‖_F / ‖F_ℓ^32‖_F      (relative, per layer ℓ)
    CKA gap      = max_{ℓ,m} |CKA(F_ℓ, F_m)^half − CKA(F_ℓ, F_m)^32|   (linear CKA, float64)

so a user sees how far the half-precision analysis may be from the float32 one before reading it.
"""

from __future__ import annotations

import torch

from layerwise.data.batches import to_device
from layerwise.measures.streaming import LinearStats

HALF = {"bf16": torch.bfloat16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "float16": torch.float16}


@torch.no_grad()
def pooled_features(stack, batch: dict, pooling: str | None) -> list[torch.Tensor]:
    """Every layer's pooled feature of one batch, as float64."""
    stack.eval()
    return [stack.features(s, pooling).double() for s in stack.states(batch)]


def precision_gap(ref_stack, half_stack, batch: dict, half: torch.dtype, pooling: str | None = None,
                  device: torch.device | str = "cpu") -> dict:
    """The feature gap and the CKA gap (module docstring) of ``half_stack`` (the model in ``half``) against
    ``ref_stack`` (float32) on one batch; the layer (pair) where each is largest."""
    ref = pooled_features(ref_stack, to_device(batch, device), pooling)
    cast = {k: v.to(half) if k != "labels" and v.is_floating_point() else v for k, v in batch.items()}
    low = pooled_features(half_stack, to_device(cast, device), pooling)
    rel = [float((a - b).norm() / b.norm().clamp_min(1e-300)) for a, b in zip(low, ref)]
    cka_ref, cka_low = LinearStats.of(ref).cka(), LinearStats.of(low).cka()
    gap = abs(cka_low - cka_ref)
    pair = divmod(int(gap.argmax()), gap.shape[1])
    layer = max(range(len(rel)), key=rel.__getitem__)
    return {"samples": int(ref[0].shape[0]), "feature_gap": rel[layer], "feature_gap_layer": layer,
            "cka_gap": float(gap.max()), "cka_gap_layers": list(pair)}


def precision_message(name: str, gap: dict) -> str:
    """The warning a half-precision run carries into its results."""
    i, j = gap["cka_gap_layers"]
    return (f"{name} forward pass: on {gap['samples']} samples its features differ from float32 by up to "
            f"{gap['feature_gap']:.2%} (relative, layer {gap['feature_gap_layer']}) and linear CKA by up to "
            f"{gap['cka_gap']:.2g} (layers {i} and {j}); the accumulators are float64; `dtype` float32 gives the "
            "float32 figures")
