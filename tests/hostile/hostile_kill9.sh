#!/usr/bin/env bash
# hostile_kill9.sh - a training run killed with SIGKILL at a random moment (between steps, in a
# step, while it writes its checkpoint: it writes one every step here) always leaves a checkpoint
# that loads and resumes; each resume is itself killed, then the last one runs to the end.
# usage: hostile_kill9.sh MOE_BINARY [TESTS_DIR]   (KILL9_ROUNDS=8 rounds)
set -u
moe=$1
rounds=${KILL9_ROUNDS:-8}
. "$(dirname "$0")/../testlib.sh"
for i in $(seq 1 600); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 7))."; done > "$tmp/text.txt"
args=(--data "$tmp/text.txt" --batch 4 --bptt 16 --d 32 --experts 8 --k 2 --h 32 --log-every 5 --eval-every 0
      --ckpt-every 1 --threads 1 --out "$tmp/run")
ck=$tmp/run/model.safetensors
"$moe" train "${args[@]}" --steps 2 > "$tmp/first.log" 2>&1 || bad "first run: $(tail -2 "$tmp/first.log")"
RANDOM=7 # the same moments every run
for r in $(seq 1 "$rounds"); do
  "$moe" train "${args[@]}" --steps 1000000 --resume "$ck" > "$tmp/k$r.log" 2>&1 &
  pid=$!
  sleep "0.$((RANDOM % 9 + 1))$((RANDOM % 10))"
  kill -9 $pid 2>/dev/null
  wait $pid 2>/dev/null
  if "$moe" info "$ck" > "$tmp/info$r.log" 2>&1; then ok; else bad "round $r: the checkpoint does not load: $(tail -2 "$tmp/info$r.log")"; fi
done
step=$(python3 -c 'import json, struct, sys
f = open(sys.argv[1], "rb"); (n,) = struct.unpack("<Q", f.read(8))
print(json.loads(f.read(n))["__metadata__"]["step"])' "$ck")
if "$moe" train "${args[@]}" --steps $(( ${step:-0} + 3 )) --resume "$ck" > "$tmp/last.log" 2>&1; then ok; else bad "the last resume: $(tail -2 "$tmp/last.log")"; fi
grep -q "done: checkpoint" "$tmp/last.log" && ok || bad "the last resume did not finish: $(tail -2 "$tmp/last.log")"
left=$(ls "$tmp/run" | grep -c '\.tmp\.' || true)
(( left <= 1 )) && ok || bad "$left temporary files of killed saves are left (the next save removes them)"
finish hostile_kill9
