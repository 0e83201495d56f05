"""``compare``: L_a × L_b similarity matrices between two models' layers on the same inputs (results.json and
one heatmap per measure)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import PositiveInt

from layerwise.commands.analyze import DEFAULT_MEASURES, check_labels, check_pooling, load_checked
from layerwise.commands.common import DTYPES, CommandOptions, Folder, with_warnings
from layerwise.parallel import open_folder, rank0

OUTPUTS = ("results.json", "heatmap_*.png")


class CompareOptions(CommandOptions):
    """The options of ``compare``."""

    model_a: str
    model_b: str
    data: str = "sentences"
    out: Folder = Path("runs/compare")
    split: str = "test"
    limit: PositiveInt | None = None
    batch_size: PositiveInt = 64
    pooling: str | None = None
    measures: str = DEFAULT_MEASURES
    sample_cap: PositiveInt = 2000
    data_dir: Folder | None = None
    device: str = "auto"
    seed: int = 0
    dtype: Literal[DTYPES] = "float32"  # type: ignore[valid-type]
    overwrite: bool = False


def run(options: CompareOptions) -> dict:
    """Measure every layer of ``model_a`` against every layer of ``model_b``; write and return the results."""
    o = options
    folder = open_folder(Path(o.out), "compare", overwrite=o.overwrite, outputs=OUTPUTS)
    from layerwise.data import load_dataset  # after the checks: a bad option is answered without loading torch
    from layerwise.device import pick_device
    from layerwise.parallel import local_device
    from layerwise.evaluation import compare
    from layerwise.measures import parse_measures
    from layerwise.report.writers import write_compare

    names, dev = parse_measures(o.measures), local_device(pick_device(o.device))
    ds = load_dataset(o.data, split=o.split, limit=o.limit, seed=o.seed, data_dir=o.data_dir)
    (a, gap_a), (b, gap_b) = load_checked(o.model_a, dev, o, ds), load_checked(o.model_b, dev, o, ds)
    for bundle, name in ((a, o.model_a), (b, o.model_b)):
        check_pooling(o.pooling, bundle, name)
        check_labels(ds, bundle, name)
    results = with_warnings(compare, a, b, ds, names, batch_size=o.batch_size, pooling=o.pooling,
                            sample_cap=o.sample_cap, seed=o.seed, device=dev,
                            skip_inapplicable=o.measures.strip() == "all")
    results["config"] = dict(model_a=o.model_a, model_b=o.model_b, data=o.data, split=o.split, limit=o.limit,
                             batch_size=o.batch_size, pooling=o.pooling, measures=names, sample_cap=o.sample_cap,
                             device=str(dev), seed=o.seed, dtype=o.dtype)
    gaps = {"model_a": gap_a, "model_b": gap_b}
    if gap_a is not None:
        from layerwise.evaluation.precision import precision_message

        results["precision"] = gaps
        results["warnings"] += [f"{key}: {precision_message(o.dtype, gap)}" for key, gap in gaps.items()]
    rank0(write_compare, results, Path(o.out))  # rank 0 alone writes; every process holds the same results
    rank0(folder.record)
    return results
