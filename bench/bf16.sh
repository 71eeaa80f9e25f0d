#!/usr/bin/env bash
# bf16.sh - bfloat16 expert weights against float32 (issue 12, item 5): the default language model
# on the default corpus (Debian's fortunes), trained with `--fused` and with `--fused --bf16`, the
# same steps and seeds; reports each run's validation losses and test loss, and the relative gap
# of bf16 to float32. A check of quality, not of speed (the two alternate, one seed after another).
# usage: bench/bf16.sh [MOE_BINARY] [STEPS] [SEEDS...]   (defaults: build/moe 2000 1 2)
set -euo pipefail
cd "$(dirname "$0")/.."
moe=${1:-build/moe}
steps=${2:-2000}
shift $(( $# >= 2 ? 2 : $# )) || true
seeds=("$@")
[[ ${#seeds[@]} -gt 0 ]] || seeds=(1 2)
out=${OUT:-runs/bench-bf16}
mkdir -p "$out"
res="$out/bf16.jsonl"
: > "$res"
for seed in "${seeds[@]}"; do
  for kind in f32 bf16; do
    dir="$out/$kind-s$seed"
    rm -rf "$dir"
    extra=()
    [[ $kind == bf16 ]] && extra=(--bf16)
    "$moe" train --steps "$steps" --seed "$seed" --fused "${extra[@]}" --out "$dir" --eval-every $((steps / 4)) \
      --ckpt-every 0 > "$dir.log" 2>&1
    data=$(dirname "$dir")/fortunes.txt
    test=$("$moe" eval --model "$dir/model.safetensors" --data "$data" --split test 2>&1 | grep -o "loss [0-9.]*" | head -1)
    python3 - "$dir/log.jsonl" "$kind" "$seed" "${test#loss }" "$res" <<'PY'
import json, sys
log, kind, seed, test, res = sys.argv[1:6]
valid = [json.loads(x) for x in open(log) if '"kind":"valid"' in x]
row = {"kind": kind, "seed": int(seed), "valid": {v["step"]: v["loss"] for v in valid}, "test_loss": float(test),
       "seconds": valid[-1]["elapsed_s"]}
open(res, "a").write(json.dumps(row) + "\n")
print(json.dumps(row))
PY
  done
done
python3 - "$res" <<'PY'
import json, sys
rows = [json.loads(x) for x in open(sys.argv[1])]
for s in sorted({r["seed"] for r in rows}):
    f = next(r for r in rows if r["seed"] == s and r["kind"] == "f32")
    b = next(r for r in rows if r["seed"] == s and r["kind"] == "bf16")
    last = max(f["valid"], key=int)
    print("seed %d: valid loss f32 %.4f bf16 %.4f (%+.2f%%); test loss f32 %.4f bf16 %.4f (%+.2f%%)" % (
        s, f["valid"][last], b["valid"][last], 100 * (b["valid"][last] / f["valid"][last] - 1),
        f["test_loss"], b["test_loss"], 100 * (b["test_loss"] / f["test_loss"] - 1)))
PY
