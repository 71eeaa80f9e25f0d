#!/usr/bin/env bash
# capacity.sh - capacity without cost (issue 12): the language model's training time per token
# with 16 experts against 1024 (flat, and hierarchical 32 x 32 with the same active size: k = 2
# experts a token), at the default batch (32 x 64 tokens: k*B/n = 4 at n = 1024) and at a batch
# where each of 1024 experts sees 32 tokens a step on average (256 x 64). Training as
# `moe train --optim factored --fused` runs it; the runs alternate, and each run's speed is the
# median tokens/s of its reports after the first (warm-up). Prints one JSON line per run and the
# ratios of the medians over the rounds.
#   usage: bench/capacity.sh [MOE_BINARY] [STEPS] [ROUNDS] [DATA]
. "$(dirname "$0")/common.sh"
bench_start capacity 30 "$@"
rounds=${3:-3}
data=${4:-runs/english.txt}
[[ -f $data ]] || { echo "capacity: $data is missing (make corpus)" >&2; exit 1; }
common=(--data "$data" --d 128 --h 256 --k 2 --optim factored --fused --steps "$steps" --log-every 5
        --eval-every 0 --eval-batches 1 --ckpt-every 0 --threads 2)
configs=("flat16:--experts 16" "flat1024:--experts 1024" "hier1024:--experts 1024 --groups 32 --k-groups 1")
for batch in 32 256; do
  for r in $(seq 1 "$rounds"); do
    for c in "${configs[@]}"; do
      name=${c%%:*}
      read -r -a extra <<<"${c#*:}"
      dir="$out/$name-b$batch-r$r"
      "$moe" train "${common[@]}" "${extra[@]}" --batch "$batch" --bptt 64 --out "$dir" > "$dir.txt" 2>&1 ||
        { echo "capacity: $name batch $batch failed: $(tail -2 "$dir.txt")" >&2; exit 1; }
      python3 - "$dir/log.jsonl" "$name" "$batch" "$r" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"kind":"train"' in l]
tps = statistics.median(x["tokens_per_s"] for x in rows[1:]) if len(rows) > 1 else rows[0]["tokens_per_s"]
print(json.dumps({"config": sys.argv[2], "batch": int(sys.argv[3]), "round": int(sys.argv[4]), "tokens_per_s": round(tps, 1)}))
PY
    done
  done
done | tee "$out/capacity.jsonl"
python3 - "$out/capacity.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for b in sorted({r["batch"] for r in rows}):
    med = {c: statistics.median(r["tokens_per_s"] for r in rows if r["batch"] == b and r["config"] == c)
           for c in ("flat16", "flat1024", "hier1024")}
    print(f"batch {b} x 64: tok/s medians {med}; per-token time n=1024/n=16: flat {med['flat16'] / med['flat1024']:.2f}, "
          f"hierarchical {med['flat16'] / med['hier1024']:.2f}")
PY
