//! Hostile peers against the netoops collector, with a counting global allocator.
//!
//! A flood of forged version 2 packets (copies of a real encoder packet with other sources,
//! `dump_id`s, `packet_count`s up to and over the limit, `packet_no`s, some cut short or with
//! another version) goes to one [`Collector`] beside a good dump sent three times by the
//! encoder, as the kernel sends it. After every datagram (events drained):
//!
//! - the collector's invariants hold (`check_invariants`), and the heap in use, as the
//!   allocator counts it, stays within what the configuration allows: `max_dumps + 1` dumps
//!   of `max_packets_per_dump` chunks (one evicted dump is alive while the new one is made),
//!   plus [`SLACK`], and within the bytes of the dumps in flight plus [`SLACK`];
//! - a datagram that does not start a dump allocates nothing;
//! - every datagram is counted as what it was (`CollectorStats` against the results);
//! - the good dump comes out complete, once, with its log byte for byte.
//!
//! The allocator's counters are global to the process, so this binary runs without libtest
//! (`harness = false` in Cargo.toml): its `main` hands the tests to `testkit::run_tests`,
//! which runs them one after another on the main thread, the only thread in the process, so
//! no other code allocates between a test's readings.

use std::alloc::System;
use std::time::Duration;

use netoops_proto::{
    CollectError, Collector, CollectorConfig, DATA_BYTES, DumpEncoder, DumpMeta, DumpStatus,
    DumpType, Event, Received,
};
use netpoll_frame::Instant;
use testkit::SplitMix64 as Rng;
use testkit::heap::{self, INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Heap beyond the dumps' buffers: the maps' nodes, the remembered complete dumps, the event
/// queue, allocator rounding.
const SLACK: i64 = 128 * 1024;

/// What the test counted of the collector's answers.
#[derive(Debug, Default)]
struct Tally {
    new: u64,
    completed: u64,
    duplicate: u64,
    after_complete: u64,
    rejected: u64,
    contradictions: u64,
    complete_dumps: u64,
    partial_dumps: u64,
}

/// Overwrites `packet` with a forged copy of `template`: another `dump_id` (8 of them),
/// `packet_count` (mostly 2..=8, sometimes at the limit, over it or `u32::MAX`) and
/// `packet_no`; one in 50 cut inside the header, one with another version, one with
/// `packet_no` = `packet_count`. Returns the length to send.
fn forge(rng: &mut Rng, template: &[u8], packet: &mut [u8], max_packets: u32) -> usize {
    packet.copy_from_slice(template);
    let count: u32 = match rng.below(100) {
        0 => max_packets + 1 + rng.below(1000) as u32, // over the limit
        1 => max_packets,                              // at it
        2 => u32::MAX,
        _ => 2 + rng.below(7) as u32,
    };
    let packet_no = rng.below(u64::from(count)) as u32;
    packet[6..8].copy_from_slice(&(rng.below(8) as u16).to_le_bytes());
    packet[10..14].copy_from_slice(&count.to_le_bytes());
    packet[14..18].copy_from_slice(&packet_no.to_le_bytes());
    match rng.below(50) {
        0 => rng.below(217) as usize, // cut inside the header
        1 => {
            packet[0] = rng.below(256) as u8; // another version
            packet.len()
        }
        2 => {
            // packet_no past packet_count
            packet[14..18].copy_from_slice(&count.to_le_bytes());
            packet.len()
        }
        _ => packet.len(),
    }
}

/// The good dump: 5000 bytes of log in two segments, three passes (15 packets), as the
/// kernel sends them; the log and the packets.
fn good_dump() -> (Vec<u8>, Vec<Vec<u8>>) {
    let log: Vec<u8> = (0..5000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let meta = DumpMeta::v2(0x1234, DumpType::PrintkBuffer, b"6.1.0-hostile");
    let mut encoder = DumpEncoder::new(&meta, &log[..3000], &log[3000..]).unwrap();
    let mut packets = Vec::new();
    let mut buf = vec![0u8; 2048];
    while let Some(len) = encoder.write_next(&mut buf).unwrap() {
        packets.push(buf[..len].to_vec());
    }
    assert_eq!(packets.len(), 15);
    (log, packets)
}

impl Tally {
    /// Counts one answer of the collector.
    fn count(&mut self, result: Result<Received, CollectError>) {
        match result {
            Ok(Received::New) => self.new += 1,
            Ok(Received::Completed) => self.completed += 1,
            Ok(Received::Duplicate) => self.duplicate += 1,
            Ok(Received::AfterComplete) => self.after_complete += 1,
            Err(CollectError::Parse(_) | CollectError::TooManyPackets { .. }) => {
                self.rejected += 1;
            }
            Err(CollectError::Contradiction { .. }) => self.contradictions += 1,
            other => panic!("{other:?}"),
        }
    }

    /// Takes the collector's events; the good source's dump must come out once, complete.
    /// Returns the number of events.
    fn drain(
        &mut self,
        collector: &mut Collector<u32>,
        good_source: u32,
        good_log: &mut Option<Vec<u8>>,
    ) -> usize {
        let mut events = 0;
        while let Some(Event::Dump(dump)) = collector.poll_event() {
            events += 1;
            if dump.status() == DumpStatus::Complete {
                self.complete_dumps += 1;
            } else {
                self.partial_dumps += 1;
            }
            if *dump.source() == good_source {
                assert!(good_log.is_none(), "the good dump came out twice");
                assert_eq!(dump.status(), DumpStatus::Complete);
                *good_log = Some(dump.into_log());
            }
        }
        events
    }
}

fn main() {
    testkit::run_tests(&[(
        "a_flood_of_dumps_stays_bounded_and_counted",
        a_flood_of_dumps_stays_bounded_and_counted,
    )]);
}

fn a_flood_of_dumps_stays_bounded_and_counted() {
    const FLOOD: u64 = 200_000;
    const GOOD_SOURCE: u32 = u32::MAX;
    let config = CollectorConfig::default();
    let max_packets = config.max_packets_per_dump;

    let (log, good) = good_dump();
    let template = good[0].clone();
    assert_eq!(u16::from_le_bytes([template[0], template[1]]), 2);

    let mut rng = Rng::new(0x006e_6574_6f6f_7073);
    let mut packet = template.clone();
    let baseline = heap::in_use(GLOBAL);
    let mut collector: Collector<u32> = Collector::new(config.clone());
    let mut now = Instant::from_millis(1);
    let mut tally = Tally::default();
    let mut good_log = None;
    let mut good_sent = 0;
    let mut peak = 0i64;
    let mut excess = i64::MIN;
    let mut max_cost_not_first = 0;
    let bound = i64::try_from((config.max_dumps + 1) * max_packets as usize * (DATA_BYTES + 1))
        .unwrap()
        + SLACK;

    for i in 0..FLOOD {
        // Every 8th datagram is the good dump's next packet (its deadline stays ahead of the
        // hostile dumps that could evict it: 16 fit).
        let (source, bytes): (u32, &[u8]) = if i % 8 == 0 && good_sent < good.len() {
            good_sent += 1;
            (GOOD_SOURCE, &good[good_sent - 1])
        } else {
            let len = forge(&mut rng, &template, &mut packet, max_packets);
            (rng.below(64) as u32, &packet[..len])
        };
        let in_flight = collector.dumps_in_flight();
        let before = heap::allocations(GLOBAL);
        let result = collector.handle_datagram(now, source, bytes);
        let cost = heap::allocations(GLOBAL) - before;
        tally.count(result);
        let events = tally.drain(&mut collector, GOOD_SOURCE, &mut good_log);
        // A new dump (one more in flight, or one in place of an evicted one, which then
        // came out as an event) may allocate; nothing else may.
        if collector.dumps_in_flight() <= in_flight && events == 0 {
            max_cost_not_first = max_cost_not_first.max(cost);
        }
        collector.check_invariants().unwrap();
        let heap = heap::in_use(GLOBAL) - baseline;
        assert!(heap <= bound, "heap {heap} over {bound}");
        // Tighter: the dumps in flight (data and one flag per chunk) and the slack.
        let held =
            i64::try_from(collector.buffered_bytes() / DATA_BYTES * (DATA_BYTES + 1)).unwrap();
        assert!(
            heap <= held + SLACK,
            "heap {heap} over {held} held + {SLACK}"
        );
        excess = excess.max(heap - held);
        peak = peak.max(heap);
        now += Duration::from_micros(50);
        if collector.poll_timeout().is_some_and(|t| t <= now) {
            collector.handle_timeout(now);
        }
    }
    collector.handle_timeout(now + Duration::from_secs(60));
    tally.drain(&mut collector, GOOD_SOURCE, &mut good_log);

    let stats = collector.stats();
    println!(
        "netoops collector: {FLOOD} datagrams, peak heap {peak} B (bound {bound} B, at most {excess} B beyond the dumps in flight), {tally:?}, {stats:?}"
    );
    assert_eq!(
        good_log.as_deref(),
        Some(&log[..]),
        "the good dump, byte for byte"
    );
    assert_eq!(stats.datagrams, FLOOD);
    assert_eq!(stats.rejected, tally.rejected);
    assert_eq!(stats.contradictions, tally.contradictions);
    assert_eq!(stats.new_packets, tally.new + tally.completed);
    assert_eq!(stats.duplicates, tally.duplicate);
    assert_eq!(stats.after_complete, tally.after_complete);
    assert_eq!(stats.complete_dumps, tally.complete_dumps);
    assert_eq!(stats.partial_dumps, tally.partial_dumps);
    assert_eq!(
        tally.new
            + tally.completed
            + tally.duplicate
            + tally.after_complete
            + tally.rejected
            + tally.contradictions,
        FLOOD
    );
    assert!(tally.partial_dumps > 0 && tally.rejected > 0 && tally.contradictions > 0);
    assert_eq!(
        max_cost_not_first, 0,
        "a datagram that starts no dump allocated"
    );
}
