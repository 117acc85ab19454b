//! Hostile peers against the receiver, measured with a counting global allocator.
//!
//! Every scenario runs one [`Receiver`] with small limits and checks after each call (events
//! and transmits drained) that:
//!
//! - the heap bytes in use, as the allocator counts them, stay within
//!   [`Receiver::memory_bound`] and within [`Receiver::memory_used`] plus [`SLACK`];
//! - the allocations made by one datagram (with its events drained) stay below a constant
//!   ([`MAX_ALLOCATIONS_PER_DATAGRAM`]; a new source adds its stream's few buffers);
//! - the good records sent in between all come out, each once, with their bytes;
//! - each bad datagram lands in the counter its kind belongs to ([`ReceiverStats`]).
//!
//! The allocator's counters are global to the process, so this binary runs without libtest
//! (`harness = false` in Cargo.toml): its `main` hands the tests to `testkit::run_tests`,
//! which runs them one after another on the main thread, the only thread in the process, so
//! no other code allocates between a test's readings.

mod common;

use std::alloc::System;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::time::Duration;

use ncrx_core::{Event, Receiver, ReceiverConfig, ReceiverStats, RestartReason, StreamStats};
use netconsole_proto::{DEFAULT_MAX_TOTAL, Datagram, Response};
use netpoll_frame::Instant;
use testkit::heap::{self, INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Heap bytes the receiver may hold beyond its own account ([`Receiver::memory_used`]):
/// allocator rounding of the few dozen buffers it holds and the B-tree nodes its maps count
/// approximately.
const SLACK: i64 = 64 * 1024;

/// Allocations one datagram may cost, its events drained: a held record, tree nodes, a
/// queue growing; at worst (measured: 16 or 17 as the receiver changes) a record released
/// from the out-of-order buffer and placed far ahead (a run, a lost event, the buffers they
/// grow). A constant bound with room, not a count: what must not happen is a cost that
/// grows with the number of holes, sources or datagrams.
const MAX_ALLOCATIONS_PER_DATAGRAM: u64 = 32;

/// Allocations creating a source may add (its ring, bitmap, key and slab entries).
const MAX_ALLOCATIONS_PER_NEW_SOURCE: u64 = 8;

/// Allocations per datagram over a whole scenario, on average (measured: at most 2.6, with a
/// new source for every other datagram).
const MAX_MEAN_ALLOCATIONS: u64 = 4;

/// The receiver's limits in these tests: small enough for the bound to mean something.
fn config() -> ReceiverConfig {
    let mut config = ReceiverConfig::default();
    config.stream.slots = 256;
    config.stream.retransmit_stride = 64;
    config.stream.max_held_bytes = 256 * 1024;
    config.max_sources = 64;
    config
}

fn addr(n: u32) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 + n), 6665))
}

/// `6,<seq>,<ts>,-;good <seq>\n`: a good record, its body naming its sequence number.
fn good(seq: u64, ts_usec: u64) -> Vec<u8> {
    format!("6,{seq},{ts_usec},-;good {seq}\n").into_bytes()
}

/// What came out of the receiver, kept in buffers reserved before the measurement starts.
#[derive(Debug, Default)]
struct Seen {
    /// (source index, seq, late) of every record whose body is `good <seq>\n`.
    good: Vec<(u32, u64, bool)>,
    /// Records whose body is not a good one.
    other_records: u64,
    /// Body bytes of those.
    other_bytes: u64,
    lost: u64,
    restarts: Vec<(u32, RestartReason)>,
    evicted: u64,
    plain: u64,
    incomplete: u64,
    transmits: u64,
}

/// A receiver under measurement.
struct Bench {
    rx: Receiver<SocketAddr>,
    now: Instant,
    baseline: i64,
    seen: Seen,
    peak_heap: i64,
    peak_used: usize,
    worst_excess: i64,
    max_allocations: u64,
    datagrams: u64,
    calls_allocations: u64,
    buf: [u8; 1000],
    /// Sources by address (`addr(n)` → n) for the records seen.
    name: fn(&SocketAddr) -> u32,
}

fn index_of(source: &SocketAddr) -> u32 {
    match source {
        SocketAddr::V4(v4) => u32::from(*v4.ip()) - 0x0a00_0000,
        SocketAddr::V6(_) => u32::MAX,
    }
}

impl Bench {
    fn new(config: ReceiverConfig, expected_good: usize) -> Self {
        let seen = Seen {
            good: Vec::with_capacity(expected_good + 16),
            restarts: Vec::with_capacity(4096),
            ..Seen::default()
        };
        let mut bench = Bench {
            rx: Receiver::new(config),
            now: Instant::from_millis(1),
            baseline: 0,
            seen,
            peak_heap: 0,
            peak_used: 0,
            worst_excess: i64::MIN,
            max_allocations: 0,
            datagrams: 0,
            calls_allocations: 0,
            buf: [0; 1000],
            name: index_of,
        };
        bench.baseline = heap::in_use(GLOBAL);
        bench
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// One datagram from `source` at the current time, events and transmits drained; returns
    /// the allocations it cost.
    fn datagram(&mut self, source: u32, bytes: &[u8]) -> u64 {
        let source = addr(source);
        let before = heap::allocations(GLOBAL);
        self.rx.handle_datagram(self.now, &source, bytes);
        self.drain();
        let cost = heap::allocations(GLOBAL) - before;
        self.datagrams += 1;
        self.calls_allocations += cost;
        self.check_memory();
        cost
    }

    fn timeout(&mut self) {
        self.rx.handle_timeout(self.now);
        self.drain();
        self.check_memory();
    }

    /// Runs every timer up to `now` (as a driver loop does).
    fn run_timers(&mut self) {
        while self.rx.poll_timeout().is_some_and(|t| t <= self.now) {
            self.timeout();
        }
    }

    fn drain(&mut self) {
        let name = self.name;
        let mut expected = [0u8; 40];
        while let Some((source, event)) = self.rx.poll_event() {
            let source = name(&source);
            match event {
                Event::Record(r) | Event::Late(r) => {
                    let late = matches!(event, Event::Late(_));
                    let mut cursor = &mut expected[..];
                    writeln!(cursor, "good {}", r.fields.seq).unwrap();
                    let left = cursor.len();
                    let body = &expected[..expected.len() - left];
                    if r.body == body {
                        assert!(
                            self.seen.good.len() < self.seen.good.capacity(),
                            "more good records than sent"
                        );
                        self.seen.good.push((source, r.fields.seq, late));
                    } else {
                        self.seen.other_records += 1;
                        self.seen.other_bytes += r.body.len() as u64;
                    }
                }
                Event::Lost { seqs } => {
                    self.seen.lost = self.seen.lost.saturating_add(seqs.end - seqs.start);
                }
                Event::Restart(r) => {
                    if self.seen.restarts.len() < self.seen.restarts.capacity() {
                        self.seen.restarts.push((source, r.reason));
                    }
                }
                Event::SourceEvicted => self.seen.evicted += 1,
                Event::Plain(_) => self.seen.plain += 1,
                Event::Incomplete(_) => self.seen.incomplete += 1,
                _ => panic!("an event this test does not know"),
            }
        }
        while let Some((_, n)) = self.rx.poll_transmit(&mut self.buf) {
            assert!(
                Response::parse(&self.buf[..n]).is_ok(),
                "a response that does not parse"
            );
            self.seen.transmits += 1;
        }
    }

    fn check_memory(&mut self) {
        let heap = heap::in_use(GLOBAL) - self.baseline;
        let used = self.rx.memory_used();
        let bound = self.rx.memory_bound();
        let used_i = i64::try_from(used).unwrap();
        assert!(
            heap <= i64::try_from(bound).unwrap() + SLACK,
            "heap {heap} over the bound {bound}"
        );
        assert!(
            heap <= used_i + SLACK,
            "heap {heap} over memory_used {used} + {SLACK}"
        );
        self.peak_heap = self.peak_heap.max(heap);
        self.peak_used = self.peak_used.max(used);
        self.worst_excess = self.worst_excess.max(heap - used_i);
    }

    fn stats(&self) -> ReceiverStats {
        self.rx.stats()
    }

    fn source_stats(&self, source: u32) -> StreamStats {
        self.rx.stream(&addr(source)).expect("tracked").stats()
    }

    /// The good records seen from `source`: (seq, late), in the order they came out.
    fn good_from(&self, source: u32) -> Vec<(u64, bool)> {
        self.seen
            .good
            .iter()
            .filter(|(s, _, _)| *s == source)
            .map(|&(_, seq, late)| (seq, late))
            .collect()
    }

    /// Prints the scenario's figures and checks the mean cost per datagram.
    fn report(&self, name: &str) {
        let hundredths = self.calls_allocations * 100 / self.datagrams.max(1);
        println!(
            "{name}: {} datagrams, peak heap {} B (memory_used peak {} B, bound {} B, heap - used at most {} B), {}.{:02} allocations per datagram, at most {} in one",
            self.datagrams,
            self.peak_heap,
            self.peak_used,
            self.rx.memory_bound(),
            self.worst_excess,
            hundredths / 100,
            hundredths % 100,
            self.max_allocations
        );
        assert!(
            self.calls_allocations <= MAX_MEAN_ALLOCATIONS * self.datagrams,
            "{hundredths} hundredths of an allocation per datagram"
        );
    }

    /// Checks a datagram's cost once its source exists.
    fn costs_at_most(&mut self, cost: u64, limit: u64) {
        assert!(
            cost <= limit,
            "one datagram cost {cost} allocations (at most {limit})"
        );
        self.max_allocations = self.max_allocations.max(cost);
    }
}

/// Records of `seq_range` as (seq, not late), the expected good output of one source.
fn in_order(seqs: Range<u64>) -> Vec<(u64, bool)> {
    seqs.map(|s| (s, false)).collect()
}

/// Good records 1000.. on one source, each followed by a record 2^63 further on: the far
/// records are out of order (16 of every 32 records, below the restart threshold of 19), the
/// buffer of 32 overflows and releases its oldest, which is placed 2^63 ahead.
fn sequence_jumps_by_2_63(bench: &mut Bench, n: u64) {
    let far = 1u64 << 63;
    for i in 0..n {
        let seq = 1000 + i;
        let cost = bench.datagram(1, &good(seq, seq * 1000));
        bench.costs_at_most(cost, MAX_ALLOCATIONS_PER_DATAGRAM);
        let hostile = format!("6,{},{},-;far {i}\n", seq + far, seq * 1000).into_bytes();
        let cost = bench.datagram(1, &hostile);
        bench.costs_at_most(cost, MAX_ALLOCATIONS_PER_DATAGRAM);
        bench.advance(Duration::from_millis(1));
        bench.run_timers();
    }
    bench.advance(Duration::from_secs(60));
    bench.run_timers();
}

fn jumps_by_2_63_are_bounded_and_counted() {
    const N: u64 = 2000;
    let mut bench = Bench::new(config(), N as usize);
    sequence_jumps_by_2_63(&mut bench, N);
    bench.report("seq + 2^63, alternating with good records");
    let stats = bench.stats().streams;
    // Every far record was counted out of order, and dropped (counted) or followed once the
    // good records stopped; every good record came out in order (what comes out exactly:
    // `good_records_survive_a_peer_jumping_2_63_ahead`).
    assert_eq!(stats.out_of_order, N);
    assert_eq!(bench.good_from(1), in_order(1000..1000 + N));
    assert_eq!(
        stats.out_of_order_dropped + bench.seen.other_records,
        N,
        "every far record dropped or delivered"
    );
    assert_eq!(stats.datagrams, 2 * N);
}

/// A sender whose sequence number wraps at `u64::MAX` (ts_usec goes on rising): the record
/// at `u64::MAX` is refused (no record can follow it) and counted malformed; the records
/// after the wrap come out after one restart.
fn sequence_wraps_at_u64_max() {
    let mut bench = Bench::new(config(), 1000);
    let before = 300u64;
    let after = 300u64;
    let mut ts = 1_000_000u64;
    for seq in u64::MAX - before..u64::MAX {
        let cost = bench.datagram(1, &good(seq, ts));
        bench.costs_at_most(cost, MAX_ALLOCATIONS_PER_DATAGRAM);
        ts += 1000;
        bench.advance(Duration::from_millis(1));
        bench.run_timers();
    }
    bench.datagram(1, &good(u64::MAX, ts));
    for seq in 0..after {
        ts += 1000;
        let cost = bench.datagram(1, &good(seq, ts));
        bench.costs_at_most(cost, MAX_ALLOCATIONS_PER_DATAGRAM);
        bench.advance(Duration::from_millis(1));
        bench.run_timers();
    }
    bench.advance(Duration::from_secs(60));
    bench.run_timers();
    bench.report("seq wrapping at u64::MAX");
    let stats = bench.stats().streams;
    // The records after the wrap are out of order until 19 of the last 32 are: then the
    // stream restarts from the lowest buffered one, and everything comes out in order.
    let mut expected = in_order(u64::MAX - before..u64::MAX);
    expected.extend(in_order(0..after));
    assert_eq!(bench.good_from(1), expected);
    assert_eq!(stats.malformed, 1, "the record at u64::MAX");
    assert_eq!(bench.seen.restarts, [(1, RestartReason::OutOfOrder)]);
    assert_eq!(
        (stats.out_of_order, stats.restarts, bench.seen.lost),
        (19, 1, 0)
    );
}

/// One source alternating between two far-apart sequences (two kernels behind one address
/// and port): `5000 + i` and `2^62 + i`, each with its own clock.
fn alternating_far_apart() {
    const N: u64 = 2000;
    let mut bench = Bench::new(config(), 2 * N as usize);
    let b = 1u64 << 62;
    for i in 0..N {
        let cost = bench.datagram(1, &good(5000 + i, 1_000_000 + i * 1000));
        bench.costs_at_most(cost, MAX_ALLOCATIONS_PER_DATAGRAM);
        let cost = bench.datagram(1, &good(b + i, 9_000_000_000 + i * 1000));
        bench.costs_at_most(cost, MAX_ALLOCATIONS_PER_DATAGRAM);
        bench.advance(Duration::from_millis(1));
        bench.run_timers();
    }
    bench.advance(Duration::from_secs(60));
    bench.run_timers();
    bench.report("alternating 5000+i / 2^62+i");
    let stats = bench.stats().streams;
    // The receiver follows one stream per source: the one it started with, which keeps
    // going. Every far-ahead record is out of order; when the buffer overflows, its oldest
    // is dropped and counted (the far records never outnumber the stream in the threshold's
    // ratio, 19 of 32), never followed, so no record of the first stream is lost. At the
    // end the first stream is silent: the last three buffered far records, three against
    // the two good ones that came after the first of them (96 >= 19 * 5), are followed
    // (the numbers between given up on) and come out in order.
    let good = bench.good_from(1);
    let low: Vec<(u64, bool)> = good.iter().copied().filter(|(s, _)| *s < b).collect();
    let high: Vec<(u64, bool)> = good.iter().copied().filter(|(s, _)| *s >= b).collect();
    assert_eq!(low, in_order(5000..5000 + N));
    assert_eq!(high, in_order(b + N - 3..b + N));
    assert_eq!(stats.out_of_order, N);
    assert_eq!(stats.out_of_order_dropped, N - 3);
    assert_eq!(stats.delivered, N + 3);
    assert_eq!((stats.restarts, stats.forgotten, stats.late), (0, 0, 0));
    assert_eq!(bench.seen.lost, b + N - 3 - (5000 + N));
}

/// `ncfrag` totals at the limit ([`DEFAULT_MAX_TOTAL`]: delivered whole), one above it and
/// absurdly large (every fragment refused and counted malformed, the number given up on as
/// lost), between good records on the same source.
fn ncfrag_totals_at_and_over_the_limit() {
    let fragments = |seq: u64, total: usize, announced: &str| -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < total {
            let header = format!("6,{seq},{},-,ncfrag={offset}/{announced};", seq * 1000);
            let len = (1000 - header.len()).min(total - offset);
            let mut datagram = header.into_bytes();
            datagram.extend(std::iter::repeat_n(b'x', len));
            out.push(datagram);
            offset += len;
        }
        // Last fragment first, as a reordering network might deliver them.
        out.reverse();
        out
    };
    // (good record, the fragments of the next number, whether they make a record); made
    // before the measurement starts.
    let limit = DEFAULT_MAX_TOTAL;
    let rounds = [
        (limit, limit.to_string(), true),
        (limit + 1, (limit + 1).to_string(), false),
        (4000, u64::MAX.to_string(), false),
        (4000, "99999999999999999999999".to_string(), false),
    ];
    let inputs: Vec<(Vec<u8>, Vec<Vec<u8>>, bool)> = rounds
        .iter()
        .enumerate()
        .map(|(i, (total, announced, ok))| {
            let seq = 2 * i as u64 + 1;
            (
                good(seq, seq * 1000),
                fragments(seq + 1, *total, announced),
                *ok,
            )
        })
        .collect();
    let last = good(2 * rounds.len() as u64 + 1, 100_000);
    // Room for a record at the limit (a partial record costs twice its total).
    let mut config = config();
    config.stream.max_held_bytes = 4 * DEFAULT_MAX_TOTAL;
    let mut bench = Bench::new(config, 64);
    let mut refused_fragments = 0u64;
    let mut refused_records = 0u64;
    for (good_record, fragments, ok) in &inputs {
        let cost = bench.datagram(1, good_record);
        bench.costs_at_most(cost, MAX_ALLOCATIONS_PER_DATAGRAM);
        for datagram in fragments {
            let cost = bench.datagram(1, datagram);
            bench.costs_at_most(cost, MAX_ALLOCATIONS_PER_DATAGRAM);
        }
        if !ok {
            refused_fragments += fragments.len() as u64;
            refused_records += 1;
        }
        bench.advance(Duration::from_millis(10));
        bench.run_timers();
    }
    let cost = bench.datagram(1, &last);
    bench.costs_at_most(cost, MAX_ALLOCATIONS_PER_DATAGRAM);
    bench.advance(Duration::from_secs(60));
    bench.run_timers();
    bench.report("ncfrag totals at and over the limit");
    let stats = bench.stats().streams;
    // The record at the limit came out whole; every refused fragment was counted (as
    // malformed, or over budget where the announced total exceeds the byte budget); each
    // refused record's number was given up on.
    assert_eq!(bench.seen.other_records, 1);
    assert_eq!(bench.seen.other_bytes, limit as u64);
    assert_eq!(stats.malformed + stats.over_budget, refused_fragments);
    let expected: Vec<(u64, bool)> = (0..=rounds.len() as u64)
        .map(|i| (2 * i + 1, false))
        .collect();
    assert_eq!(bench.good_from(1), expected);
    // And 0, before the first record (the head of a fresh boot).
    assert_eq!(bench.seen.lost, refused_records + 1);
}

/// Plain datagrams of 0 bytes and 64 KiB of garbage, a 64 KiB extended record and a 64 KiB
/// datagram with a malformed extended header, between good records.
fn empty_and_64_kib_datagrams() {
    let big = 65_507;
    let mut garbage = vec![0xffu8; big];
    garbage[0] = b'<';
    let mut record = b"6,4,4000,-;".to_vec();
    record.resize(big - 1, b'y');
    record.push(b'\n');
    let mut malformed = b"6,18446744073709551616,6000,-;".to_vec();
    malformed.resize(big, b'z');
    let hostile: [&[u8]; 4] = [b"", &garbage, &record, &malformed];
    let goods: Vec<Vec<u8>> = [1, 2, 3, 5].iter().map(|&s| good(s, s * 1000)).collect();
    let mut bench = Bench::new(config(), 64);
    let mut seq = 1;
    let mut expected = Vec::new();
    for (datagram, good_record) in hostile.into_iter().zip(&goods) {
        if seq == 4 {
            seq += 1;
        }
        let cost = bench.datagram(1, good_record);
        bench.costs_at_most(cost, MAX_ALLOCATIONS_PER_DATAGRAM);
        expected.push((seq, false));
        seq += 1;
        let cost = bench.datagram(1, datagram);
        bench.costs_at_most(cost, MAX_ALLOCATIONS_PER_DATAGRAM);
    }
    bench.advance(Duration::from_secs(60));
    bench.run_timers();
    bench.report("0-byte and 64 KiB datagrams");
    let stats = bench.stats().streams;
    assert_eq!(bench.good_from(1), expected);
    // The empty and the garbage datagram are plain text, passed on and counted; the 64 KiB
    // record is delivered; the malformed header is counted.
    assert_eq!((stats.plain, bench.seen.plain), (2, 2));
    assert_eq!(bench.seen.other_records, 1);
    assert_eq!(bench.seen.other_bytes, record.len() as u64 - 11);
    assert_eq!(stats.malformed, 1);
}

/// Every byte value at every position of the header of a valid record, sent from a hostile
/// source beside a good one: each mutated datagram is counted as what the parser makes of
/// it, and the good source's records all come out in order.
fn every_byte_in_every_header_field() {
    let template = good(100, 100_000);
    let header_len = template.iter().position(|&b| b == b';').unwrap() + 1;
    let mut bench = Bench::new(config(), 1024);
    let (mut extended, mut plain, mut malformed, mut responses) = (0u64, 0u64, 0u64, 0u64);
    let mut good_seq = 1u64;
    let mut mutated = template.clone();
    for position in 0..header_len {
        for value in 0..=255u8 {
            mutated.copy_from_slice(&template);
            mutated[position] = value;
            match Datagram::parse(&mutated) {
                Ok(Datagram::Extended(r)) if r.header.fields.seq == u64::MAX => malformed += 1,
                Ok(Datagram::Extended(_)) => extended += 1,
                Ok(Datagram::Plain(_)) => plain += 1,
                Ok(Datagram::Response(_)) => responses += 1,
                Ok(_) | Err(_) => malformed += 1,
            }
            let cost = bench.datagram(2, &mutated);
            bench.costs_at_most(cost, MAX_ALLOCATIONS_PER_DATAGRAM);
            if value % 16 == 0 {
                let cost = bench.datagram(1, &good(good_seq, good_seq * 1000));
                bench.costs_at_most(cost, MAX_ALLOCATIONS_PER_DATAGRAM);
                good_seq += 1;
            }
            bench.advance(Duration::from_millis(1));
            bench.run_timers();
        }
    }
    bench.advance(Duration::from_secs(60));
    bench.run_timers();
    bench.report("every byte value in every header position");
    let hostile = bench.source_stats(2);
    assert_eq!(bench.good_from(1), in_order(1..good_seq));
    assert_eq!(hostile.datagrams, extended);
    assert_eq!(hostile.plain, plain);
    assert_eq!(hostile.malformed, malformed);
    assert_eq!(hostile.responses_ignored, responses);
    assert_eq!(
        extended + plain + malformed + responses,
        256 * header_len as u64
    );
}

/// A million distinct source addresses, one record each, beside one good source that sends
/// every 16 datagrams. First half: 1 µs apart, so the table (64 sources) stays full of
/// sources too recent to evict and newcomers are refused; second half: 200 ms apart, so
/// each newcomer evicts the least recently active source (quiet for 12.8 s, over
/// `evict_when_full_after`).
fn a_million_sources(count: u32) {
    let mut bench = Bench::new(config(), count as usize + count as usize / 16 + 16);
    let mut good_seq = 1;
    for i in 0..count {
        let slow = i >= count / 2;
        let cost = bench.datagram(1 + (i + 1), &good(1, 1000));
        // A new source's stream: ring, bitmap, slab and key entries.
        bench.costs_at_most(
            cost,
            MAX_ALLOCATIONS_PER_DATAGRAM + MAX_ALLOCATIONS_PER_NEW_SOURCE,
        );
        if i % 16 == 0 {
            let cost = bench.datagram(1, &good(good_seq, good_seq * 1000));
            bench.costs_at_most(cost, MAX_ALLOCATIONS_PER_DATAGRAM);
            good_seq += 1;
        }
        bench.advance(if slow {
            Duration::from_millis(200)
        } else {
            Duration::from_micros(1)
        });
        bench.run_timers();
        assert!(bench.rx.sources() <= 64);
    }
    bench.advance(Duration::from_secs(3600));
    bench.run_timers();
    bench.report("a million sources");
    let stats = bench.stats();
    assert_eq!(bench.good_from(1), in_order(1..good_seq));
    // Every source is accounted for: created (its record delivered) or refused; every
    // eviction came out as an event; the table never held more than its 64.
    let newcomers = u64::from(count);
    assert_eq!(stats.sources_created + stats.refused, newcomers + 1);
    assert_eq!(bench.seen.evicted, stats.sources_evicted);
    assert_eq!(
        stats.sources_created - stats.sources_evicted,
        bench.rx.sources() as u64
    );
    let others = bench.seen.good.iter().filter(|(s, _, _)| *s != 1).count() as u64;
    assert_eq!(others, stats.sources_created - 1);
    assert!(stats.refused > 0 && stats.sources_evicted > 0);
}

/// Sources in [`a_million_sources`]: `HOSTILE_SOURCES`, a million by default.
fn source_count() -> u32 {
    std::env::var("HOSTILE_SOURCES").map_or(1_000_000, |v| v.parse().expect("a number"))
}

/// One record 2^63 ahead among good records that go on for a minute, one every 10 ms. The
/// far record waits out of order for 30 s; the stream went on meanwhile (3,000 records
/// against one), so it is dropped and counted rather than followed: every good record comes
/// out, in order, once, without a restart.
fn one_far_record_among_a_minute_of_good_ones() {
    const N: u64 = 6000;
    let far = format!("6,{},{},-;far\n", 1010 + (1u64 << 63), 1_010_000).into_bytes();
    let mut bench = Bench::new(config(), N as usize);
    for i in 0..N {
        let seq = 1000 + i;
        let cost = bench.datagram(1, &good(seq, seq * 1000));
        bench.costs_at_most(cost, MAX_ALLOCATIONS_PER_DATAGRAM);
        if i == 10 {
            let cost = bench.datagram(1, &far);
            bench.costs_at_most(cost, MAX_ALLOCATIONS_PER_DATAGRAM);
        }
        bench.advance(Duration::from_millis(10));
        bench.run_timers();
    }
    bench.advance(Duration::from_secs(60));
    bench.run_timers();
    bench.report("one record 2^63 ahead among 6,000 good ones");
    assert_eq!(bench.good_from(1), in_order(1000..1000 + N));
    assert_eq!(bench.seen.restarts, []);
    let stats = bench.stats().streams;
    assert_eq!((stats.out_of_order, stats.out_of_order_dropped), (1, 1));
    assert_eq!(bench.seen.other_records, 0, "the far record, dropped");
    assert_eq!((bench.seen.lost, stats.forgotten), (0, 0));
}

fn main() {
    testkit::run_tests(&[
        (
            "hostile_peers_stay_within_bounds",
            hostile_peers_stay_within_bounds,
        ),
        (
            "good_records_survive_a_peer_jumping_2_63_ahead",
            good_records_survive_a_peer_jumping_2_63_ahead,
        ),
        (
            "a_sender_jumping_far_ahead_is_followed",
            a_sender_jumping_far_ahead_is_followed,
        ),
        (
            "one_record_after_a_jump_is_followed_at_its_timeout",
            one_record_after_a_jump_is_followed_at_its_timeout,
        ),
        (
            "a_random_hostile_mix_stays_within_the_bound",
            a_random_hostile_mix_stays_within_the_bound,
        ),
    ]);
}

fn hostile_peers_stay_within_bounds() {
    jumps_by_2_63_are_bounded_and_counted();
    sequence_wraps_at_u64_max();
    alternating_far_apart();
    one_far_record_among_a_minute_of_good_ones();
    ncfrag_totals_at_and_over_the_limit();
    empty_and_64_kib_datagrams();
    every_byte_in_every_header_field();
    a_million_sources(source_count());
}

/// Good records alternating with records 2^63 ahead on one source (one far record after each
/// good one, `ts_usec` alike): every good record comes out, in order. The far records never
/// outnumber the stream in the out-of-order threshold's ratio (19 of 32) while it goes on,
/// so when the buffer (32 records) overflows its oldest is dropped and counted, not
/// followed 2^63 ahead (which would leave every later good record behind the tail). Once
/// the good records stop, the last three far records (three against two: 96 >= 19 * 5) are
/// followed at their timeout and come out, the numbers between given up on.
fn good_records_survive_a_peer_jumping_2_63_ahead() {
    const N: u64 = 2000;
    let mut bench = Bench::new(config(), N as usize);
    sequence_jumps_by_2_63(&mut bench, N);
    assert_eq!(bench.good_from(1), in_order(1000..1000 + N));
    let stats = bench.stats().streams;
    assert_eq!(stats.datagrams, 2 * N);
    assert_eq!((stats.out_of_order, stats.out_of_order_dropped), (N, N - 3));
    assert_eq!((stats.delivered, stats.late), (N + 3, 0));
    assert_eq!(bench.seen.other_records, 3, "the last three far records");
    assert_eq!(bench.seen.lost, (1u64 << 63) - 3);
    assert_eq!((stats.forgotten, stats.restarts), (0, 0));
    assert_eq!(bench.seen.restarts, []);
}

/// A sender whose sequence number jumps far ahead and stays there, `ts_usec` going on
/// rising (no restart sign in the packets): the stream it left is silent, so the far records
/// are 19 of the last 32 after 19 of them, and the stream restarts from the lowest: every
/// record comes out in order, none dropped.
fn a_sender_jumping_far_ahead_is_followed() {
    const BEFORE: u64 = 100;
    const AFTER: u64 = 100;
    let jump = 1000 + (1u64 << 40);
    let mut bench = Bench::new(config(), (BEFORE + AFTER) as usize);
    let mut ts = 5_000_000;
    for seq in (1000..1000 + BEFORE).chain(jump..jump + AFTER) {
        bench.datagram(1, &good(seq, ts));
        ts += 1000;
        bench.advance(Duration::from_millis(1));
        bench.run_timers();
    }
    bench.advance(Duration::from_secs(60));
    bench.run_timers();
    let mut expected = in_order(1000..1000 + BEFORE);
    expected.extend(in_order(jump..jump + AFTER));
    assert_eq!(bench.good_from(1), expected);
    assert_eq!(bench.seen.restarts, [(1, RestartReason::OutOfOrder)]);
    let stats = bench.stats().streams;
    assert_eq!((stats.out_of_order, stats.out_of_order_dropped), (19, 0));
    assert_eq!((bench.seen.lost, stats.forgotten, stats.late), (0, 0, 0));
}

/// The same sender sending one record after the jump and then nothing: the stream it left
/// stays silent, so the far record is followed when its out-of-order timeout passes (the
/// numbers between given up on) and comes out; the sender's next records follow in order.
fn one_record_after_a_jump_is_followed_at_its_timeout() {
    let jump = 1000 + (1u64 << 40);
    let mut bench = Bench::new(config(), 200);
    let mut ts = 5_000_000;
    for seq in 1000..1100 {
        bench.datagram(1, &good(seq, ts));
        ts += 1000;
        bench.advance(Duration::from_millis(1));
        bench.run_timers();
    }
    bench.datagram(1, &good(jump, ts));
    bench.advance(Duration::from_secs(31));
    bench.run_timers();
    for seq in jump + 1..jump + 10 {
        ts += 1000;
        bench.datagram(1, &good(seq, ts));
        bench.advance(Duration::from_millis(1));
        bench.run_timers();
    }
    bench.advance(Duration::from_secs(60));
    bench.run_timers();
    let mut expected = in_order(1000..1100);
    expected.extend(in_order(jump..jump + 10));
    assert_eq!(bench.good_from(1), expected);
    let stats = bench.stats().streams;
    assert_eq!((stats.out_of_order, stats.out_of_order_dropped), (1, 0));
    assert_eq!(bench.seen.lost, jump - 1100);
    assert_eq!((stats.restarts, stats.forgotten, stats.late), (0, 0, 0));
}

/// One step of [`a_random_hostile_mix_stays_within_the_bound`], after its wait.
enum Step {
    Timeout,
    Datagram(u32, Vec<u8>),
}

/// Twenty sources sending [`common::hostile_datagram`]s (records numbered anywhere, stamped
/// anyhow, changing releases, `ncemg`, fragments of up to 60,000 bytes, garbage) into a table
/// of eight, time moving by up to 20 ms a step, a timer call one step in ten; twelve seeds of
/// 3,000 steps; the odd seeds with a budget over all sources of 128 KiB, below what the
/// eight could hold (512 KiB), so that the heap is measured against the bound that budget
/// gives. Besides what every call checks (the heap within the bound, responses that parse):
/// no stream holds more than its budget, nor all together more than theirs, the table never
/// holds more than eight, and after each timer call the next deadline is later than now.
fn a_random_hostile_mix_stays_within_the_bound() {
    const SOURCES: u32 = 20;
    let mut config = ReceiverConfig::libncrx();
    config.stream.slots = 256;
    config.stream.retransmit_stride = 16;
    config.stream.max_held_bytes = 64 * 1024;
    config.stream.ack_interval = Some(Duration::from_millis(50));
    config.max_sources = 8;
    config.evict_when_full_after = Duration::from_millis(100);
    config.idle_timeout = Duration::from_secs(2);
    let (mut delivered, mut evicted, mut peak_held, mut shed) = (0, 0, 0, 0);
    for seed in 0..12 {
        let mut config = config.clone();
        if seed % 2 == 1 {
            config.max_held_bytes_total = 128 * 1024;
        }
        // The steps, made before the measurement starts: a wait, then a timer call or a
        // datagram from a source.
        let mut rng = testkit::SplitMix64::new(seed);
        let steps: Vec<(Duration, Step)> = (0..3000)
            .map(|_| {
                let wait = Duration::from_micros(rng.below(20_000));
                if rng.below(10) == 0 {
                    (wait, Step::Timeout)
                } else {
                    let source = rng.below(u64::from(SOURCES)) as u32;
                    (
                        wait,
                        Step::Datagram(source, common::hostile_datagram(&mut rng)),
                    )
                }
            })
            .collect();
        let mut bench = Bench::new(config.clone(), 0);
        let total = config.max_held_bytes_total;
        for (wait, step) in &steps {
            bench.advance(*wait);
            match step {
                Step::Timeout => {
                    bench.timeout();
                    if let Some(deadline) = bench.rx.poll_timeout() {
                        assert!(
                            deadline > bench.now,
                            "seed {seed}: deadline {deadline:?} not after {:?}",
                            bench.now
                        );
                    }
                }
                Step::Datagram(source, datagram) => {
                    bench.datagram(*source, datagram);
                }
            }
            assert!(bench.rx.sources() <= 8, "seed {seed}");
            for source in 0..SOURCES {
                if let Some(stream) = bench.rx.stream(&addr(source)) {
                    assert!(stream.held_bytes() <= 64 * 1024, "seed {seed}");
                }
            }
            let held = bench.rx.held_bytes();
            assert!(held <= total, "seed {seed}: {held} held");
            peak_held = peak_held.max(held);
        }
        let stats = bench.stats();
        assert!(
            stats.streams.delivered > 0,
            "seed {seed}: nothing delivered"
        );
        delivered += stats.streams.delivered;
        evicted += stats.sources_evicted;
        shed += stats.streams.shed;
        if seed == 0 {
            // Not `report`: its mean allocations per datagram are for one source's traffic,
            // where this mix creates a source every few datagrams and holds fragments.
            println!(
                "a random hostile mix, seed 0: peak heap {} B (memory_used peak {} B, bound {} B, heap - used at most {} B)",
                bench.peak_heap,
                bench.peak_used,
                bench.rx.memory_bound(),
                bench.worst_excess
            );
        }
    }
    // The mix reached what it is meant to test: sources evicted from the full table, records
    // held behind holes while the heap was measured, and the budget over all sources shedding.
    println!(
        "{delivered} records delivered, {evicted} sources evicted, {peak_held} bytes held at most, {shed} times shed"
    );
    assert!(evicted > 0 && peak_held > 0 && shed > 0);
}
