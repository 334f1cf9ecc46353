#!/usr/bin/env python3
"""The far end of nflet's ESP interop test, played by scapy's IPsec implementation.

Reads one JSON object on stdin:
  {"aes_key_rx": hex key+salt, "spi_rx": int,   # SA nflet sends on (scapy decrypts)
   "aes_key_tx": hex key+salt, "spi_tx": int,   # SA nflet receives on (scapy encrypts)
   "local": "a.b.c.d", "remote": "a.b.c.d",     # scapy's tunnel endpoint, nflet's
   "esn": bool,
   "decrypt": [hex outer IPv4 ESP packets made by nflet],
   "encrypt": [hex inner IPv4/IPv6 packets]}
Writes {"decrypted": [hex inner packet or "error: ..."], "encrypted": [hex outer packet]}.
Packets scapy sends carry sequence numbers 1, 2, ... and random IVs (scapy's default).
"""
import json
import sys

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation


def main():
    req = json.load(sys.stdin)
    esn = bool(req.get("esn", False))
    rx = SecurityAssociation(
        ESP,
        spi=req["spi_rx"],
        crypt_algo="AES-GCM",
        crypt_key=bytes.fromhex(req["aes_key_rx"]),
        tunnel_header=IP(src=req["remote"], dst=req["local"]),
        esn_en=esn,
        esn=0,
    )
    tx = SecurityAssociation(
        ESP,
        spi=req["spi_tx"],
        crypt_algo="AES-GCM",
        crypt_key=bytes.fromhex(req["aes_key_tx"]),
        tunnel_header=IP(src=req["local"], dst=req["remote"]),
        esn_en=esn,
        esn=0,
    )
    decrypted = []
    for h in req["decrypt"]:
        try:
            pkt = IP(bytes.fromhex(h))
            if pkt.src != req["remote"] or pkt.dst != req["local"] or pkt.proto != 50:
                raise ValueError("outer header %s -> %s proto %d" % (pkt.src, pkt.dst, pkt.proto))
            decrypted.append(bytes(rx.decrypt(pkt)).hex())
        except Exception as e:  # reported to the Rust side, which fails the test
            decrypted.append("error: %r" % (e,))
    encrypted = []
    for seq, h in enumerate(req["encrypt"], start=1):
        raw = bytes.fromhex(h)
        inner = IPv6(raw) if raw[0] >> 4 == 6 else IP(raw)
        encrypted.append(bytes(tx.encrypt(inner, seq_num=seq)).hex())
    json.dump({"decrypted": decrypted, "encrypted": encrypted}, sys.stdout)


if __name__ == "__main__":
    main()
