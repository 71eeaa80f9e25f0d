# testlib.sh - the helpers of the shell tests (sourced): a scratch directory removed at exit,
# pass/fail counters, made-up parallel text (`parallel_text DIR`), `expect CODE PATTERN --
# command...` (exit code and a case-insensitive extended regex on stdout+stderr), and `finish NAME`, which prints the closing
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
# parallel_text DIR: DIR/de.txt and DIR/en.txt, 700 made-up pairs ("German": 3-5 words of 12;
# "English": the same words mapped and reversed), the same every time (fixtures depend on it)
parallel_text() {
  python3 - "$1" <<'PY'
import random, sys
r = random.Random(5)
de = ["haus", "baum", "katze", "hund", "auto", "buch", "tisch", "stuhl", "fenster", "tuer", "rot", "gross"]
en = ["house", "tree", "cat", "dog", "car", "book", "table", "chair", "window", "door", "red", "big"]
with open(sys.argv[1] + "/de.txt", "w") as a, open(sys.argv[1] + "/en.txt", "w") as b:
    for i in range(700):
        w = [r.randrange(len(de)) for _ in range(r.randint(3, 5))]
        a.write(" ".join(de[j] for j in w) + "\n")
        b.write(" ".join(en[j] for j in reversed(w)) + "\n")
PY
}
