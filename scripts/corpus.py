#!/usr/bin/env python3
"""corpus.py - gathers a large English corpus (about 113 MB) from Debian packages into one text
file, the same bytes on every machine with the same package versions: the GNU Collaborative
International Dictionary of English (dict-gcide), WordNet (dict-wn), the Jargon File
(dict-jargon), FOLDOC (dict-foldoc), and the reStructuredText sources of Python's (python3-doc)
and Linux's (linux-doc) documentation. Sources come in this order, files sorted by path, each
followed by a blank line; the output is written atomically.

usage: corpus.py OUT [--root DIR]   (DIR prefixes the installed paths: tests use a fake tree)"""
import glob
import gzip
import hashlib
import os
import sys

SOURCES = [  # (name, glob under the root, how to read it)
    ("gcide", "usr/share/dictd/gcide.dict.dz", "gzip"),
    ("wordnet", "usr/share/dictd/wn.dict.dz", "gzip"),
    ("jargon", "usr/share/dictd/jargon.dict.dz", "gzip"),
    ("foldoc", "usr/share/dictd/foldoc.dict.dz", "gzip"),
    ("python-docs", "usr/share/doc/python3*/html/_sources/**/*.rst.txt", "plain"),
    ("linux-docs", "usr/share/doc/linux-doc-*/Documentation/**/*.rst.gz", "gzip"),
]


def main(argv):
    if len(argv) < 2 or argv[1].startswith("-"):
        sys.exit(__doc__)
    out = argv[1]
    root = argv[argv.index("--root") + 1] if "--root" in argv else "/"
    tmp = "%s.tmp.%d" % (out, os.getpid())
    digest, total, missing = hashlib.sha256(), 0, []
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(tmp, "wb") as f:
        for name, pattern, kind in SOURCES:
            # each file once: the versioned directories are also reachable through symlinks
            files = sorted(set(os.path.realpath(p) for p in glob.glob(os.path.join(root, pattern), recursive=True)))
            if not files:
                missing.append(name)
                continue
            n = 0
            for path in files:
                data = gzip.open(path).read() if kind == "gzip" else open(path, "rb").read()
                data = data.replace(b"\r\n", b"\n").rstrip(b"\n") + b"\n\n"
                f.write(data)
                digest.update(data)
                n += len(data)
            print("corpus: %-12s %4d files %11d bytes" % (name, len(files), n))
            total += n
    if missing:
        os.remove(tmp)
        sys.exit("corpus: missing %s: install them with `bash scripts/deps.sh --corpus` (or `make corpus`)"
                 % ", ".join(missing))
    os.replace(tmp, out)
    print("corpus: %d bytes -> %s (sha256 %s)" % (total, out, digest.hexdigest()))


if __name__ == "__main__":
    main(sys.argv)
