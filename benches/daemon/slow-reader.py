#!/usr/bin/env python3
"""A reader of a pipe that stops now and then, as a stalled disk or a busy pipeline does.

    ncrx listen ... | benches/daemon/slow-reader.py [PAUSE_SECONDS [EVERY_SECONDS]]

Reads standard input 1 MiB at a time and, once every EVERY_SECONDS (1.0), stops reading for
PAUSE_SECONDS (0.4). At the end, prints the number of lines read on stderr.
"""
import os
import sys
import time


def main() -> None:
    pause = float(sys.argv[1]) if len(sys.argv) > 1 else 0.4
    every = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    fd = sys.stdin.fileno()
    lines = 0
    last = time.monotonic()
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        lines += chunk.count(b"\n")
        if time.monotonic() - last > every:
            time.sleep(pause)
            last = time.monotonic()
    print(f"{lines} lines read", file=sys.stderr)


if __name__ == "__main__":
    main()
