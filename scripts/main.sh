#!/usr/bin/env bash
# main.sh - the main job (`make run`): train the default small MoE language model on Debian's
# fortunes for a few minutes, evaluate it on the held-out test split, sample from it, and draw
# the loss and expert-load plots. MINUTES (default 3) bounds the training time.
set -euo pipefail
cd "$(dirname "$0")/.."
moe=${MOE:-build/moe}
out=${OUT:-runs/lm}
minutes=${MINUTES:-3}
rm -rf "$out"
"$moe" train --minutes "$minutes" --out "$out" --eval-every 100 --eval-batches 40
"$moe" eval --model "$out/model.safetensors" --data runs/fortunes.txt --split test
echo "--- samples ---"
"$moe" sample --model "$out/model.safetensors" --prompt "The meaning of life " --length 300 --temperature 0.8 --seed 1
echo
"$moe" sample --model "$out/model.safetensors" --prompt "Q: " --length 300 --temperature 0.8 --seed 2
echo "---------------"
"$moe" plot --log "$out/log.jsonl"
"$moe" info "$out/model.safetensors"
echo "checkpoint: $out/model.safetensors   log: $out/log.jsonl   plots: $out/loss.svg $out/load.svg"
