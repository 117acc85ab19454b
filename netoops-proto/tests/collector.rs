//! The collector's behaviour, driven through its public API with packets from the encoder.

use core::time::Duration;
use netoops_proto::{
    CollectError, Collector, CollectorConfig, Contradiction, Dump, DumpEncoder, DumpMeta,
    DumpStatus, DumpType, Event, ParseError, Received,
};
use netpoll_frame::Instant;

const SECOND: Duration = Duration::from_secs(1);

fn meta(dump_id: u16) -> DumpMeta {
    DumpMeta::v2(dump_id, DumpType::PrintkBuffer, b"2.6.37-test")
}

/// Every packet of a dump in send order (three passes).
fn packets(meta: &DumpMeta, s1: &[u8], s2: &[u8]) -> Vec<Vec<u8>> {
    let mut encoder = DumpEncoder::new(meta, s1, s2).expect("small dump");
    let mut out = Vec::new();
    let mut buf = [0u8; 1500];
    while let Some(len) = encoder.write_next(&mut buf).expect("fits") {
        out.push(buf[..len].to_vec());
    }
    out
}

fn text(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| b' ' + ((i + usize::from(seed)) % 90) as u8)
        .collect()
}

fn dumps<S>(collector: &mut Collector<S>) -> Vec<Dump<S>>
where
    S: Ord + Clone,
{
    let mut out = Vec::new();
    while let Some(event) = collector.poll_event() {
        let Event::Dump(dump) = event else {
            panic!("unexpected event")
        };
        dump.check_invariants().expect("dump invariants");
        out.push(dump);
    }
    out
}

fn config() -> CollectorConfig {
    let mut config = CollectorConfig::default();
    config.timeout = 10 * SECOND;
    config
}

#[test]
fn complete_after_the_first_pass_then_later_passes_are_recognised() {
    let (s1, s2) = (text(1500, 0), text(700, 3));
    let all = packets(&meta(1), &s1, &s2);
    assert_eq!(all.len(), 9);
    let mut collector = Collector::new(config());
    let t = Instant::from_millis(1);
    let results: Vec<Received> = all
        .iter()
        .map(|p| collector.handle_datagram(t, 'a', p).expect("accepted"))
        .collect();
    assert_eq!(
        results[..3],
        [Received::New, Received::New, Received::Completed]
    );
    assert!(results[3..].iter().all(|&r| r == Received::AfterComplete));
    let got = dumps(&mut collector);
    assert_eq!(got.len(), 1);
    let dump = &got[0];
    assert_eq!(dump.status(), DumpStatus::Complete);
    assert_eq!(*dump.source(), 'a');
    assert_eq!(dump.meta(), &meta(1));
    assert_eq!(dump.packet_count(), 3);
    assert_eq!(dump.log(), [s1.as_slice(), s2.as_slice()].concat());
    assert_eq!(dump.chunk(0), Some(&s2[..]));
    assert_eq!(dump.chunk(1), Some(&s1[1024..]));
    assert_eq!(dump.chunk(2), Some(&s1[..1024]));
    assert_eq!(dump.chunk(3), None);
    let stats = collector.stats();
    assert_eq!(
        (
            stats.new_packets,
            stats.after_complete,
            stats.complete_dumps
        ),
        (3, 6, 1)
    );
    assert_eq!(collector.dumps_in_flight(), 0);
    assert_eq!(collector.poll_timeout(), None);
    collector.check_invariants().expect("invariants");
}

#[test]
fn duplicates_are_dropped_and_contradictions_reported_not_merged() {
    let s2 = text(3000, 1);
    let all = packets(&meta(2), &[], &s2);
    let mut collector = Collector::new(config());
    let t = Instant::ZERO;
    assert_eq!(
        collector.handle_datagram(t, 1u8, &all[0]),
        Ok(Received::New)
    );
    assert_eq!(
        collector.handle_datagram(t, 1, &all[0]),
        Ok(Received::Duplicate)
    );

    // Same packet_no, other data.
    let mut forged = all[0].clone();
    forged[217] ^= 0x20;
    assert_eq!(
        collector.handle_datagram(t, 1, &forged),
        Err(CollectError::Contradiction {
            dump_id: 2,
            packet_no: 0,
            kind: Contradiction::Data
        })
    );
    // Same dump_id, other metadata (kernel_version at 25).
    let mut other = all[1].clone();
    other[25] = b'3';
    assert_eq!(
        collector.handle_datagram(t, 1, &other),
        Err(CollectError::Contradiction {
            dump_id: 2,
            packet_no: 1,
            kind: Contradiction::Meta
        })
    );
    // Same dump_id, other packet_count.
    let mut longer = all[1].clone();
    longer[10] = 4;
    assert!(matches!(
        collector.handle_datagram(t, 1, &longer),
        Err(CollectError::Contradiction {
            kind: Contradiction::Meta,
            ..
        })
    ));
    // Not a packet at all.
    assert_eq!(
        collector.handle_datagram(t, 1, b"\x02\x00hello"),
        Err(CollectError::Parse(ParseError::TooShort { len: 7 }))
    );
    for packet in &all[1..3] {
        collector.handle_datagram(t, 1, packet).expect("accepted");
    }
    let got = dumps(&mut collector);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].log(), s2);
    let stats = collector.stats();
    assert_eq!(
        (stats.contradictions, stats.duplicates, stats.rejected),
        (3, 1, 1)
    );
}

#[test]
fn partial_dump_after_the_exact_timeout() {
    let s2 = text(5000, 2); // 5 packets
    let all = packets(&meta(3), &[], &s2);
    let mut collector = Collector::new(config());
    let t0 = Instant::from_millis(1_000);
    // Packets 0, 2 and 4 of the first pass only.
    for index in [0, 2, 4] {
        collector
            .handle_datagram(t0, "h", &all[index])
            .expect("accepted");
    }
    assert_eq!(collector.poll_timeout(), Some(t0 + 10 * SECOND));
    // A duplicate later pushes the deadline back.
    let t1 = t0 + 3 * SECOND;
    assert_eq!(
        collector.handle_datagram(t1, "h", &all[5]),
        Ok(Received::Duplicate)
    );
    let deadline = t1 + 10 * SECOND;
    assert_eq!(collector.poll_timeout(), Some(deadline));

    // Early: nothing.
    collector.handle_timeout(t0 + 10 * SECOND);
    collector.handle_timeout(Instant::from_nanos(deadline.as_nanos() - 1));
    assert!(collector.poll_event().is_none());
    collector.check_invariants().expect("invariants");

    collector.handle_timeout(deadline);
    let got = dumps(&mut collector);
    assert_eq!(got.len(), 1);
    let dump = &got[0];
    assert_eq!(dump.status(), DumpStatus::TimedOut);
    assert!(!dump.is_complete());
    assert_eq!(dump.missing(), [1, 3]);
    assert_eq!(dump.chunk(4), Some(&s2[..1024]));
    assert_eq!(dump.chunk(3), None);
    assert_eq!(dump.chunk(2), Some(&s2[2048..3072]));
    assert_eq!(dump.chunk(0), Some(&s2[4096..]));
    let pieces: Vec<u32> = dump.chunks().map(|(n, _)| n).collect();
    assert_eq!(pieces, [4, 2, 0]);
    assert_eq!(
        dump.log(),
        [&s2[..1024], &s2[2048..3072], &s2[4096..]].concat()
    );

    // Twice: harmless.
    collector.handle_timeout(deadline);
    collector.handle_timeout(deadline + SECOND);
    assert!(collector.poll_event().is_none());
    assert_eq!(collector.poll_timeout(), None);

    // A straggler starts a new (partial) dump rather than vanishing.
    let late = deadline + SECOND;
    assert_eq!(
        collector.handle_datagram(late, "h", &all[1]),
        Ok(Received::New)
    );
    assert_eq!(collector.poll_timeout(), Some(late + 10 * SECOND));
}

#[test]
fn a_packet_after_a_missed_deadline_times_the_dump_out_first() {
    let all = packets(&meta(4), &[], &text(2048 + 10, 0));
    let mut collector = Collector::new(config());
    collector
        .handle_datagram(Instant::ZERO, 0u32, &all[0])
        .expect("accepted");
    // The caller never ran handle_timeout; the next packet comes after the deadline.
    let late = Instant::ZERO + 10 * SECOND;
    assert_eq!(
        collector.handle_datagram(late, 0, &all[1]),
        Ok(Received::New)
    );
    let got = dumps(&mut collector);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].missing(), [1, 2]);
    assert_eq!(collector.dumps_in_flight(), 1);
}

#[test]
fn sources_and_dump_ids_are_kept_apart_and_memory_is_bounded() {
    let mut config = config();
    config.max_dumps = 2;
    config.max_packets_per_dump = 4;
    let mut collector = Collector::new(config);
    let t = Instant::ZERO;
    let a = packets(&meta(10), &[], &text(2500, 0));
    let b = packets(&meta(10), &[], &text(2500, 1));
    let c = packets(&meta(11), &[], &text(2500, 2));
    collector.handle_datagram(t, "a", &a[0]).expect("accepted");
    collector
        .handle_datagram(t + SECOND, "b", &b[0])
        .expect("accepted");
    assert_eq!(collector.dumps_in_flight(), 2);
    assert_eq!(collector.buffered_bytes(), 2 * 3 * 1024);
    // A third dump evicts the one with the earliest deadline ("a"), emitted partial.
    collector
        .handle_datagram(t + 2 * SECOND, "b", &c[0])
        .expect("accepted");
    assert_eq!(collector.dumps_in_flight(), 2);
    collector.check_invariants().expect("invariants");
    let got = dumps(&mut collector);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (*got[0].source(), got[0].status()),
        ("a", DumpStatus::Evicted)
    );
    assert_eq!(got[0].missing(), [1, 2]);

    // Over the packet limit.
    let big = packets(&meta(12), &[], &text(5 * 1024, 0));
    assert_eq!(
        collector.handle_datagram(t, "a", &big[0]),
        Err(CollectError::TooManyPackets {
            dump_id: 12,
            packet_count: 5,
            limit: 4
        })
    );
    assert_eq!(collector.dumps_in_flight(), 2);
}

#[test]
fn a_remembered_dump_is_forgotten_after_the_timeout() {
    let all = packets(&meta(5), &[], b"one packet\n");
    let mut collector = Collector::new(config());
    let t = Instant::ZERO;
    assert_eq!(
        collector.handle_datagram(t, (), &all[0]),
        Ok(Received::Completed)
    );
    assert_eq!(
        collector.handle_datagram(t + SECOND, (), &all[1]),
        Ok(Received::AfterComplete)
    );
    // Other metadata under the remembered id is a contradiction, not a new dump.
    let mut other = all[1].clone();
    other[25] = b'9';
    assert_eq!(
        collector.handle_datagram(t + SECOND, (), &other),
        Err(CollectError::Contradiction {
            dump_id: 5,
            packet_no: 0,
            kind: Contradiction::Meta
        })
    );
    assert_eq!(collector.dumps_in_flight(), 0);
    // Remembered until 10 s after the last packet seen (t + 1 s).
    collector.handle_timeout(t + 10 * SECOND);
    assert_eq!(
        collector.handle_datagram(t + 10 * SECOND, (), &all[2]),
        Ok(Received::AfterComplete)
    );
    let later = t + 21 * SECOND;
    assert_eq!(
        collector.handle_datagram(later, (), &all[2]),
        Ok(Received::Completed)
    );
    let got = dumps(&mut collector);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], got[1]);
    assert_eq!(got[0].log(), b"one packet\n");
}

#[test]
fn a_segment_of_exactly_1024_bytes_loses_its_tail_like_the_kernel() {
    let s1 = text(2048, 5);
    let s2 = text(100, 6);
    let mut collector = Collector::new(config());
    for packet in packets(&meta(6), &s1, &s2) {
        collector
            .handle_datagram(Instant::ZERO, 0u8, &packet)
            .expect("accepted");
    }
    let got = dumps(&mut collector);
    assert_eq!(got.len(), 1);
    assert!(got[0].is_complete());
    assert_eq!(got[0].packet_count(), 3);
    // Packet 1 is s1's tail chunk: all zero, its 1024 bytes never sent.
    assert_eq!(got[0].chunk(1), Some(&[][..]));
    assert_eq!(got[0].log(), [&s1[..1024], &s2[..]].concat());
}

#[test]
fn deterministic() {
    let s1 = text(4000, 7);
    let s2 = text(3000, 8);
    let mut all = packets(&meta(7), &s1, &s2);
    all.extend(packets(&meta(8), &s2, &s1));
    // A fixed interleaving with some loss.
    let order: Vec<usize> = (0..all.len()).map(|i| (i * 7) % all.len()).collect();
    let run = || {
        let mut collector = Collector::new(config());
        let mut results = Vec::new();
        for (step, &index) in order.iter().enumerate() {
            if index % 5 == 0 {
                continue;
            }
            let now = Instant::from_millis(step as u64);
            results.push(collector.handle_datagram(now, 9u8, &all[index]));
        }
        collector.handle_timeout(Instant::from_millis(60_000));
        (results, dumps(&mut collector), collector.stats())
    };
    let first = run();
    assert_eq!(first, run());
    assert_eq!(first.1.len(), 2);
}

#[test]
fn a_full_mebibyte_split_unevenly_fits_the_default_limit() {
    let log = text(1 << 20, 9);
    let (s1, s2) = log.split_at(1000);
    let all = packets(&meta(13), s1, s2);
    assert_eq!(all.len(), 3 * 1025);
    let mut collector = Collector::new(CollectorConfig::default());
    for packet in all.iter().rev() {
        collector
            .handle_datagram(Instant::ZERO, 0u8, packet)
            .expect("accepted");
    }
    let got = dumps(&mut collector);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].packet_count(), 1025);
    assert_eq!(got[0].log(), log);
}

#[test]
fn a_clock_stepping_back_never_pulls_a_deadline_earlier() {
    let all = packets(&meta(14), &[], &text(3000, 0));
    let mut collector = Collector::new(config());
    let t = Instant::ZERO + 10 * SECOND;
    collector
        .handle_datagram(t, 0u8, &all[0])
        .expect("accepted");
    assert_eq!(collector.poll_timeout(), Some(t + 10 * SECOND));
    let earlier = Instant::ZERO + 2 * SECOND;
    assert_eq!(
        collector.handle_datagram(earlier, 0, &all[1]),
        Ok(Received::New)
    );
    assert_eq!(
        collector.handle_datagram(earlier, 0, &all[1]),
        Ok(Received::Duplicate)
    );
    assert_eq!(collector.poll_timeout(), Some(t + 10 * SECOND));
    collector.check_invariants().expect("invariants");
    collector.handle_timeout(earlier + 10 * SECOND);
    assert!(collector.poll_event().is_none());
    collector.handle_timeout(t + 10 * SECOND);
    assert_eq!(dumps(&mut collector)[0].missing(), [2]);
}
