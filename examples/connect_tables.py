"""Print the README tables of ``examples/evidence_connect.sh`` from its ``connect`` output folders.

    python examples/connect_tables.py [ROOT=runs/connect]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def fmt(x: float) -> str:
    return f"{x:.3f}"


def table(name: str, res: dict) -> list[str]:
    """One row per variant: the endpoints, the full-model barrier and the per-group barriers (loss / error)."""
    m, e = res["modes"], res["endpoints"]
    groups = m["single"]["groups"]
    head = f"| {name} | ℒ_A / ℒ_B | err_A / err_B | full | " + " | ".join(groups) + " |"
    rows = [head, "|" + "---|" * (4 + len(groups))]
    ends = f"{fmt(e['loss_a'])} / {fmt(e['loss_b'])} | {fmt(e['error_a'])} / {fmt(e['error_b'])}"
    for label, v in (("single (rest A)", m["single"]), ("single (rest B)", m["single"]["rest_from_b"])):
        for metric in ("loss", "error"):
            cells = " | ".join(fmt(x) for x in v[f"barrier_{metric}"])
            rows.append(f"| {label}, {metric} barrier | {ends} | {fmt(m['full'][f'barrier_{metric}'][0])} | {cells} |")
    if "random" in m:
        cells = " | ".join(fmt(x) for x in m["random"]["barrier_loss"])
        rows.append(f"| random direction, loss barrier | {ends} | | {cells} |")
    return rows


def cumulative(name: str, res: dict) -> list[str]:
    c = res["modes"]["cumulative"]
    out = [f"| {name} cumulative | " + " | ".join(c["groups"]) + " |", "|" + "---|" * (1 + len(c["groups"]))]
    out.append("| shallow→deep loss barrier | " + " | ".join(fmt(x) for x in c["barrier_loss"]) + " |")
    d = c["deep_to_shallow"]
    out.append("| (deep→shallow, path) | " + " | ".join(d["groups"]) + " |")
    out.append("| deep→shallow loss barrier | " + " | ".join(fmt(x) for x in d["barrier_loss"]) + " |")
    return out


def main(root: Path) -> None:
    for folder in sorted(root.glob("out-*")):
        res = json.loads((folder / "results.json").read_text())
        print(f"\n### {folder.name} ({res['model_a']} vs {res['model_b']}, {res['data']} {res['split']}, "
              f"{res['targets']} targets, α grid {len(res['alphas'])} points)\n")
        print("\n".join(table("plain", res)))
        if "matched" in res:
            print()
            print("\n".join(table("weight-matched", res["matched"])))
        if "cumulative" in res["modes"]:
            print()
            print("\n".join(cumulative("plain", res)))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/connect"))
