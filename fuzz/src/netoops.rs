//! netoops-proto: the packet parser and the dump collector.

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use netoops_proto::{
    Collector, CollectorConfig, DATA_BYTES, DumpEncoder, DumpMeta, DumpType, Event, Packet,
};
use netpoll_frame::Instant;

/// Parses arbitrary bytes as a netoops packet; what parses stays inside the datagram.
pub fn packet(data: &[u8]) {
    let Ok(packet) = Packet::parse(data) else {
        return;
    };
    assert!(
        packet.data_offset() + DATA_BYTES <= data.len(),
        "data past the datagram"
    );
    assert!(packet.packet_no() < packet.packet_count());
    assert_eq!(packet.as_bytes().len(), data.len());
    let _ = packet.meta();
}

#[derive(Debug, Arbitrary)]
enum Step {
    /// A packet of one of the encoded dumps, optionally with one byte changed.
    Packet {
        dump: u8,
        index: u16,
        flip: Option<(u16, u8)>,
        source: u8,
    },
    /// Arbitrary bytes.
    Garbage { bytes: Vec<u8>, source: u8 },
    /// Time passes.
    Wait { millis: u16 },
    /// A timeout call, possibly early.
    Timeout,
}

/// Drives a collector with packets of two real dumps (one per version), corrupted copies and
/// garbage, from several sources, with time passing. After every step the collector's
/// invariants hold (memory within the configured bounds), its next deadline is never in the
/// past after a timeout, and every dump it emits is self-consistent.
pub fn collector(data: &[u8]) {
    let mut input = Unstructured::new(data);
    let Ok(log_len) = input.int_in_range(0usize..=6000) else {
        return;
    };
    let Ok(split) = input.int_in_range(0usize..=log_len) else {
        return;
    };
    let log: Vec<u8> = (0..log_len).map(|i| b'a' + (i % 26) as u8).collect();
    let metas = [
        DumpMeta::v2(7, DumpType::PrintkBuffer, b"2.6.37"),
        DumpMeta::v2(8, DumpType::PrintkBufferSoft, b"3.0.0"),
    ];
    let mut packets: Vec<Vec<Vec<u8>>> = Vec::new();
    for meta in &metas {
        let mut encoder = DumpEncoder::new(meta, &log[..split], &log[split..]).expect("encodable");
        let mut buf = [0u8; 2048];
        let mut list = Vec::new();
        while let Some(len) = encoder.write_next(&mut buf).expect("buffer fits") {
            list.push(buf[..len].to_vec());
        }
        packets.push(list);
    }
    let mut config = CollectorConfig::default();
    config.max_dumps = 2;
    config.max_completed = 2;
    config.timeout = Duration::from_millis(500);
    let mut collector: Collector<u8> = Collector::new(config);
    let mut now = Instant::ZERO;
    // Once a changed packet went in, a complete dump may carry its bytes.
    let mut changed = false;
    // A segment that is an exact multiple of 1024 bytes loses its last chunk: the kernel
    // sends zeros in its place (`data_length = l % NETOOPS_DATA_BYTES`).
    let loses_a_chunk = |len: usize| len > 0 && len.is_multiple_of(DATA_BYTES);
    let exact = !loses_a_chunk(split) && !loses_a_chunk(log_len - split);
    while !input.is_empty() {
        let Ok(step) = Step::arbitrary(&mut input) else {
            break;
        };
        match step {
            Step::Packet {
                dump,
                index,
                flip,
                source,
            } => {
                let list = &packets[usize::from(dump) % packets.len()];
                if list.is_empty() {
                    // An empty log: the kernel sends no packet at all.
                    continue;
                }
                let mut bytes = list[usize::from(index) % list.len()].clone();
                if let Some((at, value)) = flip {
                    let at = usize::from(at) % bytes.len();
                    changed |= bytes[at] != value;
                    bytes[at] = value;
                }
                let _ = collector.handle_datagram(now, source % 3, &bytes);
            }
            Step::Garbage { bytes, source } => {
                let _ = collector.handle_datagram(now, source % 3, &bytes);
            }
            Step::Wait { millis } => now += Duration::from_millis(u64::from(millis)),
            Step::Timeout => {
                collector.handle_timeout(now);
                if let Some(deadline) = collector.poll_timeout() {
                    assert!(deadline > now, "deadline in the past after handle_timeout");
                }
            }
        }
        collector.check_invariants().expect("collector invariants");
        while let Some(event) = collector.poll_event() {
            let Event::Dump(dump) = event else { continue };
            dump.check_invariants().expect("dump invariants");
            if dump.is_complete() && !changed && exact && metas.contains(dump.meta()) {
                assert_eq!(
                    dump.log(),
                    &log[..],
                    "a complete dump of real packets is the log"
                );
            }
        }
    }
}
