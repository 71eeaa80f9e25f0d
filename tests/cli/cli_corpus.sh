#!/usr/bin/env bash
# cli_corpus.sh - the large English corpus (scripts/corpus.py, `make corpus`) on a made-up
# package tree: every source in its order, each file once (the versioned documentation directory
# is also reachable through a symlink), the same bytes on every run, a missing package named;
# and `moe train --data english` trains on it, or says how to gather it.
# usage: cli_corpus.sh MOE_BINARY TESTS_DIR
set -u
moe=$1
here=$(dirname "$0")
. "$here/../testlib.sh"
r=$tmp/root
mkdir -p "$r/usr/share/dictd" "$r/usr/share/doc/python3.11/html/_sources/lib" "$r/usr/share/doc/linux-doc-6.1/Documentation/mm"
for d in gcide wn jargon foldoc; do
  for i in $(seq 1 40); do echo "$d entry $i: a word of English, defined at length."; done | gzip -n > "$r/usr/share/dictd/$d.dict.dz"
done
echo "Python: the tutorial." > "$r/usr/share/doc/python3.11/html/_sources/tutorial.rst.txt"
echo "Python: the library." > "$r/usr/share/doc/python3.11/html/_sources/lib/os.rst.txt"
ln -s python3.11 "$r/usr/share/doc/python3"
echo "Linux: memory management." | gzip -n > "$r/usr/share/doc/linux-doc-6.1/Documentation/mm/index.rst.gz"
gather() { python3 "$here/../../scripts/corpus.py" "$@"; }
expect 0 "corpus: [0-9]+ bytes" -- gather "$tmp/runs/english.txt" --root "$r"
gather "$tmp/again.txt" --root "$r" > /dev/null
cmp -s "$tmp/runs/english.txt" "$tmp/again.txt" && ok || bad "two gatherings differ"
[[ $(grep -c "^Python: the library" "$tmp/runs/english.txt") -eq 1 ]] && ok || bad "a documentation file is in twice (the symlinked directory) or missing"
order=$(grep -o -E '^(gcide|wn|jargon|foldoc) entry 1:|^Python: the (library|tutorial)|^Linux' "$tmp/runs/english.txt" | tr '\n' '|')
[[ "$order" == "gcide entry 1:|wn entry 1:|jargon entry 1:|foldoc entry 1:|Python: the library|Python: the tutorial|Linux|" ]] && ok || bad "sources out of order: $order"
rm "$r/usr/share/dictd/foldoc.dict.dz"
expect 1 "missing foldoc: install them with" -- gather "$tmp/x.txt" --root "$r"
[[ ! -e "$tmp/x.txt" ]] && ok || bad "a failed gathering left a file"
# moe train --data english: runs/english.txt from the current folder, or beside the run's folder
moe=$(realpath "$moe") # the cases below run from other folders
expect 1 "neither runs/english.txt nor .* exists: gather the English corpus with .make corpus." -- \
  bash -c 'mkdir -p "$1" && cd "$1" && exec "$2" train --data english --steps 2 --out "$1/lm"' _ "$tmp/none" "$moe"
expect 0 "done: checkpoint" -- "$moe" train --data english --steps 2 --batch 2 --bptt 16 --d 16 --experts 4 --k 2 --h 16 --eval-every 0 --out "$tmp/runs/lm"
expect 0 "done: checkpoint" -- bash -c 'cd "$1" && exec "$2" train --data english --steps 2 --batch 2 --bptt 16 --d 16 --experts 4 --k 2 --h 16 --eval-every 0 --out "$1/elsewhere/lm"' _ "$tmp" "$moe"
finish cli_corpus
