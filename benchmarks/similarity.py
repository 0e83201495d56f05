"""Benchmark of the layer-similarity engine on random transformer-shaped features; prints one table.

    python benchmarks/similarity.py [--part all|engine|scale] [--n 10000] [--quick] [--json] [--torch-cka-batches K]

--part engine (1-4): the engine at width 768 against the dense floor, torch-cka and the naive reference.
--part scale (5-6, docs/scaling.md): streamed exact linear CKA over N = 1,000,000 samples of 13 layers at
  d = 128 (statistics 1,664 wide), generated chunk by chunk and never held, with peak memory at N = 10k and
  1M (``memory_ratio_1m_vs_10k``) and samples/s; then 13 layers at d = 768, N = 20,000 split over 2 processes
  (torch.distributed all_reduce of the accumulators, gloo) against 1 process, 1 thread each
  (``two_process_speedup``); the load average before and after, since other work on the machine slows both.
--quick: small N everywhere (engine N=2000; scale 2k/20k and N=2000 for the 2-process case), still printing
  both keys: a smoke test of a few minutes on 2 cores.
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
import os
import sys
import time
import warnings

import numpy as np
import torch

from layerwise.measures.cka import minibatch_matrix
from layerwise.measures.streaming import LinearStats

L, D, CHUNK = 13, 768, 1000


def make_batch(start: int, size: int, seed: int = 0, d: int = D) -> list[torch.Tensor]:
    """Rows [start, start+size) of every layer, width d; depends only on (seed, start, d) so batches are
    reproducible and any process can generate its own share."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + start)
    x = torch.randn(size, d, generator=g) + 0.5
    out = []
    for _ in range(L):
        out.append(x)
        x = x + 0.6 * torch.randn(size, d, generator=g)
    return out


def stat_tensors(stats: LinearStats) -> list[torch.Tensor]:
    """The accumulators of a LinearStats (all additive over samples)."""
    return [stats.sums, *stats.gram, stats.zs, stats.ss, stats.s]


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
    q.put((spent + t_final, peak, peak - base, sum(x.nbytes for x in stat_tensors(stats)) / 2**20, m))


def stream(n: int) -> tuple:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_stream, args=(n, q))
    p.start()
    out = q.get()
    p.join()
    return out


# ---------------------------------------------------------------- scaling out (docs/scaling.md)

SCALE_D, WIDE_D = 128, 768  # N = 1M at 13 × 128 (statistics 1,664 wide); the 2-process case at 13 × 768


def _stream_scale(n: int, d: int, threads: int, q) -> None:
    """Child process: stream n rows of width d, generated chunk by chunk and never held, into LinearStats;
    (seconds including generation, peak RSS MB, growth over start MB, statistics MB, CKA[0, L-1])."""
    torch.set_num_threads(threads)
    base, t0 = _peak_rss_mb(), time.perf_counter()
    stats = LinearStats()
    for s in range(0, n, CHUNK):
        stats.update(make_batch(s, min(CHUNK, n - s), d=d))
    m = stats.cka()
    seconds, peak = time.perf_counter() - t0, _peak_rss_mb()
    q.put((seconds, peak, peak - base, sum(x.nbytes for x in stat_tensors(stats)) / 2**20, float(m[0, -1])))


def _data_parallel(rank: int, world: int, n: int, d: int, port: int, q) -> None:
    """One of ``world`` processes (1 thread each): its share of the chunks (chunk k goes to rank k mod world),
    the accumulators summed by torch.distributed's all_reduce (gloo), then CKA; rank 0 reports
    (seconds from the start of the stream to the reduced matrix, the matrix)."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    dist.barrier()
    t0 = time.perf_counter()
    stats = LinearStats()
    for s in range(rank * CHUNK, n, world * CHUNK):
        stats.update(make_batch(s, min(CHUNK, n - s), d=d))
    for t in stat_tensors(stats):
        dist.all_reduce(t)
    count = torch.tensor([float(stats.n)], dtype=torch.float64)
    dist.all_reduce(count)
    stats.n = int(count.item())
    m = stats.cka()
    seconds = time.perf_counter() - t0
    if rank == 0:
        q.put((seconds, m))
    dist.destroy_process_group()


def data_parallel(world: int, n: int, d: int) -> tuple[float, np.ndarray]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_data_parallel, args=(r, world, n, d, port, q)) for r in range(world)]
    for p in procs:
        p.start()
    out = q.get()
    for p in procs:
        p.join()
    return out


def run_child(target, *args):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    out = q.get()
    p.join()
    return out


def scale_out(quick: bool, threads: int) -> dict:
    """Streamed exact CKA at N = 10k and 1M (d = 128, fresh processes: peak memory must not grow with N), and the
    d = 768, N = 20,000 case split over 2 processes against 1 (1 thread each)."""
    n_small, n_large = (2_000, 20_000) if quick else (10_000, 1_000_000)
    n_dp = 2_000 if quick else 20_000
    load_before = os.getloadavg()
    small = run_child(_stream_scale, n_small, SCALE_D, threads)
    large = run_child(_stream_scale, n_large, SCALE_D, threads)
    t1, m1 = data_parallel(1, n_dp, WIDE_D)
    t2, m2 = data_parallel(2, n_dp, WIDE_D)
    load_after = os.getloadavg()
    rows = [(f"5 streamed exact CKA, 13×{SCALE_D}, N={m:,} (fresh process, {threads} thread)",
             f"{r[0]:.1f} s", f"{m / r[0]:,.0f} samples/s, peak RSS {r[1]:.0f} MB (+{r[2]:.0f} MB), stats {r[3]:.1f} MB")
            for m, r in ((n_small, small), (n_large, large))]
    rows += [(f"5 peak memory N={n_large:,} / N={n_small:,}", f"{large[1] / small[1]:.3f}", "target ≤ 1.05"),
             (f"6 13×{WIDE_D}, N={n_dp:,}: 1 process / 2 processes (1 thread each, gloo all_reduce)",
              f"{t1:.1f} / {t2:.1f} s", f"speed-up {t1 / t2:.2f}× (target ≥ 1.7×; load average "
              f"{load_before[0]:.1f} → {load_after[0]:.1f} on {os.cpu_count()} cores)"),
             ("6 max |CKA 2 processes - CKA 1 process|", f"{float(np.abs(m1 - m2).max()):.1e}", "")]
    return {"rows": rows, "json": {
        "memory_ratio_1m_vs_10k": large[1] / small[1], "two_process_speedup": t1 / t2,
        "stream": {"d": SCALE_D, "layers": L, "stats_width": L * SCALE_D, "threads": threads, "chunk": CHUNK,
                   **{str(m): {"seconds": r[0], "samples_per_s": m / r[0], "peak_rss_mb": r[1], "growth_mb": r[2],
                               "stats_mb": r[3], "cka_0_last": r[4]} for m, r in ((n_small, small), (n_large, large))}},
        "two_process": {"d": WIDE_D, "n": n_dp, "seconds_1": t1, "seconds_2": t2,
                        "max_diff": float(np.abs(m1 - m2).max())},
        "load_average_before": list(load_before), "load_average_after": list(load_after), "cpu_count": os.cpu_count(),
    }}


def engine(args) -> dict:
    """The similarity engine at width 768: exact streamed CKA against the dense floor, minibatch CKA against
    torch-cka, the naive per-pair reference, memory at N and 4N."""
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

    print(f"\nlinear CKA[0, 12] = {m_cka[0, 12]:.4f}, CKA[5, 6] = {m_cka[5, 6]:.4f}; "
          f"minibatch CKA[0, 12] = {m_mb[0, 12]:.4f}", file=sys.stderr)
    return {"rows": rows, "json": {
        "n": n, "threads": torch.get_num_threads(), "batch": args.batch, "batches": nb, "torch_cka_batches": k,
        "floor_s": t_floor, "ours_exact_s": t_ours, "ours_over_floor": t_ours / t_floor,
        "ours_minibatch_s": t_mb, "torch_cka_s": est, "torch_cka_over_ours": est / t_mb, "max_diff_torch_cka": d_tc,
        "naive_s": t_naive, "naive_over_ours": t_naive / t_ours, "max_diff_naive": d_naive,
        "memory": {str(m): {"stats_mb": r[3], "peak_rss_mb": r[1], "growth_mb": r[2]} for m, r in runs.items()},
    }}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="small N everywhere: smoke test of a few minutes")
    ap.add_argument("--part", choices=("all", "engine", "scale"), default="all",
                    help="engine: the 768-wide engine comparisons; scale: N = 1M streaming and 2 processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the streaming runs of the scale part")
    ap.add_argument("--batch", type=int, default=1024, help="minibatch CKA batch size")
    ap.add_argument("--torch-cka-batches", type=int, default=1,
                    help="run torch-cka on the first K batches only and extrapolate (0: full run; "
                         "it takes ~45 s per 1024-sample batch on 2 cores)")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line, last on stdout")
    args = ap.parse_args()
    parts = {}
    if args.part in ("all", "engine"):
        parts["engine"] = engine(args)
    if args.part in ("all", "scale"):
        parts["scale"] = scale_out(args.quick, args.threads)
    rows = [r for part in parts.values() for r in part["rows"]]
    w = max(len(r[0]) for r in rows)
    print(f"{'measurement'.ljust(w)}  {'value':>14}  note")
    for name, val, note in rows:
        print(f"{name.ljust(w)}  {val:>14}  {note}")
    if args.json:
        figures = {"quick": args.quick, **parts.get("engine", {}).get("json", {})}
        if "scale" in parts:
            figures.update(parts["scale"]["json"])
        print(json.dumps(figures, allow_nan=False))


if __name__ == "__main__":
    main()
