#!/usr/bin/env bash
# The MIXER paper's table on the Ding dictionary (issue 4): test corpus BLEU of XENT (greedy and
# beam), MIXER and SCST with the same total epochs, at the default sizes.
#   bash bench/s2s_table.sh [MOE] [OUT]        (default build/moe, runs/s2s_table)
# The objectives share their first N_XENT cross-entropy epochs: one run trains them, and each
# row continues its checkpoint (resuming is exact, so the XENT row is the same as one
# uninterrupted run). MIXER and SCST train their sampled epochs at --lr-rl (default 5e-4, a
# quarter of the cross-entropy rate); the row "xent_lr" is the control: cross-entropy with that
# same drop of the learning rate after the shared epochs. SCST, pure REINFORCE from its first
# sampled epoch, runs at --lr-rl 1e-4 (at 5e-4 it collapsed in its sixth epoch: BENCHMARKS.md).
# The time of a row is the shared part plus its own. A row whose OUT/<row>.seconds exists is kept
# (delete the file to rerun it).
set -euo pipefail
MOE=${1:-build/moe}
OUT=${2:-runs/s2s_table}
EXTRA=${EXTRA:-}
THREADS=${THREADS:-}
mkdir -p "$OUT"
t() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$1" "$2"; }
NX=$($MOE seq2seq train --help | sed -n 's/.*--n-xent \([0-9]*\).*/\1/p')
LRRL=$($MOE seq2seq train --help | sed -n 's/.*--lr-rl \([0-9.]*\).*/\1/p')
th=${THREADS:+--threads $THREADS}
if [[ ! -f "$OUT/shared.seconds" ]]; then
  t0=$(t)
  $MOE seq2seq train --out "$OUT/shared" --epochs "$NX" $th $EXTRA > "$OUT/shared.txt"
  secs $t0 $(t) > "$OUT/shared.seconds"
fi
ROWS="xent xent_lr mixer scst"
for row in $ROWS; do
  [[ -f "$OUT/$row.seconds" ]] && continue
  obj=${row%_lr}; more=""
  [[ $row == xent_lr ]] && more="--lr $LRRL"
  [[ $row == scst ]] && more="--lr-rl ${SCST_LR:-0.0001}"
  rm -rf "$OUT/$row"; mkdir -p "$OUT/$row"
  cp "$OUT/shared/model.safetensors" "$OUT/$row/start.safetensors"
  s=$(t)
  $MOE seq2seq train --objective $obj --out "$OUT/$row" --resume "$OUT/$row/start.safetensors" $more $th $EXTRA > "$OUT/$row.txt"
  secs $s $(t) > "$OUT/$row.seconds"
done
shared=$(cat "$OUT/shared.seconds")
echo "shared cross-entropy epochs ($NX): ${shared} s"
printf "%-18s %10s %10s %12s\n" row "test BLEU" "valid BLEU" "train time"
bleu() { $MOE seq2seq eval --model "$1" --split $2 ${3:+--beam $3} | sed -n "s/.*$2 BLEU \([0-9.]*\).*/\1/p"; }
for row in $ROWS; do
  m="$OUT/$row/model.safetensors"; own=$(cat "$OUT/$row.seconds")
  printf "%-18s %10s %10s %10s s\n" "$row greedy" "$(bleu $m test)" "$(bleu $m valid)" "$((shared + own))"
  if [[ $row == xent* ]]; then
    printf "%-18s %10s %10s %10s s\n" "$row beam 5" "$(bleu $m test 5)" "$(bleu $m valid 5)" "$((shared + own))"
  fi
done
