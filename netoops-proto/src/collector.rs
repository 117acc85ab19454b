//! The collector: [`Collector`] rebuilds dumps from netoops traffic, sans-IO.

use crate::DATA_BYTES;
use crate::meta::DumpMeta;
use crate::packet::{Packet, ParseError};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;
use netpoll_frame::Instant;

/// Limits and timers of a [`Collector`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CollectorConfig {
    /// Dumps held at once, across all sources (at least 1). Default 16.
    pub max_dumps: usize,
    /// The largest `packet_count` accepted; larger dumps are refused. Default 1025: a log of
    /// up to 1 MiB however the kernel splits it in two segments (each segment's tail chunk
    /// is padded, so 1 MiB may take 1024 + 1 packets).
    pub max_packets_per_dump: u32,
    /// Complete dumps remembered so that their later passes are not taken for new dumps.
    /// Default 64.
    pub max_completed: usize,
    /// How long a dump may go without a packet before it is emitted partial, and how long a
    /// complete dump is remembered after its last packet. Default 10 s.
    pub timeout: Duration,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            max_dumps: 16,
            max_packets_per_dump: 1025,
            max_completed: 64,
            timeout: Duration::from_secs(10),
        }
    }
}

/// What became of an accepted packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Received {
    /// A packet not held before; the dump is still incomplete.
    New,
    /// The last missing packet: the complete dump is now in the event queue.
    Completed,
    /// A copy of a packet already held (same bytes).
    Duplicate,
    /// A packet of a dump already complete (a later pass).
    AfterComplete,
}

/// How a packet contradicts its dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Contradiction {
    /// The header fields other than `packet_no` (metadata or `packet_count`) differ.
    Meta,
    /// The packet is already held with other data bytes.
    Data,
}

/// Why the collector did not accept a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CollectError {
    /// Not a readable netoops packet.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The dump has more packets than [`CollectorConfig::max_packets_per_dump`].
    #[error("dump {dump_id} has {packet_count} packets, more than the limit of {limit}")]
    TooManyPackets {
        /// `dump_id`.
        dump_id: u16,
        /// `packet_count` as sent.
        packet_count: u32,
        /// The configured limit.
        limit: u32,
    },
    /// The packet contradicts what is held for its dump; it was not merged.
    #[error("packet {packet_no} of dump {dump_id} contradicts the dump ({kind:?} differs)")]
    Contradiction {
        /// `dump_id`.
        dump_id: u16,
        /// `packet_no`.
        packet_no: u32,
        /// What differs.
        kind: Contradiction,
    },
}

/// How a dump ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DumpStatus {
    /// Every packet arrived.
    Complete,
    /// Nothing arrived for [`CollectorConfig::timeout`]; some packets are missing.
    TimedOut,
    /// Pushed out by a newer dump when [`CollectorConfig::max_dumps`] were in flight.
    Evicted,
}

/// Something the caller should know, from [`Collector::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<S> {
    /// A dump, complete or partial.
    Dump(Dump<S>),
}

/// A rebuilt dump: the log in order, its metadata, and the packets that never arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump<S> {
    source: S,
    meta: DumpMeta,
    packet_count: u32,
    status: DumpStatus,
    log: Vec<u8>,
    /// End of each chunk in `log`, in log order (packet `packet_count - 1` first).
    chunk_ends: Vec<usize>,
    /// Missing packet numbers, ascending.
    missing: Vec<u32>,
}

impl<S> Dump<S> {
    /// Where the dump came from.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The dump's metadata.
    pub fn meta(&self) -> &DumpMeta {
        &self.meta
    }

    /// `packet_count`.
    pub fn packet_count(&self) -> u32 {
        self.packet_count
    }

    /// How the dump ended.
    pub fn status(&self) -> DumpStatus {
        self.status
    }

    /// Whether every packet arrived.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// The log: the received chunks in the log's order (oldest first), trailing zero bytes
    /// of each chunk removed. In a partial dump the missing chunks are simply absent; see
    /// [`Dump::chunks`] for where the holes are.
    pub fn log(&self) -> &[u8] {
        &self.log
    }

    /// Takes the log.
    pub fn into_log(self) -> Vec<u8> {
        self.log
    }

    /// The numbers of the packets that never arrived, ascending.
    pub fn missing(&self) -> &[u32] {
        &self.missing
    }

    /// The data of packet `packet_no` (padding removed), or `None` if it is missing or out
    /// of range.
    pub fn chunk(&self, packet_no: u32) -> Option<&[u8]> {
        if packet_no >= self.packet_count || self.missing.binary_search(&packet_no).is_ok() {
            return None;
        }
        let index = (self.packet_count - 1 - packet_no) as usize;
        self.chunk_at(index)
    }

    /// The received chunks as `(packet_no, data)`, in the log's order (highest `packet_no`
    /// first).
    pub fn chunks(&self) -> impl Iterator<Item = (u32, &[u8])> + '_ {
        (0..self.packet_count)
            .rev()
            .filter_map(|packet_no| self.chunk(packet_no).map(|data| (packet_no, data)))
    }

    fn chunk_at(&self, index: usize) -> Option<&[u8]> {
        let start = match index.checked_sub(1) {
            Some(previous) => *self.chunk_ends.get(previous)?,
            None => 0,
        };
        self.log.get(start..*self.chunk_ends.get(index)?)
    }

    /// Checks the dump's own consistency: every packet number is either delivered or
    /// missing, never both; missing packets hold no bytes; chunks tile the log; a complete
    /// dump misses nothing. Meant for tests and fuzzers.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        let count = self.packet_count as usize;
        if count == 0 {
            return Err("a dump without packets");
        }
        if self.chunk_ends.len() != count {
            return Err("one chunk end per packet");
        }
        if self.chunk_ends.last() != Some(&self.log.len()) {
            return Err("chunks do not end at the end of the log");
        }
        if self.missing.windows(2).any(|w| w[0] >= w[1]) {
            return Err("missing packets not strictly ascending");
        }
        if self.missing.last().is_some_and(|&n| n >= self.packet_count) {
            return Err("a missing packet beyond packet_count");
        }
        if (self.status == DumpStatus::Complete) != self.missing.is_empty() {
            return Err("complete status and missing packets disagree");
        }
        let mut start = 0;
        for (index, &end) in self.chunk_ends.iter().enumerate() {
            if end < start || end - start > DATA_BYTES {
                return Err("a chunk longer than 1024 bytes or going backwards");
            }
            let packet_no = (count - 1 - index) as u32;
            let is_missing = self.missing.binary_search(&packet_no).is_ok();
            if is_missing && end != start {
                return Err("a missing packet holds bytes");
            }
            if !is_missing && self.log[start..end].last() == Some(&0) {
                return Err("a delivered chunk still ends in padding");
            }
            start = end;
        }
        Ok(())
    }
}

/// Counters of everything a [`Collector`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CollectorStats {
    /// Datagrams handed in.
    pub datagrams: u64,
    /// Datagrams refused: unreadable, or a dump over the packet limit.
    pub rejected: u64,
    /// Packets placed for the first time.
    pub new_packets: u64,
    /// Copies of packets already held.
    pub duplicates: u64,
    /// Packets of dumps already complete.
    pub after_complete: u64,
    /// Packets that contradicted their dump.
    pub contradictions: u64,
    /// Complete dumps emitted.
    pub complete_dumps: u64,
    /// Partial dumps emitted (timed out or evicted).
    pub partial_dumps: u64,
}

#[derive(Debug)]
struct InFlight {
    meta: DumpMeta,
    packet_count: u32,
    /// `packet_count` chunks of 1024 bytes, in the log's order (packet `packet_count - 1`
    /// first).
    data: Vec<u8>,
    /// By `packet_no`.
    received: Vec<bool>,
    received_count: u32,
    deadline: Instant,
    /// Arrival order of the dump's first packet: breaks ties between equal deadlines.
    order: u64,
}

impl InFlight {
    fn slot(&self, packet_no: u32) -> core::ops::Range<usize> {
        let index = (self.packet_count - 1 - packet_no) as usize;
        index * DATA_BYTES..(index + 1) * DATA_BYTES
    }
}

#[derive(Debug)]
struct Completed {
    meta: DumpMeta,
    packet_count: u32,
    expires: Instant,
    order: u64,
}

/// Rebuilds netoops dumps from datagrams, sans-IO; `S` names a source.
///
/// Feed it every datagram with the time it arrived and where it came from
/// ([`Collector::handle_datagram`]), call [`Collector::handle_timeout`] at
/// [`Collector::poll_timeout`], and drain [`Collector::poll_event`]. It never reads a clock,
/// and the same inputs always give the same outputs.
///
/// What it does:
/// - Dumps are told apart by `(source, dump_id)`; the source is any ordered type of the
///   caller's (a socket address, a host name, an index).
/// - Each packet is placed by `packet_no`. A packet already held (the second and third
///   passes) is a duplicate and is dropped after checking that its bytes are the same.
/// - A packet that contradicts the dump it claims to belong to (same `packet_no` with other
///   data, or other metadata or `packet_count`) is reported as
///   [`CollectError::Contradiction`] and not merged.
/// - As soon as every packet of a dump is in, it is emitted as a complete [`Dump`]: the log in
///   its original byte order with the zero padding removed, and the metadata. The dump is then
///   remembered (metadata only) for [`CollectorConfig::timeout`] after its last packet so that
///   the later passes are recognised as [`Received::AfterComplete`] and not taken for a new
///   dump. Their metadata is still checked (a mismatch is a contradiction); their data is
///   not compared any more.
/// - A dump that receives nothing for [`CollectorConfig::timeout`] is emitted as a partial
///   dump naming its missing packets ([`DumpStatus::TimedOut`]); if a packet of it turns up
///   later, it starts a new dump. When a new dump arrives while
///   [`CollectorConfig::max_dumps`] are in flight, the one with the earliest deadline is
///   emitted partial ([`DumpStatus::Evicted`]) to make room.
///
/// Padding: only the tail chunk of each log segment is padded, but a receiver does not know
/// where the older segment ends (`packet_count` is the only count sent). The kernel's log
/// buffer holds text, never a NUL byte, so trailing zero bytes of every chunk are taken as
/// padding and removed. The all-zero chunk the kernel sends for a segment that is an exact
/// multiple of 1024 bytes therefore contributes nothing (its bytes never left the machine;
/// see [`DumpEncoder`](crate::DumpEncoder)).
///
/// Memory: at most [`CollectorConfig::max_dumps`] dumps in flight, each holding
/// `packet_count × 1025` bytes plus a fixed part, `packet_count` at most
/// [`CollectorConfig::max_packets_per_dump`]; at most [`CollectorConfig::max_completed`]
/// remembered dumps of a few hundred bytes each. Emitted dumps wait in the event queue until
/// the caller takes them. Only the first packet of a dump allocates.
#[derive(Debug)]
pub struct Collector<S> {
    config: CollectorConfig,
    in_flight: BTreeMap<(S, u16), InFlight>,
    completed: BTreeMap<(S, u16), Completed>,
    events: VecDeque<Event<S>>,
    /// No in-flight deadline is earlier than this (`None` when nothing is in flight).
    earliest: Option<Instant>,
    next_order: u64,
    stats: CollectorStats,
}

impl<S: Ord + Clone> Collector<S> {
    /// A collector with these limits (`max_dumps` 0 is taken as 1).
    pub fn new(mut config: CollectorConfig) -> Self {
        config.max_dumps = config.max_dumps.max(1);
        Self {
            config,
            in_flight: BTreeMap::new(),
            completed: BTreeMap::new(),
            events: VecDeque::new(),
            earliest: None,
            next_order: 0,
            stats: CollectorStats::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &CollectorConfig {
        &self.config
    }

    /// Counters of what was seen so far.
    pub fn stats(&self) -> CollectorStats {
        self.stats
    }

    /// Dumps in flight.
    pub fn dumps_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Bytes of log buffer held by the dumps in flight.
    pub fn buffered_bytes(&self) -> usize {
        self.in_flight.values().map(|f| f.data.len()).sum()
    }

    /// Handles one datagram (a whole UDP payload) that arrived at `now` from `source`.
    ///
    /// Dumps whose deadline is at or before `now` are timed out first, so the result does
    /// not depend on how often the caller ran [`Collector::handle_timeout`].
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: S,
        datagram: &[u8],
    ) -> Result<Received, CollectError> {
        self.stats.datagrams += 1;
        self.expire(now);
        let packet = match Packet::parse(datagram) {
            Ok(packet) => packet,
            Err(error) => {
                self.stats.rejected += 1;
                return Err(error.into());
            }
        };
        let deadline = now + self.config.timeout;
        let key = (source, packet.dump_id());
        let meta = packet.meta();
        let packet_count = packet.packet_count();
        let packet_no = packet.packet_no();

        if let Some(done) = self.completed.get_mut(&key) {
            if now < done.expires {
                if done.meta != meta || done.packet_count != packet_count {
                    self.stats.contradictions += 1;
                    return Err(CollectError::Contradiction {
                        dump_id: key.1,
                        packet_no,
                        kind: Contradiction::Meta,
                    });
                }
                done.expires = done.expires.max(deadline);
                self.stats.after_complete += 1;
                return Ok(Received::AfterComplete);
            }
            // Forgotten in time: a packet under this id now starts a new dump.
            self.completed.remove(&key);
        }

        if let Some(flight) = self.in_flight.get_mut(&key) {
            let contradiction = |kind| CollectError::Contradiction {
                dump_id: key.1,
                packet_no,
                kind,
            };
            if flight.meta != meta || flight.packet_count != packet_count {
                self.stats.contradictions += 1;
                return Err(contradiction(Contradiction::Meta));
            }
            let slot = flight.slot(packet_no);
            if flight.received[packet_no as usize] {
                if flight.data[slot] != packet.data()[..] {
                    self.stats.contradictions += 1;
                    return Err(contradiction(Contradiction::Data));
                }
                flight.deadline = flight.deadline.max(deadline);
                self.stats.duplicates += 1;
                return Ok(Received::Duplicate);
            }
            flight.data[slot].copy_from_slice(packet.data());
            flight.received[packet_no as usize] = true;
            flight.received_count += 1;
            flight.deadline = flight.deadline.max(deadline);
            self.stats.new_packets += 1;
            if flight.received_count < flight.packet_count {
                return Ok(Received::New);
            }
            if let Some(flight) = self.in_flight.remove(&key) {
                self.finish(key, flight, DumpStatus::Complete, now);
            }
            return Ok(Received::Completed);
        }

        let limit = self.config.max_packets_per_dump;
        if packet_count > limit {
            self.stats.rejected += 1;
            return Err(CollectError::TooManyPackets {
                dump_id: key.1,
                packet_count,
                limit,
            });
        }
        if self.in_flight.len() >= self.config.max_dumps {
            self.evict_one(now);
        }
        let mut flight = InFlight {
            meta,
            packet_count,
            data: vec![0; packet_count as usize * DATA_BYTES],
            received: vec![false; packet_count as usize],
            received_count: 1,
            deadline,
            order: self.next_order,
        };
        self.next_order += 1;
        let slot = flight.slot(packet_no);
        flight.data[slot].copy_from_slice(packet.data());
        flight.received[packet_no as usize] = true;
        self.stats.new_packets += 1;
        if packet_count == 1 {
            self.finish(key, flight, DumpStatus::Complete, now);
            return Ok(Received::Completed);
        }
        self.earliest = Some(self.earliest.map_or(deadline, |e| e.min(deadline)));
        self.in_flight.insert(key, flight);
        Ok(Received::New)
    }

    /// Times out every dump whose deadline is at or before `now` and forgets complete dumps
    /// remembered past their time. Calling it early, late or twice is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire(now);
        self.completed.retain(|_, done| now < done.expires);
    }

    /// The exact next instant at which [`Collector::handle_timeout`] has something to do
    /// (the earliest deadline of a dump in flight), or `None` when nothing is in flight.
    ///
    /// A deadline is the time of the dump's latest packet plus [`CollectorConfig::timeout`];
    /// it never moves earlier, even if the caller's clock does. Remembered complete dumps
    /// need no wake-up: they are forgotten lazily.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.values().map(|f| f.deadline).min()
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event<S>> {
        self.events.pop_front()
    }

    /// Checks the collector's invariants: memory within the configured bounds, bookkeeping
    /// consistent, no dump both in flight and complete. Meant for tests and fuzzers.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        let config = &self.config;
        if self.in_flight.len() > config.max_dumps {
            return Err("more dumps in flight than max_dumps");
        }
        if self.completed.len() > config.max_completed {
            return Err("more dumps remembered than max_completed");
        }
        let per_dump = config.max_packets_per_dump as usize * DATA_BYTES;
        if self.buffered_bytes() > config.max_dumps * per_dump {
            return Err("buffered bytes over the configured bound");
        }
        for (key, flight) in &self.in_flight {
            let count = flight.packet_count as usize;
            if count < 2 || flight.packet_count > config.max_packets_per_dump {
                return Err("a dump in flight with a packet_count out of bounds");
            }
            if flight.data.len() != count * DATA_BYTES || flight.received.len() != count {
                return Err("a dump in flight with buffers of the wrong size");
            }
            let received = flight.received.iter().filter(|&&r| r).count();
            if received != flight.received_count as usize || received == 0 || received >= count {
                return Err("a dump in flight with a wrong received count");
            }
            if self.earliest.is_none_or(|e| flight.deadline < e) {
                return Err("a deadline earlier than the earliest one recorded");
            }
            if self.completed.contains_key(key) {
                return Err("a dump both in flight and complete");
            }
        }
        Ok(())
    }

    /// Times out the dumps whose deadline has come, in deadline order.
    fn expire(&mut self, now: Instant) {
        if self.earliest.is_none_or(|e| now < e) {
            return;
        }
        let mut due: Vec<(Instant, u64, (S, u16))> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(key, f)| (f.deadline, f.order, key.clone()))
            .collect();
        due.sort_by_key(|&(deadline, order, _)| (deadline, order));
        for (_, _, key) in due {
            if let Some(flight) = self.in_flight.remove(&key) {
                self.finish(key, flight, DumpStatus::TimedOut, now);
            }
        }
        self.earliest = self.poll_timeout();
    }

    /// Emits the dump with the earliest deadline as partial.
    fn evict_one(&mut self, now: Instant) {
        let oldest = self
            .in_flight
            .iter()
            .min_by_key(|(_, f)| (f.deadline, f.order))
            .map(|(key, _)| key.clone());
        if let Some(key) = oldest {
            if let Some(flight) = self.in_flight.remove(&key) {
                self.finish(key, flight, DumpStatus::Evicted, now);
            }
        }
        self.earliest = self.poll_timeout();
    }

    /// Turns a dump's buffer into a [`Dump`] and queues it.
    fn finish(&mut self, key: (S, u16), flight: InFlight, status: DumpStatus, now: Instant) {
        let InFlight {
            meta,
            packet_count,
            mut data,
            received,
            order,
            ..
        } = flight;
        let count = packet_count as usize;
        let mut chunk_ends = Vec::with_capacity(count);
        let mut end = 0;
        for index in 0..count {
            let packet_no = count - 1 - index;
            if received[packet_no] {
                let start = index * DATA_BYTES;
                let chunk = &data[start..start + DATA_BYTES];
                let len = chunk
                    .iter()
                    .rposition(|&b| b != 0)
                    .map_or(0, |last| last + 1);
                data.copy_within(start..start + len, end);
                end += len;
            }
            chunk_ends.push(end);
        }
        data.truncate(end);
        let missing: Vec<u32> = (0..packet_count)
            .filter(|&n| !received[n as usize])
            .collect();
        let status = if missing.is_empty() {
            DumpStatus::Complete
        } else {
            status
        };
        if status == DumpStatus::Complete {
            self.stats.complete_dumps += 1;
            self.remember(key.clone(), &meta, packet_count, now, order);
        } else {
            self.stats.partial_dumps += 1;
        }
        self.events.push_back(Event::Dump(Dump {
            source: key.0,
            meta,
            packet_count,
            status,
            log: data,
            chunk_ends,
            missing,
        }));
    }

    /// Remembers a complete dump so that its later passes are recognised.
    fn remember(
        &mut self,
        key: (S, u16),
        meta: &DumpMeta,
        packet_count: u32,
        now: Instant,
        order: u64,
    ) {
        if self.config.max_completed == 0 {
            return;
        }
        if self.completed.len() >= self.config.max_completed {
            let oldest = self
                .completed
                .iter()
                .min_by_key(|(_, done)| (done.expires, done.order))
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                self.completed.remove(&oldest);
            }
        }
        self.completed.insert(
            key,
            Completed {
                meta: *meta,
                packet_count,
                expires: now + self.config.timeout,
                order,
            },
        );
    }
}
