//! ncrx-core: the receiver on a trace of 1,000,000 records of about 100 bytes, one source,
//! time advancing 1 µs per record, libncrx's default parameters: no loss; 10% loss (requests
//! sent but never answered, so holes leave as loss events when the window overflows); 50%
//! loss with retransmission on (every request answered after 100 µs, each re-sent record
//! lost again with probability 1/2; retransmit interval 1 ms). Each iteration builds a
//! receiver, feeds the whole trace, drains every event and response, goes on answering (with
//! retransmission) until every hole is filled or given up on, and lets the rest time out.
//!
//! `cargo bench -p benches --bench receiver`
//!
//! `NCRX_BENCH_ONCE=<case>` runs one case once and prints its counts instead (for
//! `valgrind --tool=callgrind --toggle-collect='receiver::run'`: instructions per record).

use std::collections::VecDeque;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;
use testkit::SplitMix64 as Rng;

use criterion::{Criterion, Throughput, criterion_group};
use ncrx_core::{Event, Receiver, ReceiverConfig};
use netconsole_proto::Response;
use netpoll_frame::Instant;

const RECORDS: u64 = 1_000_000;

/// The datagrams of the trace, one flat buffer and the end of each.
struct Trace {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Trace {
    fn new() -> Self {
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for seq in 0..RECORDS {
            let ts = 5_000_000 + seq * 37;
            let line = format!(
                "6,{seq},{ts},-;e1000e 0000:00:19.0 eth0: NIC Link is Up 1000 Mbps Full Duplex, Flow: Rx {:06}\n",
                seq % 1_000_000
            );
            bytes.extend_from_slice(line.as_bytes());
            ends.push(bytes.len());
        }
        Trace { bytes, ends }
    }

    fn get(&self, seq: u64) -> &[u8] {
        let i = seq as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

#[derive(Default, Debug)]
struct Counts {
    records: u64,
    late: u64,
    lost: u64,
}

fn drain(rx: &mut Receiver, counts: &mut Counts) {
    rx.drain_events(|_, event| count(counts, event));
}

/// Takes one datagram and counts the events it brings.
fn feed(
    rx: &mut Receiver,
    counts: &mut Counts,
    now: Instant,
    source: &SocketAddr,
    datagram: &[u8],
) {
    rx.handle_datagram_and_drain(now, source, datagram, |_, event| count(counts, event));
}

fn count(counts: &mut Counts, event: Event<'_>) {
    match event {
        Event::Record(r) => {
            counts.records += 1;
            black_box(r.body);
        }
        Event::Late(r) => {
            counts.late += 1;
            black_box(r.body);
        }
        Event::Lost { seqs } => counts.lost += seqs.end - seqs.start,
        _ => {}
    }
}

/// Feeds the trace, dropping `loss` percent; with `retransmit`, answers every request after
/// `answer_delay`, losing each answer with the same probability.
#[inline(never)]
fn run(trace: &Trace, loss: u64, retransmit: bool) -> Counts {
    let source: SocketAddr = "192.0.2.1:6665".parse().unwrap();
    let mut config = ReceiverConfig::default();
    if retransmit {
        // At a million records a second the 8192-slot window spans 8 ms: ask again every
        // millisecond, not every second, or the window overflows before the second request.
        config.stream.retransmit_interval = Duration::from_millis(1);
    }
    let mut rx: Receiver = Receiver::new(config.clone());
    let mut rng = Rng::new(loss);
    let mut counts = Counts::default();
    let mut answers: VecDeque<(Instant, u64)> = VecDeque::new();
    let answer_delay = Duration::from_micros(100);
    let mut buf = [0u8; 1000];
    let start = Instant::from_millis(1);
    let mut now = start;
    for seq in 0..RECORDS {
        now = start + Duration::from_micros(seq);
        while let Some(&(at, again)) = answers.front() {
            if at > now {
                break;
            }
            answers.pop_front();
            feed(&mut rx, &mut counts, at, &source, trace.get(again));
        }
        if rx.poll_timeout().is_some_and(|t| t <= now) {
            rx.handle_timeout(now);
            drain(&mut rx, &mut counts);
        }
        // The first and last records always arrive, so that the receiver knows of every one.
        // Without loss there is no die to roll.
        let dropped = loss > 0 && rng.percent(loss);
        if !dropped || seq == 0 || seq == RECORDS - 1 {
            feed(&mut rx, &mut counts, now, &source, trace.get(seq));
        }
        while let Some((_, n)) = rx.poll_transmit(&mut buf) {
            if let (true, Ok(response)) = (retransmit, Response::parse(&buf[..n])) {
                for missing in response.missing() {
                    if !rng.percent(loss) {
                        answers.push_back((now + answer_delay, missing));
                    }
                }
            }
        }
    }
    // The sender stays up after its last record: answers keep coming (each lost with the
    // same probability) and the receiver keeps asking, until every hole is filled or its
    // record given up on. Then what is left times out.
    let interval = config.stream.retransmit_interval;
    loop {
        let timer = rx.poll_timeout();
        let next = match (answers.front(), timer) {
            (Some(&(at, _)), Some(t)) => at.min(t),
            (Some(&(at, _)), None) => at,
            // Nothing asked for: no hole is open (an open hole is asked for again within
            // the interval).
            (None, Some(t)) if retransmit && t <= now + interval => t,
            _ => break,
        };
        now = now.max(next);
        while let Some(&(at, again)) = answers.front() {
            if at > now {
                break;
            }
            answers.pop_front();
            feed(&mut rx, &mut counts, at, &source, trace.get(again));
        }
        if rx.poll_timeout().is_some_and(|t| t <= now) {
            rx.handle_timeout(now);
            drain(&mut rx, &mut counts);
        }
        while let Some((_, n)) = rx.poll_transmit(&mut buf) {
            if let (true, Ok(response)) = (retransmit, Response::parse(&buf[..n])) {
                for missing in response.missing() {
                    if !rng.percent(loss) {
                        answers.push_back((now + answer_delay, missing));
                    }
                }
            }
        }
    }
    now += Duration::from_mins(1);
    while let Some(deadline) = rx.poll_timeout().filter(|t| *t <= now) {
        rx.handle_timeout(deadline);
        drain(&mut rx, &mut counts);
    }
    counts
}

const CASES: [(&str, u64, bool); 3] = [
    ("no_loss", 0, false),
    ("loss_10pct", 10, false),
    ("loss_50pct_retransmit", 50, true),
];

fn receiver(c: &mut Criterion) {
    let trace = Trace::new();
    let average = trace.bytes.len() as u64 / RECORDS;
    assert!((90..=110).contains(&average), "{average} bytes a record");
    let mut group = c.benchmark_group("ncrx_receiver/1M_records_100B");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(RECORDS));
    for (name, loss, retransmit) in CASES {
        let counts = run(&trace, loss, retransmit);
        // Every record is delivered, or reported lost (a late one was reported lost first).
        assert_eq!(counts.records + counts.lost, RECORDS, "{name}: {counts:?}");
        assert!(counts.late <= counts.lost, "{name}: {counts:?}");
        if loss == 0 {
            assert_eq!(counts.records, RECORDS);
        }
        println!("{name}: {counts:?}");
        group.bench_function(name, |b| b.iter(|| run(&trace, loss, retransmit)));
    }
    group.finish();
}

criterion_group!(benches, receiver);

fn main() {
    if let Some(case) = std::env::var_os("NCRX_BENCH_ONCE") {
        let trace = Trace::new();
        for (name, loss, retransmit) in CASES {
            if case.to_str() == Some(name) {
                println!("{name}: {:?}", run(&trace, loss, retransmit));
            }
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
