#!/usr/bin/env bash
# hostile_ckpt.sh - damaged checkpoints as an attacker or an unlucky user makes them: values in
# the metadata out of range (0, -1, 2^31-1, 10^20), settings that disagree with the tensors, a
# tensor transposed (same count, other shape), a truncated file, a resume position before the
# first batch. Every command that reads a checkpoint (info, eval, sample, train --resume, seq2seq
# eval, translate, seq2seq train --resume) must say what is wrong and exit 1: no crash (under
# ASan + UBSan in CI), no huge allocation. Also: the temporary file of a save killed midway is
# removed by the next save of the same path (a live process's is kept).
# usage: hostile_ckpt.sh MOE_BINARY
set -u
moe=$1
here=$(dirname "$0")
. "$here/../testlib.sh"
edit() { python3 "$here/st_edit.py" "$@"; }
for i in $(seq 1 300); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 7))."; done > "$tmp/text.txt"
lm=(--data "$tmp/text.txt" --batch 4 --bptt 16 --d 16 --experts 4 --k 2 --h 16 --log-every 5 --eval-every 0 --threads 1)
"$moe" train "${lm[@]}" --steps 4 --out "$tmp/lm" > "$tmp/lm.log" 2>&1 || bad "training the small LM: $(tail -2 "$tmp/lm.log")"
good=$tmp/lm/model.safetensors
# lm_check FILE PATTERN LABEL: every LM command refuses FILE with PATTERN in its message
lm_check() {
  expect 1 "$2" -- "$moe" info "$1"
  expect 1 "$2" -- "$moe" eval --model "$1" --data "$tmp/text.txt"
  expect 1 "$2" -- "$moe" sample --model "$1" --length 5
  expect 1 "$2" -- "$moe" train --data "$tmp/text.txt" --batch 4 --bptt 16 --steps 8 --out "$tmp/r" --resume "$1"
}
for v in 0 -1 512; do edit "$good" "$tmp/v.st" --meta vocab=$v; lm_check "$tmp/v.st" "vocab|tokenizer has"; done
edit "$good" "$tmp/d.st" --meta d=2147483647; lm_check "$tmp/d.st" "d=2147483647 is outside"
edit "$good" "$tmp/d.st" --meta d=60000; lm_check "$tmp/d.st" "describe .* parameters"
edit "$good" "$tmp/n.st" --meta n=2147483647; lm_check "$tmp/n.st" "n=2147483647 is outside"
edit "$good" "$tmp/n.st" --meta n=1000000; lm_check "$tmp/n.st" "describe .* parameters"
edit "$good" "$tmp/k.st" --meta k=99999999999999999999; lm_check "$tmp/k.st" "k=99999999999999999999 is outside"
edit "$good" "$tmp/t.st" --transpose lm.lstm1.w_ih; lm_check "$tmp/t.st" "shape"
edit "$good" "$tmp/c.st" --truncate 3000; lm_check "$tmp/c.st" "truncated|shorter|malformed"
edit "$good" "$tmp/o.st" --meta optim.lm.step=99999999999999999999
expect 1 "optim.lm.step=99999999999999999999 is outside" -- "$moe" train --data "$tmp/text.txt" --batch 4 --bptt 16 --steps 8 --out "$tmp/r" --resume "$tmp/o.st"
edit "$good" "$tmp/s.st" --meta step=-5
expect 1 "step=-5 is outside" -- "$moe" train --data "$tmp/text.txt" --batch 4 --bptt 16 --steps 8 --out "$tmp/r" --resume "$tmp/s.st"
# the translation model
parallel_text "$tmp"
s2s=(--src "$tmp/de.txt" --tgt "$tmp/en.txt" --max-words 6 --min-count 1 --d 16 --experts 4 --k 2 --h 16 --batch 16 --threads 1)
"$moe" seq2seq train "${s2s[@]}" --steps 3 --out "$tmp/s2s" > "$tmp/s2s.log" 2>&1 || bad "training the small translation model: $(tail -2 "$tmp/s2s.log")"
sgood=$tmp/s2s/model.safetensors
s2s_check() {
  expect 1 "$2" -- "$moe" seq2seq eval --model "$1"
  expect 1 "$2" -- sh -c "echo haus baum | '$moe' translate --model '$1'"
  expect 1 "$2" -- "$moe" seq2seq train --src "$tmp/de.txt" --tgt "$tmp/en.txt" --max-words 6 --min-count 1 --batch 16 --steps 6 --out "$tmp/sr" --resume "$1"
}
edit "$sgood" "$tmp/sv.st" --meta tgt_vocab=0; s2s_check "$tmp/sv.st" "tgt_vocab=0 is outside"
edit "$sgood" "$tmp/sv.st" --meta tgt_vocab=77; s2s_check "$tmp/sv.st" "vocabularies do not match"
edit "$sgood" "$tmp/sd.st" --meta d=2147483647; s2s_check "$tmp/sd.st" "d=2147483647 is outside"
edit "$sgood" "$tmp/sd.st" --meta n=500000; s2s_check "$tmp/sd.st" "describe .* parameters"
edit "$sgood" "$tmp/st.st" --transpose s2s.comb.w # [2d, d]
s2s_check "$tmp/st.st" "shape"
for b in -3 100000; do
  edit "$sgood" "$tmp/sb.st" --meta batch_in_epoch=$b
  expect 1 "batch_in_epoch|damaged" -- "$moe" seq2seq train --src "$tmp/de.txt" --tgt "$tmp/en.txt" --max-words 6 --min-count 1 --batch 16 --steps 6 --out "$tmp/sr" --resume "$tmp/sb.st"
done
# a save killed midway left <path>.tmp.<pid>: the next save of the path removes it; a live
# process's temporary file stays
sleep 0 & gone=$!; wait $gone
echo partial > "$tmp/lm/model.safetensors.tmp.$gone"
echo live > "$tmp/lm/model.safetensors.tmp.$$"
"$moe" train --data "$tmp/text.txt" --batch 4 --bptt 16 --steps 6 --out "$tmp/lm" --resume "$good" > /dev/null 2>&1 || bad "resume after a killed save"
[[ ! -e "$tmp/lm/model.safetensors.tmp.$gone" ]] && ok || bad "the stale temporary file of a dead process is still there"
[[ -e "$tmp/lm/model.safetensors.tmp.$$" ]] && ok || bad "a live process's temporary file was removed"
finish hostile_ckpt
