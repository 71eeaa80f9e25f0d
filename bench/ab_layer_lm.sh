#!/usr/bin/env bash
# ab_layer_lm.sh - two builds against each other, alternated so that the machine's drift hits
# both alike: `moe bench layer` (B=16384, d=512, h=1024, k=4, 2 threads) at n = 16..1024 and
# `moe bench lm` (the default model, and n=1024), ROUNDS rounds. One line per run:
# "<bench> <old|new> <round> <json>". The old build may predate --experts for bench layer.
# usage: bench/ab_layer_lm.sh OLD_MOE NEW_MOE [ROUNDS] > results.txt
set -euo pipefail
old=$1; new=$2; rounds=${3:-3}
for round in $(seq 1 "$rounds"); do
  for n in 16 64 256 1024; do
    for who in old new; do
      bin=$old; flag=--n
      [[ $who == new ]] && bin=$new && flag=--experts
      echo "layer $who $round $(OMP_NUM_THREADS=2 "$bin" bench layer --B 16384 --d 512 --h 1024 $flag "$n" --k 4 --threads 2 --reps 3 --json)"
    done
  done
  for who in old new; do
    bin=$old; [[ $who == new ]] && bin=$new
    echo "lm $who $round $("$bin" bench lm --json 2>/dev/null)"
    echo "lm1024 $who $round $("$bin" bench lm --experts 1024 --json 2>/dev/null)"
  done
done
