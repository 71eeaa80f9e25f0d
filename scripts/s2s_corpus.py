#!/usr/bin/env python3
"""s2s_corpus.py - sentence-length German -> English parallel text from Debian packages, for
`moe seq2seq train --src OUT/NAME.de --tgt OUT/NAME.en` (issue 14):

  ding      the Ding dictionary (dict-freedict-deu-eng): every entry once, its headword with the
            first English translation (cleaned as `moe seq2seq train --dict` cleans them) and
            its example sentences ('"German"  - English' lines), where the German side has
            --min-words to --max-words words
  messages  the German message catalogues of a fixed list of Debian packages (MESSAGE_DOMAINS:
            those of the packages `scripts/deps.sh --s2s` installs, so that every machine
            gathers the same corpus; --all-catalogues takes every installed one instead)
            (usr/share/locale/de*/LC_MESSAGES/DOMAIN.mo, files sorted by path): msgid English, msgstr
            German (the first plural form with the singular), fuzzy-free as compiled; format
            directives (and the quotes around them), markup, accelerators and entities out,
            a message of several lines taken as one paragraph, command-line option tables and
            untranslated messages left out, pairs with --min-words to --max-words (default 4 to
            40) words on both sides

A pair is kept when neither its German nor its English side came before (in file order) and
both sides have at most --max-tokens tokens as `moe seq2seq train --max-words` counts them (the
word tokenizer's runs of letters, digits, apostrophes and UTF-8 bytes, every other non-space byte
one token), so that `--max-words` of that value takes every line.
The same packages give the same bytes; files are written atomically. Prints the pair count,
per source file counts (messages) and the length distribution.

usage: s2s_corpus.py ding|messages OUTDIR [--root DIR] [--min-words 6] [--max-words 30]
                     [--max-tokens 40] [--all-catalogues]   (DIR prefixes the installed paths: tests)"""
import glob
import gzip
import os
import re
import struct
import sys

DING = "usr/share/dictd/freedict-deu-eng"
MO_GLOB = "usr/share/locale/de*/LC_MESSAGES/*.mo"
# The catalogues of the messages corpus: the German .mo files of the packages that
# `scripts/deps.sh --s2s` installs (postgresql-15, postgresql-client-15, libpq5, iso-codes,
# binutils-common, git, gnupg-l10n, krb5-locales, libgtk2.0-common, libc-l10n, dpkg, coreutils and
# the other base tools listed there). A machine with more packages installed would otherwise
# gather a different corpus (97 catalogues on one machine, 93 on another, their validation BLEU
# after the same training 35 and 19).
MESSAGE_DOMAINS = (
    "Linux-PAM adduser apt bash coreutils diffutils dpkg dpkg-dev elfutils findutils gdk-pixbuf "
    "gettext-runtime gettext-tools git glib20 gnupg2 gnutls30 gprof grep gtk20 gtk20-properties initdb-15 "
    "iso_15924 iso_3166 iso_3166-1 iso_3166-2 iso_3166-3 iso_3166_2 iso_4217 iso_639 iso_639-2 iso_639-3 "
    "iso_639-5 iso_639_3 iso_639_5 ld libapt-pkg6.0 libc libidn2 libpq5-15 m4 make man-db man-db-gnulib "
    "mit-krb5 net-tools opcodes pg_amcheck-15 pg_archivecleanup-15 pg_basebackup-15 pg_checksums-15 "
    "pg_config-15 pg_controldata-15 pg_ctl-15 pg_dump-15 pg_resetwal-15 pg_rewind-15 pg_test_fsync-15 "
    "pg_test_timing-15 pg_upgrade-15 pg_verifybackup-15 pg_waldump-15 pgscripts-15 plpgsql-15 postgres-15 "
    "procps-ng psmisc psql-15 sed shadow shared-mime-info systemd tar wget wget-gnulib xdg-user-dirs "
    "xkeyboard-config xz").split()


# ---- the tokenizer's count -------------------------------------------------------------------
def tokens(s):
    """moe's word tokenizer's token count of s (src/data/tokenizer.h): runs of word bytes, the
    apostrophes at a run's start and end split off one each, every other non-space byte one"""
    n, run = 0, bytearray()

    def flush():
        core = run.strip(b"'")
        return (len(run) - len(core)) + (1 if core else 0)

    for b in s.encode("utf-8"):
        if (97 <= b <= 122) or (65 <= b <= 90) or (48 <= b <= 57) or b == 39 or b >= 0x80:
            run.append(b)
            continue
        n += flush()
        run.clear()
        n += b not in (32, 9, 13, 11, 12, 10)
    return n + flush()


def squeeze(s):
    return " ".join(s.split())


def strip_spans(s, open_, close):
    """every open..close span out (not nested; an unclosed one kept), as the C parser does"""
    out, i = [], 0
    while i < len(s):
        if s[i] == open_:
            j = s.find(close, i + 1)
            if j >= 0:
                i = j + 1
                continue
        out.append(s[i])
        i += 1
    return "".join(out)


# ---- the Ding dictionary ---------------------------------------------------------------------
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64num(s):
    v = 0
    for ch in s:
        v = v * 64 + B64.index(ch)
    return v


def clean_headword(s):
    s = strip_spans(s, "<", ">")
    s = re.sub(r"(?<= )/[^/]*/", "", s)  # IPA transcriptions " /.../"
    for o, c in ("()", "{}", "[]"):
        s = strip_spans(s, o, c)
    return squeeze(s)


def clean_english(s, cut=",;"):
    for o, c in ("[]", "()", "<>", "{}"):
        s = strip_spans(s, o, c)
    for ch in cut:
        s = s.split(ch)[0]
    return squeeze(s)


EXAMPLE = re.compile(r'^\s+"([^"]+)"\s+-\s+(.+)$')


def ding_pairs(root):
    base = os.path.join(root, DING)
    with gzip.open(base + ".dict.dz", "rb") as f:
        data = f.read()
    seen, pairs = set(), []
    with open(base + ".index", "r", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3 or parts[0].startswith("00"):
                continue
            off, ln = b64num(parts[1]), b64num(parts[2])
            if off in seen or off + ln > len(data):
                continue
            seen.add(off)
            lines = data[off:off + ln].decode("utf-8", errors="replace").split("\n")
            if len(lines) >= 2:
                pairs.append((clean_headword(lines[0]), clean_english(lines[1])))
            for l in lines[1:]:
                m = EXAMPLE.match(l)
                if m:  # an example sentence: its English whole up to a ';' (commas are the sentence's)
                    pairs.append((squeeze(m.group(1)), clean_english(m.group(2), cut=";")))
    return pairs, {"entries": len(seen)}


# ---- message catalogues -------------------------------------------------------------------------
def mo_entries(path):
    """(msgid, msgstr) of a compiled catalogue, decoded by its charset; [] when malformed"""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 28:
        return []
    magic = struct.unpack("<I", raw[:4])[0]
    end = "<" if magic == 0x950412de else ">" if magic == 0xde120495 else None
    if end is None:
        return []
    _, n, oo, to = struct.unpack(end + "4I", raw[4:20])
    if n > 1000000 or oo + 8 * n > len(raw) or to + 8 * n > len(raw):
        return []
    charset, out = "utf-8", []
    for i in range(n):
        lo, po = struct.unpack(end + "2I", raw[oo + 8 * i:oo + 8 * i + 8])
        lt, pt = struct.unpack(end + "2I", raw[to + 8 * i:to + 8 * i + 8])
        if po + lo > len(raw) or pt + lt > len(raw):
            return []
        mid, mstr = raw[po:po + lo], raw[pt:pt + lt]
        if not mid:  # the header: its charset
            m = re.search(rb"charset=([A-Za-z0-9_-]+)", mstr)
            if m:
                charset = m.group(1).decode("ascii")
            continue
        try:
            mid = mid.split(b"\0")[0].split(b"\x04")[-1].decode(charset)
            mstr = mstr.split(b"\0")[0].decode(charset)
        except (LookupError, UnicodeDecodeError):
            continue
        out.append((mid, mstr))
    return out


FORMAT = re.compile(r"%(\d+\$)?[-+ #0']*(\*|\d+)?(\.(\*|\d+))?(hh|h|ll|l|L|q|j|z|t|I64)?[diouxXeEfFgGaAcspnm%]"
                    r"|%\([A-Za-z_][A-Za-z0-9_]*\)[-+ #0]*\d*(\.\d+)?[diouxXeEfFgGcrs]"
                    r"|\$\{[^}]*\}|\{[A-Za-z0-9_.:!]*\}|%[A-Za-z_][A-Za-z0-9_]*%|\$[A-Z_][A-Z0-9_]*")
MARKUP = re.compile(r"</?[A-Za-z][^<>]*>")
ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&apos;": "'", "&nbsp;": " "}
EMPTY_QUOTES = re.compile("[\"'`\u00bb\u00ab\u201e\u201c\u201d\u2018\u2019\u201a]\\s*[\"'\u00bb\u00ab\u201c\u201d\u2018\u2019]")
OPTION = re.compile(r"(^|\s)--?[A-Za-z]")


def clean_message(s):
    s = MARKUP.sub(" ", s)
    for k, v in ENTITIES.items():
        s = s.replace(k, v)
    s = FORMAT.sub(" ", s)
    s = EMPTY_QUOTES.sub(" ", s)  # the quotes a directive stood in
    s = re.sub(r"(?<![\w&])[_&~](?=\w)", "", s)  # accelerators: _File, &File, ~File
    s = s.replace("\\n", " ").replace("\u2026", "...")
    return squeeze(s).lstrip(":;,. ")


def message_files(root, every):
    """The catalogues to read, sorted by path: every German one, or those of MESSAGE_DOMAINS (all
    of which must be there)."""
    files = sorted(glob.glob(os.path.join(root, MO_GLOB)))
    if every:
        return files
    have = {os.path.basename(f)[:-3] for f in files}
    missing = [d for d in MESSAGE_DOMAINS if d not in have]
    if missing:
        sys.exit("s2s_corpus: German catalogues missing: %s: run scripts/deps.sh --s2s (or --all-catalogues "
                 "to take the installed ones)" % " ".join(missing[:8] + (["..."] if len(missing) > 8 else [])))
    domains = set(MESSAGE_DOMAINS)
    return [f for f in files if os.path.basename(f)[:-3] in domains]


def message_pairs(root, lo, hi, every):
    files = message_files(root, every)
    pairs, per_file = [], {}
    for path in files:
        got = 0
        for en, de in mo_entries(path):
            if not de.strip() or en == de:
                continue
            # a message of several lines is one paragraph (its line breaks do not align)
            for e, d in ((en.replace("\n", " "), de.replace("\n", " ")),):
                if OPTION.search(e) or OPTION.search(d):
                    continue  # command-line option tables
                e, d = clean_message(e), clean_message(d)
                if not (lo <= len(e.split()) <= hi) or not re.search(r"[A-Za-z]", e):
                    continue
                pairs.append((d, e))
                got += 1
        per_file[os.path.relpath(path, root)] = got
    return pairs, {"catalogues": len(files), "per_file": per_file}


# ---- output ----------------------------------------------------------------------------------
def keep(pairs, lo, hi, max_tokens, both):
    """each German and each English side once (the first pair that has it: the split by a hash
    of the German side then cannot put one English sentence in two splits), lengths in range"""
    seen, seen_en, out = set(), set(), []
    for de, en in pairs:
        if not de or not en or de in seen or en in seen_en:
            continue
        if not (lo <= len(de.split()) <= hi) or (both and not (lo <= len(en.split()) <= hi)):
            continue
        if tokens(de) > max_tokens or tokens(en) > max_tokens:
            continue
        seen.add(de)
        seen_en.add(en)
        out.append((de, en))
    return out


def write_atomic(path, lines):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as f:
        for l in lines:
            f.write(l + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def histogram(pairs):
    edges = [(1, 5), (6, 10), (11, 15), (16, 20), (21, 25), (26, 30), (31, 40)]
    rows = []
    for side, k in (("German", 0), ("English", 1)):
        lens = [len(p[k].split()) for p in pairs]
        counts = ["%d-%d: %d" % (a, b, sum(a <= x <= b for x in lens)) for a, b in edges]
        mean = sum(lens) / max(1, len(lens))
        rows.append("  %s words: mean %.1f, max %d; %s" % (side, mean, max(lens, default=0), ", ".join(counts)))
    return rows


def main(argv):
    if len(argv) < 3 or argv[1] not in ("ding", "messages"):
        sys.exit(__doc__)
    opt = {"--root": "/", "--min-words": "6", "--max-words": "30", "--max-tokens": "40"}
    for k in opt:
        if k in argv:
            opt[k] = argv[argv.index(k) + 1]
    lo, hi, mt = int(opt["--min-words"]), int(opt["--max-words"]), int(opt["--max-tokens"])
    name, out, root = argv[1], argv[2], opt["--root"]
    if name == "messages" and "--min-words" not in argv:
        lo = 4
    if name == "messages" and "--max-words" not in argv:
        hi = 40
    if name == "ding":
        if not os.path.exists(os.path.join(root, DING + ".dict.dz")):
            sys.exit("s2s_corpus: %s.dict.dz missing: apt-get install dict-freedict-deu-eng (scripts/deps.sh)"
                     % os.path.join(root, DING))
        raw, info = ding_pairs(root)
    else:
        raw, info = message_pairs(root, lo, hi, "--all-catalogues" in argv)
        if not info["catalogues"]:
            sys.exit("s2s_corpus: no German catalogues under %s" % os.path.join(root, MO_GLOB))
    pairs = keep(raw, lo, hi, mt, both=name == "messages")
    if not pairs:
        sys.exit("s2s_corpus: no pairs of %d to %d words" % (lo, hi))
    os.makedirs(out, exist_ok=True)
    write_atomic(os.path.join(out, name + ".de"), [p[0] for p in pairs])
    write_atomic(os.path.join(out, name + ".en"), [p[1] for p in pairs])
    print("%s: %d pairs (German %d-%d words%s, at most %d tokens a side) from %d candidates -> %s/%s.{de,en}"
          % (name, len(pairs), lo, hi, ", English too" if name == "messages" else "", mt, len(raw), out, name))
    for r in histogram(pairs):
        print(r)
    if name == "messages":
        top = sorted(info["per_file"].items(), key=lambda kv: -kv[1])[:8]
        print("  %d catalogues; most pairs before deduplication: %s" % (info["catalogues"],
              ", ".join("%s %d" % (os.path.basename(k), v) for k, v in top)))
    else:
        print("  %d dictionary entries" % info["entries"])


if __name__ == "__main__":
    main(sys.argv)
