#!/usr/bin/env python3
"""Cuts a sample of each kernel capture for ncrx-core's tests.

For each case: the frames whose extended records have seq in [lo, hi] (every fragment of
them), the plain and non-UDP frames sent in between, and the kmsg.raw records with seq in
[lo, hi]. lo..hi spans the first fragmented records of the workload.

usage: make_sample.py ../../../../shared/captures
"""
import os
import re
import struct
import sys

CASES = [
    ("linux-7.3", "ext"),
    ("linux-7.3", "ext_release"),
    ("linux-7.3", "configfs_userdata"),
    ("linux-7.3", "ipv6"),
    ("linux-6.1", "ext"),
    ("linux-6.1", "configfs_userdata"),
]
HEADER = re.compile(rb"^(?:[^,;]*\.[^,;]*,)?\d+,(\d+),\d+,[-c+]")


def frames(path):
    data = open(path, "rb").read()
    head, pos = data[:24], 24
    while pos < len(data):
        sec, usec, incl, orig = struct.unpack("<IIII", data[pos:pos + 16])
        yield data[pos:pos + 16 + incl]
        pos += 16 + incl
    return head


def udp_payload(frame):
    eth = frame[16:]
    ethertype = struct.unpack(">H", eth[12:14])[0]
    if ethertype == 0x0800:
        ihl = (eth[14] & 15) * 4
        if eth[14 + 9] != 17:
            return None
        return eth[14 + ihl + 8:]
    if ethertype == 0x86DD and eth[14 + 6] == 17:
        return eth[14 + 40 + 8:]
    return None


def main(root):
    here = os.path.dirname(os.path.abspath(__file__))
    for kernel, case in CASES:
        src = os.path.join(root, kernel, case)
        all_frames = list(frames(os.path.join(src, "frames.pcap")))
        head = open(os.path.join(src, "frames.pcap"), "rb").read()[:24]
        seqs = []
        first_frag = None
        for i, f in enumerate(all_frames):
            p = udp_payload(f)
            m = HEADER.match(p) if p else None
            seqs.append(int(m.group(1)) if m else None)
            if m and first_frag is None and b"ncfrag=0/" in p.split(b";")[0]:
                first_frag = int(m.group(1))
        lo, hi = first_frag - 12, first_frag + 20
        chosen = [i for i, s in enumerate(all_frames) if seqs[i] is not None and lo <= seqs[i] <= hi]
        first, last = chosen[0], chosen[-1]
        keep = [f for i, f in enumerate(all_frames)
                if (seqs[i] is not None and lo <= seqs[i] <= hi)
                or (seqs[i] is None and first <= i <= last)]
        out = os.path.join(here, f"{kernel}-{case}")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "frames.pcap"), "wb") as w:
            w.write(head)
            for f in keep:
                w.write(f)
        records = open(os.path.join(src, "kmsg.raw"), "rb").read().split(b"\x1e")
        picked = [r for r in records if r and lo <= int(r.split(b",")[1]) <= hi]
        with open(os.path.join(out, "kmsg.raw"), "wb") as w:
            w.write(b"\x1e".join(picked))
        print(kernel, case, lo, hi, len(keep), "frames", len(picked), "records")


if __name__ == "__main__":
    main(sys.argv[1])
