#!/usr/bin/env bash
# cli_legacy.sh - checkpoints written before the one checkpoint format (version 1: a format
# string of each kind's own; the translation model's optimiser state stored per arena) still
# load: `moe info`, evaluation and sampling of a language model, translation, and resuming a
# MIXER run of a translation model. The two files in tests/golden/legacy_v1_*.safetensors were
# written by moe 0.9.0 before the change, on the data made below (d=8, 4 experts).
# usage: cli_legacy.sh MOE_BINARY TESTS_DIR
set -u
moe=$1; golden=$2/golden
. "$(dirname "$0")/../testlib.sh"
parallel_text "$tmp"
for i in $(seq 1 300); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 7))."; done > "$tmp/text.txt"
lm=$golden/legacy_v1_lm.safetensors; s2s=$golden/legacy_v1_seq2seq.safetensors
expect 0 "model: vocab 20, d 8, middle layer MoE" -- "$moe" info "$lm"
expect 0 "perplexity" -- "$moe" eval --model "$lm" --data "$tmp/text.txt"
expect 0 "" -- "$moe" sample --model "$lm" --length 10
expect 0 "translation model" -- "$moe" info "$s2s"
out=$(echo "haus baum katze" | "$moe" translate --model "$s2s" 2>/dev/null); rc=$?
[[ $rc -eq 0 && $(wc -l <<<"$out") -eq 1 ]] && ok || bad "translate with a version-1 checkpoint: exit $rc: $out"
expect 0 "done: checkpoint" -- "$moe" seq2seq train --objective mixer --src "$tmp/de.txt" --tgt "$tmp/en.txt" --max-words 6 \
  --min-count 1 --batch 16 --threads 1 --n-xent 1 --n-xer 1 --delta 3 --steps 80 --out "$tmp/r" --resume "$s2s"
expect 0 "format: moe-checkpoint version 2" -- "$moe" info "$tmp/r/model.safetensors"
expect 0 "format: moe-seq2seq 1" -- "$moe" info "$s2s"
# after the settings, `moe info` lists the file's tensors (name, dtype, shape) and their total
expect 0 "^    moe\.experts\.w1 +F32 +\[4, 8, 8\]$" -- "$moe" info "$lm"
expect 0 "^  total: 46 tensors, 6332 elements, 25328 bytes$" -- "$moe" info "$lm"
expect 0 "^    s2s\.src_emb +F32 +\[14, 8\]$" -- "$moe" info "$s2s"
for f in "$lm" "$s2s"; do
  out=$("$moe" info "$f")
  rows=$(sed -n '/^  tensors:$/,/^  total:/p' <<<"$out" | grep -c '^    ')
  after=$(sed -n '/^  seed: 1$/,$p' <<<"$out" | grep -c '^  tensors:$')
  [[ $out =~ total:\ ([0-9]+)\ tensors && ${BASH_REMATCH[1]} == "$rows" && $rows -gt 10 && $after == 1 ]] && ok ||
    bad "moe info $f: $rows tensor rows, the total says '${BASH_REMATCH[1]:-}', tensors block after the settings: $after"
done
finish cli_legacy
