#!/usr/bin/env python3
"""Host-side endpoints of nflet's live ESP test (tests/tests/esp_linux_live.rs), run with
`ip netns exec` in the LAN host's namespace or the peer's bridge namespace. Standard library
only. Each mode prints one result line on stdout:

  send ADDR PORT BYTES   connect, send BYTES random bytes, half-close, read to EOF:
                         `bytes=N sha256=H secs=S` (S: connect to the peer's close)
  recv PORT BYTES        accept one connection, read BYTES (or to EOF), close:
                         `bytes=N sha256=H secs=S` (S: first byte to the last); prints
                         `listening` first
  inject IFACE HEX       write one Ethernet frame (hex) on IFACE with an AF_PACKET socket:
                         `sent=N`
"""
import hashlib
import os
import socket
import sys
import time


def send(addr, port, total):
    data = os.urandom(total)
    s = socket.create_connection((addr, port), timeout=10)
    s.settimeout(120)
    start = time.monotonic()
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    secs = time.monotonic() - start
    s.close()
    print(f"bytes={total} sha256={hashlib.sha256(data).hexdigest()} secs={secs:.3f}", flush=True)


def recv(port, total):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(1)
    ls.settimeout(60)
    print("listening", flush=True)
    c, _ = ls.accept()
    c.settimeout(120)
    h, n, start = hashlib.sha256(), 0, None
    while n < total:
        chunk = c.recv(min(65536, total - n))
        if not chunk:
            break
        if start is None:
            start = time.monotonic()
        h.update(chunk)
        n += len(chunk)
    secs = time.monotonic() - start if start is not None else 0.0
    c.close()
    ls.close()
    print(f"bytes={n} sha256={h.hexdigest()} secs={secs:.3f}", flush=True)


def inject(iface, frame_hex):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    n = s.send(bytes.fromhex(frame_hex))
    s.close()
    print(f"sent={n}", flush=True)


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "send":
        send(args[0], int(args[1]), int(args[2]))
    elif mode == "recv":
        recv(int(args[0]), int(args[1]))
    elif mode == "inject":
        inject(args[0], args[1])
    else:
        sys.exit(f"esp_live.py: unknown mode {mode}")


if __name__ == "__main__":
    main()
