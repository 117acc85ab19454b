#!/usr/bin/env bash
# ncrx listen against netconsd under the same loopback flood, runs interleaved.
#
#   benches/daemon/run.sh NETCONSD_DIR [RATES...]
#
# NETCONSD_DIR holds a netconsd built from its public sources (github facebook/netconsd:
# `make` there builds ./netconsd and modules/printer.so); nothing of it is kept here.
# Each run starts a fresh daemon writing to a file, floods it from 1,000 senders with
# distinct loopback addresses (127.1.x.y) with ~100-byte extended records, stops it, and
# prints one line: daemon, phase, rate asked, rate sent, the generator's longest stall (it
# does not catch up beyond 2 ms of datagrams), kernel drops, CPU seconds per million
# datagrams, peak memory (VmHWM), records checked.
#   cold:   the 1,000 senders appear at once, at the rate asked.
#   steady: the senders first send 20 records each at 20,000 datagrams/s, then the flood.
# netconsd has no receive buffer option: net.core.rmem_default is raised to the size ncrx
# asks for (8 MiB) for its runs and put back after. Needs root (sysctl), Linux, loopback.
#
# CPU=C (e.g. CPU=0.3) runs each daemon in a cgroup (v1 `cpu` or v2) limited to C cores (a
# quota of C x 10 ms every 10 ms), the same budget for every daemon; CPU_PER_THREAD=1 gives
# ncrx with 2 threads twice C. On a machine whose cores the generator fills first, this finds
# each daemon's zero-loss rate for a given CPU budget, and how a second thread scales.
set -euo pipefail
cd "$(dirname "$0")/../.."
netconsd_dir="${1:?usage: $0 NETCONSD_DIR [RATES...]}"
shift
rates=("${@:-100000 200000 300000 400000 500000 600000}")
read -r -a rates <<<"${rates[*]}"
senders="${SENDERS:-1000}"
records="${RECORDS:-300}"
rounds="${ROUNDS:-1}"
daemons="${DAEMONS:-ncrx1 ncrx2 netconsd}"
NCRX_ARGS="${NCRX_ARGS:-}"
cpu_budget="${CPU:-}"
cpu_per_thread="${CPU_PER_THREAD:-}"
buffer=$((8 << 20))
port=6666
out="$(mktemp -d)"
daemon_pid=
cgroup=
trap '[ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null; rm -rf "$out"; sysctl -qw net.core.rmem_default="$old_default" net.core.rmem_max="$old_max"; [ -n "$cgroup" ] && rmdir "$cgroup" 2>/dev/null' EXIT
old_default="$(sysctl -n net.core.rmem_default)"
old_max="$(sysctl -n net.core.rmem_max)"

cargo build -q --release -p ncrx -p benches --bin ncrx --bin ncflood
ncrx=target/release/ncrx
flood=target/release/ncflood

# Sum of the kernel's drop counters of the UDP sockets bound to $port.
drops() {
    awk -v p="$(printf ':%04X' "$port")" 'NR > 1 && index($2, p) { d += $13 } END { print d + 0 }' \
        /proc/net/udp /proc/net/udp6
}

# A cgroup for the daemons, when a CPU budget is asked for.
if [ -n "$cpu_budget" ]; then
    if [ -d /sys/fs/cgroup/cpu ] && [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
        cgroup=/sys/fs/cgroup/cpu/ncrx-bench-$$
    elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        cgroup=/sys/fs/cgroup/ncrx-bench-$$
        echo +cpu >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
    else
        echo "CPU=$cpu_budget: no cgroup cpu controller found" >&2
        exit 1
    fi
    mkdir "$cgroup"
fi

# Limits the cgroup to $1 cores.
limit() {
    local quota
    quota=$(awk -v c="$1" 'BEGIN { printf "%d", c * 10000 }')
    if [ -f "$cgroup/cpu.cfs_quota_us" ]; then
        echo 10000 >"$cgroup/cpu.cfs_period_us"
        echo "$quota" >"$cgroup/cpu.cfs_quota_us"
    else
        echo "$quota 10000" >"$cgroup/cpu.max"
    fi
}

# Starts "$@" inside the cgroup (when there is one), in the background.
start() {
    if [ -n "$cgroup" ]; then
        sh -c 'echo $$ >"$1/cgroup.procs"; shift; exec "$@"' sh "$cgroup" "$@" &
    else
        "$@" &
    fi
}

# CPU seconds (user + system) of a process so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }

# Waits until a file stops growing (the daemon wrote what it received).
settle() {
    local last=-1 size
    while size=$(stat -c %s "$1"); [ "$size" != "$last" ]; do last=$size; sleep 0.5; done
}

run() {
    local daemon=$1 phase=$2 rate=$3 file="$out/out" format
    : >"$file"
    if [ -n "$cgroup" ]; then
        if [ "$daemon" = ncrx2 ] && [ -n "$cpu_per_thread" ]; then
            limit "$(awk -v c="$cpu_budget" 'BEGIN { print 2 * c }')"
        else
            limit "$cpu_budget"
        fi
    fi
    case $daemon in
        ncrx1|ncrx2)
            sysctl -qw net.core.rmem_default="$old_default"
            start "$ncrx" listen --bind "127.0.0.1:$port" --format json --threads "${daemon#ncrx}" $NCRX_ARGS \
                --recv-buffer "$buffer" >"$file" 2>"$out/err"
            format=ncrx-json ;;
        netconsd)
            sysctl -qw net.core.rmem_max="$buffer" net.core.rmem_default="$buffer"
            start "$netconsd_dir/netconsd" -l 1 -w 2 -u "$port" "$netconsd_dir/modules/printer.so" \
                >"$file" 2>"$out/err"
            format=netconsd ;;
    esac
    local pid=$! first=0 total=$records
    daemon_pid=$pid
    sleep 0.5
    if [ "$phase" = steady ]; then
        "$flood" send --senders "$senders" --records 20 --rate 20000 >/dev/null 2>&1
        settle "$file"
        first=20
        total=$((records + 20))
    fi
    local cpu0 drops0
    cpu0=$(cpu "$pid"); drops0=$(drops)
    local flooded sent lag
    flooded=$("$flood" send --senders "$senders" --records "$records" --first-seq "$first" \
        --rate "$rate" 2>/dev/null)
    sent=$(sed -n 's/.*s: \([0-9]*\) datagrams\/s/\1/p' <<<"$flooded")
    lag=$(sed -n 's/.*behind by at most \([0-9.]*\) ms.*/\1/p' <<<"$flooded")
    settle "$file"
    local cpu1 dropped hwm
    cpu1=$(cpu "$pid"); dropped=$(( $(drops) - drops0 ))
    hwm=$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    daemon_pid=
    local checked
    checked=$("$flood" check --format "$format" "$file" --senders "$senders" --records "$total" \
        | sed 's/ncflood check: //' || true)
    local datagrams=$((senders * records))
    local per_million
    per_million=$(awk -v a="$cpu0" -v b="$cpu1" -v n="$datagrams" 'BEGIN { printf "%.2f", (b - a) * 1e6 / n }')
    printf '%-9s %-6s asked %7s sent %7s (lag %5s ms) drops %7s cpu/M %5s s  VmHWM %7s kB  %s\n' \
        "$daemon" "$phase" "$rate" "$sent" "$lag" "$dropped" "$per_million" "$hwm" "$checked"
}

for round in $(seq "$rounds"); do
    for rate in "${rates[@]}"; do
        for phase in cold steady; do
            for daemon in $daemons; do
                run "$daemon" "$phase" "$rate"
            done
        done
    done
done
