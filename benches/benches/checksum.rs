//! The Internet checksum of `netpoll-frame` against its peers, over 64 B, 1500 B and 64 KiB.
//!
//! Run with `cargo bench -p benches --bench checksum`; every implementation runs in the same
//! process on the same buffer, and each size is one group so the report reads as a table.

use core::hash::Hasher as _;
use core::time::Duration;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};

/// The sizes measured: a small frame, a full Ethernet MTU, a maximal IP datagram.
const SIZES: [usize; 3] = [64, 1500, 65_536];

/// Bytes that look random, the same on every run.
fn data(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[1]
        })
        .collect()
}

fn ours(data: &[u8]) -> [u8; 2] {
    netpoll_frame::checksum::checksum(data).to_be_bytes()
}

fn internet_checksum(data: &[u8]) -> [u8; 2] {
    internet_checksum::checksum(data)
}

fn etherparse(data: &[u8]) -> [u8; 2] {
    etherparse::checksum::Sum16BitWords::new()
        .add_slice(data)
        .ones_complement()
        .to_ne_bytes()
}

fn smoltcp(data: &[u8]) -> [u8; 2] {
    (!smoltcp::wire::checksum::data(data)).to_be_bytes()
}

fn s2n_quic(data: &[u8]) -> [u8; 2] {
    let mut c = s2n_quic_core::inet::checksum::Checksum::default();
    c.write(data);
    c.finish().to_be_bytes()
}

/// A checksum implementation, returning the two bytes that go on the wire.
type Implementation = fn(&[u8]) -> [u8; 2];

/// Every implementation, by the name it has in the report.
const IMPLEMENTATIONS: [(&str, Implementation); 5] = [
    ("netpoll-frame", ours),
    ("internet-checksum", internet_checksum),
    ("etherparse", etherparse),
    ("smoltcp", smoltcp),
    ("s2n-quic-core", s2n_quic),
];

fn checksum(c: &mut Criterion) {
    for size in SIZES {
        let buf = data(size);
        // Compare like with like: every peer must give the same wire bytes.
        let expected = ours(&buf);
        for (name, f) in IMPLEMENTATIONS {
            assert_eq!(f(&buf), expected, "{name} disagrees at {size} bytes");
        }

        let mut group = c.benchmark_group(format!("checksum/{size}"));
        group.throughput(Throughput::Bytes(size as u64));
        for (name, f) in IMPLEMENTATIONS {
            group.bench_with_input(BenchmarkId::from_parameter(name), &buf[..], |b, d| {
                b.iter(|| f(black_box(d)));
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    targets = checksum
}

/// A plain loop instead of criterion, for instruction counts under callgrind (deterministic,
/// unlike times on a shared machine): `CHECKSUM_LOOP=<who>:<bytes>:<calls>` with `who` a name
/// of the report (`netpoll-frame`, `smoltcp`, ...).
fn checksum_loop(spec: &str) {
    let (who, len, n) = benches::loop_spec(spec, "CHECKSUM_LOOP");
    let Some((_, f)) = IMPLEMENTATIONS.into_iter().find(|(name, _)| *name == who) else {
        panic!("unknown CHECKSUM_LOOP implementation {who}");
    };
    let buf = data(len);
    let mut hash = std::hash::DefaultHasher::new();
    for _ in 0..n {
        hash.write(&f(black_box(&buf)));
    }
    println!("{who} {len} B x {n}: {:x}", hash.finish());
}

fn main() {
    if let Ok(spec) = std::env::var("CHECKSUM_LOOP") {
        checksum_loop(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
