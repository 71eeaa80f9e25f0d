# testlib.sh - the helpers of the shell tests (sourced): a scratch directory removed at exit,
# pass/fail counters, `expect CODE PATTERN -- command...` (exit code and a case-insensitive
# extended regex on stdout+stderr), and `finish NAME`, which prints the closing
# "N passed, M failed" line and sets the exit status (a test that checked nothing fails).
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
ok()  { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL: $*" >&2; }
expect() {
  local code=$1 pat=$2; shift 3
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [[ $rc -ne $code ]]; then bad "exit $rc (want $code): $* :: $(tail -c 600 <<<"$out")"; return; fi
  if [[ -n "$pat" ]] && ! grep -qiE -- "$pat" <<<"$out"; then bad "output lacks /$pat/: $* :: $(tail -c 600 <<<"$out")"; return; fi
  ok
}
finish() {
  echo "$1: $pass passed, $fail failed"
  [[ $fail -eq 0 && $pass -gt 0 ]]
}
