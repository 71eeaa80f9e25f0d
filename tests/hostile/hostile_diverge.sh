#!/usr/bin/env bash
# hostile_diverge.sh - divergence is an event (train/run.h): a run pushed to diverge (--lr 10
# --clip 0) stops with a message and exit 1, does not write over the last good checkpoint, and
# resuming from that checkpoint with a sane learning rate works; the same for the translation
# trainer.
# usage: hostile_diverge.sh MOE_BINARY
set -u
moe=$1
. "$(dirname "$0")/../testlib.sh"
sum() { sha256sum "$1" | cut -d' ' -f1; }
for i in $(seq 1 400); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 7))."; done > "$tmp/text.txt"
lm=(--data "$tmp/text.txt" --batch 4 --bptt 16 --d 32 --experts 4 --k 2 --h 32 --log-every 5 --eval-every 0 --threads 1)
"$moe" train "${lm[@]}" --steps 10 --out "$tmp/lm" > "$tmp/good.log" 2>&1 || bad "a good run: $(tail -2 "$tmp/good.log")"
ck=$tmp/lm/model.safetensors
expect 1 "training diverged at step [0-9]+.*step 10, .*model.safetensors, is the last good one|training diverged at step [0-9]+.*was not overwritten" \
  -- "$moe" train "${lm[@]}" --lr 10 --clip 0 --steps 400 --ckpt-every 5 --out "$tmp/lm" --resume "$ck"
# (a checkpoint written before the divergence was seen is good by the rule; none here is newer)
"$moe" info "$ck" > /dev/null 2>&1 && ok || bad "the kept checkpoint does not load"
expect 0 "done: checkpoint" -- "$moe" train "${lm[@]}" --steps 14 --out "$tmp/lm" --resume "$ck"
# a new run that diverges before its first checkpoint leaves none
expect 1 "training diverged" -- "$moe" train "${lm[@]}" --lr 10 --clip 0 --steps 400 --ckpt-every 400 --out "$tmp/fresh"
[[ ! -e "$tmp/fresh/model.safetensors" ]] && ok || bad "a diverged run wrote a checkpoint"
# the translation trainer
parallel_text "$tmp"
s2s=(--src "$tmp/de.txt" --tgt "$tmp/en.txt" --max-words 6 --min-count 1 --d 16 --experts 4 --k 2 --h 16 --batch 16 --threads 1 --log-every 5)
"$moe" seq2seq train "${s2s[@]}" --epochs 1 --out "$tmp/s" > "$tmp/s.log" 2>&1 || bad "a good translation run: $(tail -2 "$tmp/s.log")"
sck=$tmp/s/model.safetensors
sbefore=$(sum "$sck")
sres=(--src "$tmp/de.txt" --tgt "$tmp/en.txt" --max-words 6 --min-count 1 --batch 16 --threads 1 --log-every 5)
expect 1 "training diverged" -- "$moe" seq2seq train "${sres[@]}" --lr 10 --clip 0 --epochs 40 --out "$tmp/s" --resume "$sck"
[[ $(sum "$sck") == "$sbefore" ]] && ok || bad "the diverged translation run overwrote the last good checkpoint"
expect 0 "done: checkpoint" -- "$moe" seq2seq train "${sres[@]}" --epochs 2 --out "$tmp/s" --resume "$sck"
finish hostile_diverge
