#!/usr/bin/env bash
# cli_seq2seq.sh - the translation commands as a user meets them, on a small made-up parallel
# text: train with each objective, resume exactly (after an epoch, mid-epoch and in a REINFORCE
# stage), Ctrl-C, evaluate, translate; bad input gives a clear message and a non-zero exit.
# usage: cli_seq2seq.sh MOE_BINARY TESTS_DIR
set -u
moe=$1
. "$(dirname "$0")/../testlib.sh"
parallel_text "$tmp"
data=(--src "$tmp/de.txt" --tgt "$tmp/en.txt" --max-words 6 --min-count 1)
small=(--d 16 --experts 4 --k 2 --h 16 --batch 16 --threads 2 --log-every 10)
sched=(--n-xent 1 --n-xer 1 --delta 3)   # T = 7: stages s = 7, 4, 0, so 4 epochs
expect 0 "done: checkpoint" -- "$moe" seq2seq train --objective mixer "${data[@]}" "${small[@]}" "${sched[@]}" --out "$tmp/a"
grep -q '"phase":"mixer","s":4' "$tmp/a/log.jsonl" && ok || bad "log lacks the MIXER stage s=4"
grep -q '"kind":"epoch".*"valid_bleu"' "$tmp/a/log.jsonl" && ok || bad "log lacks validation BLEU"
[[ $(grep -c '"kind":"epoch"' "$tmp/a/log.jsonl") -eq 4 ]] && ok || bad "MIXER schedule: want 4 epochs"
sv=$(grep '"kind":"epoch"' "$tmp/a/log.jsonl" | grep -o '"s":-\?[0-9]*' | tr '\n' ' ')
[[ "$sv" == '"s":-1 "s":7 "s":4 "s":0 ' ]] && ok || bad "MIXER stages: want xent, s=7, 4, 0; got $sv"
grep '"phase":"mixer","s":0' "$tmp/a/log.jsonl" | grep -q '"reward":0\.[0-9]' && ok || bad "no reward in the pure REINFORCE stage"
# --mixer-from end: at s = 6 of T = 7 every reference (4-6 tokens here) has its last token
# sampled, where counted from the start none is (all are shorter than 6): rewards against none
one=(--n-xent 1 --n-xer 1 --delta 1 --epochs 3)
expect 0 "done" -- "$moe" seq2seq train --objective mixer "${data[@]}" "${small[@]}" "${one[@]}" --mixer-from end --out "$tmp/fe"
expect 0 "done" -- "$moe" seq2seq train --objective mixer "${data[@]}" "${small[@]}" "${one[@]}" --out "$tmp/fs"
grep '"kind":"train".*"s":6,' "$tmp/fe/log.jsonl" | grep -q '"reward":0\.[0-9]' && ok || bad "--mixer-from end: no reward at s=6"
grep '"kind":"train".*"s":6,' "$tmp/fs/log.jsonl" | grep -q '"reward":null' && ok || bad "from the start: a reward at s=6"
expect 1 "--mixer-from must be start or end" -- "$moe" seq2seq train --objective mixer "${data[@]}" --mixer-from middle --out "$tmp/fx"
# exact resume: after an epoch, mid-epoch (--steps) and inside a REINFORCE stage
expect 0 "done" -- "$moe" seq2seq train --objective mixer "${data[@]}" "${small[@]}" "${sched[@]}" --out "$tmp/b" --epochs 2
expect 0 "starting at epoch 2" -- "$moe" seq2seq train --objective mixer "${data[@]}" "${sched[@]}" --batch 16 --out "$tmp/b" --resume "$tmp/b/model.safetensors" --steps 100
expect 0 "starting at epoch 2 step 100" -- "$moe" seq2seq train --objective mixer "${data[@]}" "${sched[@]}" --batch 16 --out "$tmp/b" --resume "$tmp/b/model.safetensors"
expect 0 "" -- "$moe" diff --got "$tmp/b/model.safetensors" --want "$tmp/a/model.safetensors" --rtol 0
# another seed: the resumed run keeps the checkpoint's (dropout masks, data order)
expect 0 "done" -- "$moe" seq2seq train "${data[@]}" "${small[@]}" --seed 7 --epochs 2 --out "$tmp/p"
expect 0 "done" -- "$moe" seq2seq train "${data[@]}" "${small[@]}" --seed 7 --epochs 1 --out "$tmp/q"
expect 0 "done" -- "$moe" seq2seq train "${data[@]}" --batch 16 --epochs 2 --out "$tmp/q" --resume "$tmp/q/model.safetensors"
expect 0 "" -- "$moe" diff --got "$tmp/q/model.safetensors" --want "$tmp/p/model.safetensors" --rtol 0
# SCST continues a cross-entropy checkpoint, and resumes exactly too
expect 0 "done" -- "$moe" seq2seq train "${data[@]}" "${small[@]}" --out "$tmp/x" --epochs 1
cp "$tmp/x/model.safetensors" "$tmp/x1.safetensors"
expect 0 "scst" -- "$moe" seq2seq train --objective scst "${data[@]}" --batch 16 --n-xent 1 --epochs 3 --out "$tmp/s" --resume "$tmp/x1.safetensors"
expect 0 "done" -- "$moe" seq2seq train --objective scst "${data[@]}" --batch 16 --n-xent 1 --epochs 3 --out "$tmp/s2" --resume "$tmp/x1.safetensors" --steps 60
expect 0 "done" -- "$moe" seq2seq train --objective scst "${data[@]}" --batch 16 --n-xent 1 --epochs 3 --out "$tmp/s2" --resume "$tmp/s2/model.safetensors"
expect 0 "" -- "$moe" diff --got "$tmp/s2/model.safetensors" --want "$tmp/s/model.safetensors" --rtol 0
grep -q '"phase":"scst"' "$tmp/s/log.jsonl" && ok || bad "SCST log lacks its phase"
# --rl-xent: every row under cross-entropy is the cross-entropy objective at SCST's rate, to the
# bit; half the rows gives rewards and a cross-entropy in the same SCST steps
expect 0 "done" -- "$moe" seq2seq train --objective scst "${data[@]}" --batch 16 --n-xent 1 --epochs 3 --lr-rl 0.001 --rl-xent 1 --out "$tmp/r1" --resume "$tmp/x1.safetensors"
expect 0 "done" -- "$moe" seq2seq train "${data[@]}" --batch 16 --n-xent 1 --epochs 3 --lr 0.001 --out "$tmp/r0" --resume "$tmp/x1.safetensors"
expect 0 "" -- "$moe" diff --got "$tmp/r1/model.safetensors" --want "$tmp/r0/model.safetensors" --rtol 0
grep '"phase":"scst"' "$tmp/r1/log.jsonl" | grep -q '"reward":null' && ok || bad "--rl-xent 1: a reward was sampled"
expect 0 "done" -- "$moe" seq2seq train --objective scst "${data[@]}" --batch 16 --n-xent 1 --epochs 3 --rl-xent 0.5 --out "$tmp/rh" --resume "$tmp/x1.safetensors"
grep '"kind":"train".*"phase":"scst"' "$tmp/rh/log.jsonl" | grep -v '"xent":null' | grep -q '"reward":0\.[0-9]' && ok || bad "--rl-xent 0.5: no step with both a cross-entropy and rewards"
expect 1 "--rl-xent expects a number in \[0, 1\], got .1.5." -- "$moe" seq2seq train --objective scst "${data[@]}" --rl-xent 1.5 --out "$tmp/c"
# evaluate, inspect and translate
expect 0 "translation model.*objective: mixer" -- bash -c "'$moe' info '$tmp/a/model.safetensors' | tr '\\n' ' '"
expect 0 "test BLEU [0-9.]+, smoothed [0-9.]+, exact [0-9.]+% \([0-9]+ sentences, greedy" -- "$moe" seq2seq eval --model "$tmp/a/model.safetensors"
expect 0 "valid BLEU .*beam" -- "$moe" seq2seq eval --model "$tmp/a/model.safetensors" --split valid --beam 3
# two checkpoints of the same data compared: a checkpoint against itself ties every resample;
# against another, the JSON carries both scores and the bootstrap (the same seed, the same numbers)
expect 0 "P\(A>B\) 0.000  P\(B>A\) 0.000" -- "$moe" seq2seq eval --model "$tmp/a/model.safetensors" --compare "$tmp/a/model.safetensors" --bootstrap 50
j1=$("$moe" seq2seq eval --model "$tmp/a/model.safetensors" --compare "$tmp/x1.safetensors" --bootstrap 80 --seed 3 --json)
j2=$("$moe" seq2seq eval --model "$tmp/a/model.safetensors" --compare "$tmp/x1.safetensors" --bootstrap 80 --seed 3 --json)
python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert sys.argv[1]==sys.argv[2]; b=r["boot_smooth"]
assert r["bootstrap"]==80 and r["a"]["sentences"]==r["b"]["sentences"]>0 and 0<=r["a"]["exact"]<=1
assert b["a_lo"]<=r["a"]["bleu_smooth"]<=b["a_hi"] and abs(b["p_a_better"]+b["p_b_better"]-1)<=1 and b["delta_lo"]<=b["delta_hi"]
assert r["a"]["bleu_smooth"]>=r["a"]["bleu"]' "$j1" "$j2" && ok || bad "seq2seq eval --compare --json: $j1"
head -n 500 "$tmp/de.txt" > "$tmp/de5.txt"; head -n 500 "$tmp/en.txt" > "$tmp/en5.txt"
expect 0 "done" -- "$moe" seq2seq train --src "$tmp/de5.txt" --tgt "$tmp/en5.txt" --max-words 6 --min-count 1 "${small[@]}" --epochs 1 --out "$tmp/m4"
expect 1 "not evaluated on the same sentences" -- "$moe" seq2seq eval --model "$tmp/a/model.safetensors" --compare "$tmp/m4/model.safetensors"
expect 1 "give the second with --compare" -- "$moe" seq2seq eval --model "$tmp/a/model.safetensors" --bootstrap 100
printf 'haus baum katze\nrot auto\n' > "$tmp/in.txt"
out=$("$moe" translate --model "$tmp/a/model.safetensors" --beam 2 < "$tmp/in.txt" 2>/dev/null)
[[ $(wc -l <<<"$out") -eq 2 ]] && grep -qE "[a-z]" <<<"$out" && ok || bad "translate: two lines of words, got: $out"
expect 0 "1 word\(s\) of the input are not in the vocabulary" -- bash -c "echo 'haus zebra baum' | '$moe' translate --model '$tmp/a/model.safetensors'"
expect 1 "no input" -- bash -c "'$moe' translate --model '$tmp/a/model.safetensors' < /dev/null"
expect 0 "empty line" -- bash -c "printf 'haus baum\n\nrot auto\n' | '$moe' translate --model '$tmp/a/model.safetensors'"
# Ctrl-C: a checkpoint, exit 130, and the run resumes from it
"$moe" seq2seq train "${data[@]}" "${small[@]}" --epochs 100000 --log-every 1 --out "$tmp/int" > "$tmp/int.log" 2>&1 &
pid=$!
for i in $(seq 1 100); do grep -q "step 5/" "$tmp/int.log" 2>/dev/null && break; sleep 0.1; done
kill -INT $pid; wait $pid; rc=$?
[[ $rc -eq 130 ]] && grep -q "interrupted: checkpoint written" "$tmp/int.log" && ok || bad "Ctrl-C: exit $rc, log: $(tail -2 "$tmp/int.log")"
expect 0 "starting at epoch" -- "$moe" seq2seq train "${data[@]}" --batch 16 --epochs 1 --out "$tmp/int" --resume "$tmp/int/model.safetensors"
# bad input (and the checkpoints it names stay as they were)
sum_a=$(sha256sum < "$tmp/a/model.safetensors")
head -n 699 "$tmp/en.txt" > "$tmp/short.txt"
expect 1 "700 lines but .* 699" -- "$moe" seq2seq train --src "$tmp/de.txt" --tgt "$tmp/short.txt" --out "$tmp/c"
{ head -n 10 "$tmp/en.txt"; echo; tail -n 689 "$tmp/en.txt"; } > "$tmp/hole.txt"
expect 1 "hole.txt:11 is empty" -- "$moe" seq2seq train --src "$tmp/de.txt" --tgt "$tmp/hole.txt" --out "$tmp/c"
expect 1 "more than --max-words 4" -- "$moe" seq2seq train --src "$tmp/de.txt" --tgt "$tmp/en.txt" --max-words 4 --out "$tmp/c"
expect 1 "--src and --tgt go together" -- "$moe" seq2seq train --src "$tmp/de.txt" --out "$tmp/c"
expect 1 "expected xent, mixer or scst" -- "$moe" seq2seq train --objective ppo "${data[@]}" --out "$tmp/c"
expect 1 "same batch" -- "$moe" seq2seq train "${data[@]}" --batch 8 --out "$tmp/c" --resume "$tmp/a/model.safetensors"
head -n 600 "$tmp/de.txt" > "$tmp/de6.txt"; head -n 600 "$tmp/en.txt" > "$tmp/en6.txt"
expect 1 "data differs" -- "$moe" seq2seq train --src "$tmp/de6.txt" --tgt "$tmp/en6.txt" --max-words 6 --min-count 1 --batch 16 --out "$tmp/c" --resume "$tmp/a/model.safetensors"
expect 1 "leave out the model options" -- "$moe" seq2seq train "${data[@]}" --d 8 --out "$tmp/c" --resume "$tmp/a/model.safetensors"
echo "not a checkpoint" > "$tmp/junk.safetensors"
expect 1 "junk.safetensors" -- bash -c "echo haus | '$moe' translate --model '$tmp/junk.safetensors'"
expect 1 "--model" -- "$moe" translate
expect 1 "MoE layer sits between two LSTM layers|layers=2" -- "$moe" seq2seq train "${data[@]}" --layers 1 --moe 1 --out "$tmp/c"
[[ "$(sha256sum < "$tmp/a/model.safetensors")" == "$sum_a" ]] && ok || bad "a refused resume changed the checkpoint"
for sub in "seq2seq train" "seq2seq eval" translate; do expect 0 "usage" -- "$moe" $sub --help; done
finish cli_seq2seq
