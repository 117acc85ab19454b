//! netoops-proto: encoding a dump into netpoll frames (and bare packets), and collecting a
//! dump from shuffled, triplicated packets.
//!
//! `cargo bench -p benches --bench netoops`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use netoops_proto::{
    Collector, CollectorConfig, DumpEncoder, DumpMeta, DumpType, Event, PtRegs, V3Fields,
    X86ArchData, netoops_frame_config,
};
use netpoll_frame::{FrameBuilder, Instant, MacAddr};

/// A kernel-log-like text of `len` bytes.
fn log(len: usize) -> Vec<u8> {
    b"<4>[  123.456789] BUG: unable to handle kernel NULL pointer dereference at 0000000000000008\n"
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

fn meta_v3() -> DumpMeta {
    DumpMeta::v3(
        0x1234,
        DumpType::PrintkBuffer,
        b"6.1.0-56-amd64",
        V3Fields {
            boot_id: 42,
            user_blob: [0; 128],
            arch_data: X86ArchData {
                vendor: 0,
                family: 6,
                model: 0x55,
                stepping: 4,
                regs: PtRegs::ZERO_X86_64,
            },
        },
    )
}

fn encode(c: &mut Criterion) {
    let meta = meta_v3();
    let log = log(64 * 1024);
    let (s1, s2) = log.split_at(40_000);
    let mut config = netoops_frame_config(
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
    );
    config.source_mac = MacAddr::from([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    config.destination_mac = MacAddr::from([0x52, 0x54, 0x00, 0x12, 0x34, 0x57]);
    let mut builder = FrameBuilder::new(&config).unwrap();
    let packets = DumpEncoder::new(&meta, s1, s2).unwrap().len();

    let mut group = c.benchmark_group("netoops-proto/encode 64 KiB dump");
    group.throughput(Throughput::Elements(packets as u64));
    group.bench_function("frames (v3, IPv4, checksum 0)", |b| {
        let mut frame = [0u8; 1514];
        b.iter(|| {
            let mut encoder = DumpEncoder::new(&meta, black_box(s1), black_box(s2)).unwrap();
            let mut bytes = 0;
            while let Some(len) = encoder.write_next_frame(&mut builder, &mut frame).unwrap() {
                bytes += len;
                black_box(&frame);
            }
            bytes
        });
    });
    group.bench_function("packets (v3)", |b| {
        let mut packet = [0u8; 1412];
        b.iter(|| {
            let mut encoder = DumpEncoder::new(&meta, black_box(s1), black_box(s2)).unwrap();
            let mut bytes = 0;
            while let Some(len) = encoder.write_next(&mut packet).unwrap() {
                bytes += len;
                black_box(&packet);
            }
            bytes
        });
    });
    group.finish();
}

fn collect(c: &mut Criterion) {
    let meta = meta_v3();
    let log = log(1 << 20);
    let (s1, s2) = log.split_at(700_000);
    let mut encoder = DumpEncoder::new(&meta, s1, s2).unwrap();
    let mut packets = Vec::with_capacity(encoder.len());
    let mut buf = [0u8; 1412];
    while let Some(len) = encoder.write_next(&mut buf).unwrap() {
        packets.push(buf[..len].to_vec());
    }
    // A fixed shuffle of the three passes.
    testkit::SplitMix64::new(0x0123_4567_89ab_cdef).shuffle(&mut packets);

    let mut group = c.benchmark_group("netoops-proto/collect 1 MiB dump");
    group.throughput(Throughput::Elements(packets.len() as u64));
    group.bench_function("shuffled triplicated packets", |b| {
        b.iter(|| {
            let mut collector = Collector::new(CollectorConfig::default());
            for packet in &packets {
                let _ = collector.handle_datagram(Instant::ZERO, 1u8, black_box(packet));
            }
            match collector.poll_event() {
                Some(Event::Dump(dump)) => {
                    assert!(dump.is_complete());
                    dump.log().len()
                }
                _ => panic!("no complete dump"),
            }
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = encode, collect
}
criterion_main!(benches);
