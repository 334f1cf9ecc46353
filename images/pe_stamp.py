#!/usr/bin/env python3
"""Set a PE image's COFF TimeDateStamp and recompute its optional-header CheckSum, in place.

objcopy writes the wall-clock time into the TimeDateStamp of every PE file it emits (binutils
2.40 has no switch for it), which makes the UKI differ between two builds of the same inputs.
usage: pe_stamp.py FILE EPOCH
"""

import array
import struct
import sys


def pe_checksum(data, checksum_off):
    """The PE/COFF image checksum: 16-bit one's-complement-style sum plus the file length."""
    buf = data[:checksum_off] + b"\0\0\0\0" + data[checksum_off + 4:]
    if len(buf) % 2:
        buf += b"\0"
    words = array.array("H", buf)
    if sys.byteorder != "little":
        words.byteswap()
    total = sum(words)
    while total >> 16:  # end-around carry, as the per-word fold of the reference algorithm
        total = (total & 0xFFFF) + (total >> 16)
    return (total + len(data)) & 0xFFFFFFFF


def main():
    path, epoch = sys.argv[1], int(sys.argv[2])
    with open(path, "rb") as f:
        data = bytearray(f.read())
    (pe,) = struct.unpack_from("<I", data, 0x3C)
    if data[pe:pe + 4] != b"PE\0\0":
        sys.exit(f"pe_stamp.py: {path}: no PE signature at 0x{pe:x}")
    struct.pack_into("<I", data, pe + 8, epoch & 0xFFFFFFFF)  # COFF TimeDateStamp
    checksum_off = pe + 24 + 64  # optional header + CheckSum field (same in PE32 and PE32+)
    struct.pack_into("<I", data, checksum_off, pe_checksum(bytes(data), checksum_off))
    with open(path, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    main()
