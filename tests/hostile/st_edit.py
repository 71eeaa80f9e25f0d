#!/usr/bin/env python3
"""st_edit.py - writes a damaged copy of a safetensors file, as a hostile or unlucky user would:
metadata values replaced, a tensor's shape transposed, the file cut short.

usage: st_edit.py IN OUT [--meta KEY=VALUE]... [--transpose TENSOR] [--truncate BYTES]
Only the standard library: the tests run it with any python3."""
import json
import struct
import sys


def main(argv):
    src, dst, args = argv[1], argv[2], argv[3:]
    raw = open(src, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    cut = None
    i = 0
    while i < len(args):
        opt, val = args[i], args[i + 1]
        i += 2
        if opt == "--meta":
            key, _, value = val.partition("=")
            header.setdefault("__metadata__", {})[key] = value
        elif opt == "--transpose":  # [a, b] -> [b, a]: the same count, another shape
            shape = header[val]["shape"]
            if len(shape) != 2 or shape[0] == shape[1]:
                sys.exit("st_edit: %s has shape %s: nothing to transpose" % (val, shape))
            header[val]["shape"] = [shape[1], shape[0]]
        elif opt == "--truncate":
            cut = int(val)
        else:
            sys.exit("st_edit: unknown option " + opt)
    body = json.dumps(header, separators=(",", ":")).encode()
    body += b" " * (-len(body) % 8)
    out = struct.pack("<Q", len(body)) + body + data
    if cut is not None:
        out = out[:cut]
    open(dst, "wb").write(out)


if __name__ == "__main__":
    main(sys.argv)
