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
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use testkit::SplitMix64 as Rng;

use criterion::{Criterion, Throughput, criterion_group};
use ncrx_core::{Event, Receiver, ReceiverConfig};
use netconsole_proto::Response;
use netpoll_frame::{Instant, NETCONSOLE_SOURCE_PORT};

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

/// The receiver and the simulated network around it: the answers on their way, the dice.
struct Net<'t> {
    trace: &'t Trace,
    rx: Receiver,
    counts: Counts,
    source: SocketAddr,
    loss: u64,
    retransmit: bool,
    rng: Rng,
    /// Re-sent records on their way: when each arrives, and its number.
    answers: VecDeque<(Instant, u64)>,
    buf: [u8; 1000],
}

#[allow(
    clippy::inline_always,
    reason = "the bench's own steps, inlined into its loop as when they were written there (callgrind: 16 instructions a record more otherwise)"
)]
impl Net<'_> {
    /// Delivers the answers due by `now`, then the receiver's timers if due.
    #[inline(always)]
    fn arrive(&mut self, now: Instant) {
        while let Some(&(at, again)) = self.answers.front() {
            if at > now {
                break;
            }
            self.answers.pop_front();
            let datagram = self.trace.get(again);
            feed(&mut self.rx, &mut self.counts, at, &self.source, datagram);
        }
        if self.rx.poll_timeout().is_some_and(|t| t <= now) {
            self.rx.handle_timeout(now);
            drain(&mut self.rx, &mut self.counts);
        }
    }

    /// Takes the receiver's responses; with retransmission, each number asked for is re-sent
    /// to arrive `ANSWER_DELAY` later unless the die says it is lost.
    #[inline(always)]
    fn respond(&mut self, now: Instant) {
        while let Some((_, n)) = self.rx.poll_transmit(&mut self.buf) {
            if let (true, Ok(response)) = (self.retransmit, Response::parse(&self.buf[..n])) {
                for missing in response.missing() {
                    if !self.rng.percent(self.loss) {
                        self.answers.push_back((now + ANSWER_DELAY, missing));
                    }
                }
            }
        }
    }
}

/// How long a re-sent record takes to arrive after it is asked for.
const ANSWER_DELAY: Duration = Duration::from_micros(100);

/// Feeds the trace, dropping `loss` percent; with `retransmit`, answers every request after
/// [`ANSWER_DELAY`], losing each answer with the same probability.
#[inline(never)]
fn run(trace: &Trace, loss: u64, retransmit: bool) -> Counts {
    // libncrx's values: the simulated sender answers from the first request, as it did
    // before the default learned to tell senders that do not.
    let mut config = ReceiverConfig::libncrx();
    if retransmit {
        // At a million records a second the 8192-slot window spans 8 ms: ask again every
        // millisecond, not every second, or the window overflows before the second request.
        config.stream.retransmit_interval = Duration::from_millis(1);
    }
    let interval = config.stream.retransmit_interval;
    let mut net = Net {
        trace,
        rx: Receiver::new(config),
        counts: Counts::default(),
        source: SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), NETCONSOLE_SOURCE_PORT)),
        loss,
        retransmit,
        rng: Rng::new(loss),
        answers: VecDeque::new(),
        buf: [0; 1000],
    };
    let start = Instant::from_millis(1);
    let mut now = start;
    for seq in 0..RECORDS {
        now = start + Duration::from_micros(seq);
        net.arrive(now);
        // The first and last records always arrive, so that the receiver knows of every one.
        // Without loss there is no die to roll.
        let dropped = loss > 0 && net.rng.percent(loss);
        if !dropped || seq == 0 || seq == RECORDS - 1 {
            feed(
                &mut net.rx,
                &mut net.counts,
                now,
                &net.source,
                trace.get(seq),
            );
        }
        net.respond(now);
    }
    // The sender stays up after its last record: answers keep coming (each lost with the
    // same probability) and the receiver keeps asking, until every hole is filled or its
    // record given up on. Then what is left times out.
    loop {
        let next = match (net.answers.front(), net.rx.poll_timeout()) {
            (Some(&(at, _)), Some(t)) => at.min(t),
            (Some(&(at, _)), None) => at,
            // Nothing asked for: no hole is open (an open hole is asked for again within
            // the interval).
            (None, Some(t)) if retransmit && t <= now + interval => t,
            _ => break,
        };
        now = now.max(next);
        net.arrive(now);
        net.respond(now);
    }
    now += Duration::from_mins(1);
    while let Some(deadline) = net.rx.poll_timeout().filter(|t| *t <= now) {
        net.rx.handle_timeout(deadline);
        drain(&mut net.rx, &mut net.counts);
    }
    net.counts
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
