#!/usr/bin/env bash
# cli_moe_opts.sh - the MoE layer's settings are one table (cli/moe_opts.c): every command that
# builds an MoE layer takes them under the same names, refuses the same bad value with the same
# message (before it reads any data), and shows the same help lines.
# usage: cli_moe_opts.sh MOE_BINARY TESTS_DIR
set -u
moe=$1
. "$(dirname "$0")/../testlib.sh"
cmds=("train --out $tmp/lm" "seq2seq train --out $tmp/s2s" "classify --data $tmp/none" "bench layer" "bench lm")
flat=(--experts 4 --k 2)   # what the translation model's flat MoE takes too

# same_error CODE PATTERN COMMANDS... -- OPTIONS...: each command exits CODE, its message matches
# PATTERN, and all the messages are the same line
same_error() {
  local code=$1 pat=$2; shift 2
  local -a which=()
  while [[ $1 != -- ]]; do which+=("$1"); shift; done
  shift
  local first="" msg rc i
  for i in "${which[@]}"; do
    msg=$("$moe" ${cmds[$i]} "$@" 2>&1 >/dev/null); rc=$?
    if [[ $rc -ne $code ]]; then bad "moe ${cmds[$i]} $*: exit $rc (want $code): $msg"; continue; fi
    if ! grep -qiE -- "$pat" <<<"$msg"; then bad "moe ${cmds[$i]} $*: message lacks /$pat/: $msg"; continue; fi
    if [[ -z $first ]]; then first=$msg
    elif [[ $msg != "$first" ]]; then bad "moe ${cmds[$i]} $*: '$msg' differs from '$first'"; continue; fi
    ok
  done
}
all=(0 1 2 3 4); hier=(0 2 3 4)   # moe seq2seq train has a flat MoE only: no --groups
same_error 1 "^moe: error: --k '0': give the experts per token as an integer from 1 to 1048576$" "${all[@]}" -- --k 0
same_error 1 "^moe: error: --experts '0': give the number of experts as an integer from 1 to" "${all[@]}" -- --experts 0
same_error 1 "^moe: error: --experts 'many': give the number of experts as an integer" "${all[@]}" -- --experts many
same_error 1 "^moe: error: --h '-3': give the hidden size" "${all[@]}" -- --h -3
same_error 1 "^moe: error: --d '0': give the model width" "${all[@]}" -- --d 0
same_error 1 "^moe: error: --w-load '-1': give the weight of CV\(Load\)\^2 as a number from 0 to 1e6$" "${all[@]}" -- --w-load -1
same_error 1 "^moe: error: --w-importance 'x'" "${all[@]}" -- --w-importance x
same_error 1 "^moe: error: --noise-eps '-0.5'" "${all[@]}" -- --noise-eps -0.5
same_error 1 "^moe: error: --k 5 exceeds --experts 4: .*give a --k of at most 4" "${all[@]}" -- --experts 4 --k 5
same_error 1 "^moe: error: --experts 8 do not split into --groups 3 of equal size: give a --groups that divides --experts$" "${hier[@]}" -- --experts 8 --groups 3
same_error 1 "^moe: error: --k-groups 3 exceeds --groups 2" "${hier[@]}" -- --experts 8 --groups 2 --k-groups 3
same_error 1 "^moe: error: --k 3 exceeds the 2 experts of a group" "${hier[@]}" -- --experts 8 --groups 4 --k 3
same_error 1 "^moe: error: --k-groups needs --groups" "${hier[@]}" -- --k-groups 2
same_error 1 "^moe: error: --groups '0'" "${hier[@]}" -- --groups 0
expect 2 "unknown option '--groups'" -- "$moe" seq2seq train --groups 2
# the old spellings are gone, but bench layer still takes --n as a deprecated alias of --experts
for i in 0 1 2 4; do expect 2 "unknown option '--n'" -- "$moe" ${cmds[$i]} --n 4; done
expect 0 "deprecated alias of --experts" -- "$moe" bench layer --help
tiny=(--B 64 --d 8 --h 8 --k 2 --reps 1 --no-dense --json --threads 2)
expect 0 '"n":4,"k":2' -- "$moe" bench layer --experts 4 "${tiny[@]}"
expect 0 '"groups":2,"k_groups":1,.*"n":8,"k":2' -- "$moe" bench layer --experts 8 --groups 2 --k-groups 1 "${tiny[@]}"
expect 0 '"n":4,"k":2' -- "$moe" bench layer --n 4 "${tiny[@]}"
expect 1 "^moe: error: --k 2 exceeds --experts 1" -- "$moe" bench layer --n 1 "${tiny[@]}"
# one help block, the same lines in every command (the defaults column aside)
ref=""
for c in "${cmds[@]}"; do
  h=$("$moe" ${c%% --*} --help | sed -n '/^MoE layer (the same options/,$p' | grep -E -- '^  --(experts|k|h|d|w-importance|w-load|noise-eps) ' | sed -E 's/^  --([a-z-]+) [^ ]+ +/\1: /')
  [[ $(wc -l <<<"$h") -eq 7 ]] && ok || bad "moe ${c%% --*} --help: want 7 MoE lines, got: $h"
  if [[ -z $ref ]]; then ref=$h; elif [[ $h == "$ref" ]]; then ok; else bad "moe ${c%% --*} --help: MoE lines differ: $h"; fi
done
for c in train classify "bench layer" "bench lm"; do expect 0 "^  --groups A +hierarchical MoE" -- "$moe" $c --help; done
# the settings reach the model: a tiny hierarchical LM and a translation model from these names
for i in $(seq 1 200); do echo "line $i: the quick brown fox jumps over the lazy dog."; done > "$tmp/text.txt"
expect 0 "done" -- "$moe" train --data "$tmp/text.txt" --steps 2 --out "$tmp/h" --d 8 --h 8 --experts 4 --groups 2 --k 1 --w-importance 0.2 --w-load 0.3 --noise-eps 0.02 --batch 2 --bptt 8 --eval-every 0 --threads 2
expect 0 "hierarchical: 2 groups of 2 experts, 2 groups and k 1 experts.*w_importance 0.2, w_load 0.3" -- "$moe" info "$tmp/h/model.safetensors"
finish cli_moe_opts
