#!/usr/bin/env bash
# mpi_die.sh - a rank that exits in the middle of a step ends the whole job with a message and a
# non-zero status, well before the time limit, instead of leaving the others waiting.
# usage: mpi_die.sh "MPIRUN AND FLAGS" MPI_SHARD_BINARY
set -u
read -r -a mpirun <<<"$1"
t0=$(date +%s)
out=$(timeout 120 "${mpirun[@]}" -np 2 "$2" --die 2>&1); rc=$?
t1=$(date +%s)
pass=0; fail=0
if [[ $rc -ne 0 && $rc -ne 124 ]]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: exit $rc (want non-zero, not the timeout's 124): $out" >&2; fi
if grep -q "rank 1 exits on purpose" <<<"$out" && grep -qiE "exit|abort|terminat" <<<"$out"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: no clear message: $out" >&2; fi
if (( t1 - t0 < 60 )); then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: took $((t1 - t0)) s" >&2; fi
echo "mpi_die: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
