"""One figure and a markdown table from several ``layerwise generate --early-exit --sweep`` runs.

    python examples/token_exit_tables.py RUN_DIR [RUN_DIR …] --figure docs/figures/alignedgpt/token_exit.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from layerwise.report.figures import token_exit_tradeoff


def table(runs: list[dict]) -> str:
    head = ("| model | τ | measured speedup | L / mean exit | weights touched (theory) | mean exit layer | "
            "full-model perplexity | coherence | diversity (words) |\n" + "| --- " * 9 + "|")
    lines = [head]
    for r in runs:
        name = Path(r["model"]).name
        for row in [r["full"], *r["sweep"]]:
            t = "full" if row["threshold"] is None else f"{row['threshold']:g}"
            lines.append(f"| {name} | {t} | {row['speedup']:.2f}× | {row['layer_speedup']:.2f}× | "
                         f"{row['compute_speedup']:.2f}× | {row['mean_exit_layer']:.2f} | {row['perplexity']:.1f} | "
                         f"{row['coherence']:.3f} | {row['diversity']['words']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--figure", type=Path, required=True)
    args = ap.parse_args()
    runs = [json.loads((d / "results.json").read_text()) for d in args.runs]
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    token_exit_tradeoff(runs, args.figure)
    print(table(runs))
    for r in runs:
        print(f"\n{Path(r['model']).name}: exit histograms (layers 1..{r['num_layers']})")
        for row in r["sweep"]:
            print(f"  τ={row['threshold']:g}: {row['exit_histogram']}")


if __name__ == "__main__":
    main()
