#!/usr/bin/env bash
# cli_fused.sh - `moe train --fused` (fused expert updates): without clipping it trains the same
# bits as the unfused run (parameters and optimiser state, with the factored optimiser's lazy
# decay and with Adam), it resumes exactly, and with clipping it trains and differs from the
# unfused run (each expert clipped by its own norm). 32 experts and 4 x 8 tokens a step leave
# most experts without a token in a step.
# usage: cli_fused.sh MOE_BINARY TESTS_DIR
set -u
moe=$1
. "$(dirname "$0")/../testlib.sh"
for i in $(seq 1 400); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 7))."; done > "$tmp/text.txt"
base=(--data "$tmp/text.txt" --d 16 --experts 32 --k 2 --h 16 --batch 4 --bptt 8 --log-every 5 --eval-every 0 --threads 2)
for opt in factored adam; do
  expect 0 "done" -- "$moe" train "${base[@]}" --steps 16 --clip 0 --optim $opt --out "$tmp/u$opt"
  expect 0 "done" -- "$moe" train "${base[@]}" --steps 16 --clip 0 --optim $opt --fused --out "$tmp/f$opt"
  expect 0 "" -- "$moe" diff --got "$tmp/f$opt/model.safetensors" --want "$tmp/u$opt/model.safetensors" --rtol 0
  # resumed halfway, the same bits as straight through
  expect 0 "done" -- "$moe" train "${base[@]}" --steps 8 --clip 0 --optim $opt --fused --out "$tmp/r$opt"
  expect 0 "starting at step 8" -- "$moe" train "${base[@]}" --steps 16 --clip 0 --fused --out "$tmp/r$opt" \
    --resume "$tmp/r$opt/model.safetensors"
  expect 0 "" -- "$moe" diff --got "$tmp/r$opt/model.safetensors" --want "$tmp/f$opt/model.safetensors" --rtol 0
done
# clipping: per expert, so the run differs from the unfused one, and it still learns
expect 0 "done" -- "$moe" train "${base[@]}" --steps 40 --warmup 5 --clip 0.05 --optim factored --out "$tmp/uc"
expect 0 "done" -- "$moe" train "${base[@]}" --steps 40 --warmup 5 --clip 0.05 --optim factored --fused --out "$tmp/fc"
expect 1 "" -- "$moe" diff --got "$tmp/fc/model.safetensors" --want "$tmp/uc/model.safetensors" --rtol 0
python3 - "$tmp/fc/log.jsonl" <<'PY' && ok || bad "fused, clipped: the training loss did not fall"
import json, sys
l = [json.loads(x) for x in open(sys.argv[1]) if '"kind":"train"' in x]
sys.exit(0 if l and l[-1]["loss"] < l[0]["loss"] - 0.3 else 1)
PY
expect 0 "usage" -- "$moe" train --help
"$moe" train --help 2>&1 | grep -q -- "--fused" && ok || bad "--help does not mention --fused"
finish cli_fused
