#!/usr/bin/env bash
# lm_tables.sh - the paper's Tables 7 and 6 in miniature on the default corpus (Debian's
# fortunes, byte tokens): (1) at equal operations per timestep and equal training tokens,
# validation perplexity for the dense baseline and n = 4, 16, 64, 256 experts (k = 2, h = 256;
# the dense FFN has hidden k*h), and hierarchical layers of 256 and 1024 experts of the same
# operations; (2) balancing weights 0/0, 0.1/0.1 and 1/1 at n = 16.
# usage: bench/lm_tables.sh [MOE_BINARY] [STEPS] > bench/results/lm-tables-DATE.md
# The runs (checkpoints, logs) go to runs/lm-tables-DATE/, outside version control.
set -euo pipefail
source "$(dirname "$0")/common.sh"
bench_start lm-tables 600 "$@"
echo "<!-- $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null) $moe $steps; runs in $out -->"
common=(--steps "$steps" --d 128 --k 2 --h 256 --batch 32 --bptt 64 --log-every 50 --eval-every 0 --ckpt-every 0 --seed 1)
row() { # name, extra args...
  local name=$1; shift
  local t0=$(date +%s.%N)
  "$moe" train "${common[@]}" --out "$out/$name" "$@" > "$out/$name.txt"
  local t1=$(date +%s.%N)
  local v=$(grep '"kind":"valid"' "$out/$name/log.jsonl" | tail -1)
  python3 - "$name" "$v" "$t0" "$t1" "$out/$name/log.jsonl" <<'PY'
import json, sys
name, v, log = sys.argv[1], json.loads(sys.argv[2]), sys.argv[5]
secs = float(sys.argv[4]) - float(sys.argv[3])
tr = [json.loads(l) for l in open(log) if '"kind":"train"' in l]
last = tr[-3:]
cvi = sum(r["cv_importance"] for r in last) / len(last)
cvl = sum(r["cv_load"] for r in last) / len(last)
mm = sum(r["max_mean_load"] for r in last) / len(last)
tps = sum(r["tokens_per_s"] for r in tr[1:]) / max(1, len(tr) - 1)
print("| %s | %.3f | %.2f | %.3f | %.3f | %.2f | %.0f | %.0f |" % (name, v["loss"], v["ppl"], cvi, cvl, mm, tps, secs))
PY
}
echo "### Table 7 in miniature: $steps steps x 32 x 64 tokens each, d=128, k=2, h=256"
echo "| model | valid loss | valid ppl | CV(imp) | CV(load) | max/mean load | tokens/s | seconds |"
echo "|---|---|---|---|---|---|---|---|"
row dense --ffn dense
row none --ffn none
for n in 4 16 64 256; do row "moe-n$n" --ffn moe --experts $n; done
# hierarchical (SPEC 1.6): 2 groups x 2 experts of h=128 per token, the operations of 2 of h=256
# (with 1 expert per group its gate would get no gradient from the loss)
row "hier-16x16-k2x2-h128" --ffn moe --experts 256 --groups 16 --k-groups 2 --k 2 --h 128
row "hier-32x32-k2x2-h128" --ffn moe --experts 1024 --groups 32 --k-groups 2 --k 2 --h 128
echo
echo "### Table 6 in miniature: n=16, balancing weights"
echo "| weights | valid loss | valid ppl | CV(imp) | CV(load) | max/mean load | tokens/s | seconds |"
echo "|---|---|---|---|---|---|---|---|"
row "w0-0" --experts 16 --w-importance 0 --w-load 0
row "w0.1-0.1" --experts 16 --w-importance 0.1 --w-load 0.1
row "w1-1" --experts 16 --w-importance 1 --w-load 1
