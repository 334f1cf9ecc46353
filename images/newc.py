#!/usr/bin/env python3
"""Write a reproducible cpio "newc" archive (the Linux initramfs format) from a manifest.

Why not GNU cpio: creating the /dev/console node needs mknod, i.e. root, and GNU cpio only
archives what exists on disk. Writing the 110-byte newc header ourselves lets an unprivileged
build emit device nodes, and makes every field (inode, owner, mtime) a function of the inputs.

Manifest on stdin, one entry per line, fields separated by TABs (path has no leading slash):
    dir   PATH  MODE
    file  PATH  MODE  SOURCE
    nod   PATH  MODE  c|b  MAJOR  MINOR
Missing parent directories are added with mode 0755. Entries are written sorted by path, so a
parent always precedes its children; uid/gid are 0, mtime is --mtime, inodes count from 1.
Format reference: the kernel's Documentation/driver-api/early-userspace/buffer-format.rst.
"""

import argparse
import stat
import sys

MAGIC = b"070701"


def header(ino, mode, nlink, mtime, size, rdevmajor, rdevminor, name):
    fields = (ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdevmajor, rdevminor, len(name) + 1, 0)
    return MAGIC + b"".join(b"%08X" % f for f in fields) + name + b"\0"


def pad4(n):
    return b"\0" * (-n % 4)


def parse(lines):
    entries = {}
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\n")
        if not line:
            continue
        f = line.split("\t")
        kind, path = f[0], f[1].strip("/")
        if not path or ".." in path.split("/"):
            sys.exit(f"newc.py: manifest line {lineno}: bad path {f[1]!r}")
        mode = int(f[2], 8)
        if kind == "dir" and len(f) == 3:
            entries[path] = (stat.S_IFDIR | mode, None, 0, 0)
        elif kind == "file" and len(f) == 4:
            entries[path] = (stat.S_IFREG | mode, f[3], 0, 0)
        elif kind == "nod" and len(f) == 6 and f[3] in ("c", "b"):
            ftype = stat.S_IFCHR if f[3] == "c" else stat.S_IFBLK
            entries[path] = (ftype | mode, None, int(f[4]), int(f[5]))
        else:
            sys.exit(f"newc.py: manifest line {lineno}: cannot parse {line!r}")
    for path in list(entries):
        parts = path.split("/")
        for i in range(1, len(parts)):
            entries.setdefault("/".join(parts[:i]), (stat.S_IFDIR | 0o755, None, 0, 0))
    return entries


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mtime", type=int, required=True, help="mtime of every entry (epoch s)")
    ap.add_argument("output")
    args = ap.parse_args()
    entries = parse(sys.stdin)
    with open(args.output, "wb") as out:
        for ino, path in enumerate(sorted(entries), 1):
            mode, src, major, minor = entries[path]
            name = path.encode()
            data = b""
            if src is not None:
                with open(src, "rb") as f:
                    data = f.read()
            nlink = 2 if stat.S_ISDIR(mode) else 1
            h = header(ino, mode, nlink, args.mtime, len(data), major, minor, name)
            out.write(h + pad4(len(h)) + data + pad4(len(data)))
        h = header(0, 0, 1, 0, 0, 0, 0, b"TRAILER!!!")
        out.write(h + pad4(len(h)))


if __name__ == "__main__":
    main()
