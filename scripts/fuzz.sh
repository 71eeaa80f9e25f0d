#!/usr/bin/env bash
# fuzz.sh - runs every libFuzzer target of a `make fuzz` build for SECONDS in all (an equal share
# each), from its seed corpus (tests/fuzz/corpus/NAME, copied: new inputs stay in the build
# folder), and prints each target's executions. A finding (crash, leak, timeout, sanitizer
# report) is kept in BUILD/findings and makes the run fail.
# usage: scripts/fuzz.sh BUILD SECONDS
set -uo pipefail
build=$1 seconds=${2:-60}
cd "$(dirname "$0")/.."
targets=$(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$//')
n=$(wc -w <<<"$targets")
each=$(( seconds / n > 1 ? seconds / n : 1 ))
mkdir -p "$build/findings"
failed=0 total=0
for t in $targets; do
  what=${t#fuzz_}
  work=$build/corpus/$what
  mkdir -p "$work"
  cp -n tests/fuzz/corpus/"$what"/* "$work"/ 2>/dev/null
  log=$build/findings/$what.log
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$build/tests/$t" -max_total_time="$each" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1 \
    -artifact_prefix="$build/findings/$what-" "$work" > "$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  total=$(( total + ${execs:-0} ))
  if [[ $rc -ne 0 ]]; then
    failed=1
    echo "fuzz: $what: FINDING (exit $rc) after ${execs:-?} executions; see $log and $build/findings/$what-*"
    grep -m3 -E 'ERROR|SUMMARY|runtime error' "$log"
  else
    echo "fuzz: $what: ${execs:-?} executions in ${each} s, no finding"
  fi
done
echo "fuzz: $total executions in all"
exit $failed
