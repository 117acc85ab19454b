//! Frame building and parsing: netpoll-frame against etherparse and smoltcp, in one run.
//!
//! `cargo bench -p benches --bench frame`

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group};
use netpoll_frame::{
    Frame, FrameBuilder, FrameConfig, MacAddr, NETCONSOLE_DESTINATION_PORT, NETCONSOLE_SOURCE_PORT,
};

const SOURCE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const DESTINATION: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const SOURCE_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const DESTINATION_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x57];

/// A netconsole-like payload of `len` bytes.
fn payload(len: usize) -> Vec<u8> {
    b"6,1234,5678901,-;eth0: link up, 1000Mbps, full duplex, lpa 0x45E1 "
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

fn ours(payload: &[u8], buf: &mut [u8], builder: &mut FrameBuilder) -> usize {
    builder.build(payload, buf).unwrap()
}

fn etherparse_build(payload: &[u8], buf: &mut [u8]) -> usize {
    etherparse::PacketBuilder::ethernet2(SOURCE_MAC, DESTINATION_MAC)
        .ipv4(SOURCE.octets(), DESTINATION.octets(), 64)
        .udp(NETCONSOLE_SOURCE_PORT, NETCONSOLE_DESTINATION_PORT)
        .write_to_slice(buf, payload)
        .unwrap()
}

fn smoltcp_build(payload: &[u8], buf: &mut [u8]) -> usize {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
        Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
    };
    let caps = ChecksumCapabilities::default();
    let len = 14 + 20 + 8 + payload.len();
    let buf = &mut buf[..len];
    let ethernet = EthernetRepr {
        src_addr: EthernetAddress(SOURCE_MAC),
        dst_addr: EthernetAddress(DESTINATION_MAC),
        ethertype: EthernetProtocol::Ipv4,
    };
    ethernet.emit(&mut EthernetFrame::new_unchecked(&mut *buf));
    let ip = Ipv4Repr {
        src_addr: SOURCE,
        dst_addr: DESTINATION,
        next_header: IpProtocol::Udp,
        payload_len: 8 + payload.len(),
        hop_limit: 64,
    };
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[14..]), &caps);
    let udp = UdpRepr {
        src_port: NETCONSOLE_SOURCE_PORT,
        dst_port: NETCONSOLE_DESTINATION_PORT,
    };
    udp.emit(
        &mut UdpPacket::new_unchecked(&mut buf[34..]),
        &IpAddress::Ipv4(SOURCE),
        &IpAddress::Ipv4(DESTINATION),
        payload.len(),
        |out| out.copy_from_slice(payload),
        &caps,
    );
    len
}

/// etherparse's sliced parser plus the checksum verification our parser does.
fn etherparse_parse_verify(frame: &[u8]) -> usize {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let packet = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(NetSlice::Ipv4(ip)) = packet.net else {
        panic!("not IPv4")
    };
    let Some(TransportSlice::Udp(udp)) = packet.transport else {
        panic!("not UDP")
    };
    let ip_header = ip.header().to_header();
    assert_eq!(ip_header.calc_header_checksum(), ip_header.header_checksum);
    let mut header = udp.to_header();
    let found = header.checksum;
    header.checksum = 0;
    assert_eq!(
        header
            .calc_checksum_ipv4(&ip_header, udp.payload())
            .unwrap(),
        found
    );
    udp.payload().len()
}

fn builder() -> FrameBuilder {
    let mut config = FrameConfig::new(SOURCE.into(), DESTINATION.into());
    config.source_mac = MacAddr(SOURCE_MAC);
    config.destination_mac = MacAddr(DESTINATION_MAC);
    FrameBuilder::new(&config).unwrap()
}

fn build(c: &mut Criterion) {
    for len in [100, 1000] {
        let payload = payload(len);
        let mut buf = vec![0u8; 1600];
        // All three write the same datagram with IPv4 id 0 (as a 2.6 kernel does).
        let mut zero_id = FrameConfig::new(SOURCE.into(), DESTINATION.into());
        zero_id.source_mac = MacAddr(SOURCE_MAC);
        zero_id.destination_mac = MacAddr(DESTINATION_MAC);
        zero_id.ip_id = netpoll_frame::IpIdPolicy::Zero;
        let mut zero_id = FrameBuilder::new(&zero_id).unwrap();
        let ours_len = ours(&payload, &mut buf, &mut zero_id);
        let reference = buf[..ours_len].to_vec();
        let smoltcp_len = smoltcp_build(&payload, &mut buf);
        // smoltcp sets DF (byte 20), hence another IPv4 header checksum (bytes 24..26); the
        // rest of the frame is the same.
        assert_eq!(smoltcp_len, ours_len);
        for (at, (theirs, ours)) in buf[..smoltcp_len].iter().zip(&reference).enumerate() {
            assert!(
                theirs == ours || matches!(at, 20 | 24 | 25),
                "smoltcp differs at byte {at}"
            );
        }

        let mut group = c.benchmark_group(format!("frame_build/{len}B"));
        group.throughput(Throughput::Elements(1));
        let mut ours_builder = builder();
        group.bench_function("netpoll-frame", |b| {
            b.iter(|| ours(black_box(&payload), black_box(&mut buf), &mut ours_builder));
        });
        group.bench_function("smoltcp", |b| {
            b.iter(|| smoltcp_build(black_box(&payload), black_box(&mut buf)));
        });
        group.bench_function("etherparse", |b| {
            b.iter(|| etherparse_build(black_box(&payload), black_box(&mut buf)));
        });
        group.finish();
    }
}

fn parse(c: &mut Criterion) {
    for len in [100, 1000] {
        let payload = payload(len);
        let mut buf = vec![0u8; 1600];
        let frame_len = builder().build(&payload, &mut buf).unwrap();
        let frame = buf[..frame_len].to_vec();
        let mut group = c.benchmark_group(format!("frame_parse_verify/{len}B"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("netpoll-frame", |b| {
            b.iter(|| Frame::parse(black_box(&frame)).unwrap().payload().len());
        });
        group.bench_function("etherparse", |b| {
            b.iter(|| etherparse_parse_verify(black_box(&frame)));
        });
        group.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group!(name = benches; config = config(); targets = build, parse);

/// A plain loop instead of criterion, for instruction counts under callgrind (deterministic,
/// unlike times on a shared machine): `FRAME_LOOP=<who>:<payload bytes>:<frames>` with `who`
/// one of `netpoll-frame`, `smoltcp`, `etherparse`, `parse` (our parse and verify).
fn frame_loop(spec: &str) {
    let (who, len, n) = benches::loop_spec(spec, "FRAME_LOOP");
    let payload = payload(len);
    let mut buf = vec![0u8; 1600.max(len + 100)];
    let mut builder = builder();
    let frame_len = builder.build(&payload, &mut buf).unwrap();
    let frame = buf[..frame_len].to_vec();
    let mut total = 0;
    for _ in 0..n {
        total += match who {
            "netpoll-frame" => ours(black_box(&payload), black_box(&mut buf), &mut builder),
            "smoltcp" => smoltcp_build(black_box(&payload), black_box(&mut buf)),
            "etherparse" => etherparse_build(black_box(&payload), black_box(&mut buf)),
            "parse" => Frame::parse(black_box(&frame)).unwrap().payload().len(),
            _ => panic!("unknown FRAME_LOOP implementation {who}"),
        };
    }
    println!("{who} {len} B x {n}: {total} bytes");
}

fn main() {
    if let Ok(spec) = std::env::var("FRAME_LOOP") {
        frame_loop(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
