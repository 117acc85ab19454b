//! Property tests: encode → lose and reorder → collect gives back the log and metadata the
//! kernel actually sent; codec round-trips; no input makes the parser or the collector panic
//! or break their invariants.
//!
//! The expected chunks come from a model of the kernel written here from the seed patch's
//! rules (see `kernel_chunks`), not from the encoder.

use core::time::Duration;
use netoops_proto::{
    Collector, CollectorConfig, DumpEncoder, DumpMeta, DumpStatus, DumpType, Event, Packet, PtRegs,
    V3Fields, X86ArchData,
};
use netpoll_frame::Instant;
use proptest::prelude::*;
use testkit::SplitMix64 as Rng;

/// A kernel log: text bytes, never NUL (the printk buffer holds text).
fn log_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| 1 + (rng.next_u64() % 255) as u8).collect()
}

/// What each packet of one segment carries, in log order, padding removed: chunks of 1024
/// bytes; the tail chunk (sent first) carries `len % 1024` bytes, which is nothing when the
/// segment is an exact multiple of 1024 (the kernel then sends 1024 zero bytes).
fn kernel_chunks(segment: &[u8]) -> Vec<Vec<u8>> {
    let mut chunks: Vec<Vec<u8>> = segment.chunks(1024).map(<[u8]>::to_vec).collect();
    if segment.len() % 1024 == 0 {
        if let Some(tail) = chunks.last_mut() {
            tail.clear();
        }
    }
    chunks
}

fn all_packets(meta: &DumpMeta, s1: &[u8], s2: &[u8]) -> Vec<Vec<u8>> {
    let mut encoder = DumpEncoder::new(meta, s1, s2).expect("at most 1 MiB");
    let mut out = Vec::with_capacity(encoder.len());
    let mut buf = [0u8; 1412];
    while let Some(len) = encoder.write_next(&mut buf).expect("fits") {
        out.push(buf[..len].to_vec());
    }
    out
}

fn meta_strategy() -> impl Strategy<Value = DumpMeta> {
    let common = (
        any::<u16>(),
        prop_oneof![
            Just(DumpType::PrintkBuffer),
            Just(DumpType::PrintkBufferSoft)
        ],
        proptest::collection::vec(any::<u8>(), 64),
    );
    let v3 = (
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 128),
        any::<[u8; 4]>(),
        prop_oneof![Just(168usize), Just(60usize), 0usize..=168,]
            .prop_flat_map(|len| proptest::collection::vec(any::<u8>(), len)),
    );
    (common, proptest::option::of(v3), any::<u16>()).prop_map(
        |((dump_id, dump_type, kernel_version), v3, arch)| {
            let mut meta = match v3 {
                None => {
                    let mut meta = DumpMeta::v2(dump_id, dump_type, b"");
                    meta.arch = arch; // version 2 carries any arch value
                    meta
                }
                Some((boot_id, blob, cpu, regs)) => DumpMeta::v3(
                    dump_id,
                    dump_type,
                    b"",
                    V3Fields {
                        boot_id,
                        user_blob: blob.try_into().expect("128 bytes"),
                        arch_data: X86ArchData {
                            vendor: cpu[0],
                            family: cpu[1],
                            model: cpu[2],
                            stepping: cpu[3],
                            regs: PtRegs::from_bytes(&regs).expect("at most 168"),
                        },
                    },
                ),
            };
            meta.kernel_version = kernel_version.try_into().expect("64 bytes");
            meta
        },
    )
}

/// A log length from 0 to 1 MiB, often an exact multiple of 1024, and where to split it.
fn log_strategy() -> impl Strategy<Value = (usize, usize)> {
    prop_oneof![
        0usize..=1 << 20,
        (0usize..=1024).prop_map(|k| k * 1024),
        0usize..=4096,
    ]
    .prop_flat_map(|len| {
        (
            Just(len),
            prop_oneof![0..=len, (0..=len / 1024).prop_map(|k| k * 1024), Just(len),],
        )
    })
}

fn config() -> CollectorConfig {
    let mut config = CollectorConfig::default();
    config.timeout = Duration::from_secs(5);
    config
}

/// Feeds `packets` one microsecond apart; returns the time of the last one.
fn feed(collector: &mut Collector<u8>, packets: &[Vec<u8>]) -> Instant {
    let mut now = Instant::from_millis(1);
    for (step, packet) in packets.iter().enumerate() {
        now = Instant::from_millis(1) + Duration::from_micros(step as u64);
        collector
            .handle_datagram(now, 7, packet)
            .expect("a valid packet of one dump");
        if step % 256 == 0 {
            collector.check_invariants().expect("collector invariants");
        }
    }
    collector.check_invariants().expect("collector invariants");
    now
}

/// A non-empty random subset of the three copies (one per pass) of packet `packet_no` survives
/// into `kept`.
fn keep_some_copies(
    sent: &[Vec<u8>],
    packet_count: usize,
    packet_no: usize,
    rng: &mut Rng,
    kept: &mut Vec<Vec<u8>>,
) {
    let mask = 1 + rng.index(7);
    for pass in 0..3 {
        if mask & (1 << pass) != 0 {
            kept.push(sent[pass * packet_count + packet_no].clone());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Up to two of every three copies lost, the rest shuffled: the complete dump is the
    /// kernel's log (as the model says it was sent) and the metadata.
    #[test]
    fn lossy_shuffled_copies_give_back_the_log(
        (len, split) in log_strategy(),
        meta in meta_strategy(),
        seed in any::<u64>(),
    ) {
        let log = log_bytes(len, seed);
        let (s1, s2) = log.split_at(split);
        let model: Vec<Vec<u8>> = kernel_chunks(s1).into_iter().chain(kernel_chunks(s2)).collect();
        let packet_count = model.len();

        let sent = all_packets(&meta, s1, s2);
        prop_assert_eq!(sent.len(), 3 * packet_count);
        let mut rng = Rng::new(seed ^ 0x5555);
        let mut kept = Vec::new();
        for packet_no in 0..packet_count {
            keep_some_copies(&sent, packet_count, packet_no, &mut rng, &mut kept);
        }
        rng.shuffle(&mut kept);

        let mut collector = Collector::new(config());
        let last = feed(&mut collector, &kept);
        collector.handle_timeout(last + Duration::from_secs(60));
        let events: Vec<_> = core::iter::from_fn(|| collector.poll_event()).collect();
        if packet_count == 0 {
            prop_assert!(events.is_empty());
            return Ok(());
        }
        prop_assert_eq!(events.len(), 1);
        let Some(Event::Dump(dump)) = events.into_iter().next() else {
            panic!("not a dump");
        };
        dump.check_invariants().expect("dump invariants");
        prop_assert_eq!(dump.status(), DumpStatus::Complete);
        prop_assert_eq!(dump.meta(), &meta);
        prop_assert_eq!(dump.packet_count() as usize, packet_count);
        prop_assert!(dump.missing().is_empty());
        for (index, chunk) in model.iter().enumerate() {
            let packet_no = (packet_count - 1 - index) as u32;
            prop_assert_eq!(dump.chunk(packet_no), Some(&chunk[..]));
        }
        prop_assert_eq!(dump.log(), &model.concat()[..]);
        // Only exact multiples of 1024 lose bytes, and exactly their last 1024.
        let lost = [s1, s2].iter().filter(|s| !s.is_empty() && s.len() % 1024 == 0).count();
        prop_assert_eq!(dump.log().len() + 1024 * lost, log.len());
        if lost == 0 {
            prop_assert_eq!(dump.log(), &log[..]);
        }
    }

    /// All three copies of some packets lost: the partial dump names exactly those.
    #[test]
    fn a_partial_dump_names_exactly_the_lost_packets(
        (len, split) in log_strategy(),
        meta in meta_strategy(),
        seed in any::<u64>(),
    ) {
        let log = log_bytes(len, seed);
        let (s1, s2) = log.split_at(split);
        let model: Vec<Vec<u8>> = kernel_chunks(s1).into_iter().chain(kernel_chunks(s2)).collect();
        let packet_count = model.len();
        prop_assume!(packet_count >= 2);

        let sent = all_packets(&meta, s1, s2);
        let mut rng = Rng::new(seed ^ 0xaaaa);
        let forced = rng.index(packet_count);
        let mut lost = Vec::new();
        let mut kept = Vec::new();
        for packet_no in 0..packet_count {
            if packet_no == forced || rng.index(8) == 0 {
                lost.push(packet_no as u32);
                continue;
            }
            keep_some_copies(&sent, packet_count, packet_no, &mut rng, &mut kept);
        }
        prop_assume!(lost.len() < packet_count);
        rng.shuffle(&mut kept);

        let mut collector = Collector::new(config());
        let last = feed(&mut collector, &kept);
        prop_assert!(collector.poll_event().is_none());
        let deadline = collector.poll_timeout().expect("a dump in flight");
        prop_assert_eq!(deadline, last + Duration::from_secs(5));
        collector.handle_timeout(deadline);
        let Some(Event::Dump(dump)) = collector.poll_event() else {
            panic!("no dump at the deadline");
        };
        prop_assert!(collector.poll_event().is_none());
        dump.check_invariants().expect("dump invariants");
        prop_assert_eq!(dump.status(), DumpStatus::TimedOut);
        prop_assert_eq!(dump.meta(), &meta);
        prop_assert_eq!(dump.missing(), &lost[..]);
        let mut expected_log = Vec::new();
        for (index, chunk) in model.iter().enumerate() {
            let packet_no = (packet_count - 1 - index) as u32;
            if lost.contains(&packet_no) {
                prop_assert_eq!(dump.chunk(packet_no), None);
            } else {
                prop_assert_eq!(dump.chunk(packet_no), Some(&chunk[..]));
                expected_log.extend_from_slice(chunk);
            }
        }
        prop_assert_eq!(dump.log(), &expected_log[..]);
        collector.check_invariants().expect("collector invariants");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Encode → parse: every header field and every data byte comes back.
    #[test]
    fn packets_round_trip(
        meta in meta_strategy(),
        (len, split) in (0usize..=5000).prop_flat_map(|len| (Just(len), 0..=len)),
        seed in any::<u64>(),
    ) {
        let log = log_bytes(len, seed);
        let (s1, s2) = log.split_at(split);
        let model: Vec<Vec<u8>> = kernel_chunks(s1).into_iter().chain(kernel_chunks(s2)).collect();
        let encoder = DumpEncoder::new(&meta, s1, s2).expect("small");
        let count = model.len();
        prop_assert_eq!(encoder.packet_count() as usize, count);
        let mut buf = [0u8; 1412];
        for (index, chunk) in model.iter().enumerate() {
            let packet_no = (count - 1 - index) as u32;
            let len = encoder.write_packet(packet_no, &mut buf).expect("fits");
            let packet = Packet::parse(&buf[..len]).expect("own packet parses");
            prop_assert_eq!(packet.meta(), meta);
            prop_assert_eq!(packet.packet_no(), packet_no);
            prop_assert_eq!(packet.packet_count() as usize, count);
            prop_assert_eq!(packet.as_bytes().len(), len);
            prop_assert_eq!(&packet.data()[..chunk.len()], &chunk[..]);
            prop_assert!(packet.data()[chunk.len()..].iter().all(|&b| b == 0));
        }
    }

    /// Any bytes, or a valid packet with bytes changed: the parser answers without panicking,
    /// and what it accepts is consistent.
    #[test]
    fn the_parser_takes_any_bytes(
        meta in meta_strategy(),
        noise in proptest::collection::vec(any::<u8>(), 0..1500),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<proptest::sample::Index>(),
    ) {
        let mut packet = all_packets(&meta, b"", b"text").swap_remove(0);
        for (at, value) in flips {
            let at = at.index(packet.len());
            packet[at] = value;
        }
        let short = cut.index(packet.len() + 1);
        for bytes in [&noise[..], &packet[..], &packet[..short]] {
            if let Ok(parsed) = Packet::parse(bytes) {
                prop_assert_eq!(parsed.data_offset() + 1024, bytes.len());
                prop_assert!(parsed.packet_no() < parsed.packet_count());
                prop_assert_eq!(&bytes[parsed.data_offset()..], &parsed.data()[..]);
                let _ = parsed.meta();
            }
        }
    }

    /// A collector fed mutated packets of a few dumps, from a few sources, at arbitrary
    /// times, keeps its memory bound and its invariants, and every dump it emits is sound.
    #[test]
    fn the_collector_stays_within_bounds(
        steps in proptest::collection::vec(
            (0u8..3, 0usize..12, any::<i16>(), proptest::option::of((any::<proptest::sample::Index>(), any::<u8>()))),
            0..200,
        ),
    ) {
        let metas = [
            DumpMeta::v2(1, DumpType::PrintkBuffer, b"a"),
            DumpMeta::v2(2, DumpType::PrintkBuffer, b"b"),
        ];
        let dumps: Vec<Vec<Vec<u8>>> = metas
            .iter()
            .map(|meta| all_packets(meta, &[b'x'; 1500], b"tail"))
            .collect();
        let mut config = config();
        config.max_dumps = 2;
        config.max_packets_per_dump = 3;
        config.max_completed = 1;
        let mut collector = Collector::new(config);
        let mut now = Instant::ZERO;
        for (source, pick, advance_ms, flip) in steps {
            // Mostly forwards; a careless caller's clock may also step back.
            let step = Duration::from_millis(u64::from(advance_ms.unsigned_abs()));
            now = if advance_ms >= -1000 {
                now + step
            } else {
                now.checked_sub(step).unwrap_or(Instant::ZERO)
            };
            let mut packet = dumps[pick % 2][pick / 2 % 9].clone();
            if let Some((at, value)) = flip {
                let at = at.index(packet.len());
                packet[at] = value;
            }
            let _ = collector.handle_datagram(now, source, &packet);
            if advance_ms % 3 == 0 {
                collector.handle_timeout(now);
            }
            collector.check_invariants().expect("collector invariants");
            prop_assert!(collector.buffered_bytes() <= 2 * 3 * 1024);
            if advance_ms % 3 == 0 {
                if let Some(deadline) = collector.poll_timeout() {
                    prop_assert!(deadline > now);
                }
            }
            while let Some(Event::Dump(dump)) = collector.poll_event() {
                dump.check_invariants().expect("dump invariants");
            }
        }
    }
}
