#!/usr/bin/env bash
# cli_bleu.sh - `moe bleu` as a user meets it: the known values of SPEC 3.4, corpus BLEU of the
# 1500 golden pairs against nltk's (from tests/golden/bleu_nltk.txt, written out as text), one
# score a line with --sentence, and bad input (different line counts, missing or empty files).
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
want=$(awk -F'\t' '$1=="C" && $2==1500 { split($3,v," "); printf "%.6f %.6f", v[1], v[5] }' "$2/golden/bleu_nltk.txt")
got0=$("$moe" bleu --ref "$tmp/gr" --hyp "$tmp/gh" | awk '{print $2}')
got4=$("$moe" bleu --ref "$tmp/gr" --hyp "$tmp/gh" --smooth plus1 | awk '{print $2}')
[[ "$got0 $got4" == "$want" ]] && ok || bad "corpus BLEU of the golden pairs: $got0 $got4, nltk $want"
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
