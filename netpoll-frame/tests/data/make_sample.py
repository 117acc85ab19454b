#!/usr/bin/env python3
"""Cuts the sample kept in the repo from the kernel captures in ../shared/captures.

For each capture: the first 4 UDP frames, the 3 longest UDP frames, the first frame that is
not UDP (IPv6 neighbour discovery, MLD), written as a classic pcap with the original headers.
Run from the workspace root: python3 netpoll-frame/tests/data/make_sample.py
"""
import glob, os, struct

root = os.path.join("..", "shared", "captures")
out_dir = os.path.join("netpoll-frame", "tests", "data")

def frames(path):
    data = open(path, "rb").read()
    header, off = data[:24], 24
    while off + 16 <= len(data):
        rec = data[off:off + 16]
        incl = struct.unpack("<IIII", rec)[2]
        yield rec, data[off + 16:off + 16 + incl]
        off += 16 + incl

def is_udp(frame):
    et = struct.unpack(">H", frame[12:14])[0]
    return (et == 0x0800 and frame[23] == 17) or (et == 0x86DD and frame[20] == 17)

for pcap in sorted(glob.glob(os.path.join(root, "linux-*", "*", "frames.pcap"))):
    kernel, setup = pcap.split(os.sep)[-3:-1]
    header = open(pcap, "rb").read(24)
    all_frames = list(frames(pcap))
    udp = [i for i, (_, f) in enumerate(all_frames) if is_udp(f)]
    other = [i for i, (_, f) in enumerate(all_frames) if not is_udp(f)]
    longest = sorted(udp, key=lambda i: -len(all_frames[i][1]))[:3]
    keep = sorted(set(udp[:4] + longest + other[:1]))
    with open(os.path.join(out_dir, f"{kernel}-{setup}.pcap"), "wb") as out:
        out.write(header)
        for i in keep:
            rec, f = all_frames[i]
            out.write(rec + f)
