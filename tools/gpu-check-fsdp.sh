#!/usr/bin/env bash
# FSDP runs aligned training (examples/accelerate/fsdp.yaml, docs/scaling.md), checked on a machine with 2+ CUDA
# GPUs: the same run on one GPU and sharded over two must log the same per-epoch losses (within 1e-4: FSDP
# averages the half-batch gradients like DDP, float32 summation order aside) and accuracies (within one sample).
# Accelerate sets up FSDP for GPUs only, so this is a GPU script rather than a CPU test.
#   bash tools/gpu-check-fsdp.sh            # prints PASS or FAIL, exits 1 on failure
# Environment: PYTHON (default python), LAYERWISE_DATA (the digits set is built in).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/layerwise-gpu-fsdp.XXXXXX)
trap 'rm -rf "$work"' EXIT
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
py=${PYTHON:-python}
run=(train --model vit-digits --data digits --objective aligned --epochs 2 --batch-size 64 --limit 1024
     --eval-limit 256 --seed 3 --no-progress)
CUDA_VISIBLE_DEVICES=0 "$py" -m layerwise.cli "${run[@]}" --out "$work/one"
"$py" -m accelerate.commands.launch --config_file "$root/examples/accelerate/fsdp.yaml" --num_processes 2 \
    -m layerwise.cli "${run[@]}" --out "$work/two"
"$py" - "$work/one/log.jsonl" "$work/two/log.jsonl" <<'PY'
import json, sys
one, two = ([json.loads(x) for x in open(p)] for p in sys.argv[1:3])
ok = [a["step"] for a in one] == [b["step"] for b in two]
for a, b in zip(one, two):
    ok &= abs(a["train_loss"] - b["train_loss"]) <= 1e-4
    ok &= max(abs(x - y) for x, y in zip(a["loss"], b["loss"])) <= 1e-4
    ok &= max(abs(x - y) for x, y in zip(a["accuracy"], b["accuracy"])) <= 1 / 256 + 1e-9
    print(f"epoch {a['epoch']}: train loss {a['train_loss']:.6f} (1 GPU) vs {b['train_loss']:.6f} (FSDP, 2 GPUs)")
print("PASS" if ok else "FAIL", "FSDP aligned training against one GPU")
sys.exit(0 if ok else 1)
PY
