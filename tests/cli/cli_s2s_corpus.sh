#!/usr/bin/env bash
# cli_s2s_corpus.sh - the sentence corpora of the translation model (scripts/s2s_corpus.py,
# `make corpus-s2s`) on a made-up package tree: a dictd dictionary with headwords, example
# sentences, duplicate index lines and out-of-range lengths; two German message catalogues
# (little- and big-endian .mo files) with format directives, markup, accelerators, plurals,
# contexts, untranslated and option-table messages; the same bytes on every run; and
# `moe seq2seq train` trains on the result.
# usage: cli_s2s_corpus.sh MOE_BINARY TESTS_DIR
set -u
moe=$1
here=$(dirname "$0")
. "$here/../testlib.sh"
r=$tmp/root
python3 - "$r" <<'PY'
import gzip, os, struct, sys
r = sys.argv[1]
os.makedirs(r + "/usr/share/dictd")
for d in ("de", "de_AT"):
    os.makedirs(r + "/usr/share/locale/%s/LC_MESSAGES" % d)
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
def b64(v):
    s = ""
    while True:
        s = B64[v % 64] + s
        v //= 64
        if not v:
            return s
entries = [
    "eins zwei drei vier fünf sechs <adj> /ipa/ (alt)\nthe first long headword; more\n",
    "kurz\nshort\n" '      "Das ist ein Beispiel mit sieben Wörtern."  - This is an example, with seven words; alt\n',
    "der Hund [zool.]\ndog\n" '      "Der Hund bellt laut in der Nacht."  - The dog barks loudly at night.\n'
    '      "zu kurz"  - too short\n',
]
data, index = b"", []
for i, e in enumerate(entries):
    b = e.encode()
    index.append("w%d\t%s\t%s" % (i, b64(len(data)), b64(len(b))))
    data += b
index.append(index[-1].replace("w2", "w2b"))  # the same entry under another headword
open(r + "/usr/share/dictd/freedict-deu-eng.index", "w").write("\n".join(["00-database-info\tA\tB"] + index) + "\n")
open(r + "/usr/share/dictd/freedict-deu-eng.dict.dz", "wb").write(gzip.compress(data, mtime=0))
def mo(path, pairs, end):
    pairs = sorted(pairs)
    n, ids, strs = len(pairs), b"", b""
    oo, to = 28, 28 + 8 * len(pairs)
    base = to + 8 * len(pairs)
    ot, tt = [], []
    for k, v in pairs:
        ot.append((len(k), base + len(ids))); ids += k + b"\0"
    for k, v in pairs:
        tt.append((len(v), base + len(ids) + len(strs))); strs += v + b"\0"
    head = struct.pack(end + "7I", 0x950412de, 0, n, oo, to, 0, 0)
    body = b"".join(struct.pack(end + "2I", *t) for t in ot + tt)
    open(path, "wb").write(head + body + ids + strs)
mo(r + "/usr/share/locale/de/LC_MESSAGES/a.mo", [
    (b"", b"Content-Type: text/plain; charset=UTF-8\n"),
    (b"Cannot open file %s for reading", "Datei %s kann nicht zum Lesen geöffnet werden".encode()),
    (b"<b>_Save</b> the document now", "Das Dokument jetzt _speichern".encode()),
    (b"one file was removed\0%d files were removed", b"eine Datei wurde entfernt\0%d Dateien wurden entfernt"),
    (b"menu\x04Open a new window here", "Hier ein neues Fenster öffnen".encode()),
    (b"This message is not translated", b"This message is not translated"),
    (b"  -a, --all    do not ignore entries", "  -a, --all    Einträge nicht ignorieren".encode()),
    (b"Too short", b"Zu kurz"),
    (b"Use the 'x' mode for this now", b"Den Modus 'x' hierf\xc3\xbcr jetzt nutzen"),  # 9 and 8 tokens
], "<")
mo(r + "/usr/share/locale/de_AT/LC_MESSAGES/b.mo", [
    (b"", b"Content-Type: text/plain; charset=UTF-8\n"),
    (b"Cannot open file %s for reading", "Eine andere Übersetzung desselben Satzes hier".encode()),
    (b"The printer is out of paper now", "Der Drucker hat jetzt kein Papier mehr".encode()),
], ">")
PY
gather() { python3 "$here/../../scripts/s2s_corpus.py" "$@"; }
expect 0 "^ding: 3 pairs" -- gather ding "$tmp/out" --root "$r"
want=$'eins zwei drei vier fünf sechs\tthe first long headword\nDas ist ein Beispiel mit sieben Wörtern.\tThis is an example, with seven words\nDer Hund bellt laut in der Nacht.\tThe dog barks loudly at night.'
got=$(paste "$tmp/out/ding.de" "$tmp/out/ding.en")
[[ "$got" == "$want" ]] && ok || bad "ding pairs: $got"
expect 0 "^messages: 6 pairs .* from 7 candidates" -- gather messages "$tmp/out" --root "$r" --all-catalogues
expect 0 "^  2 catalogues; most pairs before deduplication: a.mo 5, b.mo 2$" -- gather messages "$tmp/out" --root "$r" --all-catalogues
want=$'Datei kann nicht zum Lesen geöffnet werden\tCannot open file for reading
Das Dokument jetzt speichern\tSave the document now
eine Datei wurde entfernt\tone file was removed
Hier ein neues Fenster öffnen\tOpen a new window here
Der Drucker hat jetzt kein Papier mehr\tThe printer is out of paper now
Den Modus \'x\' hierfür jetzt nutzen\tUse the \'x\' mode for this now'
got=$(paste "$tmp/out/messages.de" "$tmp/out/messages.en" | LC_ALL=C sort)
[[ "$got" == "$(LC_ALL=C sort <<<"$want")" ]] && ok || bad "message pairs: $got"
cp "$tmp/out/messages.de" "$tmp/m1"
gather messages "$tmp/out" --root "$r" --all-catalogues > /dev/null
cmp -s "$tmp/out/messages.de" "$tmp/m1" && ok || bad "two gatherings differ"
# tokens as moe counts them: the apostrophes at a word's edges are tokens of their own, so
# "Use the 'x' mode for this now" has 9; --max-tokens 8 leaves it out, 9 keeps it, and
# `moe seq2seq train --max-words 9` takes every line of that
gather messages "$tmp/t8" --root "$r" --all-catalogues --max-tokens 8 > /dev/null
! grep -q "'x' mode" "$tmp/t8/messages.en" && ok || bad "--max-tokens 8 kept a line of 9 tokens"
gather messages "$tmp/t9" --root "$r" --all-catalogues --max-tokens 9 > /dev/null
grep -q "'x' mode" "$tmp/t9/messages.en" && ok || bad "--max-tokens 9 dropped a line of 9 tokens"
for i in $(seq 1 60); do sed "s/\$/ $i/" "$tmp/t9/messages.de"; done > "$tmp/de9.txt"
for i in $(seq 1 60); do sed "s/\$/ $i/" "$tmp/t9/messages.en"; done > "$tmp/en9.txt"
expect 0 "0 left out" -- "$moe" seq2seq train --src "$tmp/de9.txt" --tgt "$tmp/en9.txt" --max-words 10 --min-count 1 \
  --d 8 --experts 2 --k 1 --h 8 --batch 16 --steps 1 --threads 1 --out "$tmp/s9"
expect 1 "more than --max-words 9" -- "$moe" seq2seq train --src "$tmp/de9.txt" --tgt "$tmp/en9.txt" --max-words 9 --min-count 1 \
  --d 8 --experts 2 --k 1 --h 8 --batch 16 --steps 1 --threads 1 --out "$tmp/s9b"
expect 1 "no German catalogues" -- gather messages "$tmp/none" --root "$tmp/nothing" --all-catalogues
# without --all-catalogues only the fixed list's catalogues count, and all of them must be there
expect 1 "catalogues missing: Linux-PAM adduser .*scripts/deps.sh --s2s" -- gather messages "$tmp/fixed" --root "$r"
cp -r "$r" "$tmp/r2"
mv "$tmp/r2/usr/share/locale/de/LC_MESSAGES/a.mo" "$tmp/r2/usr/share/locale/de/LC_MESSAGES/git.mo"
python3 - "$here/../../scripts" "$tmp/r2/usr/share/locale/de/LC_MESSAGES" <<'PY'
import os, struct, sys
sys.path.insert(0, sys.argv[1])
import s2s_corpus
for d in s2s_corpus.MESSAGE_DOMAINS:  # every other listed catalogue present, and empty
    f = os.path.join(sys.argv[2], d + ".mo")
    if not os.path.exists(f):
        open(f, "wb").write(struct.pack("<7I", 0x950412de, 0, 0, 28, 28, 0, 0))
PY
n=$(python3 -c "import sys; sys.path.insert(0, '$here/../../scripts'); import s2s_corpus; print(len(s2s_corpus.MESSAGE_DOMAINS))")
expect 0 "^messages: 5 pairs .* from 5 candidates" -- gather messages "$tmp/fixed" --root "$tmp/r2"
expect 0 "^  $n catalogues; most pairs before deduplication: git.mo 5, " -- gather messages "$tmp/fixed" --root "$tmp/r2"
grep -q "Drucker" "$tmp/fixed/messages.de" && bad "b.mo (not in the list) was read" || ok
expect 1 "missing: apt-get install dict-freedict-deu-eng" -- gather ding "$tmp/none" --root "$tmp/nothing"
# the translation model trains on a gathered corpus (the tokens of a line fit --max-words 40)
for i in $(seq 1 60); do sed "s/\$/ nummer $i/" "$tmp/out/messages.de"; done > "$tmp/de.txt"
for i in $(seq 1 60); do sed "s/\$/ number $i/" "$tmp/out/messages.en"; done > "$tmp/en.txt"
expect 0 "done: checkpoint" -- "$moe" seq2seq train --src "$tmp/de.txt" --tgt "$tmp/en.txt" --max-words 40 --min-count 1 \
  --d 16 --experts 4 --k 2 --h 16 --batch 16 --epochs 1 --threads 1 --out "$tmp/s2s"
finish cli_s2s_corpus
