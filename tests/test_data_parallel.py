"""Data-parallel passes (``layerwise.parallel``): every command that passes over data, run by 2 CPU processes
(gloo, under ``torchrun``), gives the results of 1 process: float64 statistics within 1e-10, counts,
exit layers, predictions and greedy texts identical, with ``world_size`` and each rank's sample count recorded.

The reference is the same pass in one process (this one, one thread, as each launched process runs). Each data
set is cut into a number of batches that 2 does not divide, so the second shard is ragged. One launch runs every
case (``data_parallel_script.py``), to pay the two interpreters' start once.
"""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures import ROOT, free_port, real_data_dir, subprocess_env

sys.path.insert(0, str(Path(__file__).parent))
import data_parallel_script as script  # noqa: E402

TOL = 1e-10
# Not statistics of the data: wall-clock times and the speedups made of them, where a run put its files.
SKIP = {"seconds", "full_seconds", "wall_speedup", "test_wall_speedup", "run", "out", "world_size", "rank_samples"}
# Coherence embeds prefixes and continuations with MiniLM in float32; each process embeds its share of the
# texts, so the embedder's batches differ and its float32 rounding (~1e-7) shows.
LOOSE = {"coherence": 1e-6}


def test_shard_bounds_cut_like_accelerate_split_between_processes():
    """Contiguous, in order, covering every item once; the first n mod N ranks take one more (Accelerate's rule,
    written out here: [0, 4) and [4, 7) for 7 items on 2 ranks)."""
    from layerwise.parallel import shard_bounds

    assert [shard_bounds(7, r, 2) for r in range(2)] == [(0, 4), (4, 7)]
    assert [shard_bounds(2, r, 3) for r in range(3)] == [(0, 1), (1, 2), (2, 2)]
    for n in range(12):
        for world in range(1, 5):
            bounds = [shard_bounds(n, r, world) for r in range(world)]
            assert [i for a, b in bounds for i in range(a, b)] == list(range(n))
            sizes = [b - a for a, b in bounds]
            assert sizes == [math.ceil(n / world)] * (n % world) + [n // world] * (world - n % world)


def test_untrained_builtins_are_the_same_in_every_process(tmp_path):
    """An untrained own built-in (what each process of a launch builds for itself) has the same weights in a fresh
    interpreter, whatever this one's RNG did before, and leaves the global RNG where it was; with ``init_seed`` it
    is the model's own constructor after ``torch.manual_seed(init_seed)`` (as the trainer's ``seed`` draws it)."""
    from layerwise.checkpoints import load_model
    from layerwise.models import build_own

    torch.manual_seed(123)
    torch.rand(5)
    state = torch.get_rng_state()
    here = load_model("mlp-residual").model.state_dict()
    assert torch.equal(torch.get_rng_state(), state)
    code = ("import torch, sys; from layerwise.checkpoints import load_model; "
            "torch.save(load_model('mlp-residual').model.state_dict(), sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "builtin.pt")], check=True, env=subprocess_env(),
                   cwd=ROOT)
    there = torch.load(tmp_path / "builtin.pt", weights_only=True)
    assert here.keys() == there.keys() and all(torch.equal(here[k], there[k]) for k in here)
    assert not torch.equal(here["inp.weight"], load_model("mlp-plain").model.state_dict()["inp.weight"])  # per name
    seeded = load_model("mlp-residual", init_seed=7)
    torch.manual_seed(7)
    reference = build_own(seeded.model.config_dict()).state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in seeded.model.state_dict().items())
    assert any(not torch.equal(v, here[k]) for k, v in seeded.model.state_dict().items())


def test_only_rank_zero_prints_under_a_launcher():
    """The CLI's stdout (its ``wrote …`` summary, here the help) is rank 0's alone; rank 1 prints nothing on stdout
    but still reports a bad flag on stderr. The launcher's variables are set by hand: nothing is initialised."""
    def cli(rank: int, *args: str) -> subprocess.CompletedProcess:
        env = {**subprocess_env(), "WORLD_SIZE": "2", "RANK": str(rank)}
        return subprocess.run([sys.executable, "-c", "from layerwise.cli import main; main()", *args], env=env,
                              cwd=ROOT, capture_output=True, text=True)

    zero, one = cli(0, "--help"), cli(1, "--help")
    assert zero.returncode == one.returncode == 0 and "train" in zero.stdout and one.stdout == ""
    bad = cli(1, "train", "--no-such-flag")
    assert bad.returncode == 2 and "error:" in bad.stderr and bad.stdout == ""


def test_one_process_is_the_identity():
    """Without a launcher nothing is split, reduced or gathered, and the record says so."""
    from torch.utils.data import DataLoader

    from layerwise import parallel

    items = list(range(5))
    assert parallel.shard_list(items) == items and parallel.gather_list(items, strided=True) == items
    loader = parallel.shard_loader(DataLoader(items, batch_size=2))
    assert loader.n_local == 5
    t = torch.arange(3.0)
    assert parallel.reduce_sum(t) is t and parallel.gather_rows(t) is t
    assert parallel.split_record(5) == {"world_size": 1, "rank_samples": [5]}


def assert_same(one, two, path: str = "") -> None:
    """``two`` equals ``one``: numbers within ``TOL`` (``LOOSE`` keys looser), NaN where NaN, the rest exactly."""
    if isinstance(one, dict):
        assert set(one) == set(two), path
        for k in one:
            if k not in SKIP:
                assert_same(one[k], two[k], f"{path}/{k}") if k not in LOOSE else np.testing.assert_allclose(
                    np.asarray(two[k], float), np.asarray(one[k], float), rtol=0, atol=LOOSE[k], err_msg=path + k)
    elif isinstance(one, (list, tuple, np.ndarray, torch.Tensor)) and not isinstance(one, str):
        a, b = np.asarray(one, dtype=object), np.asarray(two, dtype=object)
        assert a.shape == b.shape, path
        for i, (x, y) in enumerate(zip(a.ravel().tolist(), b.ravel().tolist())):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(one, float) or isinstance(two, float):
        assert (math.isnan(one) and math.isnan(two)) or abs(one - two) <= TOL, (path, one, two)
    else:
        assert one == two, (path, one, two)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(one process, two processes): each case's results, and the folders they wrote. This process runs on one
    thread (conftest), as each launched process does: the same float32 kernels."""
    root = real_data_dir()
    if root is None:
        pytest.skip("real data absent: set LAYERWISE_DATA to the shared data root")
    work, one, two = (tmp_path_factory.mktemp(n) for n in ("work", "one", "two"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAYERWISE_DATA", str(root))
        script.make_models(work)
        script.run_cases(work, one, list(script.CASES))
    # torchrun; ``accelerate launch --multi_gpu --num_processes 2`` starts the same two processes on a CPU machine,
    # while ``accelerate launch --cpu --num_processes 2`` starts one (Accelerate 1.16's launcher for --cpu).
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
              "--master_port", str(free_port())]
    done = subprocess.run([*launch, str(ROOT / "tests" / "data_parallel_script.py"), str(work), str(two),
                           *script.CASES], env=subprocess_env(LAYERWISE_DATA=str(root)), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    def load(folder: Path) -> dict:
        return {name: pickle.loads((folder / f"{name}.pkl").read_bytes()) for name in script.CASES}

    return load(one), load(two), one, two


def test_sharding_and_gathering_order_under_two_processes(runs):
    """Rank 0's view after the collective calls: the shards of 11 items gather back to 0..10 in order, contiguous
    and strided; a loader's batches of 3 (4 batches) split 2 + 2 batches, 6 + 5 items."""
    _, two, _, _ = runs
    r = two["order"]
    assert r["contiguous"] == list(range(11)) and r["strided"] == list(range(11))
    assert r["strided_mine"] == [0, 2, 4, 6, 8, 10] and r["loader_mine"] == list(range(6))
    assert r["loader"] == list(range(11))
    assert r["rows"][:, 0].tolist() == [float(i * i) for i in range(11)]
    assert r["sum"].item() == 11.0 and r["world_size"] == 2 and r["rank_samples"] == [6, 5]


@pytest.mark.parametrize("case, split", [("analyze", [4, 3]), ("compare", [4, 3]), ("exit", [6, 5]),
                                         ("gen-eval", [4, 1]), ("connect", [12, 11]), ("lpft", [16, 5])])
def test_two_processes_give_the_one_process_results(runs, case, split):
    one, two, _, _ = runs
    assert_same(one[case], two[case])
    assert (one[case]["world_size"], two[case]["world_size"]) == (1, 2)
    assert two[case]["rank_samples"] == split and one[case]["rank_samples"] == [sum(split)]


def test_two_processes_keep_per_sample_outputs_in_data_set_order(runs):
    """The per-sample outputs the tests above compare are really per sample, of every sample: COS against the last
    layer (7 × 5), the exit layer and prediction behind each sweep point's histogram (11 samples), greedy texts."""
    one, two, _, _ = runs
    cos = np.asarray(two["analyze"]["cos_per_sample_to_last"])
    assert cos.shape == (7, 5) and np.allclose(cos, one["analyze"]["cos_per_sample_to_last"], atol=TOL, rtol=0)
    for point in two["exit"]["models"][0]["sweep"]:
        assert sum(point["histogram"]) == 11
    texts = two["gen-eval"]["models"][0]["samples"]["layers"]
    assert texts == one["gen-eval"]["models"][0]["samples"]["layers"] and len(texts["1"]) == 5


def test_rank_zero_alone_writes_the_run_folder(runs):
    """The launched run's folders hold what one process writes, and results.json says how the pass was split."""
    import json

    _, _, one, two = runs
    for case in ("analyze", "compare", "exit", "gen-eval", "connect"):
        assert sorted(p.name for p in (two / case).iterdir()) == sorted(p.name for p in (one / case).iterdir())
        written = json.loads((two / case / "results.json").read_text())
        assert written["world_size"] == 2 and sum(written["rank_samples"]) > 0
