#!/usr/bin/env bash
# run_layer_bench.sh - the layer benchmark of BENCHMARKS.md: moe against the dense FFN of equal
# active FLOPs and against PyTorch, over n = 4..1024 experts at k = 4, B = 16384, d = 512,
# h = 1024, 2 threads. Each row is one process for moe and one for PyTorch, run back to back.
# usage: bench/run_layer_bench.sh [MOE_BINARY] [REPS] [N-LIST]   (results also in bench/results/)
set -euo pipefail
cd "$(dirname "$0")/.."
moe=${1:-build/moe}
reps=${2:-3}
ns=${3:-"4 16 64 256 1024"}
out=bench/results
mkdir -p "$out"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
log="$out/layer-$stamp.jsonl"
have_torch=0
/usr/bin/python3 -c "import torch" 2>/dev/null && have_torch=1
[[ $have_torch == 1 ]] || echo "note: no torch for /usr/bin/python3 (scripts/deps.sh --torch); PyTorch columns skipped" >&2
printf "| n | moe fwd+bwd tok/s | GFLOP/s | dense tok/s | moe/dense | sgemm GFLOP/s | torch fwd+bwd tok/s | moe/torch |\n"
printf "|---|---|---|---|---|---|---|---|\n"
for n in $ns; do
  m=$(OMP_NUM_THREADS=2 "$moe" bench layer --B 16384 --d 512 --h 1024 --experts "$n" --k 4 --threads 2 --reps "$reps" --json)
  echo "$m" >> "$log"
  t='{}'
  if [[ $have_torch == 1 ]]; then
    t=$(/usr/bin/python3 bench/torch_moe.py --B 16384 --d 512 --h 1024 --n "$n" --k 4 --threads 2 --reps "$reps" --json)
    echo "$t" >> "$log"
  fi
  /usr/bin/python3 - "$m" "$t" <<'PY'
import json, sys
m, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
tt = t.get("fwdbwd_tokens_per_s")
print("| %d | %.0f | %.1f | %.0f | %.3f | %.1f | %s | %s |" % (
    m["n"], m["fwdbwd_tokens_per_s"], m["fwdbwd_gflops"], m["dense_fwdbwd_tokens_per_s"],
    m["moe_over_dense"], m["sgemm_gflops"], "%.0f" % tt if tt else "-",
    "%.2f" % (m["fwdbwd_tokens_per_s"] / tt) if tt else "-"))
PY
done
echo "raw results: $log" >&2
