"""Benchmark of the layer-similarity engine on random transformer-shaped features; prints one table.

    python benchmarks/similarity.py [--n 10000] [--quick] [--json] [--torch-cka-batches K]

--quick: N=2000 (memory at 2000 and 8000), a smoke test of about a minute on 2 cores.
--json: after the table, print the figures as one JSON object on the last line of stdout.

torch-cka recomputes every Gram and two N³ products per layer pair, ~45 s per 1024-sample batch here;
by default it runs on the first batch and its full-N time is extrapolated linearly (labelled).

Features: 13 layers (embeddings + 12 blocks) of width 768, float32, layer ℓ = layer ℓ-1 + noise
(cumulative sums over layers, so CKA decays with layer distance), generated per batch from a seed so
they can be streamed without being held.
"""

import argparse
import json
import multiprocessing as mp
import sys
import time
import warnings

import numpy as np
import torch

from layerwise.measures.cka import minibatch_matrix
from layerwise.measures.streaming import LinearStats

L, D, CHUNK = 13, 768, 1000


def make_batch(start: int, size: int, seed: int = 0) -> list[torch.Tensor]:
    """Rows [start, start+size) of every layer; depends only on (seed, start) so batches are reproducible."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + start)
    x = torch.randn(size, D, generator=g) + 0.5
    out = []
    for _ in range(L):
        out.append(x)
        x = x + 0.6 * torch.randn(size, D, generator=g)
    return out


def make_features(n: int) -> list[torch.Tensor]:
    parts = [make_batch(s, min(CHUNK, n - s)) for s in range(0, n, CHUNK)]
    return [torch.cat([p[ell] for p in parts]) for ell in range(L)]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def naive_pair(x: torch.Tensor, y: torch.Tensor) -> float:
    """Per-pair float64 reference: centre both, ‖XᵀY‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)."""
    x, y = x.double() - x.double().mean(0), y.double() - y.double().mean(0)
    return float((x.T @ y).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm()))


def torch_cka(feats: list[torch.Tensor], batch_size: int) -> np.ndarray:
    """torch-cka's CKA.compare on the same features (identity 'layers' fed precomputed features), in float64."""
    from torch.utils.data import DataLoader, TensorDataset
    from torch_cka import CKA

    class Stack(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(torch.nn.Identity() for _ in range(L))

        def forward(self, x):
            return [layer(x[:, i]) for i, layer in enumerate(self.layers)]

    names = [f"layers.{i}" for i in range(L)]
    torch.set_default_dtype(torch.float64)  # its HSIC uses default-dtype ones/zeros; float64 for a fair check
    try:
        c = CKA(Stack(), Stack(), "a", "b", names, names)
        loader = DataLoader(TensorDataset(torch.stack(feats, 1).double()), batch_size=batch_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c.compare(loader, loader)
        return c.export()["CKA"].numpy()
    finally:
        torch.set_default_dtype(torch.float32)


def _peak_rss_mb() -> float:
    """VmHWM (peak RSS of this process image; unlike ru_maxrss it is not inherited across exec). Linux."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def _stream(n: int, q) -> None:
    """Child process: stream n rows, generated per batch, into LinearStats; exact biased + debiased CKA.
    Reports (seconds excluding feature generation, peak RSS, growth over start, statistics MB, CKA matrix)."""
    base, spent = _peak_rss_mb(), 0.0
    stats = LinearStats()
    for s in range(0, n, CHUNK):
        batch = make_batch(s, min(CHUNK, n - s))
        spent += timed(lambda: stats.update(batch))[0]
    t_final, (m, _) = timed(lambda: (stats.cka(), stats.cka_debiased()))
    peak = _peak_rss_mb()
    q.put((spent + t_final, peak, peak - base, sum(x.nbytes for x in stats._tensors()) / 2**20, m))


def stream(n: int) -> tuple:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_stream, args=(n, q))
    p.start()
    out = q.get()
    p.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="N=2000 (memory at 2000 and 8000): smoke test")
    ap.add_argument("--batch", type=int, default=1024, help="minibatch CKA batch size")
    ap.add_argument("--torch-cka-batches", type=int, default=1,
                    help="run torch-cka on the first K batches only and extrapolate (0: full run; "
                         "it takes ~45 s per 1024-sample batch on 2 cores)")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line, last on stdout")
    args = ap.parse_args()
    n = 2000 if args.quick else args.n
    rows = []
    print(f"threads={torch.get_num_threads()}  layers={L}  width={D}  N={n}  float64", file=sys.stderr)

    feats = make_features(n)
    z = torch.cat(feats, 1).double()
    t_floor, _ = timed(lambda: z.T @ z)
    del z
    runs = {m: stream(m) for m in (n, 4 * n)}  # fresh processes: time at N, memory at N and 4N
    t_ours, m_cka = runs[n][0], runs[n][4]
    rows += [("1 floor: dense float64 ZᵀZ (Z = N×9984)", f"{t_floor:.2f} s", ""),
             ("1 ours: exact LinearStats CKA (streamed), biased+debiased", f"{t_ours:.2f} s",
              f"{t_ours / t_floor:.2f}× floor (target ≤2×)")]

    # (2) minibatch debiased CKA, ours vs torch-cka.
    nb = -(-n // args.batch)
    k = min(args.torch_cka_batches, nb) or nb
    sub = [x[:min(n, k * args.batch)] for x in feats]
    t_mb, m_mb = timed(lambda: minibatch_matrix(feats, batch_size=args.batch))
    _, m_mb_sub = timed(lambda: minibatch_matrix(sub, batch_size=args.batch))
    t_tc, m_tc = timed(lambda: torch_cka(sub, args.batch))
    est, d_tc = t_tc * nb / k, float(np.abs(m_mb_sub - m_tc).max())
    label = "full run" if k == nb else f"measured on {k}/{nb} batches, extrapolated ×{nb / k:.1f}"
    rows += [(f"2 ours: minibatch debiased CKA, batch {args.batch}, 13×13", f"{t_mb:.2f} s", ""),
             (f"2 torch-cka 0.21 (float64), same batches ({label})", f"{est:.1f} s",
              f"ours {est / t_mb:.0f}× faster (target ≥20×)"),
             ("2 max |ours - torch-cka|", f"{d_tc:.1e}", "target ≤1e-6")]

    # (3) naive per-pair reference on a few pairs, extrapolated to the 78 off-diagonal pairs.
    pairs = [(0, 12), (3, 4), (5, 9), (11, 12)]
    t_pairs, vals = timed(lambda: [naive_pair(feats[i], feats[j]) for i, j in pairs])
    t_naive = t_pairs / len(pairs) * 78
    d_naive = float(max(abs(m_cka[i, j] - v) for (i, j), v in zip(pairs, vals)))
    rows += [("3 naive per-pair float64 (4 pairs timed, ×78/4)", f"{t_naive:.1f} s",
              f"ours {t_naive / t_ours:.1f}× faster"),
             ("3 max |ours - naive| on those pairs", f"{d_naive:.1e}", "")]

    for m, (_, peak, grow, stat_mb, _) in runs.items():
        rows.append((f"4 streamed exact CKA stats, N={m:,} (fresh process)",
                     f"{stat_mb:.0f} MB stats", f"peak RSS {peak:.0f} MB (+{grow:.0f} MB over start)"))

    w = max(len(r[0]) for r in rows)
    print(f"{'measurement'.ljust(w)}  {'value':>14}  note")
    for name, val, note in rows:
        print(f"{name.ljust(w)}  {val:>14}  {note}")
    print(f"\nlinear CKA[0, 12] = {m_cka[0, 12]:.4f}, CKA[5, 6] = {m_cka[5, 6]:.4f}; "
          f"minibatch CKA[0, 12] = {m_mb[0, 12]:.4f}")
    if args.json:
        print(json.dumps({
            "n": n, "threads": torch.get_num_threads(), "batch": args.batch, "batches": nb, "torch_cka_batches": k,
            "floor_s": t_floor, "ours_exact_s": t_ours, "ours_over_floor": t_ours / t_floor,
            "ours_minibatch_s": t_mb, "torch_cka_s": est, "torch_cka_over_ours": est / t_mb, "max_diff_torch_cka": d_tc,
            "naive_s": t_naive, "naive_over_ours": t_naive / t_ours, "max_diff_naive": d_naive,
            "memory": {str(m): {"stats_mb": r[3], "peak_rss_mb": r[1], "growth_mb": r[2]} for m, r in runs.items()},
        }))


if __name__ == "__main__":
    main()
