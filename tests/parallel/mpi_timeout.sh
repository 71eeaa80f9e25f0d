#!/usr/bin/env bash
# mpi_timeout.sh - a rank that stops answering without exiting (SIGSTOP: a hung node) must not
# hang the others forever: with --comm-timeout 3, the job ends within seconds, the ranks that can
# still speak naming the rank that did not answer; and a run whose ranks all answer is not
# disturbed by the liveness check.
# usage: mpi_timeout.sh "MPIRUN AND FLAGS" MOE_BINARY
set -u
read -r -a mpirun <<<"$1"
moe=$2
. "$(dirname "$0")/../testlib.sh"
for i in $(seq 1 400); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 7))."; done > "$tmp/text.txt"
args=(--data "$tmp/text.txt" --batch 4 --bptt 16 --d 16 --experts 4 --k 2 --h 16 --log-every 5 --eval-every 0
      --ckpt-every 0 --threads 1 --comm-timeout 3)
# the ranks of the job whose output folder is $1: "pid rank" lines
ranks_of() {
  for p in $(pgrep -f -- "--out $1"); do
    r=$(tr '\0' '\n' < /proc/$p/environ 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
    [[ -n "$r" ]] && echo "$p $r"
  done
}
for victim in 1 0; do
  out=$tmp/stop$victim
  timeout 90 "${mpirun[@]}" -np 2 "$moe" train "${args[@]}" --steps 1000000 --out "$out" > "$out.log" 2>&1 &
  job=$!
  pid=""
  for i in $(seq 1 100); do # until both ranks train
    sleep 0.2
    [[ -s "$out/log.jsonl" ]] && pid=$(ranks_of "$out" | awk -v r=$victim '$2 == r {print $1}') && [[ -n "$pid" ]] && break
  done
  if [[ -z "$pid" ]]; then bad "rank $victim of the job never started: $(tail -c 300 "$out.log")"; kill -9 $job 2>/dev/null; continue; fi
  t0=$(date +%s)
  kill -STOP "$pid"
  wait $job; rc=$?
  t1=$(date +%s)
  kill -9 "$pid" 2>/dev/null # in case the job's end did not take it
  [[ $rc -ne 0 && $rc -ne 124 ]] && ok || bad "rank $victim stopped: the job should fail, not hang (exit $rc)"
  (( t1 - t0 < 40 )) && ok || bad "rank $victim stopped: the job took $((t1 - t0)) s to end"
  grep -q "rank $victim did not answer" "$out.log" && ok || bad "rank $victim stopped: no message naming it: $(tail -c 400 "$out.log")"
done
# all ranks answer: a short run is unaffected
if timeout 90 "${mpirun[@]}" -np 2 "$moe" train "${args[@]}" --steps 20 --out "$tmp/fine" > "$tmp/fine.log" 2>&1; then ok; else bad "a healthy run failed: $(tail -c 300 "$tmp/fine.log")"; fi
finish mpi_timeout
