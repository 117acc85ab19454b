//! A deterministic network between reliable senders and the receiver, for tests and benches.
//!
//! Each source runs a [`Sender`] (netconsole-proto's reliable sender) that pushes records at a
//! fixed cadence; datagrams cross a seeded network with loss in both directions (independent
//! and in bursts), reordering, duplication and delay, into one [`Receiver`]. Virtual time jumps
//! to the next deadline of any party (a push, a packet arrival, a sender or receiver timer), so
//! 100,000 records take a fraction of a second. Optionally a sender reboots mid-stream
//! (after a downtime longer than any packet's delay, it starts again at seq 0 with a small
//! `ts_usec`), and some records are long enough to be fragmented.
//!
//! [`run`] simulates what a [`SimConfig`] describes and checks the receiver's promises as it
//! goes; its [`SimReport`] counts the outcome and the delivery delays.

use alloc::collections::{BTreeMap, BinaryHeap};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cmp::{Ordering, Reverse};
use core::time::Duration;

use netconsole_proto::{Header, MAX_PRINT_CHUNK, Response, Sender, SenderConfig};
use netpoll_frame::Instant;

use crate::config::{ReceiverConfig, StreamConfig};
use crate::event::Event;
use crate::receiver::Receiver;

/// What to simulate.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SimConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Senders (sources), interleaved.
    pub sources: u32,
    /// Records each source pushes.
    pub records: u64,
    /// Time between two records of one source.
    pub record_interval: Duration,
    /// Loss probability, sender → receiver.
    pub loss_to_receiver: f64,
    /// Loss probability, receiver → sender.
    pub loss_to_sender: f64,
    /// Probability that a lost packet starts a burst: the next `burst_len` packets in that
    /// direction are lost too.
    pub burst: f64,
    /// Packets lost in a burst (at most; the length is drawn uniformly).
    pub burst_len: u32,
    /// Probability a packet is delayed by up to `reorder_delay` more.
    pub reorder: f64,
    /// Probability a packet is delivered twice.
    pub duplicate: f64,
    /// One-way delay.
    pub delay: Duration,
    /// Extra delay of a reordered packet (at most).
    pub reorder_delay: Duration,
    /// Every this many records is long enough to be fragmented (0: never): with N, the
    /// records whose `seq + 1` is a multiple of N (the N-th, 2N-th, ... of each boot), so 1
    /// fragments every record.
    pub fragment_every: u64,
    /// The first source reboots after this many records (`None`: never).
    pub reboot_after: Option<u64>,
    /// Downtime of a reboot (10 s by default: longer than a hole is held before the sender
    /// is seen to answer, so that a record of the next boot never finds the previous boot's
    /// head still open, where nothing tells the two apart; see
    /// [`StreamConfig::ask_for_boot_head`]).
    pub reboot_downtime: Duration,
    /// Whether responses reach the senders at all (retransmission on).
    pub retransmission: bool,
    /// The receiver's parameters.
    pub receiver: ReceiverConfig,
    /// The senders' parameters.
    pub sender: SenderConfig,
    /// Check memory against the bound after every step (costs a walk over the sources).
    pub check_memory: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        let stream = StreamConfig {
            ack_interval: Some(Duration::from_millis(100)),
            retransmit_interval: Duration::from_millis(100),
            // The simulated senders answer, but with loss both ways a stream may need many
            // requests to see it: at 50% each way a request shows it half the time, so the
            // default 1 s (nine requests 100 ms apart) gives up the first second's holes of
            // about one run in 500; 3 s makes that about one in 10^8.
            unanswered_hole_timeout: Some(Duration::from_secs(3)),
            ..StreamConfig::default()
        };
        let receiver = ReceiverConfig {
            stream,
            idle_timeout: Duration::from_secs(3600),
            ..ReceiverConfig::default()
        };
        let mut sender = SenderConfig::default();
        sender.window = 8192;
        SimConfig {
            seed: 1,
            sources: 1,
            records: 1000,
            record_interval: Duration::from_millis(1),
            loss_to_receiver: 0.0,
            loss_to_sender: 0.0,
            burst: 0.0,
            burst_len: 0,
            reorder: 0.0,
            duplicate: 0.0,
            delay: Duration::from_millis(5),
            reorder_delay: Duration::from_millis(20),
            fragment_every: 0,
            reboot_after: None,
            reboot_downtime: Duration::from_secs(10),
            retransmission: true,
            receiver,
            sender,
            check_memory: true,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimReport {
    /// Records pushed by all senders.
    pub sent: u64,
    /// Records delivered in order.
    pub delivered: u64,
    /// Records delivered late (out of order).
    pub late: u64,
    /// Records covered by loss events (and not delivered late).
    pub lost: u64,
    /// Records given up on incomplete.
    pub incomplete: u64,
    /// Records sent before the first or after the last one the receiver placed in its
    /// window in their boot (all their copies lost, or arrived only outside the window): no
    /// receiver can know they were missing.
    pub unseen: u64,
    /// Stream restarts.
    pub restarts: u64,
    /// Datagrams sent towards the receiver (before loss).
    pub to_receiver: u64,
    /// Responses sent towards the senders (before loss).
    pub to_sender: u64,
    /// Datagrams the senders sent again (asked for by the receiver, or on their own when
    /// acks stopped), counted in [`SimReport::to_receiver`] too.
    pub retransmitted: u64,
    /// Virtual time simulated.
    pub virtual_time: Duration,
    /// Largest [`Receiver::memory_used`] seen.
    pub max_memory: usize,
    /// [`Receiver::memory_bound`].
    pub memory_bound: usize,
    /// Broken invariants (empty when all hold; at most 20 kept).
    pub violations: Vec<String>,
    /// Delivery delay, 50th percentile (nearest rank) over the records delivered in order or
    /// late: virtual time from the first transmission of the record's first datagram to its
    /// release by the receiver, as the lower bound of its histogram bucket (within 1/256 of
    /// the value, never below the smallest delay). Zero when nothing was delivered. Without
    /// loss or reordering every delay is [`SimConfig::delay`]; retransmissions after a loss
    /// add the receiver's and the sender's timers.
    pub delay_p50: Duration,
    /// Delivery delay, 99th percentile (nearest rank).
    pub delay_p99: Duration,
    /// Delivery delay, the largest.
    pub delay_max: Duration,
}

/// How far a run of [`run_with_progress`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Records pushed by the senders so far.
    pub done: u64,
    /// Records the senders push in all (`records * sources`).
    pub total: u64,
}

/// Delivery delays in microseconds, counted in log-linear buckets (as HdrHistogram does):
/// exact below 512, then 256 buckets per power of two, so a bucket's lower bound is within
/// 1/256 (0.4%) of every value in it. Memory is fixed (6400 counters) however many records
/// a run delivers.
struct Delays {
    counts: Vec<u64>,
    n: u64,
    min: u32,
    max: u32,
}

impl Delays {
    /// Sub-buckets per power of two, as a power of two.
    const SUB_BITS: u32 = 8;

    fn new() -> Self {
        Delays {
            counts: alloc::vec![0; Self::index(u32::MAX) + 1],
            n: 0,
            min: u32::MAX,
            max: 0,
        }
    }

    fn index(value: u32) -> usize {
        let msb = (value | 1).ilog2();
        let shift = msb.saturating_sub(Self::SUB_BITS);
        // [0, 512) one bucket per value; then (shift + 1) * 256 + the top 9 bits less 256.
        ((shift << Self::SUB_BITS) + (value >> shift)) as usize
    }

    /// The smallest value of bucket `index`.
    fn lower_bound(index: usize) -> u32 {
        let index = index as u32;
        let sub = 1u32 << Self::SUB_BITS;
        if index < 2 * sub {
            return index;
        }
        let shift = index / sub - 1;
        (index - shift * sub) << shift
    }

    fn record(&mut self, value: u32) {
        self.counts[Self::index(value)] += 1;
        self.n += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// The `percent`-th percentile by nearest rank (the smallest value with at least
    /// `percent`% of the values at or below it), as its bucket's lower bound kept within the
    /// smallest and largest values seen; `None` for no values.
    fn percentile(&self, percent: u64) -> Option<u32> {
        if self.n == 0 {
            return None;
        }
        let rank = (self.n * percent).div_ceil(100).clamp(1, self.n);
        let mut seen = 0;
        let index = self.counts.iter().position(|&count| {
            seen += count;
            seen >= rank
        })?;
        Some(Self::lower_bound(index).clamp(self.min, self.max))
    }
}

impl SimReport {
    /// Delivered in order, as a fraction of the records sent.
    #[allow(
        clippy::cast_precision_loss,
        reason = "a ratio for display; counts far below 2^52"
    )]
    pub fn delivered_ratio(&self) -> f64 {
        if self.sent == 0 {
            return 1.0;
        }
        self.delivered as f64 / self.sent as f64
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[allow(
        clippy::cast_precision_loss,
        reason = "53 random bits are exact in an f64"
    )]
    fn chance(&mut self, p: f64) -> bool {
        // 53 random bits as a fraction in [0, 1).
        p > 0.0 && ((self.next() >> 11) as f64) * (1.0 / (1u64 << 53) as f64) < p
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn duration(&mut self, max: Duration) -> Duration {
        Duration::from_nanos(self.below(u64::try_from(max.as_nanos()).unwrap_or(u64::MAX)))
    }
}

#[derive(Debug)]
struct Packet {
    at: Instant,
    serial: u64,
    source: u32,
    to_receiver: bool,
    bytes: Vec<u8>,
}

impl PartialEq for Packet {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.serial) == (other.at, other.serial)
    }
}

impl Eq for Packet {}

impl PartialOrd for Packet {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Packet {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.serial).cmp(&(other.at, other.serial))
    }
}

struct Link {
    burst_left: [u32; 2],
}

struct Network<'c> {
    config: &'c SimConfig,
    rng: Rng,
    queue: BinaryHeap<Reverse<Packet>>,
    serial: u64,
    links: Vec<Link>,
}

impl Network<'_> {
    fn send(&mut self, now: Instant, source: u32, to_receiver: bool, bytes: &[u8]) {
        let config = self.config;
        let dir = usize::from(to_receiver);
        let link = &mut self.links[source as usize];
        let loss = if to_receiver {
            config.loss_to_receiver
        } else {
            config.loss_to_sender
        };
        if !to_receiver && !config.retransmission {
            return;
        }
        if link.burst_left[dir] > 0 {
            link.burst_left[dir] -= 1;
            return;
        }
        if self.rng.chance(loss) {
            if self.rng.chance(config.burst) {
                self.links[source as usize].burst_left[dir] =
                    self.rng.below(u64::from(config.burst_len) + 1) as u32;
            }
            return;
        }
        let copies = if self.rng.chance(config.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = now + config.delay;
            if self.rng.chance(config.reorder) {
                at += self.rng.duration(config.reorder_delay);
            }
            self.serial += 1;
            self.queue.push(Reverse(Packet {
                at,
                serial: self.serial,
                source,
                to_receiver,
                bytes: bytes.to_vec(),
            }));
        }
    }
}

/// One record as sent.
struct SentRecord {
    msg: Vec<u8>,
    header_len: usize,
    /// When its first datagram was first transmitted.
    first_sent: Option<Instant>,
    fate: Fate,
    /// Covered by a loss event.
    covered: bool,
    /// Given up on incomplete.
    incomplete: bool,
}

/// Whether and how a record came out whole.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Pending,
    Delivered,
    Late,
}

#[derive(Default)]
struct EpochLog {
    boot: Option<u32>,
    losses: Vec<core::ops::Range<u64>>,
    incomplete: Vec<u64>,
    last: Option<u64>,
}

struct SourceState {
    sender: Sender,
    boot: u32,
    /// (boot, seq) → record.
    sent: BTreeMap<(u32, u64), SentRecord>,
    /// (seq, ts_usec) → boot.
    by_stamp: BTreeMap<(u64, u64), u32>,
    epochs: Vec<EpochLog>,
    next_seq: u64,
    ts_base: u64,
    pushed: u64,
    next_push: Instant,
    down_until: Option<Instant>,
}

struct Checker {
    violations: Vec<String>,
    /// Delivery delays of the records delivered, in microseconds of virtual time.
    delays: Delays,
}

impl Checker {
    fn fail(&mut self, message: String) {
        if self.violations.len() < 20 {
            self.violations.push(message);
        }
    }
}

fn make_record(rng: &mut Rng, seq: u64, ts_usec: u64, long: bool) -> Vec<u8> {
    let level = rng.below(8);
    let facility = rng.below(4);
    let len = if long {
        1200 + rng.below(2400)
    } else {
        60 + rng.below(80)
    };
    let mut msg = format!("{},{seq},{ts_usec},-;", (facility << 3) | level).into_bytes();
    let mut bits = 0u64;
    for i in 0..len {
        if i % 8 == 0 {
            bits = rng.next();
        }
        // Printable ASCII except the backslash, as printk's escaping leaves it.
        let b = b' ' + ((bits & 0xff) % 95) as u8;
        bits >>= 8;
        msg.push(if b == b'\\' { b'/' } else { b });
    }
    msg.push(b'\n');
    msg
}

/// Handles one receiver event for the invariant checks.
fn on_event(
    checker: &mut Checker,
    state: &mut SourceState,
    source: u32,
    event: &Event<'_>,
    report: &mut SimReport,
    now: Instant,
) {
    let epoch = state.epochs.len() - 1;
    let in_order = |checker: &mut Checker, state: &mut SourceState, first: u64, last: u64| {
        let log = &mut state.epochs[epoch];
        if log.last.is_some_and(|l| first <= l) {
            checker.fail(format!(
                "source {source} epoch {epoch}: {first} after {:?}",
                log.last
            ));
        }
        log.last = Some(last);
    };
    match event {
        Event::Record(r) | Event::Late(r) => {
            let late = matches!(event, Event::Late(_));
            let seq = r.fields.seq;
            let Some(&boot) = state.by_stamp.get(&(seq, r.fields.ts_usec)) else {
                checker.fail(format!("source {source}: invented record seq {seq}"));
                return;
            };
            let Some(sent) = state.sent.get_mut(&(boot, seq)) else {
                return;
            };
            if r.body != &sent.msg[sent.header_len..] {
                checker.fail(format!("source {source}: seq {seq} bytes differ"));
            }
            if sent.fate == Fate::Pending {
                if let Some(first) = sent.first_sent {
                    let delay = now.saturating_duration_since(first).as_micros();
                    checker
                        .delays
                        .record(u32::try_from(delay).unwrap_or(u32::MAX));
                } else {
                    checker.fail(format!("source {source}: seq {seq} delivered, never sent"));
                }
            }
            if late {
                if sent.fate != Fate::Pending {
                    checker.fail(format!("source {source}: seq {seq} delivered twice"));
                }
                sent.fate = Fate::Late;
                report.late += 1;
            } else {
                if sent.fate != Fate::Pending {
                    checker.fail(format!("source {source}: seq {seq} delivered twice"));
                }
                sent.fate = Fate::Delivered;
                report.delivered += 1;
                let log = &mut state.epochs[epoch];
                match log.boot {
                    None => log.boot = Some(boot),
                    Some(b) if b != boot => {
                        checker.fail(format!("source {source}: boots mixed in epoch {epoch}"));
                    }
                    Some(_) => {}
                }
                in_order(checker, state, seq, seq);
            }
        }
        Event::Lost { seqs } => {
            if seqs.is_empty() {
                checker.fail(format!("source {source}: empty loss"));
                return;
            }
            in_order(checker, state, seqs.start, seqs.end - 1);
            state.epochs[epoch].losses.push(seqs.clone());
        }
        Event::Incomplete(i) => {
            let seq = i.record.fields.seq;
            if let Some(&boot) = state.by_stamp.get(&(seq, i.record.fields.ts_usec)) {
                let log = &mut state.epochs[epoch];
                if log.boot.is_some_and(|b| b != boot) {
                    checker.fail(format!("source {source}: boots mixed in epoch {epoch}"));
                }
                log.boot = Some(boot);
                if let Some(sent) = state.sent.get(&(boot, seq)) {
                    let body = &sent.msg[sent.header_len..];
                    for (offset, piece) in i.received() {
                        if body.get(offset..offset + piece.len()) != Some(piece) {
                            checker.fail(format!("source {source}: seq {seq} invented bytes"));
                        }
                    }
                }
            } else {
                checker.fail(format!("source {source}: invented incomplete seq {seq}"));
            }
            in_order(checker, state, seq, seq);
            state.epochs[epoch].incomplete.push(seq);
        }
        Event::Restart(_) => {
            report.restarts += 1;
            state.epochs.push(EpochLog::default());
        }
        Event::SourceEvicted => state.epochs.push(EpochLog::default()),
        Event::Plain(_) => checker.fail(format!("source {source}: plain text invented")),
    }
}

/// Runs one simulation and checks its invariants, as it goes and at the end: every record
/// sent is delivered exactly once in order with its exact bytes, or covered by a loss event
/// (or an incomplete record), never both; a late delivery is of a record given up on or
/// never placed; within an epoch, records, losses and incomplete records come in strictly
/// increasing sequence; nothing is invented; memory stays within
/// [`Receiver::memory_bound`]. The only records allowed to be unaccounted for
/// ([`SimReport::unseen`]) are those a rebooted sender sent after the last one the receiver
/// ever heard of in that boot: no receiver can know they existed. A broken invariant is a
/// line in [`SimReport::violations`].
///
/// A run ends once every record is pushed and `message_timeout + 20 s` have passed since the
/// last push with every sender's records acked: a record lost at the very end is known to
/// its sender only and comes again by its emergency transmission, after `ack_timeout` (10 s)
/// without progress, so the run waits for that up to `30 * ack_timeout` more.
pub fn run(config: &SimConfig) -> SimReport {
    run_with_progress(config, u64::MAX, |_| {})
}

/// [`run`], calling `progress` each time another `every` records have been pushed (over all
/// sources; `every` 0 counts as 1), for a progress display, and once more at the end if the last call was not for
/// all of them. The counts passed are strictly increasing and the last is
/// [`Progress::total`]. The simulation is the same whatever `every` is.
#[allow(
    clippy::too_many_lines,
    reason = "one event loop reads best in one place"
)]
pub fn run_with_progress(
    config: &SimConfig,
    every: u64,
    mut progress: impl FnMut(Progress),
) -> SimReport {
    let every = every.max(1);
    let total = config.records.saturating_mul(u64::from(config.sources));
    let mut reported = 0u64;
    let mut rng = Rng(config.seed ^ 0x5eed);
    let mut network = Network {
        config,
        rng: Rng(config.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 7),
        queue: BinaryHeap::new(),
        serial: 0,
        links: (0..config.sources)
            .map(|_| Link { burst_left: [0; 2] })
            .collect(),
    };
    let mut receiver: Receiver<u32> = Receiver::new(config.receiver.clone());
    let mut report = SimReport {
        memory_bound: receiver.memory_bound(),
        ..SimReport::default()
    };
    let mut checker = Checker {
        violations: Vec::new(),
        delays: Delays::new(),
    };
    let start = Instant::from_millis(1000);
    let mut sources: Vec<SourceState> = (0..config.sources)
        .map(|i| SourceState {
            sender: Sender::new(config.sender.clone()),
            boot: 0,
            sent: BTreeMap::new(),
            by_stamp: BTreeMap::new(),
            epochs: alloc::vec![EpochLog::default()],
            next_seq: 0,
            ts_base: 3_600_000_000,
            pushed: 0,
            // Interleave the sources within one interval.
            next_push: start + config.record_interval * i / config.sources.max(1),
            down_until: None,
        })
        .collect();
    let mut buf = [0u8; MAX_PRINT_CHUNK];
    let mut now = start;
    let quiet_after = config.receiver.stream.message_timeout + Duration::from_secs(20);
    // A record lost at the very end is known to its sender only: it comes again by emergency
    // transmission, which waits `ack_timeout` after each ack that made progress. The run
    // goes on while a sender holds unacked records, this much longer at most.
    let recovery = config.sender.ack_timeout.saturating_mul(30);
    let mut last_push = start;
    loop {
        // The next moment anything happens.
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        for state in &sources {
            if state.pushed < config.records {
                consider(Some(state.down_until.unwrap_or(state.next_push)));
            }
            consider(state.sender.poll_timeout());
        }
        consider(network.queue.peek().map(|p| p.0.at));
        consider(receiver.poll_timeout());
        let all_pushed = sources.iter().all(|s| s.pushed >= config.records);
        let Some(at) = next else { break };
        if all_pushed && at > last_push + quiet_after {
            let acked = sources.iter().all(|s| s.sender.unacked() == 0);
            if acked || at > last_push + quiet_after + recovery {
                break;
            }
        }
        now = now.max(at);
        // Packets due.
        while network.queue.peek().is_some_and(|p| p.0.at <= now) {
            let Some(Reverse(packet)) = network.queue.pop() else {
                break;
            };
            if packet.to_receiver {
                receiver.handle_datagram(now, &packet.source, &packet.bytes);
            } else if let Ok(response) = Response::parse(&packet.bytes) {
                let state = &mut sources[packet.source as usize];
                if state.down_until.is_none() {
                    state.sender.handle_response(now, &response);
                }
            }
        }
        if receiver.poll_timeout().is_some_and(|t| t <= now) {
            receiver.handle_timeout(now);
        }
        for (i, state) in sources.iter_mut().enumerate() {
            if state.sender.poll_timeout().is_some_and(|t| t <= now) {
                state.sender.handle_timeout(now);
            }
            if let Some(up) = state.down_until {
                if up > now {
                    continue;
                }
                state.down_until = None;
                state.next_push = now;
            }
            while state.pushed < config.records && state.next_push <= now {
                if i == 0 && Some(state.pushed) == config.reboot_after && state.boot == 0 {
                    // Reboot: a new sender, seq from 0, a small uptime.
                    report.retransmitted += state.sender.stats().retransmitted;
                    state.boot = 1;
                    state.sender = Sender::new(config.sender.clone());
                    state.next_seq = 0;
                    state.ts_base = 2_000_000;
                    state.down_until = Some(now + config.reboot_downtime);
                    break;
                }
                let seq = state.next_seq;
                let ts_usec = state.ts_base + seq * 1000;
                let long = config.fragment_every > 0 && (seq + 1) % config.fragment_every == 0;
                let msg = make_record(&mut rng, seq, ts_usec, long);
                let header_len = msg.iter().position(|&b| b == b';').map_or(0, |p| p + 1);
                if state.sender.push(now, &msg).is_err() {
                    checker.fail(format!("sender refused seq {seq}"));
                }
                state.by_stamp.insert((seq, ts_usec), state.boot);
                state.sent.insert(
                    (state.boot, seq),
                    SentRecord {
                        msg,
                        header_len,
                        first_sent: None,
                        fate: Fate::Pending,
                        covered: false,
                        incomplete: false,
                    },
                );
                report.sent += 1;
                if report.sent % every == 0 {
                    reported = report.sent;
                    progress(Progress {
                        done: report.sent,
                        total,
                    });
                }
                state.next_seq += 1;
                state.pushed += 1;
                state.next_push += config.record_interval;
                last_push = now;
            }
            while let Some(n) = state.sender.poll_transmit(&mut buf) {
                if let Ok((header, _)) = Header::parse(&buf[..n]) {
                    if let Some(sent) = state.sent.get_mut(&(state.boot, header.fields.seq)) {
                        sent.first_sent.get_or_insert(now);
                    }
                }
                report.to_receiver += 1;
                network.send(now, i as u32, true, &buf[..n]);
            }
        }
        while let Some((source, event)) = receiver.poll_event() {
            if let Some(state) = sources.get_mut(source as usize) {
                on_event(&mut checker, state, source, &event, &mut report, now);
            }
        }
        while let Some((source, n)) = receiver.poll_transmit(&mut buf) {
            report.to_sender += 1;
            network.send(now, source, false, &buf[..n]);
        }
        if config.check_memory {
            let used = receiver.memory_used();
            report.max_memory = report.max_memory.max(used);
            if used > report.memory_bound {
                checker.fail(format!("memory {used} above bound {}", report.memory_bound));
            }
        }
    }
    // Everything still open is flushed: idle sources are evicted at the far end of time.
    let end = now + config.receiver.idle_timeout + Duration::from_secs(1);
    receiver.handle_timeout(end);
    while let Some((source, event)) = receiver.poll_event() {
        if let Some(state) = sources.get_mut(source as usize) {
            on_event(&mut checker, state, source, &event, &mut report, now);
        }
    }
    report.virtual_time = now - start;
    report.retransmitted += sources
        .iter()
        .map(|s| s.sender.stats().retransmitted)
        .sum::<u64>();
    for (index, state) in sources.iter_mut().enumerate() {
        settle(&mut checker, state, index, &mut report);
    }
    let micros = |p: Option<u32>| Duration::from_micros(u64::from(p.unwrap_or(0)));
    report.delay_p50 = micros(checker.delays.percentile(50));
    report.delay_p99 = micros(checker.delays.percentile(99));
    report.delay_max = micros((checker.delays.n > 0).then_some(checker.delays.max));
    report.violations = checker.violations;
    if reported != report.sent {
        progress(Progress {
            done: report.sent,
            total,
        });
    }
    report
}

/// Resolves loss events to the records they cover and checks every record is accounted for.
fn settle(checker: &mut Checker, state: &mut SourceState, index: usize, report: &mut SimReport) {
    let boots = state.boot + 1;
    // The lowest and highest sequence the receiver accounted for, per boot.
    let mut heard = alloc::vec![None::<core::ops::RangeInclusive<u64>>; boots as usize];
    let mut hear = |boot: u32, low: u64, high: u64| {
        if let Some(slot) = heard.get_mut(boot as usize) {
            *slot = Some(match slot.take() {
                None => low..=high,
                Some(r) => (*r.start()).min(low)..=(*r.end()).max(high),
            });
        }
    };
    for log in &state.epochs {
        let targets: Vec<u32> = log
            .boot
            .map_or_else(|| (0..boots).collect(), |b| alloc::vec![b]);
        for &boot in &targets {
            for range in &log.losses {
                if log.boot.is_some() {
                    hear(boot, range.start, range.end - 1);
                }
                for (_, sent) in state.sent.range_mut((boot, range.start)..(boot, range.end)) {
                    if sent.fate == Fate::Delivered {
                        checker.fail(format!(
                            "source {index}: a delivered record is also reported lost"
                        ));
                    }
                    sent.covered = true;
                }
            }
            for &seq in &log.incomplete {
                if let Some(sent) = state.sent.get_mut(&(boot, seq)) {
                    sent.incomplete = true;
                }
            }
        }
    }
    for (&(boot, seq), sent) in &state.sent {
        // Late records come from outside the window: they tell nothing about holes.
        if sent.fate == Fate::Delivered || sent.incomplete {
            hear(boot, seq, seq);
        }
    }
    for (&(boot, seq), sent) in &state.sent {
        if sent.fate != Fate::Pending {
            continue;
        }
        if sent.incomplete {
            report.incomplete += 1;
        } else if sent.covered {
            report.lost += 1;
        } else if heard[boot as usize]
            .as_ref()
            .is_none_or(|h| !h.contains(&seq))
        {
            report.unseen += 1;
        } else {
            checker.fail(format!(
                "source {index}: boot {boot} seq {seq} neither delivered nor reported lost"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Delays;

    #[test]
    fn delay_buckets_are_within_a_256th() {
        let spread = (0..200).map(|i| u32::MAX / 200 * i + 77);
        for value in (0..5000).chain(spread).chain([u32::MAX]) {
            let index = Delays::index(value);
            let low = Delays::lower_bound(index);
            assert!(low <= value, "{value}");
            assert!(u64::from(value - low) * 256 <= u64::from(value), "{value}");
            assert_eq!(Delays::index(low), index, "{value}");
        }
        assert!((0..5000).all(|v| Delays::index(v) <= Delays::index(v + 1)));
        assert_eq!(Delays::index(511), 511);
        assert_eq!(Delays::lower_bound(Delays::index(5000)), 4992);
        assert!(Delays::index(u32::MAX) < 6400);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut delays = Delays::new();
        assert_eq!(delays.percentile(50), None);
        for value in 1..=100 {
            delays.record(value);
        }
        assert_eq!(delays.percentile(50), Some(50));
        assert_eq!(delays.percentile(99), Some(99));
        assert_eq!(delays.percentile(100), Some(100));
        // One value many times: exact, whatever its bucket.
        let mut same = Delays::new();
        for _ in 0..1000 {
            same.record(5000);
        }
        assert_eq!(same.percentile(50), Some(5000));
        assert_eq!(same.percentile(99), Some(5000));
    }
}
