#!/usr/bin/env bash
# The MIXER paper's table (issues 4 and 14): XENT (greedy and beam), the XENT control with
# MIXER's learning-rate drop, MIXER and SCST with the same total epochs, on any parallel data.
#   bash bench/s2s_table.sh [MOE] [OUT]        (default build/moe, runs/s2s_table)
#   DATA="--src runs/s2s/ding.de --tgt runs/s2s/ding.en --max-words 40" bash bench/s2s_table.sh ...
#   DATA=ding|messages  the corpora of `make corpus-s2s` (runs/s2s/NAME.{de,en}, --max-words 40)
# DATA (default: the dictionary phrases of `moe seq2seq train`) goes to every training command,
# EXTRA to every one too (schedule options: --delta 8 --n-xer 2 ...), MODEL (model options such as
# --d 256) only to the shared run (the rows resume its checkpoint, which holds the model), THREADS
# sets --threads.
# The objectives share their first N_XENT cross-entropy epochs: one run trains them, and each
# row continues its checkpoint (resuming is exact, so the XENT row is the same as one
# uninterrupted run). MIXER and SCST train their sampled epochs at --lr-rl (default 5e-4, a
# quarter of the cross-entropy rate; MIXER_LR overrides it); the row "xent_lr" is the control:
# cross-entropy with that same drop of the learning rate (MIXER's) after the shared epochs. SCST,
# pure REINFORCE from its first sampled epoch, runs at SCST_LR (default 1e-4; at 5e-4 it collapsed
# in its sixth epoch on the phrases: BENCHMARKS.md). MIXER_RLX and SCST_RLX give the row its
# --rl-xent (the share of rows under cross-entropy in its sampling epochs; default none: 0).
# Each row is scored on the test and validation splits: corpus BLEU plain and smoothed (method 3),
# the exact-match rate, and a paired bootstrap (1000 resamples) against XENT greedy on test. The
# the mean change of validation BLEU from one of the row's epochs to the next ("+-epoch": the
# score's epoch-to-epoch spread) comes from its log. The beam rows are compared with XENT beam 5.
# The time of a row is the shared part plus its own. A row whose OUT/<row>.seconds exists is kept
# (delete the file to rerun it). The table also goes to OUT/table.jsonl.
set -euo pipefail
MOE=${1:-build/moe}
OUT=${2:-runs/s2s_table}
EXTRA=${EXTRA:-}
MODEL=${MODEL:-}
THREADS=${THREADS:-}
DATA=${DATA:-}
case "$DATA" in
  ding|messages)
    [[ -f runs/s2s/$DATA.de ]] || { echo "s2s_table: runs/s2s/$DATA.de missing: run make corpus-s2s" >&2; exit 1; }
    DATA="--src runs/s2s/$DATA.de --tgt runs/s2s/$DATA.en --max-words 40" ;;
esac
mkdir -p "$OUT"
t() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$1" "$2"; }
NX=$($MOE seq2seq train --help | sed -n 's/.*--n-xent \([0-9]*\).*/\1/p')
for a in $EXTRA; do [[ ${prev:-} == --n-xent ]] && NX=$a; prev=$a; done
LRRL=${MIXER_LR:-$($MOE seq2seq train --help | sed -n 's/.*--lr-rl \([0-9.]*\).*/\1/p')}
th=${THREADS:+--threads $THREADS}
# shellcheck disable=SC2086
if [[ ! -f "$OUT/shared.seconds" ]]; then
  t0=$(t)
  $MOE seq2seq train --out "$OUT/shared" --epochs "$NX" $th $DATA $MODEL $EXTRA > "$OUT/shared.txt"
  secs $t0 $(t) > "$OUT/shared.seconds"
fi
ROWS="xent xent_lr mixer scst"
for row in $ROWS; do
  [[ -f "$OUT/$row.seconds" ]] && continue
  obj=${row%_lr}; more=""
  [[ $row == xent_lr ]] && more="--lr $LRRL"
  [[ $row == mixer ]] && more="--lr-rl $LRRL ${MIXER_RLX:+--rl-xent $MIXER_RLX}"
  [[ $row == scst ]] && more="--lr-rl ${SCST_LR:-0.0001} ${SCST_RLX:+--rl-xent $SCST_RLX}"
  rm -rf "$OUT/$row"; mkdir -p "$OUT/$row"
  cp "$OUT/shared/model.safetensors" "$OUT/$row/start.safetensors"
  s=$(t)
  $MOE seq2seq train --objective $obj --out "$OUT/$row" --resume "$OUT/$row/start.safetensors" $more $th $DATA $EXTRA > "$OUT/$row.txt"
  secs $s $(t) > "$OUT/$row.seconds"
done
shared=$(cat "$OUT/shared.seconds")
echo "shared cross-entropy epochs ($NX): ${shared} s"
base="$OUT/xent/model.safetensors"
: > "$OUT/table.jsonl"
printf "%-15s %9s %9s %7s %9s %9s %9s %8s %10s\n" row "test BLEU" smoothed exact "valid" "valid sm" "P(>xent)" "+-epoch" "train time"
# one row: its checkpoint scored on test against XENT greedy (beam $3 for both) and on valid
score() {
  local m=$1 name=$2 beam=${3:-1} own=$4 tj vj
  tj=$($MOE seq2seq eval --model "$m" --compare "$base" --split test --beam "$beam" --bootstrap 1000 --json)
  vj=$($MOE seq2seq eval --model "$m" --split valid --beam "$beam" --json)
  python3 - "$name" "$tj" "$vj" "$((shared + own))" "$OUT/table.jsonl" "$(dirname "$m")/log.jsonl" <<'PY'
import json, statistics, sys
name, t, v, secs, path = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
a, bp = t["a"], t["boot_bleu"]
# the run's validation BLEU after each of its epochs: how much the score moves from one to the next
vb = [r["valid_bleu"] for r in map(json.loads, open(sys.argv[6])) if r.get("kind") == "epoch"]
steps = [abs(y - x) for x, y in zip(vb, vb[1:])]
row = {"row": name, "test_bleu": a["bleu"], "test_smooth": a["bleu_smooth"], "test_exact": a["exact"],
       "valid_bleu": v["a"]["bleu"], "valid_smooth": v["a"]["bleu_smooth"], "p_beats_xent": bp["p_a_better"],
       "delta_lo": bp["delta_lo"], "delta_hi": bp["delta_hi"], "p_smooth": t["boot_smooth"]["p_a_better"],
       "valid_by_epoch": vb, "valid_epoch_change": statistics.mean(steps) if steps else None,
       "seconds": secs, "sentences": a["sentences"]}
open(path, "a").write(json.dumps(row) + "\n")
print("%-15s %9.2f %9.2f %6.2f%% %9.2f %9.2f %9.3f %8.2f %8d s" % (name, a["bleu"], a["bleu_smooth"], 100 * a["exact"],
      v["a"]["bleu"], v["a"]["bleu_smooth"], bp["p_a_better"], row["valid_epoch_change"] or 0.0, secs))
PY
}
for row in $ROWS; do
  m="$OUT/$row/model.safetensors"; own=$(cat "$OUT/$row.seconds")
  score "$m" "$row greedy" 1 "$own"
  if [[ $row == xent* ]]; then score "$m" "$row beam 5" 5 "$own"; fi
done
