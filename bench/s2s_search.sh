#!/usr/bin/env bash
# The settings search of issue 14: MIXER over its REINFORCE learning rate and delta, SCST over
# its learning rate, each run continuing the same cross-entropy checkpoint (the shared epochs of
# bench/s2s_table.sh) and scored on the validation split only (test is kept for the table).
# Every setting tried is reported, and the best by validation BLEU (smoothed, method 3; plain
# BLEU breaks ties) is named: the defaults to put in the table.
#   DATA=ding EXTRA="--n-xer 1" bash bench/s2s_search.sh [MOE] [SHARED_CKPT] [OUT]
#   (defaults build/moe, runs/s2s_table/shared/model.safetensors, runs/s2s_search)
#   MIXER_LRS="0.0002 0.0005 0.001"  DELTAS="4 8 12"  SCST_LRS="0.00005 0.0001 0.0002"
#   RL_XENTS="0 0.5"  the share of rows under cross-entropy in the sampling epochs (--rl-xent),
#                     searched for both objectives (default 0 only)
# DATA and EXTRA as in bench/s2s_table.sh; a run whose OUT/<name>.seconds exists is kept. The
# results go to OUT/search.jsonl, one line a setting.
set -euo pipefail
MOE=${1:-build/moe}
SHARED=${2:-runs/s2s_table/shared/model.safetensors}
OUT=${3:-runs/s2s_search}
EXTRA=${EXTRA:-}
THREADS=${THREADS:-}
DATA=${DATA:-}
MIXER_LRS=${MIXER_LRS:-0.0002 0.0005 0.001}
DELTAS=${DELTAS:-4 8 12}
SCST_LRS=${SCST_LRS:-0.00005 0.0001 0.0002}
RL_XENTS=${RL_XENTS:-0}
case "$DATA" in
  ding|messages)
    [[ -f runs/s2s/$DATA.de ]] || { echo "s2s_search: runs/s2s/$DATA.de missing: run make corpus-s2s" >&2; exit 1; }
    DATA="--src runs/s2s/$DATA.de --tgt runs/s2s/$DATA.en --max-words 40" ;;
esac
[[ -f $SHARED ]] || { echo "s2s_search: $SHARED missing: train the shared epochs first (bench/s2s_table.sh)" >&2; exit 1; }
mkdir -p "$OUT"
th=${THREADS:+--threads $THREADS}
t() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$1" "$2"; }
# run NAME OBJECTIVE OPTIONS...: one setting, trained from the shared checkpoint
run() {
  local name=$1 obj=$2; shift 2
  [[ -f "$OUT/$name.seconds" ]] && return 0
  rm -rf "$OUT/$name"; mkdir -p "$OUT/$name"
  cp "$SHARED" "$OUT/$name/start.safetensors"
  local s; s=$(t)
  # shellcheck disable=SC2086
  $MOE seq2seq train --objective "$obj" --out "$OUT/$name" --resume "$OUT/$name/start.safetensors" "$@" $th $DATA $EXTRA \
    > "$OUT/$name.txt" 2>&1 || echo "s2s_search: $name failed: $(tail -1 "$OUT/$name.txt")" >&2
  secs "$s" "$(t)" > "$OUT/$name.seconds"
}
# the name of a setting with --rl-xent F: a suffix where F is not 0
rx() { [[ $1 == 0 ]] || echo "_rlx$1"; }
for f in $RL_XENTS; do for lr in $MIXER_LRS; do for d in $DELTAS; do
  run "mixer_lr${lr}_delta$d$(rx "$f")" mixer --lr-rl "$lr" --delta "$d" --rl-xent "$f"
done; done; done
# SCST has no stages, but its default length is MIXER's schedule: the first delta's, so that it
# trains as many epochs as a MIXER run of that delta
d0=${DELTAS%% *}
for f in $RL_XENTS; do for lr in $SCST_LRS; do run "scst_lr$lr$(rx "$f")" scst --lr-rl "$lr" --delta "$d0" --rl-xent "$f"; done; done
: > "$OUT/search.jsonl"
for f in "$OUT"/*.seconds; do
  name=$(basename "$f" .seconds); m="$OUT/$name/model.safetensors"
  if [[ -f $m ]]; then j=$($MOE seq2seq eval --model "$m" --split valid --json); else j='{"a":null}'; fi
  python3 - "$name" "$j" "$(cat "$f")" "$OUT/$name/log.jsonl" >> "$OUT/search.jsonl" <<'PY'
import json, os, sys
name, j, secs, log = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
vb = [r["valid_bleu"] for r in map(json.loads, open(log)) if r.get("kind") == "epoch"] if os.path.exists(log) else []
a = j["a"] or {}
print(json.dumps({"setting": name, "valid_bleu": a.get("bleu"), "valid_smooth": a.get("bleu_smooth"),
                  "valid_exact": a.get("exact"), "valid_by_epoch": vb, "seconds": secs}))
PY
done
python3 - "$OUT/search.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("%-28s %10s %10s %8s %8s  %s" % ("setting", "valid BLEU", "smoothed", "exact", "time", "valid BLEU by epoch"))
for r in rows:
    if r["valid_bleu"] is None:
        print("%-28s %10s" % (r["setting"], "failed"))
        continue
    print("%-28s %10.2f %10.2f %7.2f%% %6d s  %s" % (r["setting"], r["valid_bleu"], r["valid_smooth"],
          100 * r["valid_exact"], r["seconds"], " ".join("%.2f" % v for v in r["valid_by_epoch"])))
for obj in ("mixer", "scst"):
    ok = [r for r in rows if r["setting"].startswith(obj) and r["valid_bleu"] is not None]
    if ok:
        best = max(ok, key=lambda r: (r["valid_smooth"], r["valid_bleu"]))
        print("best %s on validation: %s (smoothed %.2f, BLEU %.2f)" % (obj, best["setting"], best["valid_smooth"],
              best["valid_bleu"]))
PY
