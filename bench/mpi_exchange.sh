#!/usr/bin/env bash
# mpi_exchange.sh - the expert exchange of `mpirun -np P moe train` on the default model: tokens/s
# of 1 process (2 threads) against P ranks of 1 thread each, the share of step time spent in
# collectives, and the bytes of token rows each rank sends and receives per step against the
# formula for balanced routing: 4 exchanges (forward there and back, backward there and back)
# x k * B/P rows x d floats x 4 bytes x (P-1)/P remote, each way.
# usage: bench/mpi_exchange.sh [MOE_BINARY] [STEPS] > bench/results/mpi-DATE.md
set -euo pipefail
source "$(dirname "$0")/common.sh"
bench_start mpi-bench 300 "$@"
mpirun=(mpirun --oversubscribe --allow-run-as-root --mca btl_vader_single_copy_mechanism none)
common=(--steps "$steps" --log-every 50 --eval-every 0 --ckpt-every 0 --seed 1)
echo "<!-- $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null) $moe $steps steps; runs in $out -->"
echo "| run | tokens/s (last 250 steps) | comm share of step time | bytes sent+received per rank per step | formula |"
echo "|---|---|---|---|---|"
row() { # name np threads
  local name=$1 np=$2 th=$3
  if [[ $np -eq 1 ]]; then "$moe" train "${common[@]}" --threads "$th" --out "$out/$name" > "$out/$name.txt" 2>&1
  else "${mpirun[@]}" -np "$np" "$moe" train "${common[@]}" --threads "$th" --out "$out/$name" > "$out/$name.txt" 2>&1; fi
  python3 - "$name" "$np" "$out/$name/log.jsonl" <<'PY'
import json, sys
name, P, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tr = [json.loads(l) for l in open(log) if '"kind":"train"' in l][1:]
tps = sum(r["tokens_per_s"] for r in tr) / len(tr)
comm = sum(r.get("comm_fraction", 0) for r in tr) / len(tr)
byts = sum(r.get("exchange_bytes_per_step", 0) for r in tr) / len(tr)
k, B, d = 2, 32 * 64, 128
formula = 2 * 4 * k * (B / P) * d * 4 * (P - 1) / P if P > 1 else 0
print("| %s | %.0f | %s | %s | %s |" % (name, tps, "%.1f%%" % (100 * comm) if P > 1 else "-",
      "%.2f MB" % (byts / 1e6) if P > 1 else "-", "%.2f MB" % (formula / 1e6) if P > 1 else "-"))
PY
}
row "1 process, 2 threads" 1 2
row "2 ranks, 1 thread each" 2 1
row "4 ranks, 1 thread each (oversubscribed)" 4 1
