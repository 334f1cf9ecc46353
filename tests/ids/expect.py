#!/usr/bin/python3
"""Expected alerts of http.rules on a capture, computed without nflet's matcher.

Reads the capture with dpkt and applies each rule as a plain Python condition on the TCP
payload; the two cross-segment rules search the byte stream of each direction (segments in
arrival order) and count the packets in which an occurrence ends. A packet matching the pass
rule (sid 1010) raises no alert; the drop rule (sid 1011) drops its packet (IPS mode).

Prints `sid N` per rule, then `packets N` and `dropped N`.
"""
import collections
import sys

import dpkt

HTTP_PORTS = (80, 8080)
HOME = b"\x91\xfe"  # HOME_NET = 145.254.0.0/16 (the capture's client)


def per_packet(p, sport, dport, to_server):
    return {
        1001: to_server and p.startswith(b"GET ") and dport in HTTP_PORTS,
        1002: dport == 80 and b"Host: www.ethereal.com\r\n" in p,
        1003: b"user-agent: mozilla" in p.lower(),
        1004: sport == 80 and b"ethereal" in p,
        1005: b"cmd.exe" in p,
        1006: sport in HTTP_PORTS and not to_server and p[:15] == b"HTTP/1.1 200 OK",
        1007: p.startswith(b"GET") and b"HTTP/1.1" in p[3:203],
        1010: b"google_ad_width" in p,
        1011: to_server and b"/pagead/ads?" in p,
        1012: b"pagead" in p,
    }


STREAM_RULES = {1008: b"mirrors.wiretapped.net", 1009: b"packet-capture"}


def main(path):
    counts = collections.Counter()
    streams = collections.defaultdict(bytes)
    # Per connection: the client (the first sender, or the receiver of a first SYN-ACK).
    clients = {}
    packets = dropped = 0
    with open(path, "rb") as f:
        for _, buf in dpkt.pcap.Reader(f):
            packets += 1
            ip = dpkt.ethernet.Ethernet(buf).data
            if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.tcp.TCP):
                continue
            t = ip.data
            a, b = (ip.src, t.sport), (ip.dst, t.dport)
            key = tuple(sorted([a, b]))
            syn, ack = bool(t.flags & dpkt.tcp.TH_SYN), bool(t.flags & dpkt.tcp.TH_ACK)
            client = clients.setdefault(key, b if (syn and ack) else a)
            to_server = a == client
            p = bytes(t.data)
            before = len(streams[(a, b)])
            streams[(a, b)] += p
            stream = streams[(a, b)]
            hits = {sid for sid, ok in per_packet(p, t.sport, t.dport, to_server).items() if ok}
            for sid, pat in STREAM_RULES.items():
                # An occurrence ending inside this packet: ends after `before`.
                lo = max(0, before - len(pat) + 1)
                if pat in stream[lo:]:
                    hits.add(sid)
            if ip.src[:2] != HOME or ip.dst[:2] == HOME:  # sid 1001: $HOME_NET -> $EXTERNAL_NET
                hits.discard(1001)
            if 1010 in hits:
                continue
            for sid in hits:
                counts[sid] += 1
            if 1011 in hits:
                dropped += 1
    for sid in sorted(set(per_packet(b"", 0, 0, False)) | set(STREAM_RULES)):
        if sid != 1010:
            print(f"sid {sid} {counts[sid]}")
    print(f"packets {packets}")
    print(f"dropped {dropped}")


if __name__ == "__main__":
    main(sys.argv[1])
