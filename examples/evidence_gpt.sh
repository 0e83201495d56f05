#!/usr/bin/env bash
# AlignedGPT evidence (paper Fig. 8) at CPU scale: pretrain a small own GPT, fine-tune two copies from the same
# checkpoint with the same budget (standard, aligned), then score generation from every layer on WikiText-2 test.
#   LAYERWISE_DATA=/work/shared/data bash examples/evidence_gpt.sh [ROOT]
# No WikiText-2 train split exists here: pretraining reads tinyshakespeare + WikiText-2 valid.txt, fine-tuning
# reads WikiText-2 valid.txt, evaluation reads WikiText-2 test.txt.
set -euo pipefail
ROOT=${1:-runs/gpt}
DATA=${LAYERWISE_DATA:-../shared/data}
mkdir -p "$ROOT"
[ -f "$ROOT/pretrain.txt" ] || cat "$DATA/tinyshakespeare/input.txt" "$DATA/wikitext-2/valid.txt" > "$ROOT/pretrain.txt"
[ -d "$ROOT/init" ] || layerwise new-gpt --corpus tinyshakespeare --corpus wikitext2:valid --vocab-size 8192 \
    --depth 8 --dim 256 --heads 8 --max-len 256 --out "$ROOT/init"
layerwise train --model "$ROOT/init" --data "$ROOT/pretrain.txt" --objective standard --epochs 1 --batch-size 16 \
    --seq-len 128 --lr 1e-3 --schedule cosine --warmup-steps 30 --weight-decay 0.1 --eval-limit 16 \
    --checkpoint-every 50 --out "$ROOT/pretrained"
for objective in standard aligned; do
  layerwise train --model "$ROOT/pretrained" --data wikitext2 --train-split valid --eval-split test \
      --objective "$objective" --epochs 1 --batch-size 16 --seq-len 128 --lr 5e-4 --schedule cosine \
      --warmup-steps 10 --weight-decay 0.1 --eval-limit 64 --checkpoint-every 50 --out "$ROOT/$objective"
done
