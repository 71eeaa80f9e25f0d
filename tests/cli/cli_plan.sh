#!/usr/bin/env bash
# cli_plan.sh - the memory plan (moe_lm_plan): `moe train --plan` prints it and stops; a run whose
# plan does not fit is refused within seconds, before it allocates, naming what would fit; and the
# plan agrees with the peak RSS of a real run within 15% (flat MoE with Adam and with the
# factored optimiser, a hierarchical MoE, the dense baseline; skipped under ASan, whose shadow
# memory and quarantine are not the program's).
# usage: cli_plan.sh MOE_BINARY TESTS_DIR
set -u
moe=$1
. "$(dirname "$0")/../testlib.sh"
for i in $(seq 1 300); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 7))."; done > "$tmp/text.txt"
run=(--data "$tmp/text.txt" --eval-every 0 --ckpt-every 0 --threads 2)
expect 0 "memory plan: [0-9.]+ MB per process \(parameters [0-9.]+, gradients" -- "$moe" train "${run[@]}" --plan --out "$tmp/p"
[[ ! -e "$tmp/p/model.safetensors" && ! -e "$tmp/p/log.jsonl" ]] && ok || bad "--plan wrote files"
# 8192 experts of 1024 -> 4096 -> 1024 with Adam: over a terabyte
t0=$(date +%s)
expect 1 "this run needs [0-9.]+ GB .* available: nothing was allocated.*--experts [0-9]+ needs" \
  -- "$moe" train "${run[@]}" --d 1024 --h 4096 --experts 8192 --k 2 --steps 5 --out "$tmp/big"
(( $(date +%s) - t0 < 10 )) && ok || bad "refusing the plan took $(( $(date +%s) - t0 )) s"
expect 1 "memory plan" -- "$moe" train "${run[@]}" --d 1024 --h 4096 --experts 8192 --k 2 --plan --out "$tmp/big"
# the memory-saving settings are named with what each needs
expect 1 "--optim factored needs [0-9.]+ GB.*--fused needs [0-9.]+ GB.*--optim factored --fused needs" \
  -- "$moe" train "${run[@]}" --d 1024 --h 4096 --experts 8192 --k 2 --steps 5 --out "$tmp/big"
# fused updates plan no expert gradients
g0=$("$moe" train "${run[@]}" --d 256 --experts 256 --h 512 --k 2 --plan --out "$tmp/p" | sed -n 's/.*gradients \([0-9.]*\),.*/\1/p')
g1=$("$moe" train "${run[@]}" --d 256 --experts 256 --h 512 --k 2 --fused --plan --out "$tmp/p" | sed -n 's/.*gradients \([0-9.]*\),.*/\1/p')
python3 -c "import sys; sys.exit(0 if float(sys.argv[2]) < 0.1 * float(sys.argv[1]) else 1)" "$g0" "$g1" && ok \
  || bad "--fused plans gradients of $g1 MB against $g0 MB without"
if [[ -n "${ASAN_OPTIONS:-}" ]]; then echo "cli_plan: ASan build: the RSS comparison is skipped"; finish cli_plan; exit; fi
# plan vs peak RSS (MB)
within() { # CONFIG...: one run, its plan against its peak RSS
  local out plan rss
  out=$("$moe" train "${run[@]}" --steps 2 --out "$tmp/r" "$@" 2>&1)
  plan=$(sed -n 's/^memory plan: \([0-9.]*\) MB.*/\1/p' <<<"$out")
  rss=$(sed -n 's/^memory: peak RSS \([0-9.]*\) MB.*/\1/p' <<<"$out")
  rm -rf "$tmp/r"
  if [[ -z "$plan" || -z "$rss" ]]; then bad "$*: no plan or RSS: ${out: -300}"; return; fi
  if python3 -c "import sys; p, r = float(sys.argv[1]), float(sys.argv[2]); sys.exit(0 if abs(r - p) <= 0.15 * p else 1)" "$plan" "$rss"
  then ok; else bad "$*: plan $plan MB, peak RSS $rss MB: more than 15% apart"; fi
}
within --d 256 --experts 256 --h 512 --k 2
within --d 256 --experts 256 --h 512 --k 2 --optim factored
within --d 256 --experts 256 --h 512 --k 2 --optim factored --fused
within --d 128 --experts 64 --groups 8 --k-groups 2 --k 2 --h 512 --fused
within --d 128 --experts 64 --groups 8 --k-groups 2 --k 2 --h 512
within --d 256 --ffn dense --k 2 --h 2048
finish cli_plan
