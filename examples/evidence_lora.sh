#!/usr/bin/env bash
# LoRA evidence (docs/lora.md): four fine-tunes of the 8×256 GPT pretrained by examples/evidence_gpt.sh, at equal
# steps (40: WikiText-2 valid.txt, --limit 640 blocks of 128 tokens, batch 16), then the table and figure, the merged
# LoRA model, greedy identity merged vs unmerged, and the training-cost benchmark.
#   LAYERWISE_DATA=/work/shared/data bash examples/evidence_lora.sh [PRETRAINED=runs/gpt/pretrained] [OUT=runs/lora]
set -euo pipefail
BASE=${1:-runs/gpt/pretrained}
OUT=${2:-runs/lora}
mkdir -p "$OUT"
COMMON=(--model "$BASE" --data wikitext2 --train-split valid --eval-split test --epochs 1 --batch-size 16 --seq-len 128
        --schedule cosine --warmup-steps 10 --weight-decay 0.1 --eval-limit 64 --checkpoint-every 10 --limit 640 --no-progress)
LORA=(--objective aligned --peft lora --lora-r 8 --lora-alpha 16 --lr 2e-3)
run() { name=$1; shift; /usr/bin/time -v layerwise train "${COMMON[@]}" "$@" --out "$OUT/$name" > "$OUT/$name.log" 2>&1; }
run standard --objective standard --lr 5e-4
run aligned --objective aligned --lr 5e-4
run lora "${LORA[@]}"
run lora-ld "${LORA[@]}" --layer-dropout 0.2
python examples/lora_tables.py "$OUT" --figure docs/figures/lora/per_layer_perplexity.png
layerwise merge --model "$OUT/lora" --out "$OUT/lora-merged"
for m in lora lora-merged; do
  layerwise generate --model "$OUT/$m" --prompt "The history of the city" --layer 4 --decoding greedy > "$OUT/greedy-$m.txt"
done
cmp "$OUT/greedy-lora.txt" "$OUT/greedy-lora-merged.txt" && echo "merged and unmerged decode identically"
layerwise generate --model "$OUT/lora-merged" --early-exit --policy confidence --sweep 0.4,0.8,0.9 --kv-fill propagate \
  --data wikitext2 --split test --num-prompts 8 --prefix-len 32 --max-new-tokens 32 --decoding greedy --batch-size 1 \
  --repeats 1 --out "$OUT/token-exit-lora"
python benchmarks/peft_training.py --model "$BASE" --steps 4 --warmup 1 --json
