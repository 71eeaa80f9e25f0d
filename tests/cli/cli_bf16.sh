#!/usr/bin/env bash
# cli_bf16.sh - `moe train --fused --bf16` (bfloat16 expert weights): the checkpoint stores the
# experts' w1, w2 as BF16 and the rest as F32; a run resumed halfway ends with the same bits as
# the straight run (the stochastic rounding is seeded); the same on 1 and 2 threads; it learns
# and stays near the float32 run; eval, sample and info read it; the plan counts 2 bytes a
# weight; and the settings that cannot work are refused with what to do.
# usage: cli_bf16.sh MOE_BINARY TESTS_DIR
set -u
moe=$1
. "$(dirname "$0")/../testlib.sh"
for i in $(seq 1 400); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 7))."; done > "$tmp/text.txt"
base=(--data "$tmp/text.txt" --d 16 --experts 8 --k 2 --h 16 --batch 4 --bptt 8 --log-every 5 --eval-every 20
      --eval-batches 4 --warmup 5)
expect 0 "done" -- "$moe" train "${base[@]}" --steps 40 --fused --bf16 --threads 2 --out "$tmp/b"
"$moe" info "$tmp/b/model.safetensors" > "$tmp/info.txt" 2>&1
grep -Eq "^ *moe\.experts\.w1 +BF16" "$tmp/info.txt" && grep -Eq "^ *moe\.experts\.w2 +BF16" "$tmp/info.txt" && ok ||
  bad "info: the experts' weights are not BF16: $(grep experts "$tmp/info.txt" | head -3)"
grep -Eq "^ *moe\.experts\.b1 +F32|^ *lm\.embedding\.weight +F32" "$tmp/info.txt" && ok || bad "info: the rest is not F32"
grep -Eq "^  bf16: 1$" "$tmp/info.txt" && ok || bad "info does not say the checkpoint is bf16"
# resumed halfway: the same bits; on 1 thread: the same bits
expect 0 "done" -- "$moe" train "${base[@]}" --steps 20 --fused --bf16 --threads 2 --out "$tmp/r"
expect 0 "starting at step 20" -- "$moe" train "${base[@]}" --steps 40 --fused --bf16 --threads 2 --out "$tmp/r" \
  --resume "$tmp/r/model.safetensors"
expect 0 "ok" -- "$moe" diff --got "$tmp/r/model.safetensors" --want "$tmp/b/model.safetensors" --rtol 0
expect 0 "done" -- "$moe" train "${base[@]}" --steps 40 --fused --bf16 --threads 1 --out "$tmp/t1"
expect 0 "ok" -- "$moe" diff --got "$tmp/t1/model.safetensors" --want "$tmp/b/model.safetensors" --rtol 0
# against the float32 run: not the same bits, but near, and both learn
expect 0 "done" -- "$moe" train "${base[@]}" --steps 40 --fused --threads 2 --out "$tmp/f"
expect 1 "F32 against BF16" -- "$moe" diff --got "$tmp/b/model.safetensors" --want "$tmp/f/model.safetensors" --rtol 0
python3 - "$tmp/b/log.jsonl" "$tmp/f/log.jsonl" <<'PY' && ok || bad "bf16 against float32: validation losses too far apart, or no learning"
import json, sys
def valid(p): return [json.loads(x)["loss"] for x in open(p) if '"kind":"valid"' in x]
b, f = valid(sys.argv[1]), valid(sys.argv[2])
first = [json.loads(x)["loss"] for x in open(sys.argv[1]) if '"kind":"train"' in x][0]
sys.exit(0 if b and f and abs(b[-1] - f[-1]) < 0.02 * f[-1] and b[-1] < first - 0.5 else 1)
PY
# the checkpoint for inference
expect 0 "loss" -- "$moe" eval --model "$tmp/b/model.safetensors" --data "$tmp/text.txt" --split valid
expect 0 "" -- "$moe" sample --model "$tmp/b/model.safetensors" --prompt "line " --length 20 --seed 1
# the plan: 2 bytes per expert weight
pf=$("$moe" train "${base[@]}" --experts 256 --steps 1 --fused --plan --out "$tmp/p" 2>&1 | grep -o "parameters [0-9.]*" | head -1)
pb=$("$moe" train "${base[@]}" --experts 256 --steps 1 --fused --bf16 --plan --out "$tmp/p" 2>&1 | grep -o "parameters [0-9.]*" | head -1)
python3 -c "import sys; f, b = float('${pf#parameters }'), float('${pb#parameters }'); sys.exit(0 if 0.4 * f < b < 0.6 * f else 1)" &&
  ok || bad "plan: bf16 parameters '$pb' are not about half of '$pf'"
# refused: without --fused; resuming with the other setting
expect 1 "add --fused" -- "$moe" train "${base[@]}" --steps 4 --bf16 --out "$tmp/x"
expect 1 "resume with --bf16" -- "$moe" train "${base[@]}" --steps 60 --fused --out "$tmp/b" --resume "$tmp/b/model.safetensors"
expect 1 "resume without --bf16" -- "$moe" train "${base[@]}" --steps 60 --fused --bf16 --out "$tmp/f" \
  --resume "$tmp/f/model.safetensors"
"$moe" train --help 2>&1 | grep -q -- "--bf16" && ok || bad "--help does not mention --bf16"
finish cli_bf16
