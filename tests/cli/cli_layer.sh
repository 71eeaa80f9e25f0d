#!/usr/bin/env bash
# cli_layer.sh - the CLI as a user meets it: `moe layer` reproduces the PyTorch golden files
# through `moe diff`, help works, and bad input gives a clear message and a non-zero exit.
# usage: cli_layer.sh MOE_BINARY TESTS_DIR
set -u
moe=$1; golden=$2/golden
. "$(dirname "$0")/../testlib.sh"

for c in n16_k2_bias1_train n64_k4_bias0_eval n4_k1_bias1_train n1024_k4_bias0_train n4_k4_bias0_train hier_a4_b4_kp2_ks2_bias1_train; do
  g=$golden/$c
  extra=()
  [[ $c == *_train ]] && extra=(--train --noise "$g.input.safetensors")
  expect 0 "wrote" -- "$moe" layer --params "$g.params.safetensors" --input "$g.input.safetensors" \
    "${extra[@]}" --grad-output "$g.input.safetensors" --out "$tmp/$c.out.safetensors" --threads 2
  expect 0 "grad.experts.w1" -- "$moe" diff --got "$tmp/$c.out.safetensors" --want "$g.expected.safetensors" --rtol 1e-5
done
# diff must be able to fail: compare one case's output against another case's expectation
expect 1 "OFF" -- "$moe" diff --got "$tmp/n16_k2_bias1_train.out.safetensors" --want "$golden/n16_k2_bias1_eval.expected.safetensors"

for sub in layer diff classify "bench layer"; do
  expect 0 "usage" -- $moe $sub --help
done
expect 2 "usage" -- "$moe"
expect 2 "unknown command" -- "$moe" frobnicate
expect 2 "unknown option" -- "$moe" layer --bogus 1
expect 1 "required" -- "$moe" layer --params x
g=$golden/n16_k2_bias1_train
expect 1 "no such file|cannot open" -- "$moe" layer --params "$tmp/none.safetensors" --input "$g.input.safetensors" --out "$tmp/o"
head -c 100 "$g.params.safetensors" > "$tmp/trunc.safetensors"
expect 1 "truncated|past" -- "$moe" layer --params "$tmp/trunc.safetensors" --input "$g.input.safetensors" --out "$tmp/o"
expect 1 "must be \[B,12\]|\[B,12\]" -- "$moe" layer --params "$golden/n16_k2_bias1_train.params.safetensors" --input "$golden/n1024_k4_bias0_eval.input.safetensors" --out "$tmp/o"
expect 1 "only applies in training" -- "$moe" layer --params "$g.params.safetensors" --input "$g.input.safetensors" --noise "$g.input.safetensors" --out "$tmp/o"
expect 1 "integer" -- "$moe" bench layer --B abc
expect 1 "--k 5 exceeds --experts 4" -- "$moe" bench layer --experts 4 --k 5
[[ ! -e "$tmp/o" ]] && ok || bad "a failed run left an output file"

finish cli_layer
