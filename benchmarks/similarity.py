"""Benchmark of the layer-similarity engine on random transformer-shaped features; prints one table.

    python benchmarks/similarity.py [--n 10000] [--quick] [--torch-cka-batches K]

Features: 13 layers (embeddings + 12 blocks) of width 768, float32, layer ℓ = layer ℓ-1 + noise
(cumulative sums over layers, so CKA decays with layer distance), generated per batch from a seed so
they can be streamed without being held.
"""

import argparse
import multiprocessing as mp
import resource
import sys
import time
import warnings

import numpy as np
import torch

from layerwise.measures.cka import LinearStats, minibatch_matrix

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


def exact_cka(feats: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    stats = LinearStats()
    for s in range(0, len(feats[0]), CHUNK):
        stats.update([x[s:s + CHUNK] for x in feats])
    return stats.cka(), stats.cka_debiased()


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


def _stream_peak(n: int, q) -> None:
    """Child process: stream n rows in batches into LinearStats; report peak RSS and statistics size."""
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stats = LinearStats()
    for s in range(0, n, CHUNK):
        stats.update(make_batch(s, min(CHUNK, n - s)))
    stats.cka_debiased()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    q.put((peak / 1024, (peak - base) / 1024, sum(t.nbytes for t in stats._tensors()) / 2**20))


def stream_peak(n: int) -> tuple[float, float, float]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_stream_peak, args=(n, q))
    p.start()
    out = q.get()
    p.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="N=2000, small memory runs (smoke test)")
    ap.add_argument("--batch", type=int, default=1024, help="minibatch CKA batch size")
    ap.add_argument("--torch-cka-batches", type=int, default=0,
                    help="run torch-cka on only the first K batches and extrapolate (0: full run)")
    args = ap.parse_args()
    n = 2000 if args.quick else args.n
    mem_ns = (2000, 8000) if args.quick else (10_000, 40_000)
    rows = []
    print(f"threads={torch.get_num_threads()}  layers={L}  width={D}  N={n}  float64", file=sys.stderr)

    feats = make_features(n)
    z = torch.cat(feats, 1).double()
    t_floor, _ = timed(lambda: z.T @ z)
    del z
    t_ours, (m_cka, m_deb) = timed(lambda: exact_cka(feats))
    rows += [("1 floor: dense float64 ZᵀZ (Z = N×9984)", f"{t_floor:.2f} s", ""),
             ("1 ours: exact LinearStats CKA, biased+debiased", f"{t_ours:.2f} s",
              f"{t_ours / t_floor:.2f}× floor (target ≤2×)")]

    # (2) minibatch debiased CKA, ours vs torch-cka.
    nb = -(-n // args.batch)
    k = args.torch_cka_batches or nb
    sub = [x[:min(n, k * args.batch)] for x in feats]
    t_mb, m_mb = timed(lambda: minibatch_matrix(feats, batch_size=args.batch))
    t_mb_sub, m_mb_sub = timed(lambda: minibatch_matrix(sub, batch_size=args.batch))
    t_tc, m_tc = timed(lambda: torch_cka(sub, args.batch))
    est = t_tc * nb / k
    label = "full run" if k == nb else f"measured on {k}/{nb} batches, extrapolated ×{nb / k:.1f}"
    rows += [(f"2 ours: minibatch debiased CKA, batch {args.batch}, 13×13", f"{t_mb:.2f} s", ""),
             (f"2 torch-cka 0.21 (float64), same batches ({label})", f"{est:.1f} s",
              f"ours {est / t_mb:.0f}× faster (target ≥20×)"),
             ("2 max |ours - torch-cka|", f"{np.abs(m_mb_sub - m_tc).max():.1e}", "target ≤1e-6")]

    # (3) naive per-pair reference on a few pairs, extrapolated to the 78 off-diagonal pairs.
    pairs = [(0, 12), (3, 4), (5, 9), (11, 12)]
    t_pairs, vals = timed(lambda: [naive_pair(feats[i], feats[j]) for i, j in pairs])
    t_naive = t_pairs / len(pairs) * 78
    rows += [("3 naive per-pair float64 (4 pairs timed, ×78/4)", f"{t_naive:.1f} s",
              f"ours {t_naive / t_ours:.1f}× faster"),
             ("3 max |ours - naive| on those pairs",
              f"{max(abs(m_cka[i, j] - v) for (i, j), v in zip(pairs, vals)):.1e}", "")]

    for m in mem_ns:
        peak, grow, stat_mb = stream_peak(m)
        rows.append((f"4 streamed exact CKA stats, N={m:,} (fresh process)",
                     f"{stat_mb:.0f} MB stats", f"peak RSS {peak:.0f} MB (+{grow:.0f} MB over start)"))

    w = max(len(r[0]) for r in rows)
    print(f"{'measurement'.ljust(w)}  {'value':>14}  note")
    for name, val, note in rows:
        print(f"{name.ljust(w)}  {val:>14}  {note}")
    print(f"\nCKA[0, 12] = {m_cka[0, 12]:.4f} (biased), {m_deb[0, 12]:.4f} (debiased); "
          f"CKA[5, 6] = {m_cka[5, 6]:.4f}")


if __name__ == "__main__":
    main()
