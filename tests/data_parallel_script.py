"""The passes of the data-parallel equality tests (``test_data_parallel.py``), run once per process count.

    python tests/data_parallel_script.py WORK OUT CASE…                               # the reference, one process
    python -m accelerate.commands.launch --cpu --num_processes 2 … tests/data_parallel_script.py WORK OUT CASE…

WORK holds the tiny models ``make_models`` saved; each case runs one command (``commands.<cmd>.run``, what the
CLI calls) with its run folder under OUT, and rank 0 pickles the returned results to ``OUT/<case>.pkl``. Every
data set is cut into batches whose count is not a multiple of 2, so the last shard is ragged.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import torch


def make_models(work: Path) -> None:
    """Seeded tiny models saved once, so both runs (and both ranks) load the same weights."""
    from layerwise.checkpoints import load_model, save_model

    torch.manual_seed(0)
    save_model(load_model("mlp-residual", num_classes=10, init_seed=0), work / "mlp")
    save_model(load_model("mlp-residual", num_classes=10, init_seed=1), work / "mlp-b")  # not mlp's twin
    save_model(load_model("gpt-tiny"), work / "gpt")
    bert = load_model("bert-tiny")  # seeded by its factory; model b: its weights moved by seeded noise
    with torch.no_grad():
        for p in bert.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_model(bert, work / "bert-b")


def order(work: Path, out: Path) -> dict:
    """Sharding and gathering alone: 11 items, contiguous and strided shards, batches of 3 of a DataLoader."""
    from torch.utils.data import DataLoader

    from layerwise import parallel

    items = list(range(11))
    loader = parallel.shard_loader(DataLoader(items, batch_size=3))
    mine = [int(x) for batch in loader for x in batch]
    return {"contiguous": parallel.gather_list(parallel.shard_list(items)),
            "strided": parallel.gather_list(parallel.shard_list(items, strided=True), strided=True),
            "strided_mine": parallel.shard_list(items, strided=True),
            "loader": parallel.gather_list(mine), "loader_mine": mine,
            "rows": parallel.gather_rows(torch.tensor(parallel.shard_list(items)).double()[:, None] ** 2),
            "sum": parallel.reduce_sum(torch.tensor([float(len(mine))], dtype=torch.float64)),
            **parallel.split_record(len(mine))}


def analyze(work: Path, out: Path) -> dict:
    from layerwise.commands import analyze

    return analyze.run(analyze.AnalyzeOptions(
        model="bert-tiny", data="sentences", limit=7, batch_size=2, dtype="float64", probe_limit=40, device="cpu",
        measures="cos,cka_linear,cka_linear_debiased,rsa", out=out / "analyze"))


def compare(work: Path, out: Path) -> dict:
    from layerwise.commands import compare

    return compare.run(compare.CompareOptions(
        model_a="bert-tiny", model_b=str(work / "bert-b"), data="sentences", limit=7, batch_size=2, dtype="float64",
        device="cpu", measures="cos,cka_linear,cka_linear_debiased", out=out / "compare"))


def exit_(work: Path, out: Path) -> dict:
    from layerwise.commands import exit as exit_command

    return exit_command.run(exit_command.ExitOptions(
        model=[str(work / "mlp")], data="digits", limit=23, batch_size=3, threshold=0.2, device="cpu",
        transfer_data="digits", transfer_limit=29, out=out / "exit"))


def gen_eval(work: Path, out: Path) -> dict:
    from layerwise.commands import gen_eval

    return gen_eval.run(gen_eval.GenEvalOptions(
        model=[str(work / "gpt")], data="wikitext2", num_prompts=5, prefix_len=8, max_new_tokens=6, limit=5,
        seq_len=16, eval_batch_size=2, batch_size=2, decoding="greedy", diversity="tokens", samples=5,
        device="cpu", out=out / "gen-eval"))


def connect(work: Path, out: Path) -> dict:
    from layerwise.commands import connect

    return connect.run(connect.ConnectOptions(
        model_a=str(work / "mlp"), model_b=str(work / "mlp-b"), data="digits", limit=23, batch_size=4,
        mode=["full", "single"], alphas="0,0.5,1", progress=False, device="cpu", out=out / "connect"))


def lpft(work: Path, out: Path) -> dict:
    """LP-FT's evaluation of a trained model against its start (``commands.lpft.evaluate_recipe``): training is
    the ``Trainer``'s DDP, tested with it; what the command adds is this pass."""
    from layerwise.checkpoints import load_model
    from layerwise.commands.lpft import evaluate_recipe
    from layerwise.data import load_dataset

    data = {"val": load_dataset("digits", "train", limit=30), "test": load_dataset("digits", "test", limit=21),
            "shift": load_dataset("digits", "train", limit=19, seed=1)}
    return evaluate_recipe(load_model(str(work / "mlp-b")), load_model(str(work / "mlp")).stack, data,
                           batch_size=8, device=torch.device("cpu"))


CASES = {"order": order, "analyze": analyze, "compare": compare, "exit": exit_, "gen-eval": gen_eval,
         "connect": connect, "lpft": lpft}


def run_cases(work: Path, out: Path, names: list[str]) -> None:
    from layerwise import parallel

    for name in names:
        results = CASES[name](work, out)
        if parallel.is_main():
            (out / f"{name}.pkl").write_bytes(pickle.dumps(results))


if __name__ == "__main__":
    torch.set_num_threads(1)
    run_cases(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
