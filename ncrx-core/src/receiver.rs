//! The multi-source front ([`Receiver`]): one [`Stream`] per source.
//!
//! Streams live in a slab; the key map is searched once per datagram (not at all when the
//! source is the same as the previous datagram's). Every source's next deadline sits in one
//! ordered set, so [`Receiver::poll_timeout`] is its first entry. A packet touches neither
//! that set nor the activity index unless its stream's deadline moved: the idle check of an
//! active source re-arms from its last activity when it comes due.

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
struct Source<S> {
    key: S,
    stream: Stream,
    last_active: Instant,
    /// This source's key in `by_activity` (its activity when last indexed: a packet does
    /// not touch the index, eviction re-indexes what it finds stale).
    indexed_active: Instant,
    /// When to check whether the source went quiet.
    idle_check: Instant,
    /// This source's entry in `timers`.
    deadline: Option<Instant>,
    /// Its held bytes as counted in `held_total` (and its key in `by_held` when that index
    /// is kept and this is non-zero).
    indexed_held: usize,
    queued_event: bool,
    queued_transmit: bool,
}

impl<S> Source<S> {
    /// When the source next needs [`Receiver::handle_timeout`]: its stream's deadline or its
    /// idle check, whichever comes first.
    fn next_deadline(&self) -> Instant {
        self.stream
            .poll_timeout()
            .map_or(self.idle_check, |d| d.min(self.idle_check))
    }
}

/// The receiver for many sources: one [`Stream`] per source, bounded in number and in bytes.
///
/// - Sources are keyed by the caller's type `S` (a [`SocketAddr`], IP and port, by default):
///   two targets of one machine on different ports are two streams.
/// - At most [`ReceiverConfig::max_sources`] are tracked. A source quiet for
///   [`ReceiverConfig::idle_timeout`] is flushed (its open records delivered or reported
///   lost) and evicted with [`Event::SourceEvicted`]. When the table is full, a new source
///   evicts the least recently active one if that one has been quiet for
///   [`ReceiverConfig::evict_when_full_after`]; otherwise its datagram is refused and counted.
/// - Each stream holds at most [`StreamConfig::max_held_bytes`](crate::StreamConfig::max_held_bytes)
///   of records, and all together at most [`ReceiverConfig::max_held_bytes_total`] (256 MiB
///   by default; past it the sources holding the most give up their oldest held bytes).
///   [`Receiver::memory_used`] and [`Receiver::memory_bound`] let a test or a fuzzer check
///   the bound.
#[derive(Debug, Clone)]
pub struct Receiver<S: Ord + Clone = SocketAddr> {
    config: ReceiverConfig,
    slab: Vec<Option<Source<S>>>,
    free: Vec<usize>,
    index: BTreeMap<S, usize>,
    /// The source of the previous datagram and its slab index.
    last: Option<(S, usize)>,
    by_activity: BTreeSet<(Instant, usize)>,
    timers: BTreeSet<(Instant, usize)>,
    /// Sources holding record bytes, by how many: the last one gives up bytes first when
    /// the total is over [`ReceiverConfig::max_held_bytes_total`].
    /// Kept only while `indexing`, so that a receiver far within its budget (the usual
    /// case) does no tree work per packet.
    by_held: BTreeSet<(usize, usize)>,
    /// `by_held` is kept: from when `held_total` passes half the budget until it falls
    /// below a quarter of it (rebuilt at the start, so each rebuild follows at least a
    /// quarter budget of new held bytes).
    indexing: bool,
    /// Record bytes held by all tracked sources.
    held_total: usize,
    ready_events: VecDeque<usize>,
    ready_transmits: VecDeque<usize>,
    /// Evicted streams whose last events are still to be polled.
    draining: VecDeque<(S, Stream)>,
    due: Vec<usize>,
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
            slab: Vec::new(),
            free: Vec::new(),
            index: BTreeMap::new(),
            last: None,
            by_activity: BTreeSet::new(),
            timers: BTreeSet::new(),
            by_held: BTreeSet::new(),
            indexing: false,
            held_total: 0,
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
        self.index.len()
    }

    fn get(&self, i: usize) -> Option<&Source<S>> {
        self.slab.get(i).and_then(Option::as_ref)
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Source<S>> {
        self.slab.get_mut(i).and_then(Option::as_mut)
    }

    /// One source's stream, if tracked.
    pub fn stream(&self, source: &S) -> Option<&Stream> {
        let i = *self.index.get(source)?;
        self.get(i).map(|s| &s.stream)
    }

    /// Every source tracked, with its stream, in no particular order (a source being
    /// evicted is not among them).
    ///
    /// ```
    /// use ncrx_core::{Receiver, ReceiverConfig};
    /// use netpoll_frame::Instant;
    /// let mut rx: Receiver<u32> = Receiver::new(ReceiverConfig::default());
    /// rx.handle_datagram(Instant::ZERO, &7, b"6,100,0,-;hello\n");
    /// rx.handle_datagram(Instant::ZERO, &7, b"6,101,0,-,ncfrag=50/10;x\n"); // offset past total
    /// let streams: Vec<_> = rx.streams().map(|(s, st)| (*s, st.stats().malformed)).collect();
    /// assert_eq!(streams, [(7, 1)]);
    /// ```
    pub fn streams(&self) -> impl Iterator<Item = (&S, &Stream)> {
        self.slab
            .iter()
            .flatten()
            .map(|source| (&source.key, &source.stream))
    }

    /// Counters (streams summed, evicted ones included).
    pub fn stats(&self) -> ReceiverStats {
        let mut stats = self.stats;
        for source in self.slab.iter().flatten() {
            stats.streams += source.stream.stats();
        }
        for (_, stream) in &self.draining {
            stats.streams += stream.stats();
        }
        stats
    }

    fn entry_size() -> usize {
        use core::mem::size_of;
        size_of::<Option<Source<S>>>()
            + size_of::<(S, usize)>()
            + 4 * size_of::<(Instant, usize)>()
            + 3 * size_of::<usize>()
            + 64
    }

    /// Heap bytes in use, approximately (streams, tables, queues).
    pub fn memory_used(&self) -> usize {
        self.slab
            .iter()
            .flatten()
            .map(|s| s.stream.memory_used())
            .sum::<usize>()
            + self.slab.capacity().max(self.index.len()) * Self::entry_size()
            + self
                .draining
                .iter()
                .map(|(_, s)| s.memory_used())
                .sum::<usize>()
    }

    /// The bound on [`Receiver::memory_used`] the configuration implies, when events and
    /// transmits are drained after each call (so at most one evicted stream drains at once).
    ///
    /// Each source's fixed part (its ring and what is sized by it, see
    /// [`Stream::memory_bound`]) plus what grows with the held bytes, for at most
    /// [`ReceiverConfig::max_held_bytes_total`] held over all sources (or each source's
    /// [`StreamConfig::max_held_bytes`](crate::StreamConfig::max_held_bytes), whichever is
    /// less).
    pub fn memory_bound(&self) -> usize {
        let sources = self.config.max_sources.max(1) + 1;
        let stream = &self.config.stream;
        let held = sources
            .saturating_mul(Stream::held_bound(stream.max_held_bytes))
            .min(Stream::held_bound(self.config.max_held_bytes_total));
        sources * (Stream::fixed_bound(stream) + 2 * Self::entry_size()) + held
    }

    /// When the oldest hole still open over all sources was found ([`Stream::oldest_hole`]);
    /// `None` without holes. It looks at every source: for a periodic report, not per
    /// datagram.
    pub fn oldest_hole(&self) -> Option<Instant> {
        self.slab
            .iter()
            .flatten()
            .filter_map(|source| source.stream.oldest_hole())
            .min()
    }

    /// Record bytes held by all streams: at most
    /// [`ReceiverConfig::max_held_bytes_total`] after every call.
    pub fn held_bytes(&self) -> usize {
        self.held_total
    }

    fn release_front_eviction(&mut self) {
        if self.evicted_taken {
            if let Some((_, stream)) = self.draining.pop_front() {
                self.stats.streams += stream.stats();
            }
            self.evicted_taken = false;
        }
    }

    fn lookup(&mut self, source: &S) -> Option<usize> {
        if let Some((key, i)) = &self.last {
            if key == source {
                return Some(*i);
            }
        }
        let i = *self.index.get(source)?;
        self.last = Some((source.clone(), i));
        Some(i)
    }

    /// The slot of `source`'s stream, created when new; `None` (counted as refused) when the
    /// table is full of sources too recent to evict.
    fn source_index(&mut self, source: &S, now: Instant) -> Option<usize> {
        if let Some(i) = self.lookup(source) {
            return Some(i);
        }
        if !self.make_room_for_source(now) {
            self.stats.refused += 1;
            return None;
        }
        Some(self.create(source, now))
    }

    /// Takes one UDP payload from `source`.
    pub fn handle_datagram(&mut self, now: Instant, source: &S, datagram: &[u8]) {
        self.now = self.now.max(now);
        let now = self.now;
        self.release_front_eviction();
        let Some(i) = self.source_index(source, now) else {
            return;
        };
        if let Some(entry) = self.get_mut(i) {
            entry.stream.handle_datagram(now, datagram);
            entry.last_active = now;
        }
        self.refresh(i);
        if self.held_total > self.config.max_held_bytes_total {
            self.shed();
        }
    }

    /// `source`'s port is closed: an ICMP port unreachable (or the error a send returned)
    /// for a response sent to it. From now on the receiver sends that source nothing,
    /// neither retransmission requests nor acks, until an `ncemg` record from it shows that
    /// it answers again; its holes are held at most
    /// [`unanswered_hole_timeout`](crate::StreamConfig::unanswered_hole_timeout). See
    /// [`Stream::handle_unreachable`]. A source not tracked is ignored (nothing was sent to
    /// it that this could be about).
    pub fn handle_unreachable(&mut self, now: Instant, source: &S) {
        self.now = self.now.max(now);
        let now = self.now;
        self.release_front_eviction();
        let Some(i) = self.lookup(source) else {
            return;
        };
        if let Some(entry) = self.get_mut(i) {
            entry.stream.handle_unreachable(now);
        }
        self.refresh(i);
    }

    /// [`Receiver::handle_datagram`] then [`Receiver::drain_events`], the events waiting
    /// before first: the same events in the same order. When no other source has events
    /// waiting, the record the source's stream expects next goes to `f` straight from
    /// `datagram` (no copy into the output buffer, no ready-queue entry): the cheapest way
    /// to receive in order.
    ///
    /// ```
    /// # use ncrx_core::{Event, Receiver, ReceiverConfig};
    /// # use netpoll_frame::Instant;
    /// let mut rx: Receiver = Receiver::new(ReceiverConfig::default());
    /// let source = "192.0.2.1:6665".parse().unwrap();
    /// let mut bodies = Vec::new();
    /// for datagram in [&b"6,52007,100,-;hello\n"[..], b"6,52009,102,-;later\n", b"6,52008,101,-;world\n"] {
    ///     rx.handle_datagram_and_drain(Instant::from_millis(1), &source, datagram, |_, event| {
    ///         if let Event::Record(r) = event {
    ///             bodies.push(r.body.to_vec());
    ///         }
    ///     });
    /// }
    /// assert_eq!(bodies, [&b"hello\n"[..], b"world\n", b"later\n"]);
    /// ```
    pub fn handle_datagram_and_drain(
        &mut self,
        now: Instant,
        source: &S,
        datagram: &[u8],
        mut f: impl FnMut(&S, Event<'_>),
    ) {
        self.drain_events(&mut f);
        self.now = self.now.max(now);
        let now = self.now;
        let Some(i) = self.source_index(source, now) else {
            return;
        };
        // An eviction to make room queued events that come first.
        let direct = self.draining.is_empty();
        let mut quiet = false;
        if let Some(entry) = self.get_mut(i) {
            if direct {
                let key = &entry.key;
                quiet = entry
                    .stream
                    .handle_and_drain(now, datagram, |event| f(key, event));
            } else {
                entry.stream.handle_datagram(now, datagram);
            }
            entry.last_active = now;
        }
        // An in-order record and nothing else: the timer, held bytes and ready flags stand.
        if quiet {
            #[cfg(debug_assertions)]
            self.assert_refreshed(i);
        } else {
            self.refresh(i);
        }
        if self.held_total > self.config.max_held_bytes_total {
            self.shed();
        }
        self.drain_events(f);
    }

    /// Starts or stops keeping `by_held` as `held_total` crosses half or a quarter of the
    /// budget.
    fn index_held(&mut self) {
        let budget = self.config.max_held_bytes_total;
        if !self.indexing && self.held_total > budget / 2 {
            self.indexing = true;
            for (i, entry) in self.slab.iter().enumerate() {
                if let Some(entry) = entry {
                    if entry.indexed_held > 0 {
                        self.by_held.insert((entry.indexed_held, i));
                    }
                }
            }
        } else if self.indexing && self.held_total < budget / 4 {
            self.indexing = false;
            self.by_held.clear();
        }
    }

    /// Brings the bytes held by all sources within [`ReceiverConfig::max_held_bytes_total`]:
    /// the source holding the most gives up its oldest held bytes, then the next one if
    /// that was not enough. Each source is asked once at most (it gives up what is needed
    /// or all it holds), so this ends.
    fn shed(&mut self) {
        let budget = self.config.max_held_bytes_total;
        for _ in 0..self.by_held.len() {
            if self.held_total <= budget {
                break;
            }
            let Some(&(_, i)) = self.by_held.last() else {
                break;
            };
            let need = self.held_total - budget;
            if let Some(entry) = self.get_mut(i) {
                entry.stream.shed(need);
            }
            self.refresh(i);
        }
    }

    fn create(&mut self, source: &S, now: Instant) -> usize {
        let entry = Source {
            key: source.clone(),
            stream: Stream::new(self.config.stream.clone()),
            last_active: now,
            indexed_active: now,
            idle_check: now + self.config.idle_timeout,
            deadline: None,
            indexed_held: 0,
            queued_event: false,
            queued_transmit: false,
        };
        let i = if let Some(i) = self.free.pop() {
            self.slab[i] = Some(entry);
            i
        } else {
            self.slab.push(Some(entry));
            self.slab.len() - 1
        };
        self.index.insert(source.clone(), i);
        self.by_activity.insert((now, i));
        self.last = Some((source.clone(), i));
        self.stats.sources_created += 1;
        i
    }

    /// Whether a new source may be added, evicting one if allowed.
    fn make_room_for_source(&mut self, now: Instant) -> bool {
        if self.index.len() < self.config.max_sources.max(1) {
            return true;
        }
        // The index may be stale: re-index what moved on, a bounded number of times.
        for _ in 0..16 {
            let Some(&(indexed, oldest)) = self.by_activity.first() else {
                return false;
            };
            let Some(entry) = self.slab.get_mut(oldest).and_then(Option::as_mut) else {
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
            self.evict(oldest, now);
            return true;
        }
        false
    }

    fn evict(&mut self, i: usize, now: Instant) {
        let Some(mut entry) = self.slab.get_mut(i).and_then(Option::take) else {
            return;
        };
        self.free.push(i);
        self.index.remove(&entry.key);
        if self.last.as_ref().is_some_and(|(_, j)| *j == i) {
            self.last = None;
        }
        self.by_activity.remove(&(entry.indexed_active, i));
        if let Some(deadline) = entry.deadline {
            self.timers.remove(&(deadline, i));
        }
        if entry.indexed_held > 0 {
            if self.indexing {
                self.by_held.remove(&(entry.indexed_held, i));
            }
            self.held_total -= entry.indexed_held;
        }
        // Stale entries of `i` in the ready queues are harmless: they are checked.
        entry.stream.flush(now);
        self.stats.sources_evicted += 1;
        self.draining.push_back((entry.key, entry.stream));
    }

    /// Puts a source's timer and ready flags in line with its stream.
    fn refresh(&mut self, i: usize) {
        let Some(entry) = self.slab.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let held = entry.stream.held_bytes();
        let held_changed = held != entry.indexed_held;
        if held_changed {
            if self.indexing {
                if entry.indexed_held > 0 {
                    self.by_held.remove(&(entry.indexed_held, i));
                }
                if held > 0 {
                    self.by_held.insert((held, i));
                }
            }
            self.held_total = self.held_total - entry.indexed_held + held;
            entry.indexed_held = held;
        }
        let deadline = Some(entry.next_deadline());
        if deadline != entry.deadline {
            if let Some(old) = entry.deadline {
                self.timers.remove(&(old, i));
            }
            if let Some(new) = deadline {
                self.timers.insert((new, i));
            }
            entry.deadline = deadline;
        }
        if !entry.queued_event && entry.stream.has_event() {
            entry.queued_event = true;
            self.ready_events.push_back(i);
        }
        if !entry.queued_transmit && entry.stream.has_transmit() {
            entry.queued_transmit = true;
            self.ready_transmits.push_back(i);
        }
        if held_changed {
            self.index_held();
        }
    }

    /// Checks that [`Receiver::refresh`] of source `i` would change nothing.
    #[cfg(debug_assertions)]
    fn assert_refreshed(&self, i: usize) {
        if let Some(entry) = self.get(i) {
            let stream = &entry.stream;
            debug_assert_eq!(entry.deadline, Some(entry.next_deadline()));
            debug_assert_eq!(entry.indexed_held, stream.held_bytes());
            debug_assert!(!stream.has_event());
            debug_assert!(entry.queued_transmit || !stream.has_transmit());
        }
    }

    /// Acts on the passage of time; early or repeated calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let now = self.now;
        self.release_front_eviction();
        let mut due = core::mem::take(&mut self.due);
        due.clear();
        for &(at, i) in &self.timers {
            if at > now {
                break;
            }
            due.push(i);
        }
        let idle_timeout = self.config.idle_timeout;
        for &i in &due {
            let Some(entry) = self.slab.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if entry.idle_check <= now {
                if entry.last_active + idle_timeout <= now {
                    self.evict(i, now);
                    continue;
                }
                entry.idle_check = entry.last_active + idle_timeout;
                if entry.indexed_active != entry.last_active {
                    self.by_activity.remove(&(entry.indexed_active, i));
                    entry.indexed_active = entry.last_active;
                    self.by_activity.insert((entry.last_active, i));
                }
            }
            entry.stream.handle_timeout(now);
            self.refresh(i);
        }
        self.due = due;
        if self.held_total > self.config.max_held_bytes_total {
            self.shed();
        }
    }

    /// The next deadline over all sources: the streams' own deadlines, exact, and each
    /// source's idle check, which wakes the caller once per
    /// [`idle_timeout`](ReceiverConfig::idle_timeout) for a source that stays active.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// The next event and the source it is about; it borrows the receiver until the next
    /// call.
    pub fn poll_event(&mut self) -> Option<(S, Event<'_>)> {
        if self.evicted_taken || !self.draining.is_empty() {
            self.release_front_eviction();
            if !self.draining.is_empty() {
                return self.poll_draining();
            }
        }
        let i = loop {
            let i = *self.ready_events.front()?;
            match self.slab.get_mut(i) {
                Some(Some(entry)) if entry.stream.has_event() => break i,
                Some(Some(entry)) => entry.queued_event = false,
                _ => {}
            }
            self.ready_events.pop_front();
        };
        let entry = self.slab.get_mut(i)?.as_mut()?;
        let event = entry.stream.poll_event()?;
        Some((entry.key.clone(), event))
    }

    /// Hands every waiting event to `f` with its source, in the order [`Receiver::poll_event`]
    /// would return them (evicted sources' last events and their [`Event::SourceEvicted`]
    /// first, then the sources with events, each one's events in order). Afterwards no event
    /// waits.
    ///
    /// The same as calling [`Receiver::poll_event`] until it returns `None`, but it walks
    /// the ready sources once and lends `f` the key instead of cloning it per event: the
    /// cheaper way to drain after each call.
    ///
    /// ```
    /// # use ncrx_core::{Event, Receiver, ReceiverConfig};
    /// # use netpoll_frame::Instant;
    /// let mut rx: Receiver = Receiver::new(ReceiverConfig::default());
    /// let source = "192.0.2.1:6665".parse().unwrap();
    /// rx.handle_datagram(Instant::from_millis(1), &source, b"6,52007,100,-;hello\n");
    /// rx.handle_datagram(Instant::from_millis(1), &source, b"6,52008,101,-;world\n");
    /// let mut seqs = Vec::new();
    /// rx.drain_events(|from, event| {
    ///     assert_eq!(*from, source);
    ///     if let Event::Record(r) = event {
    ///         seqs.push(r.fields.seq);
    ///     }
    /// });
    /// assert_eq!(seqs, [52007, 52008]);
    /// assert!(rx.poll_event().is_none());
    /// ```
    pub fn drain_events(&mut self, mut f: impl FnMut(&S, Event<'_>)) {
        if self.evicted_taken || !self.draining.is_empty() {
            self.release_front_eviction();
            while let Some((source, mut stream)) = self.draining.pop_front() {
                stream.drain_events(|event| f(&source, event));
                f(&source, Event::SourceEvicted);
                self.stats.streams += stream.stats();
            }
        }
        while let Some(&i) = self.ready_events.front() {
            if let Some(Some(entry)) = self.slab.get_mut(i) {
                let key = &entry.key;
                entry.stream.drain_events(|event| f(key, event));
                entry.queued_event = false;
            }
            self.ready_events.pop_front();
        }
    }

    /// The next event of the evicted stream at the front of `draining`, then its eviction.
    fn poll_draining(&mut self) -> Option<(S, Event<'_>)> {
        let (source, stream) = self.draining.front_mut()?;
        if stream.has_event() {
            return stream.poll_event().map(|event| (source.clone(), event));
        }
        self.evicted_taken = true;
        Some((source.clone(), Event::SourceEvicted))
    }

    /// Writes the next response packet into `buf`; returns its destination (the source)
    /// and length.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<(S, usize)> {
        loop {
            let i = *self.ready_transmits.front()?;
            if let Some(entry) = self.get_mut(i) {
                if let Some(len) = entry.stream.poll_transmit(buf) {
                    let key = entry.key.clone();
                    self.refresh(i);
                    return Some((key, len));
                }
                entry.queued_transmit = false;
            }
            self.ready_transmits.pop_front();
        }
    }
}
