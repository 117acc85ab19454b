//! One source's stream ([`Stream`]): the reorder window, holes, retransmission requests,
//! acks, timeouts, out-of-order records and restarts.
//!
//! ```text
//!   remembered (retired)        open window: at most slots - stride       not yet seen
//!  ───────────────────────┬───────────────────────────────────────────┬────────────────
//!   delivered / given up  │ tail                                 head │
//!                         │ [rec][ hole run ][rec][frag][ hole ][rec] │
//!  ───────────────────────┴───────────────────────────────────────────┴────────────────
//!   ring of up to `slots` entries indexed by seq % ring, tagged (epoch, seq);
//!   a bitmap of what was delivered over 8 × ring numbers below the head
//! ```
//!
//! The parts, one file each beside this one (as quinn-proto splits its connection): `ring`
//! (the record ring growing and shrinking), `runs` (runs of missing numbers and the bit
//! scans), `pool` (held whole datagrams), `delivered` (the delivered bitmap), `requests`
//! (request scheduling and response packets), `out_of_order` (records far from the window),
//! `answering` (senders that answer and those that do not), `timers` (the named deadlines)
//! and `stats`. This file keeps the stream itself: placing records, retiring them, restarts.

use alloc::boxed::Box;
use alloc::collections::{BinaryHeap, VecDeque};
use alloc::vec::Vec;
use core::cmp::Reverse;
use core::ops::Range;

use netconsole_proto::{
    Datagram, ExtRecord, FragmentedRecord, Header, MAX_RESPONSE, encode_response,
};
use netpoll_frame::Instant;

use crate::config::{OUT_OF_ORDER_MAX, StreamConfig};
use crate::event::{Event, Output, RecordMeta, Restart, RestartReason};

mod answering;
mod delivered;
#[cfg(test)]
mod differential;
mod out_of_order;
mod pool;
mod requests;
mod ring;
mod runs;
mod stats;
mod timers;

pub use answering::Answering;
use delivered::DELIVERED_SPAN;
use out_of_order::{OutOfOrder, Release};
use pool::{Held, HeldPool};
use requests::RESPONSE_SEQS;
use ring::{QUIET_SHRINK, RING_MIN};
use runs::{Run, Runs};
pub use stats::StreamStats;

/// A fragmented record being put together. `bytes` mirrors the chunks the reassembly
/// accepted, so that an incomplete record can be handed out (only its received ranges are
/// readable): netconsole-proto's reassembly buffer does not expose its partial contents.
#[derive(Debug, Clone)]
struct Partial {
    record: FragmentedRecord,
    meta: RecordMeta,
    /// The header of the fragment at offset 0 once seen (else of the first one): with the
    /// whole body after it, it parses as one datagram.
    header: Box<[u8]>,
    bytes: Box<[u8]>,
}

impl Partial {
    /// Bytes held: the header, the reassembly buffer and its mirror.
    fn cost(&self) -> usize {
        self.header.len() + 2 * self.bytes.len()
    }

    fn mirror(&mut self, record: &ExtRecord<'_>, datagram: &[u8]) {
        let offset = record.header.ncfrag.map_or(0, |f| f.offset);
        if offset == 0 {
            let header = &datagram[..datagram.len() - record.body.len()];
            if header.len() == self.header.len() {
                self.header.copy_from_slice(header);
            } else {
                self.header = Box::from(header);
            }
        }
        if let Some(target) = self.bytes.get_mut(offset..offset + record.body.len()) {
            target.copy_from_slice(record.body);
        }
    }
}

/// A fragmented record put together.
#[derive(Debug, Clone)]
struct Assembled {
    meta: RecordMeta,
    header: Box<[u8]>,
    body: Box<[u8]>,
}

#[derive(Debug, Clone, Default)]
enum SlotState {
    #[default]
    Free,
    /// A whole datagram waiting for the tail: its entry in the pool.
    Whole(usize),
    /// A fragmented record with bytes missing.
    Partial(Box<Partial>),
    /// A fragmented record put together: its fields, header and body.
    Assembled(Box<Assembled>),
    /// Retired: delivered (in order or late).
    Delivered,
    /// Retired: given up on while incomplete.
    GivenUpPartial,
}

/// A ring entry: what arrived for `seq` (a whole datagram, or a fragmented record being put
/// together) and, once retired, what became of it (delivered with its `ts_usec`, or given
/// up). Advancing the head writes nothing: an entry counts only while its tag, `(epoch,
/// seq)`, is the number looked up ([`Stream::tagged`]).
#[derive(Debug, Clone, Default)]
struct Slot {
    epoch: u64,
    seq: u64,
    ts_usec: u64,
    state: SlotState,
}

impl Slot {
    fn is_complete(&self) -> bool {
        matches!(self.state, SlotState::Whole(_) | SlotState::Assembled(_))
    }
}

/// Longest UDP payload: a call releases at most the held bytes and one datagram.
const MAX_DATAGRAM: usize = 65_536;

/// The receiver state machine of one source: datagrams in; records in sequence order,
/// losses, restarts, retransmission requests and acks out.
///
/// Records leave from the tail of the window, in order: complete ones at once, a hole when
/// its hold time passes ([`Event::Lost`], or [`Event::Incomplete`] for a fragmented record
/// with bytes missing), or early when the window ([`slots`](StreamConfig::slots)) or the
/// byte budget ([`max_held_bytes`](StreamConfig::max_held_bytes)) overflows. The hold time
/// is [`message_timeout`](StreamConfig::message_timeout), shorter while the sender has not
/// shown that it answers requests (see [`StreamConfig`]).
///
/// ```
/// use ncrx_core::{Event, Stream, StreamConfig};
/// use netpoll_frame::Instant;
///
/// let mut stream = Stream::new(StreamConfig::default());
/// let t = Instant::from_millis(5);
/// stream.handle_datagram(t, b"6,52010,100,-;first\n");
/// stream.handle_datagram(t, b"6,52012,300,-;third\n");
/// let Some(Event::Record(r)) = stream.poll_event() else { panic!() };
/// assert_eq!((r.fields.seq, r.body), (52010, &b"first\n"[..]));
/// assert!(stream.poll_event().is_none()); // 52011 is missing: 52012 waits
/// stream.handle_datagram(t, b"6,52011,200,-;second\n");
/// let seqs: Vec<u64> = core::iter::from_fn(|| match stream.poll_event()? {
///     Event::Record(r) => Some(r.fields.seq),
///     _ => None,
/// })
/// .collect();
/// assert_eq!(seqs, [52011, 52012]);
/// ```
///
/// # Late records, out-of-order records, restarts
///
/// - A record behind the tail: a duplicate of a delivered one is dropped and counted; one
///   that was given up on is delivered once as [`Event::Late`].
/// - A remembered sequence number with another `ts_usec`, a record whose `ts_usec`
///   contradicts the sequence order by more than
///   [`restart_ts_back`](StreamConfig::restart_ts_back), or a changed release restarts the
///   stream at once ([`Event::Restart`]); so does one before anything remembered whose
///   `ts_usec` is also far back.
/// - A record just before the one the stream started with (its `ts_usec` within
///   `restart_ts_back` of that one's) is delivered late at once.
/// - Other records before the remembered range or far ahead of the window are buffered as
///   out of order (libncrx's rule: 19 of the last 32 out of order restart the stream from
///   the lowest). A buffered record not used so is released after
///   [`out_of_order_timeout`](StreamConfig::out_of_order_timeout), or when more than 32
///   wait, as if it arrived then. One at or ahead of the window is followed there only if
///   it and the buffered records near it outnumber what the stream took meanwhile in the
///   threshold's ratio (a silent stream is followed, one that keeps going is not abandoned
///   for far records beside it): then the numbers before it are given up on
///   ([`Event::Lost`], `message_timeout` after the record arrived) and it comes out in
///   order; else it is dropped and counted ([`StreamStats::out_of_order_dropped`]). One
///   behind the tail comes out as [`Event::Late`] once, if the stream still remembers what
///   it delivered there (else it is dropped and counted). Two different records buffered
///   under one number: the first stands, the other is counted as a conflict. `ncemg`
///   records never count as out of order.
/// - No number is delivered twice in one epoch.
///
/// # What cannot be known
///
/// What cannot be known is not invented: records before the first one a stream places
/// (unless it is evidently a fresh boot's, see
/// [`ask_for_boot_head`](StreamConfig::ask_for_boot_head)), or after the last, whose every
/// copy was lost, leave no trace (no receiver can tell they existed).
#[derive(Debug, Clone)]
pub struct Stream {
    config: StreamConfig,
    slots: Vec<Slot>,
    started: bool,
    epoch: u64,
    epoch_start: u64,
    /// The lowest number of the epoch's window: `epoch_start`, or below it when the epoch
    /// began with a fresh boot's record and the numbers before it are holes
    /// ([`StreamConfig::ask_for_boot_head`]).
    epoch_origin: u64,
    epoch_release: Option<Box<[u8]>>,
    /// `ts_usec` of the record the epoch started with: no later record of the same boot
    /// can be much earlier.
    epoch_first_ts: u64,
    /// First sequence number not retired.
    tail: u64,
    /// Next sequence number expected (one past the highest placed).
    head: u64,
    newest_ts: u64,
    runs: Runs,
    /// The whole records held in the window.
    pool: HeldPool,
    /// Interval requests: `(when, start, end)` of ranges that had holes, in time order (every
    /// entry is pushed at `now + retransmit_interval`, so the queue stays sorted).
    requests_due: VecDeque<(Instant, u64, u64)>,
    /// Stride requests: `(head at which due, start, end, distance)` of missing ranges.
    stride_due: BinaryHeap<Reverse<(u64, u64, u64, u64)>>,
    /// The newest stride request, still growing: the holes the head leaves behind within a
    /// quarter stride share one entry.
    stride_newest: Option<(u64, u64, u64, u64)>,
    requests: VecDeque<Range<u64>>,
    /// The sequence numbers of the response being written.
    response_seqs: Vec<u64>,
    ack_pending_since: Option<Instant>,
    ack_due: bool,
    oos: VecDeque<OutOfOrder>,
    oos_history: u32,
    /// Records that came to [`Stream::out_of_order`] (buffered, or dropped there as a
    /// duplicate or a conflict of a buffered one), ever.
    far_arrivals: u64,
    held_bytes: usize,
    /// [`StreamConfig::restart_ts_back`] in microseconds.
    ts_back: u64,
    /// One bit per sequence number over `DELIVERED_SPAN * slots` numbers below the head:
    /// delivered (in order or late) in this epoch. Tells a duplicate from a late record
    /// further back than the ring remembers.
    delivered: Vec<u64>,
    now: Instant,
    out: Output,
    stats: StreamStats,
    /// What the stream knows of the sender's answers.
    answering: Answering,
    /// How long a hole is held now: `message_timeout`, or `unanswered_hole_timeout` while
    /// the sender has not answered.
    hold: core::time::Duration,
    /// How long after a hole is found it is first asked for (and asked again).
    request_delay: core::time::Duration,
    /// While the sender has not answered: no response carrying requests before this.
    request_next: Instant,
    /// While the sender has not answered: the spacing of responses carrying requests.
    request_spacing: core::time::Duration,
    /// A hole was given up on while the sender had not answered: the spacing doubles.
    gave_up_unanswered: bool,
    /// Starts of the runs gathered into the response being written (only while the sender
    /// is not known to answer).
    probed: Vec<u64>,
    /// The ring is larger than [`RING_MIN`]: it shrinks back when the delivered head
    /// reaches this (`u64::MAX` at the smallest size).
    shrink_at: u64,
    /// When a hole last opened (for the quiet shrink).
    disorder_at: Instant,
    /// Every number of this epoch from here to the tail was delivered (none given up on):
    /// what the delivered bitmap would say beyond its reach once the ring shrank.
    delivered_since: u64,
    /// The fast path's switch and count, for the differential test.
    #[cfg(test)]
    fast: differential::FastPath,
}

/// The ring position of `seq`: `seq % len`, a mask, every ring (records, runs, delivered
/// bits) being allocated at a power of two.
#[inline]
fn slot_of(len: usize, seq: u64) -> usize {
    debug_assert!(len.is_power_of_two(), "ring of {len}");
    // At most `len - 1`, so it fits.
    (seq & (len as u64).wrapping_sub(1)) as usize
}

/// The ring length for a window of `slots`: the power of two at or above it (a few more
/// entries than the window needs, so that a position is a mask and not a division).
fn ring_len(slots: usize) -> usize {
    slots.next_power_of_two()
}

/// A shorter borrow of an optional event sink, leaving it usable afterwards.
fn reborrow<'a>(
    direct: &'a mut Option<&mut dyn FnMut(Event<'_>)>,
) -> Option<&'a mut dyn FnMut(Event<'_>)> {
    match direct {
        Some(f) => Some(&mut **f),
        None => None,
    }
}

impl Stream {
    /// A stream that has seen nothing yet.
    pub fn new(config: StreamConfig) -> Self {
        let config = config.normalized();
        let ts_back = u64::try_from(config.restart_ts_back.as_micros()).unwrap_or(u64::MAX);
        let ring = ring_len(config.slots).min(RING_MIN);
        let delivered = alloc::vec![0; (ring * DELIVERED_SPAN).div_ceil(64)];
        let mut slots = Vec::new();
        slots.resize_with(ring, Slot::default);
        let mut stream = Stream {
            config,
            slots,
            started: false,
            epoch: 0,
            epoch_start: 0,
            epoch_origin: 0,
            epoch_release: None,
            epoch_first_ts: 0,
            tail: 0,
            head: 0,
            newest_ts: 0,
            runs: Runs::new(ring),
            pool: HeldPool::default(),
            requests_due: VecDeque::new(),
            stride_due: BinaryHeap::new(),
            stride_newest: None,
            requests: VecDeque::new(),
            response_seqs: Vec::new(),
            ack_pending_since: None,
            ack_due: false,
            oos: VecDeque::new(),
            oos_history: 0,
            far_arrivals: 0,
            held_bytes: 0,
            ts_back,
            delivered,
            now: Instant::ZERO,
            out: Output::default(),
            stats: StreamStats::default(),
            answering: Answering::Unknown,
            hold: core::time::Duration::ZERO,
            request_delay: core::time::Duration::ZERO,
            request_next: Instant::ZERO,
            request_spacing: core::time::Duration::ZERO,
            gave_up_unanswered: false,
            probed: Vec::new(),
            shrink_at: u64::MAX,
            disorder_at: Instant::ZERO,
            delivered_since: 0,
            #[cfg(test)]
            fast: differential::FastPath::default(),
        };
        stream.set_answering(Answering::Unknown);
        stream
    }

    /// The configuration in use (normalized).
    pub fn config(&self) -> &StreamConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// The next sequence number to retire and the next one expected: `[tail, head)` is open.
    pub fn window(&self) -> Range<u64> {
        self.tail..self.head
    }

    /// When the receiver learned of the oldest hole still open (the first missing run of
    /// the window): what a daemon shows as the age of the oldest hole. `None` without holes.
    pub fn oldest_hole(&self) -> Option<Instant> {
        self.runs
            .first(self.tail, self.head)
            .map(|(_, run)| run.learned_at)
    }

    /// Record bytes held, with their per-record bookkeeping (window, reassembly,
    /// out-of-order buffer); never above
    /// [`StreamConfig::max_held_bytes`].
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Heap bytes in use, approximately: ring, held records, runs and timers, queues and the
    /// output buffer. At most [`Stream::memory_bound`] when events and transmits are drained
    /// after each call.
    pub fn memory_used(&self) -> usize {
        use core::mem::size_of;
        self.slots.capacity() * size_of::<Slot>()
            + self.held_bytes
            + self.pool.memory_used()
            + self.delivered.capacity() * 8
            + self.runs.memory_used()
            + self.requests_due.capacity() * size_of::<(Instant, u64, u64)>()
            + self.requests.capacity() * size_of::<Range<u64>>()
            + self.response_seqs.capacity() * size_of::<u64>()
            + self.probed.capacity() * size_of::<u64>()
            + self.stride_due.capacity() * size_of::<(u64, u64, u64, u64)>()
            + self.oos.capacity() * size_of::<OutOfOrder>()
            + self.epoch_release.as_ref().map_or(0, |r| r.len())
            + self.out.memory_used()
    }

    /// The bound on [`Stream::memory_used`] this configuration implies (events drained
    /// after each call; one call releases at most the held bytes plus one datagram).
    pub fn memory_bound(&self) -> usize {
        Self::memory_bound_for(&self.config)
    }

    /// [`Stream::memory_bound`] for a configuration.
    pub(crate) fn memory_bound_for(config: &StreamConfig) -> usize {
        let config = config.clone().normalized();
        Self::fixed_bound(&config) + Self::held_bound(config.max_held_bytes)
    }

    /// The part of [`Stream::memory_bound_for`] that does not grow with the held bytes: the
    /// ring and what is sized by it, and the output buffer kept between drains.
    pub(crate) fn fixed_bound(config: &StreamConfig) -> usize {
        use core::mem::size_of;
        let config = config.clone().normalized();
        let slots = ring_len(config.slots);
        let per_slot = size_of::<Slot>()
            + size_of::<(u64, Run)>()
            + 2 * size_of::<(Instant, u64, u64)>()
            + 2 * size_of::<Range<u64>>()
            + 4 * size_of::<(u64, u64, u64, u64)>();
        // Output: events of at most `slots + OUT_OF_ORDER_MAX + 4`, doubled for vector growth.
        let output_events = 2 * (slots + OUT_OF_ORDER_MAX + 4) * 96;
        slots * per_slot
            + (slots * DELIVERED_SPAN).div_ceil(64) * 8
            + HeldPool::memory_bound(slots.min(config.max_held_bytes / size_of::<Held>() + 1))
            + (OUT_OF_ORDER_MAX + 1) * size_of::<OutOfOrder>()
            + output_events
            + crate::event::KEEP_BYTES
            + MAX_DATAGRAM
            // The response being written and the runs it asks for (`probed`).
            + 3 * RESPONSE_SEQS * size_of::<u64>()
    }

    /// The part of [`Stream::memory_bound_for`] that grows with `held` bytes held: the bytes,
    /// and the output buffer that holds them (and one datagram) once retired until polled,
    /// doubled for vector growth.
    pub(crate) fn held_bound(held: usize) -> usize {
        held.saturating_add(held.saturating_add(2 * MAX_DATAGRAM).saturating_mul(2))
    }

    /// Gives up the oldest held bytes (from the tail: complete records delivered, holes
    /// reported [`Event::Lost`], incomplete records [`Event::Incomplete`]; then buffered
    /// out-of-order records) until at least `bytes` are freed or nothing is held. For the
    /// receiver's budget over all sources.
    pub(crate) fn shed(&mut self, bytes: usize) {
        let target = self.held_bytes.saturating_sub(bytes);
        self.stats.shed += 1;
        while self.held_bytes > target {
            if self.tail < self.head {
                let point = self.next_retire_point(self.head);
                self.force_retire_to(point);
            } else if !self.oos.is_empty() {
                self.release_oldest_oos(Release::Shed);
            } else {
                break;
            }
        }
        self.retire();
    }

    fn advance_time(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
        self.out.release();
    }

    /// Takes one UDP payload from this source (one longer than `u32::MAX` bytes, which no
    /// network delivers, is counted malformed).
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        self.handle(now, datagram, None);
    }

    /// [`Stream::handle_datagram`] then [`Stream::drain_events`], the events waiting before
    /// first: the same events in the same order. The record the stream expects next (with
    /// nothing open) goes to `f` straight from `datagram`, not through the output buffer.
    pub fn handle_datagram_and_drain(
        &mut self,
        now: Instant,
        datagram: &[u8],
        f: impl FnMut(Event<'_>),
    ) {
        self.handle_and_drain(now, datagram, f);
    }

    /// [`Stream::handle_datagram_and_drain`]; true when it only delivered the record the
    /// stream expected next and changed nothing else the front watches: held bytes,
    /// [`Stream::poll_timeout`], [`Stream::has_transmit`] (and no event waits after it).
    #[inline]
    pub(crate) fn handle_and_drain(
        &mut self,
        now: Instant,
        datagram: &[u8],
        mut f: impl FnMut(Event<'_>),
    ) -> bool {
        self.out.drain(&mut f);
        let quiet = self.handle(now, datagram, Some(&mut f));
        self.out.drain(f);
        quiet
    }

    /// With `direct`, nothing waits in the output buffer: an in-order record may go to it.
    /// True when the in-order fast path took the datagram and changed neither the deadline
    /// (no interval request due, the ack timer off or already running) nor the held bytes
    /// or the transmit queue (the fast path never does).
    #[inline]
    fn handle(
        &mut self,
        now: Instant,
        datagram: &[u8],
        mut direct: Option<&mut dyn FnMut(Event<'_>)>,
    ) -> bool {
        self.advance_time(now);
        if u32::try_from(datagram.len()).is_err() {
            // Never a UDP payload (at most 64 KiB); lengths held are kept within `u32`.
            self.stats.malformed += 1;
            return false;
        }
        // Extended records first, without the classification's layers: a response (`ncrx`)
        // is never taken for a record, whatever follows its prefix.
        if !datagram.starts_with(b"ncrx") {
            if let Ok((header, body)) = Header::parse(datagram) {
                let timer_stays = self.requests_due.is_empty()
                    && (self.config.ack_interval.is_none() || self.ack_pending_since.is_some());
                if self.deliver_next(&header, body.len(), datagram, reborrow(&mut direct)) {
                    return timer_stays;
                }
                self.on_record(&ExtRecord { header, body }, datagram);
                self.retire_into(direct);
                self.shrink_if_due();
                return false;
            }
        }
        match Datagram::parse(datagram) {
            Ok(Datagram::Extended(record)) => self.on_record(&record, datagram),
            Ok(Datagram::Plain(text)) => {
                self.stats.plain += 1;
                self.out.plain(text);
            }
            Ok(Datagram::Response(_)) => self.stats.responses_ignored += 1,
            Ok(_) | Err(_) => self.stats.malformed += 1,
        }
        self.retire();
        self.shrink_if_due();
        false
    }

    /// Once the stream has been in order up to the shrink mark with nothing open, the larger
    /// ring goes back ([`Stream::shrink_quiet`]), whichever way the records came: the fast
    /// path checks the mark after each record it delivers, the window after each datagram.
    #[inline]
    fn shrink_if_due(&mut self) {
        if self.tail == self.head && self.head > self.shrink_at {
            self.shrink_quiet();
        }
    }

    /// Acts on the passage of time; early or repeated calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance_time(now);
        let now = self.now;
        // Requests due within a quarter interval go along with a due one: one response
        // instead of one per hole. (A quarter of the delay each is re-armed with, so that
        // one re-armed is never taken again in this call.)
        let along = now + self.request_delay / 4;
        let mut horizon = now;
        while let Some(&(at, start, end)) = self.requests_due.front() {
            if at > horizon {
                break;
            }
            horizon = along;
            self.requests_due.pop_front();
            // Until the tail passes the range, ask again (what arrived meanwhile is left out
            // of the response).
            let start = start.max(self.tail);
            if start < end {
                self.request(start..end);
                self.schedule_request(start, end);
            }
        }
        while let Some(front) = self.oos.front() {
            if front.at + self.config.out_of_order_timeout > now {
                break;
            }
            self.release_oldest_oos(Release::Judge);
        }
        if let (Some(since), Some(interval)) = (self.ack_pending_since, self.config.ack_interval) {
            if since + interval <= now {
                self.ack_due = true;
            }
        }
        self.retire();
        if self.shrink_at != u64::MAX && self.disorder_at + QUIET_SHRINK <= now {
            self.shrink_quiet();
        }
    }

    /// The next event; it borrows the stream until the next call.
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        self.out.poll()
    }

    /// Hands every waiting event to `f`, in order; afterwards none waits. The same as
    /// calling [`Stream::poll_event`] until it returns `None`, in one pass over the events.
    #[inline]
    pub fn drain_events(&mut self, f: impl FnMut(Event<'_>)) {
        self.out.drain(f);
    }

    /// Whether an event waits.
    pub(crate) fn has_event(&self) -> bool {
        self.out.has_event()
    }

    /// Retires everything open now: complete records are delivered, the rest reported lost
    /// or incomplete; buffered out-of-order records are released (placed and retired at
    /// once when at or ahead of the window, late behind it).
    pub fn flush(&mut self, now: Instant) {
        self.advance_time(now);
        self.force_retire_to(self.head);
        while !self.oos.is_empty() {
            self.release_oldest_oos(Release::Place);
            self.force_retire_to(self.head);
        }
        self.requests.clear();
    }

    /// The in-order fast path: the record the stream expects next, with nothing open and
    /// nothing to decide (no restart sign, not a fragment, not an emergency). It goes from
    /// the datagram to the output buffer, one copy, touching no map or timer; exactly what
    /// [`Stream::on_record`] would do with it. False (nothing done) otherwise. With `direct`
    /// (nothing waiting in the output buffer), the record goes to it instead, with no copy.
    #[inline]
    fn deliver_next(
        &mut self,
        header: &Header<'_>,
        body_len: usize,
        datagram: &[u8],
        direct: Option<&mut dyn FnMut(Event<'_>)>,
    ) -> bool {
        let seq = header.fields.seq;
        let release_differs = match (header.release, &self.epoch_release) {
            (Some(release), Some(current)) => release != &current[..],
            _ => false,
        };
        #[cfg(test)]
        if self.fast.off {
            return false;
        }
        if !self.started
            || seq != self.head
            || self.tail != self.head
            || seq == u64::MAX
            || header.ncemg
            || release_differs
            || header.ncfrag.is_some()
            || header.fields.ts_usec.saturating_add(self.ts_back)
                < self.newest_ts.max(self.epoch_first_ts)
        {
            return false;
        }
        #[cfg(test)]
        {
            self.fast.taken += 1;
        }
        self.stats.datagrams += 1;
        self.oos_history <<= 1;
        self.newest_ts = self.newest_ts.max(header.fields.ts_usec);
        self.head = seq + 1;
        let meta = RecordMeta::of(header);
        let header_len = datagram.len() - body_len;
        match direct {
            Some(f) => f(Event::Record(meta.view(datagram, header_len))),
            None => self.out.record(meta, datagram, header_len, false),
        }
        // Its slot says what the window's would after the record was placed and retired.
        let epoch = self.epoch;
        let slot = self.slot_mut(seq);
        slot.epoch = epoch;
        slot.seq = seq;
        slot.ts_usec = header.fields.ts_usec;
        slot.state = SlotState::Delivered;
        self.delivered_in_order(seq);
        if !self.requests_due.is_empty() {
            self.retire();
        }
        // In order for as many numbers as the larger ring holds?
        self.shrink_if_due();
        true
    }

    fn on_record(&mut self, record: &ExtRecord<'_>, datagram: &[u8]) {
        let header = &record.header;
        let seq = header.fields.seq;
        if seq == u64::MAX {
            // No record can follow it: refused rather than special-cased everywhere.
            self.stats.malformed += 1;
            return;
        }
        self.stats.datagrams += 1;
        self.oos_history <<= 1;
        if header.ncemg {
            self.stats.emergency += 1;
            // Only a reliable sender marks records so: it answers (again).
            self.learned_answers();
            self.ack_due = true;
        }
        if !self.started {
            self.started = true;
            self.begin_epoch(seq, header.release, header.fields.ts_usec);
        }
        if let (Some(release), Some(current)) = (header.release, &self.epoch_release) {
            if release != &current[..] {
                self.restart(RestartReason::Release, record, datagram);
                return;
            }
        }
        let slots = self.config.slots as u64;
        let back = self.ts_back_usec();
        if seq >= self.epoch_start
            && header.fields.ts_usec.saturating_add(back) < self.epoch_first_ts
        {
            // At or after the epoch's first record, yet far earlier in time: another boot.
            self.restart(RestartReason::Timestamp, record, datagram);
        } else if seq < self.epoch_start
            && seq >= self.epoch_origin
            && header.fields.ts_usec > self.epoch_first_ts.saturating_add(back)
        {
            // Before the epoch's first record (at a fresh boot's head), yet far later in
            // time: another boot.
            self.restart(RestartReason::Timestamp, record, datagram);
        } else if seq >= self.head {
            if header.fields.ts_usec.saturating_add(back) < self.newest_ts {
                // Later in sequence yet far earlier in time: another boot.
                self.restart(RestartReason::Timestamp, record, datagram);
            } else if seq - self.head >= slots && !header.ncemg {
                self.out_of_order(record, datagram);
            } else {
                self.place_ahead(record, datagram);
            }
        } else if seq >= self.tail {
            self.place_in_window(record, datagram);
        } else if seq >= self.epoch_start && self.remembers(seq) {
            self.behind_tail(record, datagram);
        } else if seq >= self.epoch_origin && self.head - seq <= slots && self.tagged(seq) {
            // At a fresh boot's head, retired with something received: a duplicate, or
            // another boot's record where the ring remembers another `ts_usec`.
            self.behind_tail(record, datagram);
        } else if seq < self.epoch_start
            && self.epoch_start - seq <= slots
            && self.remembers(seq)
            && header.fields.ts_usec.abs_diff(self.epoch_first_ts) <= back
        {
            // Sent just before the record the stream started with, overtaken on the way.
            self.before_start(record, datagram);
        } else if header.ncemg {
            self.stats.stale_emergency += 1;
        } else if header.fields.ts_usec.saturating_add(self.ts_back_usec()) < self.newest_ts {
            self.restart(RestartReason::FarBack, record, datagram);
        } else {
            self.out_of_order(record, datagram);
        }
    }

    fn ts_back_usec(&self) -> u64 {
        self.ts_back
    }

    /// Starts an epoch with the record `(seq, ts_usec)`. When it is evidently from a fresh
    /// boot, its number below [`crate::BOOT_HEAD`] ([`StreamConfig::ask_for_boot_head`]), the
    /// window starts at 0, so that the numbers before it are holes.
    fn begin_epoch(&mut self, seq: u64, release: Option<&[u8]>, ts_usec: u64) {
        let fresh = self.config.ask_for_boot_head
            && seq < crate::config::BOOT_HEAD.min(self.config.max_open());
        let origin = if fresh { 0 } else { seq };
        self.epoch_start = seq;
        self.epoch_origin = origin;
        self.delivered_since = origin;
        self.epoch_first_ts = ts_usec;
        self.tail = origin;
        self.head = origin;
        self.epoch_release = release.map(Box::from);
        self.delivered.fill(0);
        self.newest_ts = 0;
        self.oos_history = 0;
        self.ack_pending_since = None;
        self.ack_due = false;
        self.requests.clear();
        self.stride_due.clear();
        self.stride_newest = None;
    }

    fn restart(&mut self, reason: RestartReason, record: &ExtRecord<'_>, datagram: &[u8]) {
        self.force_retire_to(self.head);
        let previous_next_seq = self.head;
        let ncemg_ack = self.ack_due && record.header.ncemg;
        // For the out-of-order rule, the new epoch starts at the lowest buffered record.
        let mut buffered = Vec::new();
        let (mut start, mut first_ts) = (record.header.fields.seq, record.header.fields.ts_usec);
        if reason == RestartReason::OutOfOrder {
            buffered.extend(self.oos.drain(..));
            for entry in &buffered {
                self.held_bytes -= entry.datagram.len();
                if entry.seq < start {
                    (start, first_ts) = (entry.seq, entry.ts_usec);
                }
            }
        }
        self.epoch += 1;
        self.stats.restarts += 1;
        self.begin_epoch(start, record.header.release, first_ts);
        self.ack_due = ncemg_ack;
        self.out.restart(Restart {
            reason,
            epoch: self.epoch,
            previous_next_seq,
            seq: self.epoch_origin,
        });
        buffered.sort_by_key(|entry| entry.seq);
        let mut placed_trigger = false;
        for entry in &buffered {
            if !placed_trigger && entry.seq > record.header.fields.seq {
                self.place_again(record, datagram);
                placed_trigger = true;
            }
            if let Ok(Datagram::Extended(old)) = Datagram::parse(&entry.datagram) {
                self.place_again(&old, &entry.datagram);
            }
        }
        if !placed_trigger {
            self.place_again(record, datagram);
        }
    }

    /// Places a record in the new epoch (the one that restarted it, or one buffered before):
    /// ahead of the window however far (what lies between is given up on as the window
    /// moves), in the window, or behind it late once. Delivering one far ahead as late would
    /// let it come again in order.
    fn place_again(&mut self, record: &ExtRecord<'_>, datagram: &[u8]) {
        let seq = record.header.fields.seq;
        if seq >= self.head {
            self.place_ahead(record, datagram);
        } else if seq >= self.tail {
            self.place_in_window(record, datagram);
        } else {
            self.late_once(record, datagram);
        }
    }

    /// A record behind the tail, delivered late at most once, without restarting the stream
    /// or storing anything: a number this epoch delivered (with this `ts_usec`) is a
    /// duplicate, one the ring remembers with another `ts_usec` a conflict, and one further
    /// back than the delivered bitmap reaches is dropped (it may have come out already).
    fn late_once(&mut self, record: &ExtRecord<'_>, datagram: &[u8]) {
        let (seq, ts_usec) = (record.header.fields.seq, record.header.fields.ts_usec);
        if self.delivered_already(seq, ts_usec) {
            self.stats.duplicates += 1;
            return;
        }
        // The bitmap was cleared when the epoch began and as the head passed each number:
        // within its reach, a clear bit means "not delivered in this epoch".
        let remembered = self.remembers(seq);
        if !remembered {
            self.stats.forgotten += 1;
            return;
        }
        let in_ring = self.head - seq <= self.ring_span();
        if in_ring && self.tagged(seq) {
            let slot = self.slot(seq);
            if slot.ts_usec != ts_usec {
                self.stats.conflicts += 1;
                return;
            }
            if matches!(slot.state, SlotState::Delivered) {
                self.stats.duplicates += 1;
                return;
            }
        } else if self.was_delivered(seq) {
            self.stats.duplicates += 1;
            return;
        }
        self.deliver_late_once(record, datagram, in_ring);
    }

    /// Whether this epoch delivered the record `(seq, ts_usec)` (as far as it remembers).
    fn delivered_already(&self, seq: u64, ts_usec: u64) -> bool {
        if seq >= self.tail || seq < self.epoch_origin || !self.remembers(seq) {
            return false;
        }
        if self.head - seq <= self.ring_span() && self.tagged(seq) {
            let slot = self.slot(seq);
            return slot.ts_usec == ts_usec && matches!(slot.state, SlotState::Delivered);
        }
        self.was_delivered(seq)
            && ts_usec.saturating_add(self.ts_back_usec()) >= self.epoch_first_ts
    }

    /// Delivers a record outside the window as late (fragments cannot be put together
    /// there: they are counted and dropped).
    fn deliver_late(&mut self, record: &ExtRecord<'_>, datagram: &[u8]) {
        if record.is_fragment() {
            self.stats.late_fragments += 1;
            return;
        }
        let header_len = datagram.len() - record.body.len();
        self.out
            .record(RecordMeta::of(&record.header), datagram, header_len, true);
        self.stats.late += 1;
    }

    /// Delivers a whole record late and remembers it as delivered, in the bitmap and, when the
    /// ring still covers its number, in its slot; a fragment is counted and dropped.
    fn deliver_late_once(&mut self, record: &ExtRecord<'_>, datagram: &[u8], in_ring: bool) {
        if record.is_fragment() {
            self.stats.late_fragments += 1;
            return;
        }
        let (seq, ts_usec) = (record.header.fields.seq, record.header.fields.ts_usec);
        self.deliver_late(record, datagram);
        self.mark_delivered(seq);
        if in_ring {
            let epoch = self.epoch;
            *self.slot_mut(seq) = Slot {
                epoch,
                seq,
                ts_usec,
                state: SlotState::Delivered,
            };
        }
    }

    /// A record sent shortly before the one the epoch started with: delivered late once.
    fn before_start(&mut self, record: &ExtRecord<'_>, datagram: &[u8]) {
        let seq = record.header.fields.seq;
        if record.is_fragment() {
            self.stats.late_fragments += 1;
        } else if self.was_delivered(seq) {
            self.stats.duplicates += 1;
        } else {
            self.deliver_late(record, datagram);
            self.mark_delivered(seq);
        }
    }

    /// A record in `[epoch_origin, tail)` that the ring still remembers.
    fn behind_tail(&mut self, record: &ExtRecord<'_>, datagram: &[u8]) {
        let seq = record.header.fields.seq;
        let ts_usec = record.header.fields.ts_usec;
        let in_ring = self.head - seq <= self.ring_span();
        if in_ring && self.tagged(seq) {
            let slot = self.slot(seq);
            if slot.ts_usec != ts_usec {
                self.restart(RestartReason::Timestamp, record, datagram);
            } else if matches!(slot.state, SlotState::GivenUpPartial) {
                self.stats.late_fragments += 1;
            } else {
                self.stats.duplicates += 1;
            }
            return;
        }
        if self.was_delivered(seq) {
            // Beyond the ring, or in a part the ring did not hold before it grew.
            self.stats.duplicates += 1;
            return;
        }
        // Given up on without anything received: late.
        self.deliver_late_once(record, datagram, in_ring);
    }

    /// Retires from the tail until `held_bytes + need` fits, without passing `below`
    /// (a sequence number being placed). False when it cannot fit.
    fn make_room(&mut self, need: usize, below: Option<u64>) -> bool {
        let max = self.config.max_held_bytes;
        if need > max {
            return false;
        }
        while self.held_bytes + need > max {
            let limit = below.unwrap_or(self.head).min(self.head);
            if self.tail < limit {
                let target = self.next_retire_point(limit);
                self.force_retire_to(target);
            } else if !self.oos.is_empty() {
                self.release_oldest_oos(Release::Shed);
            } else {
                return false;
            }
        }
        true
    }

    /// The end of the item at the tail (one record, or the run there), capped at `limit`.
    fn next_retire_point(&self, limit: u64) -> u64 {
        let end = match self.runs.first(self.tail, self.head) {
            Some((start, run)) if start == self.tail => run.end,
            _ => self.tail + 1,
        };
        end.min(limit)
    }

    fn place_ahead(&mut self, record: &ExtRecord<'_>, datagram: &[u8]) {
        self.place_ahead_at(record, datagram, self.now);
    }

    /// Places a record at or ahead of the head; the hole it opens is given up on at
    /// the hold time after `learned_at`.
    fn place_ahead_at(&mut self, record: &ExtRecord<'_>, datagram: &[u8], learned_at: Instant) {
        let seq = record.header.fields.seq;
        let old_head = self.head;
        self.newest_ts = self.newest_ts.max(record.header.fields.ts_usec);
        // Fast path: the next record with nothing open.
        if seq == self.tail && self.tail == self.head && !record.is_fragment() {
            self.head = seq + 1;
            self.tail = seq + 1;
            let header_len = datagram.len() - record.body.len();
            self.out
                .record(RecordMeta::of(&record.header), datagram, header_len, false);
            self.stats.delivered += 1;
            self.clear_delivered(seq, seq + 1);
            self.mark_delivered(seq);
            let epoch = self.epoch;
            let slot = self.slot_mut(seq);
            slot.epoch = epoch;
            slot.seq = seq;
            slot.ts_usec = record.header.fields.ts_usec;
            slot.state = SlotState::Delivered;
            self.note_retired();
            return;
        }
        // The ring holds the window up to `seq` (at most `max_open` of it stays open).
        self.ensure_ring((seq + 1 - self.tail).min(self.config.max_open()));
        self.disorder_at = self.now;
        if self.shrink_at != u64::MAX {
            self.shrink_at = (seq + 1).saturating_add(self.shrink_streak());
        }
        if seq > self.head {
            let run = Run {
                end: seq,
                learned_at,
                partial: false,
                requested: false,
            };
            self.insert_run(self.head, run);
            let stride = self.config.retransmit_stride;
            self.stride_after(self.head, seq, self.head, stride);
        }
        // One interval request covers the new hole and the new record (if it stays
        // incomplete).
        self.schedule_request(self.head, seq + 1);
        self.clear_delivered(old_head, seq + 1);
        self.head = seq + 1;
        // Keep the window open at most `max_open`, so the ring entry is free.
        let min_tail = self.head.saturating_sub(self.config.max_open());
        if self.tail < min_tail {
            self.force_retire_to(min_tail);
        }
        if seq < self.tail {
            // The window overflowed past this very record: it goes out at once.
            self.deliver_late(record, datagram);
            return;
        }
        // `seq` is now the last open number and no run covers it.
        self.store_new(record, datagram, learned_at, seq);
        self.stride_check();
    }

    /// Stores a record at `seq`, which is open and covered by no run.
    fn store_new(
        &mut self,
        record: &ExtRecord<'_>,
        datagram: &[u8],
        learned_at: Instant,
        seq: u64,
    ) {
        let cost = if record.is_fragment() {
            record
                .header
                .ncfrag
                .map_or(0, |f| f.total.saturating_mul(2))
                .saturating_add(datagram.len())
        } else {
            datagram.len() + core::mem::size_of::<Held>()
        };
        if !self.make_room(cost, Some(seq)) {
            self.stats.over_budget += 1;
            self.lose_unstored(seq, learned_at);
            return;
        }
        if seq < self.tail {
            self.deliver_late(record, datagram);
            return;
        }
        let epoch = self.epoch;
        let ts_usec = record.header.fields.ts_usec;
        if record.is_fragment() {
            let Ok(fragmented) = FragmentedRecord::new(record, self.config.max_fragmented_total)
            else {
                self.stats.malformed += 1;
                self.lose_unstored(seq, learned_at);
                return;
            };
            let header_len = datagram.len() - record.body.len();
            let total = fragmented.body().total();
            let mut partial = Partial {
                record: fragmented,
                meta: RecordMeta::of(&record.header),
                header: Box::from(&datagram[..header_len]),
                bytes: alloc::vec![0; total].into_boxed_slice(),
            };
            partial.mirror(record, datagram);
            self.held_bytes += partial.cost();
            let complete = partial.record.is_complete();
            *self.slot_mut(seq) = Slot {
                epoch,
                seq,
                ts_usec,
                state: SlotState::Partial(Box::new(partial)),
            };
            if complete {
                self.assemble(seq);
            } else {
                let run = Run {
                    end: seq + 1,
                    learned_at,
                    partial: true,
                    requested: false,
                };
                self.insert_run(seq, run);
            }
        } else {
            self.held_bytes += datagram.len() + core::mem::size_of::<Held>();
            let entry = self.pool.insert(
                RecordMeta::of(&record.header),
                datagram,
                datagram.len() - record.body.len(),
            );
            *self.slot_mut(seq) = Slot {
                epoch,
                seq,
                ts_usec,
                state: SlotState::Whole(entry),
            };
        }
    }

    /// `seq` could not be stored: it stays missing (a run of one), to be asked for again.
    fn lose_unstored(&mut self, seq: u64, learned_at: Instant) {
        if seq >= self.tail && seq < self.head {
            let run = Run {
                end: seq + 1,
                learned_at,
                partial: false,
                requested: false,
            };
            self.insert_run(seq, run);
        }
    }

    fn place_in_window(&mut self, record: &ExtRecord<'_>, datagram: &[u8]) {
        let seq = record.header.fields.seq;
        self.newest_ts = self.newest_ts.max(record.header.fields.ts_usec);
        if self.tagged(seq) {
            let is_partial = matches!(self.slot(seq).state, SlotState::Partial(_));
            if !is_partial {
                self.stats.duplicates += 1;
                return;
            }
            if self.slot(seq).ts_usec != record.header.fields.ts_usec {
                self.restart(RestartReason::Timestamp, record, datagram);
                return;
            }
            self.add_fragment(seq, record, datagram);
            return;
        }
        // A missing number: its timestamp must fit between its neighbours' (same boot).
        let back = self.ts_back_usec();
        let ts_usec = record.header.fields.ts_usec;
        let before = if seq < self.epoch_start {
            // At a fresh boot's head, where most numbers may be missing: the nearest record
            // received below it, within 64 numbers (a record of the next boot filling a hole
            // of this one's head is caught when one of its neighbours arrived).
            let lowest = seq.saturating_sub(64).max(self.epoch_origin);
            (lowest..seq)
                .rev()
                .find(|&s| self.head - s <= self.ring_span() && self.tagged(s))
                .map(|s| self.slot(s).ts_usec)
        } else {
            seq.checked_sub(1)
                .filter(|&s| s >= self.tail && self.tagged(s))
                .map(|s| self.slot(s).ts_usec)
        };
        let after = Some(seq + 1)
            .filter(|&s| s < self.head && self.tagged(s))
            .map(|s| self.slot(s).ts_usec);
        if before.is_some_and(|b| ts_usec.saturating_add(back) < b)
            || after.is_some_and(|a| a.saturating_add(back) < ts_usec)
        {
            self.restart(RestartReason::Timestamp, record, datagram);
            return;
        }
        // Take it out of its run: the part before it keeps its entry (shortened in place),
        // the part after it is a new one.
        let Some((start, after)) = self.runs.last(self.tail, seq + 1) else {
            return;
        };
        if after.end <= seq {
            return;
        }
        if after.requested && self.answering == Answering::Unknown {
            // A number asked for arrived after the request.
            self.learned_answers();
        }
        if start < seq {
            if let Some(run) = self.runs.get_mut(start) {
                run.end = seq;
            }
        } else {
            self.remove_run(start);
        }
        if seq + 1 < after.end {
            self.insert_run(seq + 1, after);
        }
        self.store_new(record, datagram, after.learned_at, seq);
    }

    fn add_fragment(&mut self, seq: u64, record: &ExtRecord<'_>, datagram: &[u8]) {
        let n = self.slots.len();
        let slot = &mut self.slots[slot_of(n, seq)];
        let SlotState::Partial(partial) = &mut slot.state else {
            return;
        };
        if !record.is_fragment() {
            // The same record whole: nothing to add to a reassembly that is a different cut.
            self.stats.duplicates += 1;
            return;
        }
        match partial.record.push(record) {
            Ok(0) => self.stats.duplicates += 1,
            Ok(_) => {
                if self.answering == Answering::Unknown
                    && self.runs.get_mut(seq).is_some_and(|run| run.requested)
                {
                    self.learned_answers();
                }
                let n = self.slots.len();
                let SlotState::Partial(partial) = &mut self.slots[slot_of(n, seq)].state else {
                    return;
                };
                let old_cost = partial.cost();
                partial.mirror(record, datagram);
                self.held_bytes = self.held_bytes + partial.cost() - old_cost;
                let complete = partial.record.is_complete();
                if complete {
                    self.remove_run(seq);
                    self.assemble(seq);
                }
            }
            Err(_) => self.stats.malformed += 1,
        }
    }

    /// Turns a complete partial record at `seq` into an assembled one.
    fn assemble(&mut self, seq: u64) {
        let slot = self.slot_mut(seq);
        let state = core::mem::take(&mut slot.state);
        let SlotState::Partial(partial) = state else {
            slot.state = state;
            return;
        };
        let old_cost = partial.cost();
        let Partial {
            meta,
            header,
            bytes,
            ..
        } = *partial;
        let new_cost = header.len() + bytes.len();
        slot.state = SlotState::Assembled(Box::new(Assembled {
            meta,
            header,
            body: bytes,
        }));
        self.held_bytes = self.held_bytes + new_cost - old_cost;
    }

    fn insert_run(&mut self, start: u64, run: Run) {
        self.runs.insert(start, run);
    }

    fn remove_run(&mut self, start: u64) -> Option<Run> {
        self.runs.remove(start)
    }

    fn note_retired(&mut self) {
        if self.config.ack_interval.is_some() && self.ack_pending_since.is_none() {
            self.ack_pending_since = Some(self.now);
        }
    }

    /// Retires complete records at the tail and runs whose time is up.
    fn retire(&mut self) {
        self.retire_into(None);
    }

    /// [`Stream::retire`]; with `direct`, a whole record held in the pool goes to it from
    /// the pool once the events queued before it have gone out, instead of being copied to
    /// the output buffer first: the same events in the same order.
    fn retire_into(&mut self, mut direct: Option<&mut dyn FnMut(Event<'_>)>) {
        self.retire_due(&mut direct);
        // Interval requests for retired ranges would only wake the caller for nothing.
        while self
            .requests_due
            .front()
            .is_some_and(|&(_, _, end)| end <= self.tail)
        {
            self.requests_due.pop_front();
        }
    }

    fn retire_due(&mut self, direct: &mut Option<&mut dyn FnMut(Event<'_>)>) {
        while self.tail < self.head {
            if self.tagged(self.tail) && self.slot(self.tail).is_complete() {
                self.retire_one_complete(reborrow(direct));
                continue;
            }
            match self.runs.first(self.tail, self.head) {
                Some((start, run)) if start == self.tail && self.give_up_at(&run) <= self.now => {
                    let end = run.end;
                    self.give_up(start, end);
                }
                _ => break,
            }
        }
    }

    /// Retires everything below `target` whatever its state.
    fn force_retire_to(&mut self, target: u64) {
        let target = target.min(self.head);
        while self.tail < target {
            if self.tagged(self.tail) && self.slot(self.tail).is_complete() {
                self.retire_one_complete(None);
                continue;
            }
            let Some((start, run)) = self.runs.first(self.tail, self.head) else {
                // Not reachable while the invariant holds; never loop forever.
                self.tail += 1;
                self.delivered_since = self.tail;
                continue;
            };
            let end = run.end.min(target);
            if start > self.tail {
                self.tail = start.min(target);
                self.delivered_since = self.tail;
                continue;
            }
            self.give_up(start, end);
        }
    }

    /// Gives up on `[start, end)`, the beginning of the run at `start` (= tail).
    fn give_up(&mut self, start: u64, end: u64) {
        let Some(run) = self.remove_run(start) else {
            return;
        };
        if end < run.end {
            self.insert_run(end, run);
        }
        if run.partial {
            let slot = self.slot_mut(start);
            let state = core::mem::replace(&mut slot.state, SlotState::GivenUpPartial);
            if let SlotState::Partial(partial) = state {
                self.held_bytes -= partial.cost();
                self.out.incomplete(
                    partial.meta,
                    &partial.header,
                    &partial.bytes,
                    partial.record.body().missing(),
                );
                self.stats.incomplete += 1;
            }
        } else {
            self.out.lost(start..end);
            self.stats.lost = self.stats.lost.saturating_add(end - start);
        }
        if self.answering != Answering::Answers {
            self.gave_up_unanswered = true;
        }
        self.tail = end;
        self.delivered_since = end;
        self.note_retired();
    }

    /// Delivers the complete record at the tail. With `direct`, a whole record held in the
    /// pool goes to it from the pool, after the events queued before it.
    fn retire_one_complete(&mut self, direct: Option<&mut dyn FnMut(Event<'_>)>) {
        let seq = self.tail;
        let slot = self.slot_mut(seq);
        let state = core::mem::replace(&mut slot.state, SlotState::Delivered);
        match state {
            SlotState::Whole(entry) => {
                let (held, datagram) = self.pool.get(entry);
                self.held_bytes -= datagram.len() + core::mem::size_of::<Held>();
                let header_len = held.header_len as usize;
                match direct {
                    Some(f) => {
                        self.out.drain(&mut *f);
                        f(Event::Record(held.meta.view(datagram, header_len)));
                    }
                    None => self.out.record(held.meta, datagram, header_len, false),
                }
                self.pool.remove(entry);
            }
            SlotState::Assembled(assembled) => {
                let Assembled { meta, header, body } = *assembled;
                self.held_bytes -= header.len() + body.len();
                self.out.record_parts(meta, &header, &body);
            }
            other => self.slot_mut(seq).state = other,
        }
        self.delivered_in_order(seq);
    }

    /// The one in-order delivery: the record `seq` at the tail, its slot already marked
    /// delivered, has just gone out as an [`Event::Record`] (from the fast path or from the
    /// window). The tail passes it, its bit says "delivered in this epoch", an ack becomes
    /// due.
    #[inline]
    fn delivered_in_order(&mut self, seq: u64) {
        self.stats.delivered += 1;
        self.mark_delivered(seq);
        self.tail = seq + 1;
        self.note_retired();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use proptest::prelude::*;

    fn run(end: u64) -> Run {
        Run {
            end,
            learned_at: Instant::from_millis(end),
            partial: false,
            requested: false,
        }
    }

    proptest! {
        /// Clearing the delivered bits of a range clears exactly those, bit by bit as a
        /// plain loop would, across word and ring boundaries.
        #[test]
        fn clear_delivered_clears_exactly_the_range(
            slots in prop::sample::select(vec![2usize, 5, 16, 100, 1000]),
            words in prop::collection::vec(any::<u64>(), 1..200),
            from in 0u64..100_000,
            len in 0u64..9000,
        ) {
            let mut stream = Stream::new(StreamConfig {
                slots,
                ..StreamConfig::default()
            });
            for (i, word) in stream.delivered.iter_mut().enumerate() {
                *word = words[i % words.len()];
            }
            let mut expected = stream.delivered.clone();
            let bits = expected.len() * 64;
            let to = from + len;
            if len >= bits as u64 {
                expected.fill(0);
            } else {
                for seq in from..to {
                    let bit = (seq % bits as u64) as usize;
                    expected[bit / 64] &= !(1 << (bit % 64));
                }
            }
            stream.clear_delivered(from, to);
            prop_assert_eq!(stream.delivered, expected);
        }

        /// The delivered bitmap moved to another size a word at a time holds what a loop
        /// over each number back from the head gives: the old bit where the old map reaches,
        /// set beyond it, nothing at or past the head or below 0.
        #[test]
        fn delivered_resized_matches_a_bit_by_bit_loop(
            old_words in prop::sample::select(vec![4usize, 8, 16, 64, 1024]),
            new_words in prop::sample::select(vec![1usize, 4, 8, 16, 64, 1024]),
            words in prop::collection::vec(any::<u64>(), 1..50),
            head in prop_oneof![0u64..3000, 0u64..200_000, Just(u64::MAX - 1)],
            since in 0u64..200_000,
        ) {
            let mut stream = Stream::new(StreamConfig::default());
            stream.delivered = (0..old_words).map(|i| words[i % words.len()]).collect();
            stream.head = head;
            stream.delivered_since = since.min(head);
            let bits = new_words * 64;
            let mut expected = alloc::vec![0u64; new_words];
            let known = stream.bits().min(bits as u64);
            for back in 1..=bits as u64 {
                let Some(seq) = head.checked_sub(back) else {
                    break;
                };
                if back > known || stream.was_delivered(seq) {
                    let bit = (seq % bits as u64) as usize;
                    expected[bit / 64] |= 1 << (bit % 64);
                }
            }
            prop_assert_eq!(stream.delivered_resized(bits), expected);
        }
    }

    proptest! {
        /// The ring of runs answers as an ordered map would, for starts within a window
        /// narrower than the ring that moves forward, across word and ring boundaries.
        #[test]
        fn runs_match_an_ordered_map(
            slots in prop::sample::select(vec![2usize, 5, 63, 64, 65, 100, 128, 300]),
            ops in prop::collection::vec((0u8..5, any::<u16>(), any::<u16>()), 1..300),
        ) {
            let mut runs = Runs::new(slots);
            let mut model: BTreeMap<u64, Run> = BTreeMap::new();
            let (mut tail, mut head) = (1000u64, 1000u64);
            for (op, x, y) in ops {
                let span = head - tail;
                match op {
                    0 if span > 0 => {
                        let start = tail + u64::from(x) % span;
                        runs.insert(start, run(start + 1 + u64::from(y % 4)));
                        model.insert(start, run(start + 1 + u64::from(y % 4)));
                    }
                    1 if span > 0 => {
                        let start = tail + u64::from(x) % span;
                        prop_assert_eq!(runs.remove(start), model.remove(&start));
                    }
                    2 => {
                        // The head moves on, the window staying narrower than the ring.
                        head = (head + 1 + u64::from(x) % 70).min(tail + slots as u64 - 1);
                    }
                    3 if span > 0 => {
                        // The tail moves on; what it passes is removed first, as retiring does.
                        let new_tail = tail + u64::from(x) % (span + 1);
                        for start in tail..new_tail {
                            prop_assert_eq!(runs.remove(start), model.remove(&start));
                        }
                        tail = new_tail;
                    }
                    _ => {
                        let from = tail + u64::from(x) % (span + 1);
                        let to = from + u64::from(y) % (head - from + 1);
                        let in_range = || model.range(from..to);
                        prop_assert_eq!(runs.first(from, to), in_range().next().map(|(&s, &r)| (s, r)));
                        prop_assert_eq!(runs.last(from, to), in_range().next_back().map(|(&s, &r)| (s, r)));
                        let mut seen = Vec::new();
                        runs.each(from, to, |s, r| {
                            seen.push((s, *r));
                            true
                        });
                        let expected: Vec<(u64, Run)> = in_range().map(|(&s, &r)| (s, r)).collect();
                        prop_assert_eq!(seen, expected);
                        if let Some(start) = model.keys().next() {
                            prop_assert!(runs.get_mut(*start).is_some());
                        }
                    }
                }
                prop_assert_eq!(runs.is_open(), !model.is_empty());
            }
        }
    }
}
