#!/usr/bin/env bash
# cli_bleu.sh - `moe bleu` as a user meets it: the known values of SPEC 3.4, corpus BLEU of the
# 1500 golden pairs against nltk's (from tests/golden/bleu_nltk.txt, written out as text), one
# score a line with --sentence, the smoothed score and exact matches, the paired bootstrap, and bad input (different line counts, missing or empty files).
# usage: cli_bleu.sh MOE_BINARY TESTS_DIR
set -u
moe=$1
. "$(dirname "$0")/../testlib.sh"
echo "It is a guide to action which ensures that the military always obeys the commands of the party" > "$tmp/h"
echo "It is a guide to action that ensures that the military will forever heed Party commands" > "$tmp/r"
expect 0 "^BLEU 0.411804 " -- "$moe" bleu --ref "$tmp/r" --hyp "$tmp/h"
expect 0 "^0.44529" -- "$moe" bleu --ref "$tmp/r" --hyp "$tmp/h" --smooth 2 --sentence
# the golden pairs as words; corpus BLEU must be nltk's
awk -F'\t' '$1=="S" { n=split($2,a," "); s=""; for(i=1;i<=n;i++) s=s (i>1?" ":"") "w" a[i]; print s > "'"$tmp/gh"'";
                      n=split($3,b," "); s=""; for(i=1;i<=n;i++) s=s (i>1?" ":"") "w" b[i]; print s > "'"$tmp/gr"'" }' "$2/golden/bleu_nltk.txt"
want=$(awk -F'\t' '$1=="C" && $2==1500 { split($3,v," "); printf "%.6f %.6f %.2f", v[1], v[5], 100*v[4] }' "$2/golden/bleu_nltk.txt")
got0=$("$moe" bleu --ref "$tmp/gr" --hyp "$tmp/gh" | awk 'NR==1 {print $2}')
got4=$("$moe" bleu --ref "$tmp/gr" --hyp "$tmp/gh" --smooth plus1 | awk 'NR==1 {print $2}')
got3=$("$moe" bleu --ref "$tmp/gr" --hyp "$tmp/gh" | sed -n 's/^smoothed (method 3) \([0-9.]*\) .*/\1/p')
[[ "$got0 $got4 $got3" == "$want" ]] && ok || bad "corpus BLEU of the golden pairs: $got0 $got4 $got3, nltk $want"
# exact matches: the golden hypotheses that are their reference, counted as awk counts them
ex=$(paste -d'\t' "$tmp/gh" "$tmp/gr" | awk -F'\t' '$1==$2 {c++} END {print c+0}')
expect 0 "exact $ex of 1500 " -- "$moe" bleu --ref "$tmp/gr" --hyp "$tmp/gh"
# the paired bootstrap: a system against itself ties every resample; the references themselves
# beat the golden hypotheses every time; the same seed gives the same numbers, as JSON too
expect 0 "P\(A>B\) 0.000, P\(B>A\) 0.000" -- "$moe" bleu --ref "$tmp/gr" --hyp "$tmp/gh" --hyp2 "$tmp/gh" --bootstrap 100
expect 0 "P\(A>B\) 1.000, P\(B>A\) 0.000" -- "$moe" bleu --ref "$tmp/gr" --hyp "$tmp/gr" --hyp2 "$tmp/gh" --bootstrap 100
expect 0 "^B: smoothed .* exact $ex of 1500" -- "$moe" bleu --ref "$tmp/gr" --hyp "$tmp/gr" --hyp2 "$tmp/gh" --bootstrap 100
j1=$("$moe" bleu --ref "$tmp/gr" --hyp "$tmp/gh" --hyp2 "$tmp/gr" --smooth 3 --bootstrap 200 --seed 4 --json)
j2=$("$moe" bleu --ref "$tmp/gr" --hyp "$tmp/gh" --hyp2 "$tmp/gr" --smooth 3 --bootstrap 200 --seed 4 --json)
python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert sys.argv[1]==sys.argv[2]; assert r["p_b_better"]==1.0 and r["delta_hi"]<0<r["b"]["exact"] and r["a_lo"]<=r["a"]["bleu"]<=r["a_hi"], r' "$j1" "$j2" && ok || bad "bootstrap JSON: $j1"
printf 'a b\nc d\n' > "$tmp/two2"
expect 1 "has 1500 lines but .* has 2" -- "$moe" bleu --ref "$tmp/gr" --hyp "$tmp/gh" --hyp2 "$tmp/two2"
expect 1 "give the second with --hyp2" -- "$moe" bleu --ref "$tmp/gr" --hyp "$tmp/gh" --bootstrap 100
expect 1 "--bootstrap expects an integer in \\[2," -- "$moe" bleu --ref "$tmp/gr" --hyp "$tmp/gh" --hyp2 "$tmp/gh" --bootstrap 1
n=$("$moe" bleu --ref "$tmp/gr" --hyp "$tmp/gh" --sentence --smooth 1 | wc -l)
[[ $n -eq 1500 ]] && ok || bad "--sentence printed $n lines, want 1500"
# bad input
printf 'a b\nc d\n' > "$tmp/two"
expect 1 "has 1 lines but .* has 2" -- "$moe" bleu --ref "$tmp/r" --hyp "$tmp/two"
expect 1 "cannot open" -- "$moe" bleu --ref "$tmp/none" --hyp "$tmp/h"
: > "$tmp/e1"; : > "$tmp/e2"
expect 1 "empty" -- "$moe" bleu --ref "$tmp/e1" --hyp "$tmp/e2"
expect 1 "must be 0, 1, 2, 3 or plus1" -- "$moe" bleu --ref "$tmp/r" --hyp "$tmp/h" --smooth 7
expect 0 "usage" -- "$moe" bleu --help
printf '\n' > "$tmp/blank"
expect 0 "^0.000000000" -- "$moe" bleu --ref "$tmp/r" --hyp "$tmp/blank" --sentence
finish cli_bleu
