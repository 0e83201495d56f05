"""The trainer: schedules, configs, objectives end to end, kill-and-resume, corruption, NaN, 2 processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fixtures import ROOT, SMALL_TRAIN, data_batches, free_port, subprocess_env, train_config
from safetensors.torch import load_file

from layerwise.checkpoints import load_model
from layerwise.errors import LayerwiseError
from layerwise.training import (
    epoch_order,
    latest_checkpoint,
    load_checkpoint,
    load_preset,
    make_scheduler,
    resolve_config,
    shard,
    train,
)
from layerwise.training import objectives as O

ENV = subprocess_env()
CLI = [sys.executable, "-c", "from layerwise.cli import main; main()", "train"]
RUN = ["--model", "mlp-residual", "--data", "digits", "--objective", "aligned", "--epochs", "3", "--batch-size", "32",
       "--augment", "--checkpoint-every", "5", "--seed", "1", "--no-progress", "--eval-limit", "200"]


def records(path: Path) -> list[dict]:
    """log.jsonl without wall-clock fields."""
    out = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in out]


# ---------------------------------------------------------------- pure pieces


def test_epoch_order_is_seeded_and_sharded():
    a, b = epoch_order(10, 3, seed=0, epoch=1), epoch_order(10, 3, seed=0, epoch=1)
    assert a == b and len(a) == 3 and all(len(x) == 3 for x in a)
    assert epoch_order(10, 3, 0, 2) != a
    halves = shard(epoch_order(8, 4, 0, 0), 0, 2), shard(epoch_order(8, 4, 0, 0), 1, 2)
    assert [x + y for x, y in zip(*halves)] == epoch_order(8, 4, 0, 0)


def test_schedules_warmup_then_multistep_and_cosine():
    def lrs(schedule, **kw):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = make_scheduler(opt, schedule, **kw)
        out = []
        for _ in range(6):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    assert lrs("multistep", total_steps=6, warmup_steps=2, milestones=[4], gamma=0.1) == pytest.approx(
        [1 / 3, 2 / 3, 1, 1, 0.1, 0.1])
    cos = lrs("cosine", total_steps=6)
    assert cos[0] == 1 and all(x > y for x, y in zip(cos, cos[1:]))
    assert lrs("constant", total_steps=6, warmup_steps=1) == pytest.approx([0.5, 1, 1, 1, 1, 1])


def test_presets_and_config_file_precedence(tmp_path):
    for name in ("vit-cifar10-paper", "vit-imagenet-paper", "bert-glue-paper", "vit-cifar10-cpu", "minilm-sst2-cpu",
                 "digits-cpu"):
        assert resolve_config(name).epochs >= 1
    paper = load_preset("vit-cifar10-paper")
    assert (paper["epochs"], paper["milestones"], paper["weight_decay"], paper["batch_size"]) == (200, [100, 150], 1e-4, 256)
    assert load_preset("bert-glue-paper")["max_length"] == 256
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("epochs: 7\nlr: 0.5\nbatch-size: 16\n")
    cfg = resolve_config("digits-cpu", cfg_file, lr=0.25)
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.model) == (7, 0.25, 16, "vit-digits")
    cfg_file.write_text("epoch: 7\n")
    with pytest.raises(LayerwiseError, match="unknown keys epoch"):
        resolve_config(config_file=cfg_file)
    with pytest.raises(LayerwiseError, match="unknown preset"):
        resolve_config("nope")
    with pytest.raises(LayerwiseError, match="objective"):
        resolve_config(objective="aligned-foo")


# ---------------------------------------------------------------- objectives end to end


def test_multi_exit_logs_heads_and_saves_them(tmp_path):
    cfg = train_config(tmp_path, objective="multi-exit", epochs=2)
    rec = train(cfg)
    assert len(rec["exit_accuracy"]) == 8 and len(rec["accuracy"]) == 9
    # The last exit is the model's own readout.
    assert rec["exit_accuracy"][-1] == rec["accuracy"][-1]
    bundle = load_model(cfg.out)
    assert bundle.exit_heads is not None and len(bundle.exit_heads) == 8
    assert not torch.equal(bundle.exit_heads[0].head.weight, bundle.exit_heads[1].head.weight)


def test_lp_and_lp_ft(tmp_path):
    lp = train(train_config(tmp_path, "lp", objective="lp"))
    assert lp["stage"] == "lp" and lp["lp_train_accuracy"] > 0.5
    ft = train(train_config(tmp_path, "lpft", objective="lp-ft", ft_objective="aligned-joint", epochs=1))
    log = records(tmp_path / "lpft" / "log.jsonl")
    assert [r["epoch"] for r in log] == [0, 1]
    assert log[0]["accuracy"][-1] == pytest.approx(lp["accuracy"][-1])  # same LP stage
    assert ft["epoch"] == 1


def test_cos_reg_and_depth_override_and_lm(tmp_path):
    rec = train(train_config(tmp_path, "cos", objective="cos-reg", model="vit-digits", depth=3, limit=128))
    assert len(rec["accuracy"]) == 4
    assert load_model(str(tmp_path / "cos")).stack.num_layers == 3
    text = tmp_path / "corpus.txt"
    text.write_text("to be or not to be, that is the question. " * 60)
    lm = train(train_config(tmp_path, "lm", model="gpt-tiny", data=str(text), objective="aligned", depth=2, seq_len=32,
                     batch_size=8, limit=None, eval_limit=None))
    assert len(lm["perplexity"]) == 3 and all(p > 1 for p in lm["perplexity"])


def test_bf16_mixed_precision_runs_on_cpu(tmp_path):
    """bf16 autocast takes effect (the weights differ from the same float32 run, which starts from the same seeded
    initial weights), and the recorded last-layer accuracy is the saved model's own float32 forward's (within
    one sample: the trainer evaluates under autocast)."""
    common = dict(objective="aligned-joint", limit=128)
    rec = train(train_config(tmp_path, "bf16", mixed_precision="bf16", **common))
    train(train_config(tmp_path, "fp32", **common))
    bf16, fp32 = load_model(str(tmp_path / "bf16")), load_model(str(tmp_path / "fp32"))
    a, b = bf16.model.state_dict(), fp32.model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    bf16.model.eval()
    batches = data_batches("digits", bf16.inputs, "test", limit=SMALL_TRAIN["eval_limit"])
    with torch.no_grad():
        correct = sum((bf16.model(inputs=x["inputs"]).argmax(-1) == x["labels"]).sum().item() for x in batches)
    assert rec["accuracy"][-1] == pytest.approx(correct / SMALL_TRAIN["eval_limit"], abs=1 / SMALL_TRAIN["eval_limit"])


# ---------------------------------------------------------------- failures


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real, calls = O.standard, []

    def poisoned(ces):
        calls.append(1)
        loss = real(ces)
        return loss * float("nan") if len(calls) == 6 else loss

    monkeypatch.setattr(O, "standard", poisoned)
    cfg = train_config(tmp_path, objective="standard", checkpoint_every=2)
    with pytest.raises(LayerwiseError, match=r"loss became nan at step 5 .*last good checkpoint"):
        train(cfg)
    root = Path(cfg.out) / "checkpoint"
    ck = load_checkpoint(latest_checkpoint(root))
    assert ck["trainer_state"]["position"]["step"] == 4
    assert [p.name for p in root.iterdir() if p.is_dir()] == ["step-00000004-mid"]


def test_huge_lr_gives_clear_error(tmp_path):
    with pytest.raises(LayerwiseError, match="lower `lr`"):
        train(train_config(tmp_path, lr=1e30, epochs=3))


# ---------------------------------------------------------------- kill and resume (real CLI subprocesses)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    subprocess.run(CLI + RUN + ["--out", str(out)], check=True, env=ENV, cwd=ROOT, capture_output=True)
    return out


@pytest.mark.slow
def test_kill_and_resume_is_bitwise_equal(uninterrupted, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(CLI + RUN + ["--out", str(out)], env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    pointer, deadline = out / "checkpoint" / "latest.json", time.time() + 120
    while not pointer.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    still_running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert still_running, "the run ended before it could be killed"
    killed_at = json.loads(pointer.read_text())["step"]
    assert killed_at < 3 * (1437 // 32)
    done = subprocess.run(CLI + RUN + ["--out", str(out)], env=ENV, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert records(out / "log.jsonl") == records(uninterrupted / "log.jsonl")
    a, b = load_file(str(out / "model.safetensors")), load_file(str(uninterrupted / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_corrupt_checkpoint_is_a_clear_error(uninterrupted, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out)
    weights = latest_checkpoint(out / "checkpoint") / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    done = subprocess.run(CLI + RUN + ["--out", str(out), "--resume"], env=ENV, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert "corrupt" in done.stderr and str(weights) in done.stderr
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- two processes


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    """``torchrun --nproc_per_node 2`` on this CPU machine trains data-parallel (DDP over gloo: the trainer tells
    Accelerate ``cpu`` itself under a launcher, the script does not) and matches one process.

    Same global batch and data order; each process takes half of every batch and DDP averages the two half-batch
    gradients, which equals the one-process full-batch mean up to float32 summation order (~1e-7 per step). Over
    40 steps that drift stays far below 1e-4 in losses; accuracies may differ only if a prediction sits on a
    decision boundary, so they get one test sample (1/360) of slack. ``world_size`` in metrics.json proves that
    the launch really ran 2 processes (``accelerate launch --cpu`` used to start one, comparing 1 with 1)."""
    script = str(ROOT / "tests" / "dist_train_script.py")
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, script, str(one)], check=True, env=ENV, cwd=ROOT, capture_output=True)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
              "--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    done = subprocess.run(launch + [script, str(two)], env=ENV, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    sizes = [json.loads((d / "metrics.json").read_text())["world_size"] for d in (one, two)]
    assert sizes == [1, 2]
    for r1, r2 in zip(records(one / "log.jsonl"), records(two / "log.jsonl"), strict=True):
        assert r1["step"] == r2["step"]
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], abs=1e-4)
        assert r1["loss"] == pytest.approx(r2["loss"], abs=1e-4)
        assert r1["accuracy"] == pytest.approx(r2["accuracy"], abs=1 / 360 + 1e-9)
    a, b = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def test_evaluate_layers_leaves_every_module_in_its_own_mode():
    """A model put in eval mode by the caller stays there (dropout off) after a per-layer evaluation."""
    from layerwise.checkpoints import load_model
    from layerwise.data import load_dataset, make_loader
    from layerwise.training.scores import evaluate_layers

    bundle = load_model("bert-tiny")
    bundle.model.eval()
    loader = make_loader(load_dataset("sentences", "test", limit=8), bundle.inputs, batch_size=8)
    evaluate_layers(bundle.stack, loader, device=torch.device("cpu"))
    assert not any(m.training for m in bundle.model.modules())
