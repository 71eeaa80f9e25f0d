#!/usr/bin/env bash
# The MIXER paper's table on the Ding dictionary (issue 4): test corpus BLEU of XENT (greedy and
# beam), MIXER and SCST with the same total epochs, at the default sizes.
#   bash bench/s2s_table.sh [MOE] [OUT]        (default build/moe, runs/s2s_table)
# The three objectives share their first N_XENT cross-entropy epochs: one run trains them, and
# XENT, MIXER and SCST each continue its checkpoint (resuming is exact, so the XENT row is the
# same as one uninterrupted run). Rows run one after another with all threads; the time of a
# row is the shared part plus its own.
set -euo pipefail
MOE=${1:-build/moe}
OUT=${2:-runs/s2s_table}
EXTRA=${EXTRA:-}
mkdir -p "$OUT"
t() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$1" "$2"; }
NX=$($MOE seq2seq train --help | sed -n 's/.*--n-xent \([0-9]*\).*/\1/p')
# A row whose OUT/<row>.seconds exists is done and kept (rerun one by deleting that file).
if [[ ! -f "$OUT/shared.seconds" ]]; then
  t0=$(t)
  $MOE seq2seq train --out "$OUT/shared" --epochs "$NX" $EXTRA > "$OUT/shared.txt"
  t1=$(t)
  secs $t0 $t1 > "$OUT/shared.seconds"
fi
for obj in xent mixer scst; do
  [[ -f "$OUT/$obj.seconds" ]] && continue
  rm -rf "$OUT/$obj"; mkdir -p "$OUT/$obj"
  cp "$OUT/shared/model.safetensors" "$OUT/$obj/start.safetensors"
  s=$(t)
  $MOE seq2seq train --objective $obj --out "$OUT/$obj" --resume "$OUT/$obj/start.safetensors" $EXTRA > "$OUT/$obj.txt"
  e=$(t)
  echo "$(secs $s $e)" > "$OUT/$obj.seconds"
done
shared=$(cat "$OUT/shared.seconds")
echo "shared cross-entropy epochs ($NX): ${shared} s"
printf "%-14s %10s %10s %12s\n" row "test BLEU" "valid BLEU" "train time"
for obj in xent mixer scst; do
  own=$(cat "$OUT/$obj.seconds")
  tb=$($MOE seq2seq eval --model "$OUT/$obj/model.safetensors" --split test | sed -n 's/test BLEU \([0-9.]*\).*/\1/p')
  vb=$($MOE seq2seq eval --model "$OUT/$obj/model.safetensors" --split valid | sed -n 's/valid BLEU \([0-9.]*\).*/\1/p')
  printf "%-14s %10s %10s %9s s\n" "$obj greedy" "$tb" "$vb" "$((shared + own))"
  if [ $obj = xent ]; then
    for beam in 5; do
      tbb=$($MOE seq2seq eval --model "$OUT/$obj/model.safetensors" --split test --beam $beam | sed -n 's/test BLEU \([0-9.]*\).*/\1/p')
      vbb=$($MOE seq2seq eval --model "$OUT/$obj/model.safetensors" --split valid --beam $beam | sed -n 's/valid BLEU \([0-9.]*\).*/\1/p')
      printf "%-14s %10s %10s %9s s\n" "xent beam $beam" "$tbb" "$vbb" "$((shared + own))"
    done
  fi
done
