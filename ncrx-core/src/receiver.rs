//! The multi-source front: one [`Stream`] per source, bounded in number and in bytes.
//!
//! - Sources are keyed by the caller's type `S` (a [`SocketAddr`], IP and port, by default):
//!   two targets of one machine on different ports are two streams.
//! - At most [`ReceiverConfig::max_sources`] are tracked. A source quiet for
//!   [`ReceiverConfig::idle_timeout`] is flushed (its open records delivered or reported
//!   lost) and evicted with [`Event::SourceEvicted`]. When the table is full, a new source
//!   evicts the least recently active one if that one has been quiet for
//!   [`ReceiverConfig::evict_when_full_after`]; otherwise its datagram is refused and counted.
//! - Each stream holds at most [`StreamConfig::max_held_bytes`](crate::StreamConfig::max_held_bytes)
//!   of records; [`Receiver::memory_used`] and [`Receiver::memory_bound`] let a test or a
//!   fuzzer check the bound.
//! - Timers: every source's next deadline sits in one ordered set, so
//!   [`Receiver::poll_timeout`] is its first entry and a packet costs O(log sources). A
//!   packet touches neither the set nor the activity index unless its stream's deadline
//!   changed: the idle check of an active source wakes the caller once per
//!   `idle_timeout` and re-arms from the last activity; the streams' own deadlines are exact.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::net::SocketAddr;

use netpoll_frame::Instant;

use crate::config::ReceiverConfig;
use crate::event::Event;
use crate::stream::{Stream, StreamStats};

/// Counters of the front, with the streams' counters summed (evicted ones included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ReceiverStats {
    /// The streams' counters.
    pub streams: StreamStats,
    /// Sources created.
    pub sources_created: u64,
    /// Sources evicted.
    pub sources_evicted: u64,
    /// Datagrams refused because the source table was full.
    pub refused: u64,
}

#[derive(Debug, Clone)]
struct Source {
    stream: Stream,
    last_active: Instant,
    /// This source's key in `by_activity` (its activity when last indexed: a packet does
    /// not touch the index, eviction re-indexes what it finds stale).
    indexed_active: Instant,
    /// When to check whether the source went quiet.
    idle_check: Instant,
    /// This source's entry in `timers`.
    deadline: Option<Instant>,
    queued_event: bool,
    queued_transmit: bool,
}

/// The receiver for many sources (see the module documentation).
#[derive(Debug, Clone)]
pub struct Receiver<S: Ord + Clone = SocketAddr> {
    config: ReceiverConfig,
    sources: BTreeMap<S, Source>,
    by_activity: BTreeSet<(Instant, S)>,
    timers: BTreeSet<(Instant, S)>,
    ready_events: VecDeque<S>,
    ready_transmits: VecDeque<S>,
    /// Evicted streams whose last events are still to be polled.
    draining: VecDeque<(S, Stream)>,
    due: Vec<S>,
    now: Instant,
    stats: ReceiverStats,
    /// The draining stream at the front handed out its eviction event.
    evicted_taken: bool,
}

impl<S: Ord + Clone> Receiver<S> {
    /// A receiver with no source yet.
    pub fn new(config: ReceiverConfig) -> Self {
        Receiver {
            config,
            sources: BTreeMap::new(),
            by_activity: BTreeSet::new(),
            timers: BTreeSet::new(),
            ready_events: VecDeque::new(),
            ready_transmits: VecDeque::new(),
            draining: VecDeque::new(),
            due: Vec::new(),
            now: Instant::ZERO,
            stats: ReceiverStats::default(),
            evicted_taken: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ReceiverConfig {
        &self.config
    }

    /// Sources tracked.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// One source's stream, if tracked.
    pub fn stream(&self, source: &S) -> Option<&Stream> {
        self.sources.get(source).map(|s| &s.stream)
    }

    /// Counters (streams summed, evicted ones included).
    pub fn stats(&self) -> ReceiverStats {
        let mut stats = self.stats;
        for source in self.sources.values() {
            stats.streams += source.stream.stats();
        }
        for (_, stream) in &self.draining {
            stats.streams += stream.stats();
        }
        stats
    }

    /// Heap bytes in use, approximately (streams, tables, queues).
    pub fn memory_used(&self) -> usize {
        let entry = core::mem::size_of::<(S, Source)>() + 3 * core::mem::size_of::<(Instant, S)>();
        self.sources
            .values()
            .map(|s| s.stream.memory_used() + entry)
            .sum::<usize>()
            + self
                .draining
                .iter()
                .map(|(_, s)| s.memory_used())
                .sum::<usize>()
            + self.due.capacity() * core::mem::size_of::<S>()
    }

    /// The bound on [`Receiver::memory_used`] the configuration implies, when events and
    /// transmits are drained after each call (so at most one evicted stream drains at once).
    pub fn memory_bound(&self) -> usize {
        let entry = core::mem::size_of::<(S, Source)>() + 3 * core::mem::size_of::<(Instant, S)>();
        let sources = self.config.max_sources + 1;
        sources * (Stream::memory_bound_for(&self.config.stream) + entry)
            + 2 * sources * core::mem::size_of::<S>()
    }

    /// Record bytes held by all streams.
    pub fn held_bytes(&self) -> usize {
        self.sources.values().map(|s| s.stream.held_bytes()).sum()
    }

    fn release_front_eviction(&mut self) {
        if self.evicted_taken {
            self.draining.pop_front();
            self.evicted_taken = false;
        }
    }

    /// Takes one UDP payload from `source`.
    pub fn handle_datagram(&mut self, now: Instant, source: &S, datagram: &[u8]) {
        self.now = self.now.max(now);
        let now = self.now;
        self.release_front_eviction();
        if !self.sources.contains_key(source) && !self.make_room_for_source(now) {
            self.stats.refused += 1;
            return;
        }
        let created = !self.sources.contains_key(source);
        let stream_config = &self.config.stream;
        let idle_check = now + self.config.idle_timeout;
        let entry = self
            .sources
            .entry(source.clone())
            .or_insert_with(|| Source {
                stream: Stream::new(stream_config.clone()),
                last_active: now,
                indexed_active: now,
                idle_check,
                deadline: None,
                queued_event: false,
                queued_transmit: false,
            });
        entry.stream.handle_datagram(now, datagram);
        entry.last_active = now;
        if created {
            self.stats.sources_created += 1;
            self.by_activity.insert((now, source.clone()));
        }
        self.refresh(source);
    }

    /// Whether a new source may be added, evicting one if allowed.
    fn make_room_for_source(&mut self, now: Instant) -> bool {
        if self.sources.len() < self.config.max_sources.max(1) {
            return true;
        }
        // The index may be stale: re-index what moved on, a bounded number of times.
        for _ in 0..16 {
            let Some((indexed, oldest)) = self.by_activity.first().cloned() else {
                return false;
            };
            let Some(entry) = self.sources.get_mut(&oldest) else {
                self.by_activity.pop_first();
                continue;
            };
            if entry.last_active != indexed {
                entry.indexed_active = entry.last_active;
                self.by_activity.pop_first();
                self.by_activity.insert((entry.last_active, oldest));
                continue;
            }
            if indexed + self.config.evict_when_full_after > now {
                return false;
            }
            self.evict(&oldest, now);
            return true;
        }
        false
    }

    fn evict(&mut self, source: &S, now: Instant) {
        let Some(mut entry) = self.sources.remove(source) else {
            return;
        };
        self.by_activity
            .remove(&(entry.indexed_active, source.clone()));
        if let Some(deadline) = entry.deadline {
            self.timers.remove(&(deadline, source.clone()));
        }
        entry.stream.flush(now);
        self.stats.sources_evicted += 1;
        self.draining.push_back((source.clone(), entry.stream));
    }

    /// Puts a source's timer and ready flags in line with its stream.
    fn refresh(&mut self, source: &S) {
        let Some(entry) = self.sources.get_mut(source) else {
            return;
        };
        let stream_deadline = entry.stream.poll_timeout();
        let idle = entry.idle_check;
        let deadline = Some(stream_deadline.map_or(idle, |d| d.min(idle)));
        if deadline != entry.deadline {
            if let Some(old) = entry.deadline {
                self.timers.remove(&(old, source.clone()));
            }
            if let Some(new) = deadline {
                self.timers.insert((new, source.clone()));
            }
            entry.deadline = deadline;
        }
        if !entry.queued_event && entry.stream.has_event() {
            entry.queued_event = true;
            self.ready_events.push_back(source.clone());
        }
        if !entry.queued_transmit && entry.stream.has_transmit() {
            entry.queued_transmit = true;
            self.ready_transmits.push_back(source.clone());
        }
    }

    /// Acts on the passage of time; early or repeated calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let now = self.now;
        self.release_front_eviction();
        let mut due = core::mem::take(&mut self.due);
        due.clear();
        for (at, source) in &self.timers {
            if *at > now {
                break;
            }
            due.push(source.clone());
        }
        let idle_timeout = self.config.idle_timeout;
        for source in &due {
            let Some(entry) = self.sources.get_mut(source) else {
                continue;
            };
            if entry.idle_check <= now {
                if entry.last_active + idle_timeout <= now {
                    self.evict(source, now);
                    continue;
                }
                entry.idle_check = entry.last_active + idle_timeout;
                if entry.indexed_active != entry.last_active {
                    self.by_activity
                        .remove(&(entry.indexed_active, source.clone()));
                    entry.indexed_active = entry.last_active;
                    self.by_activity.insert((entry.last_active, source.clone()));
                }
            }
            entry.stream.handle_timeout(now);
            self.refresh(source);
        }
        self.due = due;
    }

    /// The exact next deadline over all sources.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// The next event and the source it is about; it borrows the receiver until the next
    /// call.
    pub fn poll_event(&mut self) -> Option<(S, Event<'_>)> {
        self.release_front_eviction();
        if let Some((_, stream)) = self.draining.front() {
            if stream.has_event() {
                let (source, stream) = self.draining.front_mut()?;
                return stream.poll_event().map(|event| (source.clone(), event));
            }
            self.evicted_taken = true;
            return self
                .draining
                .front()
                .map(|(source, _)| (source.clone(), Event::SourceEvicted));
        }
        loop {
            let source = self.ready_events.front()?.clone();
            let has = self.sources.get(&source).map(|e| e.stream.has_event());
            if has == Some(true) {
                let entry = self.sources.get_mut(&source)?;
                return entry.stream.poll_event().map(|event| (source, event));
            }
            self.ready_events.pop_front();
            if let Some(entry) = self.sources.get_mut(&source) {
                entry.queued_event = false;
            }
        }
    }

    /// Writes the next response packet into `buf`; returns its destination (the source)
    /// and length.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<(S, usize)> {
        loop {
            let source = self.ready_transmits.front()?.clone();
            if let Some(entry) = self.sources.get_mut(&source) {
                if let Some(len) = entry.stream.poll_transmit(buf) {
                    self.refresh(&source);
                    return Some((source, len));
                }
                entry.queued_transmit = false;
            }
            self.ready_transmits.pop_front();
        }
    }
}
