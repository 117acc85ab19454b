#!/usr/bin/env bash
# Interleaved A/B of ncrx builds: CPU per million datagrams of `ncrx listen`, same flood.
#
#   benches/daemon/ab.sh RATE RECORDS ROUNDS NCRX_BINARY...
#
# For each round and each binary: start `BINARY listen --format json --threads $THREADS
# --recv-buffer 8388608 > file` on 127.0.0.1:$PORT, warm it with 20 records from each of
# 1,000 senders (ncflood, distinct loopback addresses) at 20,000 datagrams/s, then send
# RECORDS more from each at RATE and print the CPU seconds (user, system, total) the daemon
# spent per million datagrams of that flood, its kernel drops, the lines it wrote and its
# peak resident memory (VmHWM).
# THREADS defaults to 1, PORT to 7778; with DIR=1 the lines go to one file per sender
# (`--dir`) instead of one file. Needs root (net.core.rmem_max is raised to 8 MiB
# for the run and put back), Linux, loopback; builds ncflood first.
set -euo pipefail
cd "$(dirname "$0")/../.."
rate=${1:?usage: $0 RATE RECORDS ROUNDS NCRX_BINARY...} records=${2:?} rounds=${3:?}
shift 3
threads=${THREADS:-1}
port=${PORT:-7778}
cargo build --release -q -p benches --bin ncflood
flood=target/release/ncflood
old_max=$(sysctl -n net.core.rmem_max)
work=$(mktemp -d)
trap 'sysctl -qw net.core.rmem_max="$old_max"; rm -rf "$work"' EXIT
sysctl -qw net.core.rmem_max=8388608
hz=$(getconf CLK_TCK)
for _ in $(seq "$rounds"); do
    for bin in "$@"; do
        rm -rf "$work/dir"
        out=()
        if [ -n "${DIR:-}" ]; then out=(--dir "$work/dir"); fi
        "$bin" listen --bind "127.0.0.1:$port" --format json --threads "$threads" \
            --recv-buffer 8388608 "${out[@]}" >"$work/out" 2>"$work/err" &
        pid=$!
        sleep 0.4
        "$flood" send --target "127.0.0.1:$port" --senders 1000 --records 20 --rate 20000 \
            >/dev/null 2>&1
        sleep 0.5
        read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
        "$flood" send --target "127.0.0.1:$port" --senders 1000 --records "$records" \
            --first-seq 20 --rate "$rate" >"$work/flood" 2>&1
        sleep 0.5
        read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
        hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
        kill -TERM "$pid"
        wait "$pid" || true
        n=$((records * 1000))
        drops=$(grep -o '[0-9]* kernel drops' "$work/err" || echo "? kernel drops")
        sent=$(grep -o '[0-9]* datagrams/s' "$work/flood" | tail -1 | cut -d' ' -f1)
        awk -v b="$bin" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$hz" -v n="$n" \
            -v sent="$sent" -v d="$drops" -v m="$hwm" -v l="$(cat "$work/out" "$work"/dir/* 2>/dev/null | wc -l)" \
            'BEGIN { printf "%-24s sent %7d/s user %.2f sys %.2f total %.2f s/M  %s, %d lines, %.1f MB\n",
                     b, sent, u/hz/n*1e6, s/hz/n*1e6, (u+s)/hz/n*1e6, d, l, m/1024 }'
    done
done
