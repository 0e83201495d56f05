#!/usr/bin/env bash
# Per-token early exit (CALM) on the aligned and the standard own GPT of examples/evidence_gpt.sh (8 blocks × 256,
# BPE 8192): a confidence-threshold sweep against full decoding, 16 WikiText-2 test prompts of 32 tokens, 48 new
# tokens, nucleus sampling p = 0.95 (as gen-eval; the same seed for every setting), batch 1, one thread, the two
# models side by side; then one figure and a markdown table for both models.
#   bash examples/evidence_token_exit.sh [RUNS=runs/gpt] [OUT=runs/token-exit]
set -euo pipefail
RUNS=${1:-runs/gpt}
OUT=${2:-runs/token-exit}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1
for kind in aligned standard; do
  layerwise generate --model "$RUNS/$kind" --early-exit --policy confidence --sweep 0.2,0.4,0.6,0.8,0.9,0.99 \
    --kv-fill propagate --data wikitext2 --split test --num-prompts 16 --prefix-len 32 --max-new-tokens 48 \
    --decoding nucleus --top-p 0.95 --batch-size 1 --repeats 1 --out "$OUT/$kind" > "$OUT/$kind.log" 2>&1 &
done
wait
python examples/token_exit_tables.py "$OUT/aligned" "$OUT/standard" --figure docs/figures/alignedgpt/token_exit.png
