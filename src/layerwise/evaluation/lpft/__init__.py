"""LP-FT's mathematics (Tomihari & Sato, NeurIPS 2024): ``ntk`` (the eNTK's head and backbone parts, K_pt and
K_ft, and their kernel-regression accuracies), ``feature_change`` (per layer, against the pretrained model) and
``head`` (head norms, the classifier and memory checks, the eNTK of a model at the start of fine-tuning).
Calibration is ``evaluation.calibration``; the runs and their comparison are ``commands.lpft``."""

from layerwise.evaluation.lpft.feature_change import feature_change, relative_change
from layerwise.evaluation.lpft.head import check_classifier, check_ntk_memory, head_norms, ntk_at_start

__all__ = ["check_classifier", "check_ntk_memory", "feature_change", "head_norms", "ntk_at_start", "relative_change"]
