#!/usr/bin/env bash
# cli_lm.sh - the language-model commands as a user meets them: train a tiny model on a small
# text, resume it, evaluate, sample, inspect, plot; and bad input gives a clear message and a
# non-zero exit without destroying the checkpoint.
# usage: cli_lm.sh MOE_BINARY TESTS_DIR
set -u
moe=$1
. "$(dirname "$0")/../testlib.sh"
for i in $(seq 1 400); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 7))."; done > "$tmp/text.txt"
small=(--d 16 --experts 4 --k 2 --h 16 --batch 4 --bptt 16 --log-every 5 --eval-every 10 --eval-batches 2 --threads 2)
expect 0 "done: checkpoint" -- "$moe" train --data "$tmp/text.txt" --steps 20 --out "$tmp/a" "${small[@]}"
[[ -s "$tmp/a/model.safetensors" && -s "$tmp/a/log.jsonl" ]] && ok || bad "checkpoint or log missing"
grep -q '"kind":"valid"' "$tmp/a/log.jsonl" && ok || bad "log has no validation record"
expect 0 "done" -- "$moe" train --data "$tmp/text.txt" --steps 10 --out "$tmp/b" "${small[@]}"
expect 0 "starting at step 10" -- "$moe" train --data "$tmp/text.txt" --steps 20 --out "$tmp/b" --resume "$tmp/b/model.safetensors" --batch 4 --bptt 16 --log-every 5 --eval-every 10 --eval-batches 2
expect 0 "" -- "$moe" diff --got "$tmp/b/model.safetensors" --want "$tmp/a/model.safetensors" --rtol 0
# the hierarchical MoE (SPEC 1.6) trains and resumes exactly too
hier=(--d 16 --experts 8 --groups 2 --k-groups 2 --k 1 --h 16 --batch 4 --bptt 16 --log-every 5 --eval-every 10 --eval-batches 2 --threads 2)
expect 0 "done" -- "$moe" train --data "$tmp/text.txt" --steps 16 --out "$tmp/ha" "${hier[@]}"
expect 0 "done" -- "$moe" train --data "$tmp/text.txt" --steps 8 --out "$tmp/hb" "${hier[@]}"
expect 0 "starting at step 8" -- "$moe" train --data "$tmp/text.txt" --steps 16 --out "$tmp/hb" --resume "$tmp/hb/model.safetensors" --batch 4 --bptt 16 --eval-every 10 --eval-batches 2
expect 0 "" -- "$moe" diff --got "$tmp/hb/model.safetensors" --want "$tmp/ha/model.safetensors" --rtol 0
expect 0 "hierarchical: 2 groups of 4 experts" -- "$moe" info "$tmp/ha/model.safetensors"
expect 1 "do not split" -- "$moe" train --data "$tmp/text.txt" --steps 2 --out "$tmp/hc" --experts 9 --groups 2
expect 0 '"ppl"' -- "$moe" eval --model "$tmp/a/model.safetensors" --data "$tmp/text.txt" --split test --batch 2 --bptt 16 --json
expect 0 "the quick" -- "$moe" sample --model "$tmp/a/model.safetensors" --prompt "the quick" --length 20
expect 0 "active per token" -- "$moe" info "$tmp/a/model.safetensors"
# the dense and the empty middle layer: their headers agree with their tensors too
for f in dense none; do
  expect 0 "done" -- "$moe" train --data "$tmp/text.txt" --steps 2 --out "$tmp/f$f" --ffn $f --d 16 --k 2 --h 8 --batch 4 --bptt 16 --eval-every 0 --threads 1
  want="dense FFN"; [[ $f == none ]] && want="middle layer none"
  expect 0 "$want" -- "$moe" info "$tmp/f$f/model.safetensors"
done
expect 0 "load.svg" -- "$moe" plot --log "$tmp/a/log.jsonl"
for sub in train eval sample info plot; do expect 0 "usage" -- "$moe" $sub --help; done
# Ctrl-C: a checkpoint is written, the exit is clean (130), and the run resumes from it
"$moe" train --data "$tmp/text.txt" --steps 1000000 --out "$tmp/int" "${small[@]}" > "$tmp/int.log" 2>&1 &
pid=$!
for i in $(seq 1 50); do grep -q "step 5" "$tmp/int.log" 2>/dev/null && break; sleep 0.2; done
kill -INT $pid; wait $pid; rc=$?
[[ $rc -eq 130 ]] && grep -q "interrupted: checkpoint written" "$tmp/int.log" && ok || bad "Ctrl-C: exit $rc, log: $(tail -2 "$tmp/int.log")"
expect 0 "starting at step" -- "$moe" train --data "$tmp/text.txt" --steps 1 --out "$tmp/int" --resume "$tmp/int/model.safetensors" --batch 4 --bptt 16
# bad input
expect 1 "no such file|cannot|missing" -- "$moe" train --data "$tmp/none.txt" --steps 2 --out "$tmp/c"
: > "$tmp/empty.txt"
expect 1 "empty" -- "$moe" train --data "$tmp/empty.txt" --steps 2 --out "$tmp/c"
head -c 5000 /dev/urandom > "$tmp/bin.dat"
expect 1 "UTF-8" -- "$moe" train --data "$tmp/bin.dat" --steps 2 --out "$tmp/c"
expect 1 "exceeds" -- "$moe" train --data "$tmp/text.txt" --experts 2 --k 3 --out "$tmp/c"
cp "$tmp/a/model.safetensors" "$tmp/keep.safetensors"
expect 1 "contradict" -- "$moe" train --data "$tmp/text.txt" --steps 30 --out "$tmp/a" --resume "$tmp/a/model.safetensors" --batch 4 --bptt 16 --experts 8
expect 1 "batch" -- "$moe" train --data "$tmp/text.txt" --steps 30 --out "$tmp/a" --resume "$tmp/a/model.safetensors" --batch 5 --bptt 16
cmp -s "$tmp/a/model.safetensors" "$tmp/keep.safetensors" && ok || bad "a refused resume changed the checkpoint"
# a disk that fills up while saving (a file-size limit stands in for it: writes past it fail
# with EFBIG): the error is reported and the previous checkpoint survives, byte for byte
expect 1 "checkpoint|write|space|large" -- bash -c "trap '' XFSZ; ulimit -f 64; exec \"\$0\" \"\$@\"" "$moe" train --data "$tmp/text.txt" --steps 30 --out "$tmp/a" --resume "$tmp/a/model.safetensors" --batch 4 --bptt 16
cmp -s "$tmp/a/model.safetensors" "$tmp/keep.safetensors" && ok || bad "a failed save changed the previous checkpoint"
ls "$tmp/a" | grep -q 'tmp' && bad "a failed save left a temporary file: $(ls "$tmp/a")" || ok
expect 1 "adam or factored" -- "$moe" train --data "$tmp/text.txt" --steps 2 --out "$tmp/c" --optim sgd
expect 0 "optimiser state" -- "$moe" train --data "$tmp/text.txt" --steps 4 --out "$tmp/f" "${small[@]}" --optim factored
expect 1 "factored optimiser, not adam" -- "$moe" train --data "$tmp/text.txt" --steps 8 --out "$tmp/f" --resume "$tmp/f/model.safetensors" --batch 4 --bptt 16 --optim adam
head -c 3000 "$tmp/a/model.safetensors" > "$tmp/trunc.safetensors"
expect 1 "truncated|cut short" -- "$moe" eval --model "$tmp/trunc.safetensors" --data "$tmp/text.txt"
expect 1 "not a moe language-model checkpoint" -- "$moe" info "$2/golden/n4_k1_bias0_eval.params.safetensors"
finish cli_lm
