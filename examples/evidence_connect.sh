#!/bin/bash
# Evidence for `layerwise connect` (README, "layer-wise linear mode connectivity"): CPU-sized, one thread.
#   LAYERWISE_DATA=/work/shared/data OMP_NUM_THREADS=1 bash examples/evidence_connect.sh [ROOT=runs/connect]
# then `python examples/connect_tables.py ROOT` prints the README tables. Numbers are what the runs give.
set -euo pipefail
R=${1:-runs/connect}
LW="nice -n 10 layerwise"
ALL=(--mode full --mode single --mode cumulative --mode random)
A5=0,0.25,0.5,0.75,1  # a 5-point α grid where a model is costly to evaluate on a CPU

# MLPs (4 plain blocks, 128 wide) on scikit-learn digits, two seeds (different init and data order)
for s in 0 1; do
  $LW train --model mlp-plain --depth 4 --data digits --preset digits-cpu --epochs 40 --seed $s --out $R/mlp4-s$s --no-progress
done
$LW connect --model-a $R/mlp4-s0 --model-b $R/mlp4-s1 --data digits "${ALL[@]}" --match --out $R/out-mlp --no-progress

# own GPT (4 blocks, 128 wide, bytes) on tinyshakespeare: the same init (seed 0), data orders 0 and 1
for d in 0 1; do
  $LW train --model gpt-tiny --data tinyshakespeare --seed 0 --data-seed $d --limit 2000 --eval-limit 100 --seq-len 128 \
    --epochs 2 --batch-size 32 --lr 0.001 --schedule cosine --warmup-steps 10 --out $R/gpt-d$d --no-progress
done
$LW connect --model-a $R/gpt-d0 --model-b $R/gpt-d1 --data tinyshakespeare --limit 32 "${ALL[@]}" --random-seeds 1 \
  --alphas $A5 --out $R/out-gpt --no-progress

# vit-tiny on a 4k-image CIFAR-10 subset: (init 0, order 0) against (init 0, order 1) and (init 1, order 0)
for sd in "0 0" "0 1" "1 0"; do
  set -- $sd
  $LW train --model vit-tiny --data cifar10 --seed $1 --data-seed $2 --limit 4000 --eval-limit 500 --epochs 2 \
    --batch-size 64 --lr 0.001 --schedule cosine --warmup-steps 10 --out $R/vit-s$1-d$2 --no-progress
done
for b in vit-s0-d1 vit-s1-d0; do
  $LW connect --model-a $R/vit-s0-d0 --model-b $R/$b --data cifar10 --limit 200 --mode full --mode single \
    --mode cumulative --alphas $A5 --out $R/out-$b --no-progress
done

# MiniLM: the packaged pretrained model against a copy fine-tuned on 1,000 SST-2 sentences (1 epoch);
# A reads out through B's pooler and classifier (the pretrained model has none)
$LW train --preset minilm-sst2-cpu --limit 1000 --epochs 1 --eval-limit 200 --checkpoint-every 1000 \
  --out $R/minilm-sst2 --no-progress
$LW connect --model-a minilm --model-b $R/minilm-sst2 --readout-from-b --data sst2 --split dev --limit 200 \
  --mode full --mode single --mode cumulative --alphas $A5 --out $R/out-minilm --no-progress
