//! One source's stream: the reorder window, holes, retransmission requests, acks, timeouts,
//! out-of-order records and restarts.
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
//! - The ring, the runs' ring and the delivered bitmap are sized by what the stream needs,
//!   not by the window: 32 entries (and 256 bits) for a stream with nothing open, doubled
//!   when a hole needs more (the open span, and as much again remembered), up to `slots`
//!   rounded up to a power of two. A stream in order again for 8 × its ring, or with nothing
//!   open for 10 s at a timer call, gives the larger ring back (and its idle buffers): a
//!   quiet source costs about 3.3 KiB in all. Beyond the bitmap's reach, every number from
//!   the last one given up on to the tail was delivered, so a duplicate within `8 × slots`
//!   of the head is still known; where a smaller ring grew, numbers the old bitmap did not
//!   reach count as delivered (a late record there is dropped as a duplicate, never
//!   delivered twice).
//! - The ring holds what arrived (a whole datagram with its parsed fields, or a fragmented
//!   record being put together) and, once retired, what became of each sequence number
//!   (delivered with its `ts_usec`, or given up). Advancing the head writes nothing: a ring
//!   entry counts only when its tag matches. Whole datagrams waiting behind a hole live in a
//!   slab of 128-byte blocks reused as records retire (longer ones in their own allocation),
//!   so holding and retiring a record allocates nothing once the slab has grown.
//! - The next record with nothing open (the lossless case) takes a fast path: from the
//!   datagram to the output buffer in one copy, touching no map, queue or timer.
//! - Every sequence number in `[tail, head)` that is not complete belongs to one *run*: a
//!   range of missing numbers (or one incomplete fragmented record) with the time the
//!   receiver gives up on it (`message_timeout` after it learned of it). Runs live in a
//!   ring indexed by their start like the records, with a bitmap of the starts in use: the
//!   run at the tail is one lookup, the run holding a number is found by scanning the bitmap
//!   back from it 64 numbers a word (at most `slots / 64` words), whatever the number of
//!   holes.
//! - Records leave from the tail, in order: complete ones at once, a run when its
//!   [`message_timeout`](StreamConfig::message_timeout) passes ([`Event::Lost`] or
//!   [`Event::Incomplete`]), or early when the window or the byte budget overflows. Runs are
//!   created in sequence order as time goes on, so the tail's run is always the next to
//!   time out: the give-up timer is one deadline.
//! - Retransmission requests (`ncrx<ack> <seq>...`) ask for the holes of a range every
//!   [`retransmit_interval`](StreamConfig::retransmit_interval) (a queue in time order, since
//!   every entry is due one interval after it was pushed; ranges due within a quarter
//!   interval of a due one go in the same response), and when the head has moved
//!   [`retransmit_stride`](StreamConfig::retransmit_stride) past a hole, then twice, four
//!   times that distance further (a heap keyed by the head position, rounded up to a
//!   quarter stride so that requests leave together). libncrx asks again at every stride for
//!   every hole, so its requests per packet grow with the holes; here they do not. Acks
//!   (`ack_seq` = last retired) go out with every request, after
//!   [`ack_interval`](StreamConfig::ack_interval) when configured, and at once for an
//!   `ncemg` record.
//! - A record behind the tail: a duplicate of a delivered one is dropped and counted; one
//!   that was given up on is delivered once as [`Event::Late`]. A remembered sequence number
//!   with another `ts_usec`, a record whose `ts_usec` contradicts the sequence order by more
//!   than [`restart_ts_back`](StreamConfig::restart_ts_back), or a changed release restarts
//!   the stream at once; so does one before anything remembered whose `ts_usec` is also far
//!   back. A record just before the one the stream started with (its `ts_usec` within
//!   `restart_ts_back` of that one's) is delivered late at once. Other records before the
//!   remembered range or far ahead of the window are
//!   buffered as out of order (libncrx's rule: 19 of the last 32 out of order restart the
//!   stream from the lowest). A buffered record not used so is released after
//!   [`out_of_order_timeout`](StreamConfig::out_of_order_timeout), or when more than
//!   [`OUT_OF_ORDER_MAX`] wait, as if it arrived then. One at or ahead of the window is
//!   followed there only if it and the buffered records near it outnumber what the stream
//!   took meanwhile in the threshold's ratio (a silent stream is followed, one that keeps
//!   going is not abandoned for far records beside it): then the numbers before it are
//!   given up on ([`Event::Lost`], `message_timeout` after the record arrived) and it comes
//!   out in order; else it is dropped and counted
//!   ([`StreamStats::out_of_order_dropped`]). One behind the tail comes out as
//!   [`Event::Late`] once, if the stream still remembers what it delivered there (else it is
//!   dropped and counted). Two different
//!   records buffered under one number: the first stands, the other is counted as a
//!   conflict. No number is delivered twice in one epoch.
//!   `ncemg` records never count as out of order.
//! - What cannot be known is not invented: records before the first one a stream places, or
//!   after the last, whose every copy was lost, leave no trace (no receiver can tell they
//!   existed).

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

/// What a stream knows of its sender's answers to retransmission requests (see
/// [the configuration](crate::config#senders-that-answer-and-senders-that-do-not)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answering {
    /// Not shown yet (a stock kernel never shows it): holes are held
    /// [`unanswered_hole_timeout`](StreamConfig::unanswered_hole_timeout), requests
    /// rate-limited.
    Unknown,
    /// A number asked for arrived after the request, or an `ncemg` record arrived: the full
    /// reliable behaviour.
    Answers,
    /// Its port is closed ([`Stream::handle_unreachable`]): nothing is sent to it until an
    /// `ncemg` record arrives.
    Unreachable,
}

/// The timers of a stream, as a small named table (quinn-proto's `TimerTable`): the next
/// timeout is the minimum of their deadlines ([`Stream::poll_timeout`]), and
/// [`Stream::handle_timeout`] acts on each that is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// The next interval retransmission request (`requests_due`, in time order).
    Request,
    /// Giving up on the run at the tail (runs time out in sequence order: one deadline).
    GiveUp,
    /// Releasing the oldest buffered out-of-order record.
    OutOfOrder,
    /// Sending the ack that `ack_interval` delays.
    Ack,
}

impl Timer {
    const ALL: [Timer; 4] = [Timer::Request, Timer::GiveUp, Timer::OutOfOrder, Timer::Ack];
}

/// Counters of one stream (or summed over sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StreamStats {
    /// Extended datagrams received (whole records and fragments).
    pub datagrams: u64,
    /// Plain datagrams passed on.
    pub plain: u64,
    /// Datagrams that looked extended but did not parse, or fragments refused by reassembly.
    pub malformed: u64,
    /// Response packets received (a receiver does not act on them).
    pub responses_ignored: u64,
    /// Records delivered in order.
    pub delivered: u64,
    /// Records delivered late ([`Event::Late`]).
    pub late: u64,
    /// Duplicates of records already held or delivered, dropped.
    pub duplicates: u64,
    /// Fragments of records already given up on or delivered late, dropped.
    pub late_fragments: u64,
    /// Records claiming a sequence number that another record (another `ts_usec` or other
    /// bytes) already holds where that cannot be told from a restart, dropped: the first
    /// claim stands, and no sequence number is delivered twice in one epoch.
    pub conflicts: u64,
    /// Out-of-order records released further behind the head than the stream remembers what
    /// it delivered (8 × `slots`), dropped: delivering one could deliver it twice.
    pub forgotten: u64,
    /// Sequence numbers given up on ([`Event::Lost`]).
    pub lost: u64,
    /// Fragmented records given up on incomplete.
    pub incomplete: u64,
    /// Records counted out of order (buffered).
    pub out_of_order: u64,
    /// Out-of-order records ahead of the window dropped when the buffer overflowed or their
    /// [`out_of_order_timeout`](StreamConfig::out_of_order_timeout) passed, because the
    /// stream kept going meanwhile and they did not outnumber it: following them would have
    /// abandoned it.
    pub out_of_order_dropped: u64,
    /// Stream restarts.
    pub restarts: u64,
    /// Records carrying `ncemg=1`.
    pub emergency: u64,
    /// `ncemg` records before anything remembered, dropped (never counted out of order).
    pub stale_emergency: u64,
    /// Records dropped because holding them would exceed the byte budget.
    pub over_budget: u64,
    /// Times the stream gave up its oldest held bytes for the receiver's budget over all
    /// sources ([`ReceiverConfig::max_held_bytes_total`](crate::ReceiverConfig::max_held_bytes_total)).
    pub shed: u64,
    /// Response packets produced.
    pub responses: u64,
    /// Sequence numbers asked for again (each time counted).
    pub requested: u64,
    /// Times the sender's port was reported closed ([`Stream::handle_unreachable`]).
    pub unreachable: u64,
}

impl core::ops::AddAssign for StreamStats {
    fn add_assign(&mut self, o: Self) {
        self.datagrams += o.datagrams;
        self.plain += o.plain;
        self.malformed += o.malformed;
        self.responses_ignored += o.responses_ignored;
        self.delivered += o.delivered;
        self.late += o.late;
        self.duplicates += o.duplicates;
        self.late_fragments += o.late_fragments;
        self.conflicts += o.conflicts;
        self.forgotten += o.forgotten;
        self.lost = self.lost.saturating_add(o.lost);
        self.incomplete += o.incomplete;
        self.out_of_order += o.out_of_order;
        self.out_of_order_dropped += o.out_of_order_dropped;
        self.restarts += o.restarts;
        self.emergency += o.emergency;
        self.stale_emergency += o.stale_emergency;
        self.over_budget += o.over_budget;
        self.shed += o.shed;
        self.responses += o.responses;
        self.requested += o.requested;
        self.unreachable += o.unreachable;
    }
}

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

/// A whole datagram held in the window: parsed once. Its bytes are the entry's block of
/// [`HeldPool::blocks`], or `spill` when longer than a block.
///
/// One cache line each (64 bytes, aligned): a record held behind a hole costs this line, its
/// block and its ring slot, which is what the lossy paths are bound by once the window
/// outgrows the caches.
#[derive(Debug, Clone)]
#[repr(align(64))]
struct Held {
    meta: RecordMeta,
    /// Lengths fit: [`Stream::handle_datagram`] refuses datagrams longer than `u32::MAX`.
    header_len: u32,
    len: u32,
    spill: Option<Box<[u8]>>,
}

/// Bytes of one block of the pool: whole datagrams up to this long are held without an
/// allocation of their own.
const BLOCK: usize = 128;

/// Pool entries kept when the pool empties; above it the pool is given back.
const POOL_KEEP: usize = 64;

/// The whole datagrams held in the window, in one slab: entry `i` and block `i` (`BLOCK`
/// bytes at `i * BLOCK`) go together, free entries are reused. Holding a record behind a hole
/// and retiring it allocates nothing once the pool has grown to the window's needs.
#[derive(Debug, Clone, Default)]
struct HeldPool {
    entries: Vec<Held>,
    blocks: Vec<u8>,
    free: Vec<usize>,
}

impl HeldPool {
    fn insert(&mut self, meta: RecordMeta, datagram: &[u8], header_len: usize) -> usize {
        let spill = (datagram.len() > BLOCK).then(|| Box::from(datagram));
        let stored = spill.is_none();
        let held = Held {
            meta,
            header_len: u32::try_from(header_len).unwrap_or(u32::MAX),
            len: u32::try_from(datagram.len()).unwrap_or(u32::MAX),
            spill,
        };
        let i = if let Some(i) = self.free.pop() {
            self.entries[i] = held;
            i
        } else {
            self.entries.push(held);
            self.blocks.resize(self.blocks.len() + BLOCK, 0);
            // Room for every entry in the free list, so that retiring allocates nothing.
            let room = self.entries.capacity() - self.free.len();
            self.free.reserve_exact(room);
            self.entries.len() - 1
        };
        if stored {
            self.blocks[i * BLOCK..i * BLOCK + datagram.len()].copy_from_slice(datagram);
        }
        i
    }

    /// The entry `i` and its datagram.
    fn get(&self, i: usize) -> (&Held, &[u8]) {
        let held = &self.entries[i];
        let bytes = match &held.spill {
            Some(spill) => spill,
            None => &self.blocks[i * BLOCK..i * BLOCK + held.len as usize],
        };
        (held, bytes)
    }

    fn remove(&mut self, i: usize) {
        self.entries[i].spill = None;
        self.free.push(i);
        if self.free.len() == self.entries.len() && self.entries.len() > POOL_KEEP {
            *self = HeldPool::default();
        }
    }

    /// Heap bytes of the pool.
    fn memory_used(&self) -> usize {
        self.entries.capacity() * core::mem::size_of::<Held>()
            + self.blocks.capacity()
            + self.free.capacity() * core::mem::size_of::<usize>()
    }

    /// Bound on [`HeldPool::memory_used`]: at most `entries` in use at once (growth doubles).
    fn memory_bound(entries: usize) -> usize {
        2 * entries.max(POOL_KEEP)
            * (core::mem::size_of::<Held>() + BLOCK + core::mem::size_of::<usize>())
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

/// Incomplete sequence numbers `[start, end)` (a key of `runs` gives the start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    end: u64,
    /// When the receiver learned these were missing: it gives up on them the stream's hold
    /// time later ([`Stream::give_up_at`]).
    learned_at: Instant,
    /// One fragmented record with bytes missing (held in its slot).
    partial: bool,
    /// Asked for while the sender was not known to answer: a number of it arriving shows
    /// that it does.
    requested: bool,
}

#[derive(Debug, Clone)]
struct OutOfOrder {
    at: Instant,
    seq: u64,
    ts_usec: u64,
    /// Records the stream had taken other than as out of order when this one arrived
    /// ([`Stream::taken`]): how much it went on since is the difference.
    taken: u64,
    datagram: Box<[u8]>,
}

/// What becomes of a buffered out-of-order record at or ahead of the window when it leaves
/// the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Placed there (flush: nothing follows).
    Place,
    /// Placed there only if the far records outnumber what the stream took meanwhile
    /// (buffer overflow, timeout); else dropped and counted.
    Judge,
    /// Dropped to free bytes, counted as over budget.
    Shed,
}

/// Calls `visit` with the offset (below `len`) from position `from` of each set bit at or
/// after it, in order, going up through `len` positions of a ring of `nbits` bits, until it
/// returns false.
#[inline]
fn each_set_up(
    bits: &[u64],
    nbits: usize,
    from: usize,
    len: usize,
    mut visit: impl FnMut(usize) -> bool,
) {
    let (mut pos, mut done) = (from, 0);
    while done < len {
        let b = pos % 64;
        let chunk = (64 - b).min(nbits - pos).min(len - done);
        let mut word = bits[pos / 64] >> b;
        if chunk < 64 {
            word &= (1 << chunk) - 1;
        }
        while word != 0 {
            if !visit(done + word.trailing_zeros() as usize) {
                return;
            }
            word &= word - 1;
        }
        done += chunk;
        pos += chunk;
        if pos == nbits {
            pos = 0;
        }
    }
}

/// Offset (below `len`) from position `from` of the first set bit at or after it, going up
/// through `len` positions of a ring of `nbits` bits.
fn scan_up(bits: &[u64], nbits: usize, from: usize, len: usize) -> Option<usize> {
    let mut first = None;
    each_set_up(bits, nbits, from, len, |offset| {
        first = Some(offset);
        false
    });
    first
}

/// Offset (below `len`) back from position `from` of the first set bit at or before it,
/// going down through `len` positions of a ring of `nbits` bits.
fn scan_down(bits: &[u64], nbits: usize, from: usize, len: usize) -> Option<usize> {
    let (mut pos, mut done) = (from, 0);
    while done < len {
        let b = pos % 64;
        let chunk = (b + 1).min(len - done);
        let low = b + 1 - chunk;
        let mut word = bits[pos / 64] >> low;
        if chunk < 64 {
            word &= (1 << chunk) - 1;
        }
        if word != 0 {
            let top = 63 - word.leading_zeros() as usize;
            return Some(done + chunk - 1 - top);
        }
        done += chunk;
        pos = if pos >= chunk { pos - chunk } else { nbits - 1 };
    }
    None
}

/// The runs of a stream by start: a ring of `slots` entries indexed like the record ring,
/// and a bitmap of the entries in use. Every run starts in the open window, which spans
/// fewer than `slots` numbers, so two runs never share an entry; a search scans the bitmap
/// 64 entries at a word, from a number up to the head or back to the tail. Allocated at the
/// first run, resized with the record ring, given back when the ring shrinks with no run
/// open.
#[derive(Debug, Clone)]
struct Runs {
    entries: Vec<(u64, Run)>,
    used: Vec<u64>,
    slots: usize,
    len: usize,
}

impl Runs {
    fn new(slots: usize) -> Self {
        Runs {
            entries: Vec::new(),
            used: Vec::new(),
            slots: ring_len(slots),
            len: 0,
        }
    }

    #[inline]
    fn bit(&self, i: usize) -> bool {
        self.used
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn insert(&mut self, start: u64, run: Run) {
        if self.entries.is_empty() {
            let none = Run {
                end: 0,
                learned_at: Instant::ZERO,
                partial: false,
                requested: false,
            };
            self.entries = alloc::vec![(0, none); self.slots];
            self.used = alloc::vec![0; self.slots.div_ceil(64)];
        }
        let i = slot_of(self.slots, start);
        if !self.bit(i) {
            self.used[i / 64] |= 1 << (i % 64);
            self.len += 1;
        }
        self.entries[i] = (start, run);
    }

    fn remove(&mut self, start: u64) -> Option<Run> {
        let i = slot_of(self.slots, start);
        if !self.bit(i) || self.entries[i].0 != start {
            return None;
        }
        self.used[i / 64] &= !(1 << (i % 64));
        self.len -= 1;
        Some(self.entries[i].1)
    }

    fn get_mut(&mut self, start: u64) -> Option<&mut Run> {
        let i = slot_of(self.slots, start);
        if !self.bit(i) || self.entries[i].0 != start {
            return None;
        }
        Some(&mut self.entries[i].1)
    }

    /// The run with the lowest start in `[from, to)`.
    #[inline]
    fn first(&self, from: u64, to: u64) -> Option<(u64, Run)> {
        if self.len == 0 || from >= to {
            return None;
        }
        // Mostly a run starts at `from` (the tail's).
        let i = slot_of(self.slots, from);
        if self.bit(i) && self.entries[i].0 == from {
            return Some(self.entries[i]);
        }
        self.first_after(from, to)
    }

    fn first_after(&self, from: u64, to: u64) -> Option<(u64, Run)> {
        let len = usize::try_from(to - from).map_or(self.slots, |n| n.min(self.slots));
        let offset = scan_up(&self.used, self.slots, slot_of(self.slots, from), len)?;
        Some(self.entries[slot_of(self.slots, from + offset as u64)])
    }

    /// Calls `visit` with each run starting in `[from, to)`, in order, until it returns false.
    fn each(&self, from: u64, to: u64, mut visit: impl FnMut(u64, &Run) -> bool) {
        if self.len == 0 || from >= to {
            return;
        }
        let len = usize::try_from(to - from).map_or(self.slots, |n| n.min(self.slots));
        each_set_up(
            &self.used,
            self.slots,
            slot_of(self.slots, from),
            len,
            |offset| {
                let (start, run) = &self.entries[slot_of(self.slots, from + offset as u64)];
                visit(*start, run)
            },
        );
    }

    /// The run with the highest start in `[from, to)`.
    fn last(&self, from: u64, to: u64) -> Option<(u64, Run)> {
        if self.len == 0 || from >= to {
            return None;
        }
        // Often a run starts at `to - 1` (a hole of one number being filled).
        let i = slot_of(self.slots, to - 1);
        if self.bit(i) && self.entries[i].0 == to - 1 {
            return Some(self.entries[i]);
        }
        let len = usize::try_from(to - from).map_or(self.slots, |n| n.min(self.slots));
        let offset = scan_down(&self.used, self.slots, slot_of(self.slots, to - 1), len)?;
        Some(self.entries[slot_of(self.slots, to - 1 - offset as u64)])
    }

    /// Whether any run is open.
    #[inline]
    fn is_open(&self) -> bool {
        self.len > 0
    }

    /// The same runs in a ring of `slots` entries (a power of two above the open window);
    /// with none open, the ring is given back until the next run.
    fn resize(&mut self, slots: usize) {
        let mut open = Vec::new();
        if self.len > 0 {
            each_set_up(&self.used, self.slots, 0, self.slots, |i| {
                open.push(self.entries[i]);
                true
            });
        }
        *self = Runs::new(slots);
        for (start, run) in open {
            self.insert(start, run);
        }
    }

    fn memory_used(&self) -> usize {
        self.entries.capacity() * core::mem::size_of::<(u64, Run)>() + self.used.capacity() * 8
    }
}

/// Most sequence numbers gathered for one response (each takes at least 2 bytes).
const RESPONSE_SEQS: usize = MAX_RESPONSE / 2;

/// Longest UDP payload: a call releases at most the held bytes and one datagram.
const MAX_DATAGRAM: usize = 65_536;

/// The receiver state machine of one source (see the module documentation).
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
/// assert_eq!((r.seq, r.body), (52010, &b"first\n"[..]));
/// assert!(stream.poll_event().is_none()); // 52011 is missing: 52012 waits
/// stream.handle_datagram(t, b"6,52011,200,-;second\n");
/// let seqs: Vec<u64> = core::iter::from_fn(|| match stream.poll_event()? {
///     Event::Record(r) => Some(r.seq),
///     _ => None,
/// })
/// .collect();
/// assert_eq!(seqs, [52011, 52012]);
/// ```
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
}

/// How many times the ring's span the delivered bitmap covers.
const DELIVERED_SPAN: usize = 8;

/// Entries of the ring (and its bitmaps) of a stream with nothing open: a quiet source
/// costs this many slots (about 1.3 KiB) and a 256-bit delivered map, whatever its window.
/// The ring grows (doubling) when a hole needs it, up to the window, and comes back to
/// this once the stream has been in order for eight times as many numbers as the ring
/// holds (the delivered bitmap's reach), or has had nothing open for [`QUIET_SHRINK`] at a
/// timer call.
const RING_MIN: usize = 32;

/// A stream with nothing open this long since its last hole gives its larger ring back
/// at the next timer call.
const QUIET_SHRINK: core::time::Duration = core::time::Duration::from_secs(10);

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
        };
        stream.set_answering(Answering::Unknown);
        stream
    }

    /// What the stream knows of its sender's answers to retransmission requests.
    pub fn answering(&self) -> Answering {
        self.answering
    }

    /// Whether the stream tells senders that answer from those that do not (an
    /// [`unanswered_hole_timeout`](StreamConfig::unanswered_hole_timeout) is set).
    fn tells_answering(&self) -> bool {
        self.config.unanswered_hole_timeout.is_some()
    }

    /// Moves to `answering` and sets the hold time, the request delay and the spacing that
    /// follow from it. Open holes follow the new hold time: each is given up on that long
    /// after it was found.
    fn set_answering(&mut self, answering: Answering) {
        let config = &self.config;
        let full = config.message_timeout;
        self.answering = answering;
        match (answering, config.unanswered_hole_timeout) {
            (Answering::Answers, _) | (_, None) => {
                self.hold = full;
                self.request_delay = config.retransmit_interval;
            }
            (Answering::Unknown | Answering::Unreachable, Some(short)) => {
                self.hold = short.min(full);
                self.request_delay = config
                    .retransmit_interval
                    .min(short / 2)
                    .max(core::time::Duration::from_nanos(1));
            }
        }
        self.request_spacing = config.retransmit_interval;
        self.request_next = Instant::ZERO;
        self.gave_up_unanswered = false;
    }

    /// How far back from the head the ring remembers each number: the window, or the ring
    /// while it is smaller.
    #[inline]
    fn ring_span(&self) -> u64 {
        self.config.slots.min(self.slots.len()) as u64
    }

    /// Makes the ring hold at least `span` open numbers with as many again remembered
    /// behind them: doubles it (up to the window's ring) when `2 * span` exceeds it.
    #[inline]
    fn ensure_ring(&mut self, span: u64) {
        let len = self.slots.len();
        if span.saturating_mul(2) > len as u64 {
            let max = ring_len(self.config.slots);
            if len < max {
                let want = usize::try_from(span.saturating_mul(2)).unwrap_or(max);
                self.resize_ring(want.next_power_of_two().min(max));
            }
        }
    }

    /// Numbers in order after the last hole before a larger ring is given back: as many as
    /// its delivered bitmap covers, so that a stream with a hole now and then does not
    /// shrink and grow its ring for each.
    fn shrink_streak(&self) -> u64 {
        (self.slots.len() * DELIVERED_SPAN) as u64
    }

    /// Gives the larger ring back when nothing is open (nothing held in it), and the
    /// buffers a quiet stream does not need; else tries again a ring's length later.
    #[cold]
    #[inline(never)]
    fn shrink_quiet(&mut self) {
        let min = ring_len(self.config.slots).min(RING_MIN);
        if self.tail != self.head || self.runs.is_open() || !self.oos.is_empty() {
            self.shrink_at = self.head.saturating_add(self.shrink_streak());
            return;
        }
        if self.slots.len() > min {
            self.resize_ring(min);
        }
        self.shrink_at = u64::MAX;
        if self.pool.entries.len() == self.pool.free.len() {
            self.pool = HeldPool::default();
        }
        if self.requests.is_empty() {
            self.requests = VecDeque::new();
        }
        if self.requests_due.is_empty() {
            self.requests_due = VecDeque::new();
        }
        if self.stride_due.is_empty() {
            self.stride_due = BinaryHeap::new();
        }
        self.response_seqs = Vec::new();
        self.probed = Vec::new();
        self.out.give_back();
    }

    /// Moves the ring, its runs and the delivered bitmap to a ring of `len` entries (a
    /// power of two holding the open window). Entries of numbers within the new ring's
    /// reach are kept; the delivered bits of numbers the old map did not reach are set
    /// ("may have been delivered"): a late record there is dropped as a duplicate rather
    /// than risk delivering it twice.
    fn resize_ring(&mut self, len: usize) {
        debug_assert!(len.is_power_of_two() && (self.head - self.tail) < len as u64);
        let old = core::mem::take(&mut self.slots);
        let mut slots = Vec::new();
        slots.resize_with(len, Slot::default);
        let reach = len as u64;
        for slot in old {
            if slot.epoch == self.epoch
                && !matches!(slot.state, SlotState::Free)
                && self.head - slot.seq <= reach
            {
                let i = slot_of(len, slot.seq);
                slots[i] = slot;
            }
        }
        self.slots = slots;
        self.runs.resize(len);
        let old_bits = self.bits();
        let bits = (len * DELIVERED_SPAN).div_ceil(64) * 64;
        let mut delivered = alloc::vec![0u64; bits / 64];
        let known = old_bits.min(bits as u64);
        for back in 1..=bits as u64 {
            let Some(seq) = self.head.checked_sub(back) else {
                break;
            };
            let set = if back <= known {
                self.was_delivered(seq)
            } else {
                true
            };
            if set {
                let bit = slot_of(bits, seq);
                delivered[bit / 64] |= 1 << (bit % 64);
            }
        }
        self.delivered = delivered;
        self.shrink_at = if len > RING_MIN {
            self.head.saturating_add(self.shrink_streak())
        } else {
            u64::MAX
        };
    }

    /// When the run is given up on: the hold time after it was found.
    #[inline]
    fn give_up_at(&self, run: &Run) -> Instant {
        run.learned_at + self.hold
    }

    /// The sender showed that it answers (a number asked for arrived, or an `ncemg` record).
    fn learned_answers(&mut self) {
        if self.answering != Answering::Answers && self.tells_answering() {
            self.set_answering(Answering::Answers);
        }
    }

    /// The sender's port is closed (ICMP port unreachable for a response sent to it): from
    /// now on the stream sends it nothing, neither requests nor acks, and holds its holes
    /// at most [`unanswered_hole_timeout`](StreamConfig::unanswered_hole_timeout) (when
    /// set), until an `ncemg` record shows that it answers again. See
    /// [the configuration](crate::config#senders-that-answer-and-senders-that-do-not).
    pub fn handle_unreachable(&mut self, now: Instant) {
        self.advance_time(now);
        self.stats.unreachable += 1;
        self.set_answering(Answering::Unreachable);
        self.requests.clear();
        self.ack_due = false;
        self.ack_pending_since = None;
        self.requests_due.clear();
        self.stride_due.clear();
        self.stride_newest = None;
        self.retire();
    }

    /// Whether a request may be sent now: always to a sender that answers (or when the
    /// stream does not tell), never to an unreachable one, and to one that has not answered
    /// once the spacing has passed.
    #[inline]
    fn may_request(&self) -> bool {
        match self.answering {
            Answering::Answers => true,
            Answering::Unreachable => false,
            Answering::Unknown => !self.tells_answering() || self.now >= self.request_next,
        }
    }

    /// The configuration in use (normalized).
    pub fn config(&self) -> &StreamConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// The current epoch (0 until the first restart).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The next sequence number to retire and the next one expected: `[tail, head)` is open.
    pub fn window(&self) -> Range<u64> {
        self.tail..self.head
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
    pub fn memory_bound_for(config: &StreamConfig) -> usize {
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

    fn bits(&self) -> u64 {
        self.delivered.len() as u64 * 64
    }

    fn mark_delivered(&mut self, seq: u64) {
        let bit = slot_of(self.delivered.len() * 64, seq);
        self.delivered[bit / 64] |= 1 << (bit % 64);
    }

    /// Whether this epoch delivered `seq`, one the stream [remembers](Stream::remembers):
    /// its bit, or beyond the bitmap (the ring shrank), whether it is above every number
    /// given up on.
    fn was_delivered(&self, seq: u64) -> bool {
        if self.head - seq > self.bits() {
            return seq >= self.delivered_since;
        }
        let bit = slot_of(self.delivered.len() * 64, seq);
        self.delivered[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// Whether the stream knows if this epoch delivered `seq` (below the head): within the
    /// bitmap, or within the reach of a full-size bitmap (`8 × slots`) where every number
    /// from `delivered_since` to the tail was delivered.
    #[inline]
    fn remembers(&self, seq: u64) -> bool {
        let back = self.head - seq;
        back <= self.bits()
            || (seq >= self.delivered_since
                && back <= (ring_len(self.config.slots) * DELIVERED_SPAN) as u64)
    }

    /// Forgets the bits of `[from, to)` (numbers the head now passes).
    fn clear_delivered(&mut self, from: u64, to: u64) {
        if to - from >= self.bits() {
            self.delivered.fill(0);
            return;
        }
        // Fewer than `bits` numbers: one or more whole words between partial ones at the ends.
        let bits = self.delivered.len() * 64;
        let mut pos = slot_of(bits, from);
        let mut left = (to - from) as usize;
        while left > 0 {
            let low = pos % 64;
            let n = left.min(64 - low);
            if let Some(word) = self.delivered.get_mut(pos / 64) {
                *word &= !((u64::MAX >> (64 - n)) << low);
            }
            left -= n;
            pos += n;
            if pos == bits {
                pos = 0;
            }
        }
    }

    fn slot(&self, seq: u64) -> &Slot {
        &self.slots[slot_of(self.slots.len(), seq)]
    }

    fn slot_mut(&mut self, seq: u64) -> &mut Slot {
        let n = self.slots.len();
        &mut self.slots[slot_of(n, seq)]
    }

    /// Whether the ring entry of `seq` is about `seq` in this epoch.
    fn tagged(&self, seq: u64) -> bool {
        let slot = self.slot(seq);
        slot.epoch == self.epoch && slot.seq == seq && !matches!(slot.state, SlotState::Free)
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
        false
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

    /// The next deadline, if any: the earliest of the stream's [timers](Timer) (the next
    /// interval request, the give-up time of the tail's hole, the out-of-order buffer's
    /// timeout and the ack). Each is the exact instant it is due, never "now + interval";
    /// an interval request whose holes were all filled meanwhile (but not yet retired)
    /// passes without output.
    #[inline]
    pub fn poll_timeout(&self) -> Option<Instant> {
        // The table written out: as `Timer::ALL`'s minimum through `deadline`, it cost 3.5%
        // more instructions at 50% loss.
        let mut next = self.request_deadline();
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(t) = self.give_up_deadline() {
            consider(t);
        }
        if let Some(t) = self.out_of_order_deadline() {
            consider(t);
        }
        if let Some(t) = self.ack_deadline() {
            consider(t);
        }
        debug_assert_eq!(
            next,
            Timer::ALL
                .into_iter()
                .filter_map(|timer| self.deadline(timer))
                .min()
        );
        next
    }

    /// When `timer` is due, if it runs. Each deadline is derived from the state it watches
    /// (nothing is stored twice), so it cannot go stale.
    fn deadline(&self, timer: Timer) -> Option<Instant> {
        match timer {
            Timer::Request => self.request_deadline(),
            Timer::GiveUp => self.give_up_deadline(),
            Timer::OutOfOrder => self.out_of_order_deadline(),
            Timer::Ack => self.ack_deadline(),
        }
    }

    /// [`Timer::Request`]: the front of the time-ordered interval requests.
    #[inline]
    fn request_deadline(&self) -> Option<Instant> {
        self.requests_due.front().map(|&(at, _, _)| at)
    }

    /// [`Timer::GiveUp`]: the hold time after the tail's run was found.
    #[inline]
    fn give_up_deadline(&self) -> Option<Instant> {
        let (_, run) = self
            .runs
            .is_open()
            .then(|| self.runs.first(self.tail, self.head))
            .flatten()?;
        Some(self.give_up_at(&run))
    }

    /// [`Timer::OutOfOrder`]: the oldest buffered out-of-order record's timeout.
    #[inline]
    fn out_of_order_deadline(&self) -> Option<Instant> {
        self.oos
            .front()
            .map(|front| front.at + self.config.out_of_order_timeout)
    }

    /// [`Timer::Ack`]: `ack_interval` after records were retired, unless the ack is due.
    #[inline]
    fn ack_deadline(&self) -> Option<Instant> {
        match (self.ack_pending_since, self.config.ack_interval) {
            (Some(since), Some(interval)) if !self.ack_due => Some(since + interval),
            _ => None,
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
    pub fn has_event(&self) -> bool {
        self.out.has_event()
    }

    /// Events waiting.
    pub fn pending_events(&self) -> usize {
        self.out.len()
    }

    /// Whether a response packet waits.
    pub fn has_transmit(&self) -> bool {
        self.started
            && (self.ack_due || !self.requests.is_empty())
            && self.answering != Answering::Unreachable
    }

    /// Writes the next response packet (`ncrx<ack> <seq>...`, at most 1000 bytes) into
    /// `buf`, for the source's address and port; returns its length.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<usize> {
        if !self.has_transmit() {
            return None;
        }
        let Some(ack) = self.tail.checked_sub(1) else {
            // Nothing retired yet at sequence 0: no ack can be expressed.
            self.requests.clear();
            self.ack_due = false;
            return None;
        };
        // The runs asked for while the sender is not known to answer: one arriving shows it.
        let probing = self.answering == Answering::Unknown && self.tells_answering();
        let mut probed = core::mem::take(&mut self.probed);
        probed.clear();
        // A buffer kept for the stream's life (not zeroed on every response).
        let mut scratch = core::mem::take(&mut self.response_seqs);
        if scratch.len() != RESPONSE_SEQS {
            scratch = alloc::vec![0; RESPONSE_SEQS];
        }
        let mut count = 0;
        while count < RESPONSE_SEQS {
            let Some(range) = self.requests.pop_front() else {
                break;
            };
            let start = range.start.max(self.tail);
            let end = range.end.min(self.head);
            if start >= end {
                continue;
            }
            // The incomplete numbers of [start, end) are those of the runs there: the run
            // holding `start`, then the runs starting after it (records that arrived are
            // skipped without being looked at).
            let mut resume = end;
            let mut gather = |run_start: u64, run: &Run| {
                if probing && !run.requested && probed.len() < RESPONSE_SEQS {
                    probed.push(run_start);
                }
                for seq in run_start.max(start)..run.end.min(end) {
                    if count == RESPONSE_SEQS {
                        resume = seq;
                        return false;
                    }
                    scratch[count] = seq;
                    count += 1;
                }
                true
            };
            let holding = self
                .runs
                .last(self.tail, start + 1)
                .filter(|(_, run)| run.end > start);
            if holding.is_none_or(|(run_start, run)| gather(run_start, &run)) {
                self.runs.each(start + 1, end, gather);
            }
            if resume < end {
                self.requests.push_front(resume..end);
            }
        }
        let len = self.encode_requests(ack, &mut scratch[..count], buf);
        self.response_seqs = scratch;
        if probing && len.is_some() {
            for &start in &probed {
                if let Some(run) = self.runs.get_mut(start) {
                    run.requested = true;
                }
            }
        }
        self.probed = probed;
        len
    }

    /// Sorts the gathered sequence numbers, drops repeats, writes the response; what does not
    /// fit is asked for in the next one.
    fn encode_requests(&mut self, ack: u64, seqs: &mut [u64], buf: &mut [u8]) -> Option<usize> {
        seqs.sort_unstable();
        let mut unique = 0;
        for i in 0..seqs.len() {
            if unique == 0 || seqs[i] != seqs[unique - 1] {
                seqs[unique] = seqs[i];
                unique += 1;
            }
        }
        // Only the ack itself can be at or below it (0, at a fresh boot's head).
        let skip = seqs[..unique].partition_point(|&seq| seq <= ack);
        if unique == skip && !self.ack_due {
            // Everything asked for arrived or was retired meanwhile.
            return None;
        }
        let (len, fitted) = encode_response(ack, &seqs[skip..unique], buf)?;
        for &seq in seqs[skip + fitted..unique].iter().rev() {
            self.requests.push_front(seq..seq + 1);
        }
        self.stats.requested += fitted as u64;
        self.stats.responses += 1;
        if fitted > 0 && self.answering == Answering::Unknown && self.tells_answering() {
            self.request_next = self.now + self.request_spacing;
            if self.gave_up_unanswered {
                self.request_spacing = self
                    .request_spacing
                    .saturating_mul(2)
                    .min(crate::config::UNANSWERED_REQUEST_SPACING_MAX);
            }
        }
        self.ack_due = false;
        self.ack_pending_since = None;
        Some(len)
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
        let seq = header.seq;
        let release_differs = match (header.release, &self.epoch_release) {
            (Some(release), Some(current)) => release != &current[..],
            _ => false,
        };
        if !self.started
            || seq != self.head
            || self.tail != self.head
            || seq == u64::MAX
            || header.ncemg
            || release_differs
            || header.ncfrag.is_some()
            || header.ts_usec.saturating_add(self.ts_back) < self.newest_ts.max(self.epoch_first_ts)
        {
            return false;
        }
        self.stats.datagrams += 1;
        self.oos_history <<= 1;
        self.newest_ts = self.newest_ts.max(header.ts_usec);
        self.head = seq + 1;
        self.tail = seq + 1;
        let meta = RecordMeta::of(header);
        let header_len = datagram.len() - body_len;
        match direct {
            Some(f) => f(Event::Record(meta.view(datagram, header_len))),
            None => self.out.record(meta, datagram, header_len, false),
        }
        self.stats.delivered += 1;
        // The head passes `seq`: its bit now says "delivered in this epoch".
        self.mark_delivered(seq);
        let epoch = self.epoch;
        let slot = self.slot_mut(seq);
        slot.epoch = epoch;
        slot.seq = seq;
        slot.ts_usec = header.ts_usec;
        slot.state = SlotState::Delivered;
        self.note_retired();
        if !self.requests_due.is_empty() {
            self.retire();
        }
        if seq >= self.shrink_at {
            // In order for as many numbers as the larger ring holds.
            self.shrink_quiet();
        }
        true
    }

    fn on_record(&mut self, record: &ExtRecord<'_>, datagram: &[u8]) {
        let header = &record.header;
        let seq = header.seq;
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
            self.begin_epoch(seq, header.release, header.ts_usec);
        }
        if let (Some(release), Some(current)) = (header.release, &self.epoch_release) {
            if release != &current[..] {
                self.restart(RestartReason::Release, record, datagram);
                return;
            }
        }
        let slots = self.config.slots as u64;
        let back = self.ts_back_usec();
        if seq >= self.epoch_start && header.ts_usec.saturating_add(back) < self.epoch_first_ts {
            // At or after the epoch's first record, yet far earlier in time: another boot.
            self.restart(RestartReason::Timestamp, record, datagram);
        } else if seq < self.epoch_start
            && seq >= self.epoch_origin
            && header.ts_usec > self.epoch_first_ts.saturating_add(back)
        {
            // Before the epoch's first record (at a fresh boot's head), yet far later in
            // time: another boot.
            self.restart(RestartReason::Timestamp, record, datagram);
        } else if seq >= self.head {
            if header.ts_usec.saturating_add(back) < self.newest_ts {
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
            && header.ts_usec.abs_diff(self.epoch_first_ts) <= back
        {
            // Sent just before the record the stream started with, overtaken on the way.
            self.before_start(record, datagram);
        } else if header.ncemg {
            self.stats.stale_emergency += 1;
        } else if header.ts_usec.saturating_add(self.ts_back_usec()) < self.newest_ts {
            self.restart(RestartReason::FarBack, record, datagram);
        } else {
            self.out_of_order(record, datagram);
        }
    }

    fn ts_back_usec(&self) -> u64 {
        self.ts_back
    }

    /// Starts an epoch with the record `(seq, ts_usec)`. When it is evidently from a fresh
    /// boot, its number within the window of 0 ([`StreamConfig::ask_for_boot_head`]), the
    /// window starts at 0, so that the numbers before it are holes.
    fn begin_epoch(&mut self, seq: u64, release: Option<&[u8]>, ts_usec: u64) {
        let fresh = self.config.ask_for_boot_head && seq < self.config.max_open();
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
        let (mut start, mut first_ts) = (record.header.seq, record.header.ts_usec);
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
            if !placed_trigger && entry.seq > record.header.seq {
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
        let seq = record.header.seq;
        if seq >= self.head {
            self.place_ahead(record, datagram);
        } else if seq >= self.tail {
            self.place_in_window(record, datagram);
        } else {
            self.late_once(record, datagram);
        }
    }

    fn out_of_order(&mut self, record: &ExtRecord<'_>, datagram: &[u8]) {
        let (seq, ts_usec) = (record.header.seq, record.header.ts_usec);
        self.far_arrivals += 1;
        for entry in self.oos.iter().filter(|e| e.seq == seq) {
            if entry.ts_usec == ts_usec && *entry.datagram == *datagram {
                self.stats.duplicates += 1;
                return;
            }
            // Fragments of one record differ in their bytes; anything else claiming a
            // buffered number is another record. Neither is placed yet, so nothing tells a
            // restart from a stray: the first claim stands.
            let fragments = record.is_fragment()
                && entry.ts_usec == ts_usec
                && matches!(
                    Datagram::parse(&entry.datagram),
                    Ok(Datagram::Extended(old)) if old.is_fragment()
                );
            if !fragments {
                self.stats.conflicts += 1;
                return;
            }
        }
        self.stats.out_of_order += 1;
        self.oos_history |= 1;
        if self.oos_history.count_ones() >= self.config.out_of_order_threshold {
            self.restart(RestartReason::OutOfOrder, record, datagram);
            return;
        }
        if !self.make_room(datagram.len(), None) {
            self.stats.over_budget += 1;
            return;
        }
        self.held_bytes += datagram.len();
        self.oos.push_back(OutOfOrder {
            at: self.now,
            seq: record.header.seq,
            ts_usec: record.header.ts_usec,
            taken: self.taken(),
            datagram: Box::from(datagram),
        });
        if self.oos.len() > OUT_OF_ORDER_MAX {
            self.release_oldest_oos(Release::Judge);
        }
    }

    /// Records taken other than as out of order so far (in the window, ahead of it, behind
    /// it, duplicates of those): the stream's own traffic, as far as far-away records are
    /// concerned.
    fn taken(&self) -> u64 {
        self.stats.datagrams - self.far_arrivals
    }

    /// Whether the oldest buffered record (at or ahead of the window) is to be followed
    /// there: it and the buffered records near it (within `slots`) outnumber what the stream
    /// took since it arrived in the ratio of the out-of-order threshold (19 of 32 by
    /// default). A stream that went silent is followed; one that keeps going is not
    /// abandoned for far records arriving beside it, however consistent they are (one of
    /// two kernels behind one address, or a peer sending them on purpose). At most
    /// [`OUT_OF_ORDER_MAX`] entries are looked at.
    fn follows_oldest_oos(&self) -> bool {
        let Some(oldest) = self.oos.front() else {
            return false;
        };
        let slots = self.config.slots as u64;
        let near = self
            .oos
            .iter()
            .filter(|e| e.seq.abs_diff(oldest.seq) <= slots)
            .count() as u64;
        let taken = self.taken() - oldest.taken;
        near * 32 >= u64::from(self.config.out_of_order_threshold) * (near + taken)
    }

    /// Releases the oldest buffered out-of-order record: it did not restart the stream, so it
    /// is taken as if it arrived now, except that it no longer waits as out of order.
    ///
    /// - At or ahead of the window (`place`): it is placed there. The numbers between the
    ///   window and it are a hole the receiver learned of when the record arrived: given up
    ///   on (an [`Event::Lost`]) `message_timeout` after that, or at once where the window
    ///   overflows, and the record then comes out in order. Delivering it late and forgetting
    ///   it would let the same number be delivered again when the window reaches it.
    ///   With [`Release::Judge`], only if the far records outnumber what the stream took
    ///   meanwhile ([`Stream::follows_oldest_oos`]); else it is dropped and counted in
    ///   [`StreamStats::out_of_order_dropped`], and the stream goes on where it is.
    /// - At or ahead of the window with [`Release::Shed`] (to free bytes): dropped, counted
    ///   as over budget; it is still missing there, so it is asked for and given up on as any
    ///   hole.
    /// - Behind the tail: delivered late once, or dropped as a duplicate or a conflict.
    fn release_oldest_oos(&mut self, release: Release) {
        let follow = match self.oos.front() {
            None => return,
            Some(front) if front.seq >= self.head && release == Release::Judge => {
                self.follows_oldest_oos()
            }
            Some(_) => true,
        };
        let Some(entry) = self.oos.pop_front() else {
            return;
        };
        self.held_bytes -= entry.datagram.len();
        let Ok(Datagram::Extended(record)) = Datagram::parse(&entry.datagram) else {
            return;
        };
        let seq = entry.seq;
        if seq >= self.tail {
            if release == Release::Shed {
                self.stats.over_budget += 1;
            } else if !follow {
                self.stats.out_of_order_dropped += 1;
            } else if seq < self.head {
                self.place_in_window(&record, &entry.datagram);
            } else if entry.ts_usec.saturating_add(self.ts_back_usec()) >= self.newest_ts {
                // Runs time out in sequence order (one give-up deadline, the tail's): not
                // before the last open one.
                let learned_at = self
                    .runs
                    .last(self.tail, self.head)
                    .map_or(entry.at, |(_, run)| entry.at.max(run.learned_at));
                self.place_ahead_at(&record, &entry.datagram, learned_at);
            } else {
                // Ahead in sequence yet far back in time: not this boot's continuation; had
                // it arrived now it would restart the stream.
                self.restart(RestartReason::Timestamp, &record, &entry.datagram);
            }
            return;
        }
        self.late_once(&record, &entry.datagram);
    }

    /// A record behind the tail, delivered late at most once, without restarting the stream
    /// or storing anything: a number this epoch delivered (with this `ts_usec`) is a
    /// duplicate, one the ring remembers with another `ts_usec` a conflict, and one further
    /// back than the delivered bitmap reaches is dropped (it may have come out already).
    fn late_once(&mut self, record: &ExtRecord<'_>, datagram: &[u8]) {
        let (seq, ts_usec) = (record.header.seq, record.header.ts_usec);
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
        let (seq, ts_usec) = (record.header.seq, record.header.ts_usec);
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
        let seq = record.header.seq;
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
        let seq = record.header.seq;
        let ts_usec = record.header.ts_usec;
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
        let seq = record.header.seq;
        let old_head = self.head;
        self.newest_ts = self.newest_ts.max(record.header.ts_usec);
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
            slot.ts_usec = record.header.ts_usec;
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
        let ts_usec = record.header.ts_usec;
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
        let seq = record.header.seq;
        self.newest_ts = self.newest_ts.max(record.header.ts_usec);
        if self.tagged(seq) {
            let is_partial = matches!(self.slot(seq).state, SlotState::Partial(_));
            if !is_partial {
                self.stats.duplicates += 1;
                return;
            }
            if self.slot(seq).ts_usec != record.header.ts_usec {
                self.restart(RestartReason::Timestamp, record, datagram);
                return;
            }
            self.add_fragment(seq, record, datagram);
            return;
        }
        // A missing number: its timestamp must fit between its neighbours' (same boot).
        let back = self.ts_back_usec();
        let ts_usec = record.header.ts_usec;
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

    /// Asks for the holes of `[start, end)` one request delay from now (the retransmit
    /// interval, shorter while the sender has not answered); never to an unreachable sender.
    fn schedule_request(&mut self, start: u64, end: u64) {
        if self.answering == Answering::Unreachable {
            return;
        }
        if self.requests_due.len() >= 2 * self.config.slots {
            while self
                .requests_due
                .front()
                .is_some_and(|&(_, _, end)| end <= self.tail)
            {
                self.requests_due.pop_front();
            }
            if self.requests_due.len() >= 2 * self.config.slots {
                // A flood of holes: these are left to the stride rule and the timeout.
                return;
            }
        }
        let mut at = self.now + self.request_delay;
        if let Some(back) = self.requests_due.back_mut() {
            // In time order even when the delay grew meanwhile (the sender answered).
            at = at.max(back.0);
            // Adjacent ranges due close together (one per packet as the head moves) make
            // one entry.
            if back.2 == start
                && at
                    .saturating_duration_since(back.0)
                    .checked_mul(4)
                    .is_some_and(|d| d <= self.config.retransmit_interval)
            {
                back.2 = end;
                return;
            }
        }
        self.requests_due.push_back((at, start, end));
    }

    fn request(&mut self, range: Range<u64>) {
        if self.requests.len() < self.config.slots && self.may_request() {
            if self.tail == 0 && self.epoch_origin < self.epoch_start {
                // At a fresh boot's head with 0 missing. A response cannot say "nothing
                // retired" (its ack is a retired number, every number asked for is above
                // it), so 0 can never be asked for: it is given up on now and acked (the
                // sender forgets it), to ask for the numbers above it. Held any longer, it
                // would only hold back the whole stream. (Not a sign that the sender does
                // not answer: requests stay as frequent.)
                let unanswered = self.gave_up_unanswered;
                self.give_up(0, 1);
                self.gave_up_unanswered = unanswered;
            }
            self.requests.push_back(range);
        }
    }

    /// Schedules a stride request for the missing `[start, end)`, due once the head is more
    /// than `distance` past `from`.
    fn stride_after(&mut self, start: u64, end: u64, from: u64, distance: u64) {
        if self.stride_due.len() < 2 * self.config.slots {
            // Rounded up to a quarter stride, so that the requests due around the same head
            // position leave in one response.
            let quantum = (self.config.retransmit_stride / 4).max(1);
            let due = from
                .saturating_add(distance + 1)
                .div_ceil(quantum)
                .saturating_mul(quantum);
            if distance == self.config.retransmit_stride {
                match &mut self.stride_newest {
                    Some(newest) if newest.0 == due && newest.2 <= start => newest.2 = end,
                    newest => {
                        if let Some(full) = newest.replace((due, start, end, distance)) {
                            self.stride_due.push(Reverse(full));
                        }
                    }
                }
            } else {
                self.stride_due.push(Reverse((due, start, end, distance)));
            }
        }
    }

    /// Asks for the missing ranges the head has moved far enough past, and schedules them
    /// again twice as far: a hole is asked for O(log window) times by this rule, so the
    /// requests a packet causes do not grow with the number of holes.
    fn stride_check(&mut self) {
        if self
            .stride_newest
            .is_some_and(|newest| newest.0 <= self.head)
        {
            if let Some(newest) = self.stride_newest.take() {
                self.stride_due.push(Reverse(newest));
            }
        }
        while let Some(&Reverse((due, start, end, distance))) = self.stride_due.peek() {
            if due > self.head {
                break;
            }
            self.stride_due.pop();
            let start = start.max(self.tail);
            if start < end {
                self.request(start..end);
                self.stride_after(start, end, self.head, distance.saturating_mul(2));
            }
        }
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
