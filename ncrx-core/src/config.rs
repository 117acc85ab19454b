//! The receiver's parameters ([`StreamConfig`], [`ReceiverConfig`]), their presets and
//! limits.

use core::time::Duration;

/// Most out-of-order records one stream buffers (libncrx tracks the last 32 packets).
pub(crate) const OUT_OF_ORDER_MAX: usize = 32;

/// Most [`StreamConfig::slots`]: 2^24, sixteen million sequence numbers (a ring of about
/// 640 MiB for one source); more is taken as this.
pub(crate) const MAX_SLOTS: usize = 1 << 24;

/// A stream's first record numbered below this is taken as a fresh boot's
/// ([`StreamConfig::ask_for_boot_head`]): a netconsole target that exists at boot sends the
/// boot's records from 0 (its console replays the log buffer), so a first record heard at
/// 1..63 means the ones before it were lost on the way. A target created later (configfs,
/// or the module loaded after boot) starts at whatever record is next, hundreds or
/// thousands in: Linux 6.1 and 7.3 configfs targets started at 394 in the kernel tests, and
/// asking for 0..393 would report as lost records never sent to it.
pub const BOOT_HEAD: u64 = 64;

/// Largest spacing of requests to a sender that has not answered: 64 s (see
/// [`StreamConfig`], senders that answer and senders that do not).
pub(crate) const UNANSWERED_REQUEST_SPACING_MAX: Duration = Duration::from_secs(64);

/// Parameters of one source's stream.
///
/// [`StreamConfig::default`] is libncrx's values plus the handling of senders that do not
/// answer retransmission requests (mainline Linux never does):
/// [`unanswered_hole_timeout`](StreamConfig::unanswered_hole_timeout) 1 s, and asks for
/// the head of a stream that starts with a fresh boot
/// ([`ask_for_boot_head`](StreamConfig::ask_for_boot_head)).
/// [`StreamConfig::libncrx`] keeps libncrx's values exactly (that handling off), for
/// comparison; [`StreamConfig::daemon`] is netconsd's preset, also without it.
///
/// | parameter | default | libncrx | daemon preset | meaning |
/// |---|---|---|---|---|
/// | [`unanswered_hole_timeout`](StreamConfig::unanswered_hole_timeout) | 1 s | off | off | give up on a hole this soon while the sender has not answered a request |
/// | [`ask_for_boot_head`](StreamConfig::ask_for_boot_head) | on | off | off | a fresh boot's first record: the numbers before it are holes |
/// | [`slots`](StreamConfig::slots) | 8192 | 8192 | 512 | reorder window, in sequence numbers |
/// | [`ack_interval`](StreamConfig::ack_interval) | off | off | 200 ms | ack retired records after this long |
/// | [`retransmit_interval`](StreamConfig::retransmit_interval) | 1000 ms | 1000 ms | 200 ms | ask for a hole again this often |
/// | [`retransmit_stride`](StreamConfig::retransmit_stride) | 256 | 256 | 256 | ask for a hole each time the head moves this far past it |
/// | [`message_timeout`](StreamConfig::message_timeout) | 30 s | 30 s | 200 ms | give up on a hole (loss event) once the sender answers |
/// | [`out_of_order_threshold`](StreamConfig::out_of_order_threshold) | 19 of 32 | 19 of 32 | 19 of 32 | restart the stream |
/// | [`out_of_order_interval`](StreamConfig::out_of_order_interval) | 5 s | 5 s | 200 ms | kept for libncrx parity (see the field) |
/// | [`out_of_order_timeout`](StreamConfig::out_of_order_timeout) | 30 s | 30 s | 200 ms | release a buffered out-of-order record |
/// | [`restart_ts_back`](StreamConfig::restart_ts_back) | 1 s | 1 s | 1 s | restart at once when `ts_usec` goes back this far |
/// | [`max_held_bytes`](StreamConfig::max_held_bytes) | 16 MiB | 16 MiB | 2 MiB | record bytes one stream holds |
/// | [`max_fragmented_total`](StreamConfig::max_fragmented_total) | 128 KiB | 128 KiB | 128 KiB | largest fragmented record ([`DEFAULT_MAX_TOTAL`](netconsole_proto::DEFAULT_MAX_TOTAL)) |
///
/// # Senders that answer and senders that do not
///
/// A stream learns that its sender answers retransmission requests when a number it asked
/// for arrives after the request went out, or when an `ncemg` record arrives (only a
/// reliable sender sends them); [`Stream::answering`](crate::Stream::answering) says what it
/// knows. Until then, with
/// [`unanswered_hole_timeout`](StreamConfig::unanswered_hole_timeout) set:
///
/// - a hole is held that long (at most `message_timeout`), then reported lost: what follows
///   it is written within that time, not 30 s later;
/// - a hole is first asked for after `min(retransmit_interval, unanswered_hole_timeout / 2)`,
///   so that a sender that answers can show it before the hole is given up;
/// - requests are rate-limited: at most one response carrying requests per spacing, which
///   starts at `retransmit_interval` and, once a hole has been given up unanswered, doubles
///   with every such response up to 64 s. With the defaults a stock kernel with steady loss
///   gets about 7 requests in its first minute and one a minute after that, instead of one
///   a second per hole.
///
/// Once the sender answers, every open hole is held its full `message_timeout` from when it
/// was found, and requests follow `retransmit_interval` and `retransmit_stride` without
/// limit. This knowledge is kept across stream restarts (the sender's software rarely
/// changes with a reboot; an ICMP error says so when it does).
///
/// [`Stream::handle_unreachable`](crate::Stream::handle_unreachable) (the sender's port is
/// closed, ICMP port unreachable) makes the stream send that sender nothing at all, neither
/// requests nor acks, and hold its holes at most `unanswered_hole_timeout` from then on, until
/// an `ncemg` record arrives (a number asked for before the port closed and arriving after
/// does not count: it answers a request the port took before it closed).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamConfig {
    /// While the sender has not shown that it answers retransmission requests, give up on a
    /// hole this long after it was found (capped at `message_timeout`; `None`: always
    /// `message_timeout`, as libncrx). The reorder window for a stock kernel, which never
    /// answers: records behind a lost one are written this late at most. See
    /// [senders that answer and senders that do not](StreamConfig#senders-that-answer-and-senders-that-do-not).
    pub unanswered_hole_timeout: Option<Duration>,
    /// When the first record of an epoch (a new stream, or a restart) is evidently from a
    /// fresh boot, its `seq` below [`BOOT_HEAD`] (64; every boot numbers its records from 0,
    /// and a target that exists at boot sends them from 0), the numbers from 0 before it are
    /// holes: asked for as any hole (with nothing retired yet, the response's ack is
    /// `u64::MAX`, which acknowledges nothing), reported lost if they never come. A stream
    /// joined in the middle asks for nothing before its first record, and neither does
    /// libncrx; so does a target created after boot, whose first record is
    /// numbered from [`BOOT_HEAD`] up. `ts_usec` is not used: a small one does not say how
    /// far back the boot's numbers go.
    ///
    /// A record of the *next* boot that arrives while this head is still open (the machine
    /// rebooted within the hold time) looks like one of it, unless its `ts_usec` is later
    /// than the first record's or a record received within 64 numbers below it is later:
    /// it is then placed in this boot's head. Once the head is retired such a record
    /// restarts the stream as before.
    pub ask_for_boot_head: bool,
    /// Reorder window in sequence numbers (at least `retransmit_stride + 1`, at least 2, at
    /// most 2^24, a ring of about 640 MiB for one source; the ring is allocated at the next
    /// power of two).
    /// The stream keeps at most `slots - retransmit_stride` sequence numbers open; the rest of
    /// the ring remembers what was retired, to tell duplicates from late records.
    pub slots: usize,
    /// Send an ack this long after records were retired (`None`: only with retransmission
    /// requests and emergency records, as libncrx's default `ack_intv = 0`).
    pub ack_interval: Option<Duration>,
    /// Ask again for a missing record this often.
    pub retransmit_interval: Duration,
    /// Also ask for a missing record each time the head crosses a multiple of this many
    /// sequence numbers while the hole is more than this far behind it.
    pub retransmit_stride: u64,
    /// Give up on a missing record this long after the receiver learned it was missing.
    pub message_timeout: Duration,
    /// Restart the stream when this many of the last 32 records were out of order.
    pub out_of_order_threshold: u32,
    /// libncrx's `oos_intv`: it decided "duplicate or out of order" for an already retired
    /// slot from the slot's last activity. This receiver remembers what it retired instead
    /// (see [`crate::Stream`]), so the value only documents parity with libncrx.
    pub out_of_order_interval: Duration,
    /// Release a buffered out-of-order record after this long: behind the window as
    /// [`crate::Event::Late`]; ahead of it followed there if the stream went (nearly) silent
    /// meanwhile, else dropped and counted in
    /// [`StreamStats::out_of_order_dropped`](crate::StreamStats::out_of_order_dropped).
    pub out_of_order_timeout: Duration,
    /// A record whose sequence number is before anything the stream remembers and whose
    /// `ts_usec` is more than this far behind the newest one restarts the stream at once
    /// (the sender rebooted or replayed its log), instead of waiting for the threshold.
    pub restart_ts_back: Duration,
    /// Most record bytes one stream holds (window, reassembly and out-of-order buffer).
    pub max_held_bytes: usize,
    /// Largest fragmented record accepted (`ncfrag` total).
    pub max_fragmented_total: usize,
}

impl Default for StreamConfig {
    /// libncrx's values ([`StreamConfig::libncrx`]) with senders that do not answer handled
    /// ([`unanswered_hole_timeout`](StreamConfig::unanswered_hole_timeout) 1 s) and a fresh
    /// boot's head asked for ([`ask_for_boot_head`](StreamConfig::ask_for_boot_head)).
    fn default() -> Self {
        StreamConfig {
            unanswered_hole_timeout: Some(Duration::from_secs(1)),
            ask_for_boot_head: true,
            ..StreamConfig::libncrx()
        }
    }
}

impl StreamConfig {
    /// libncrx's defaults exactly: every hole held `message_timeout` (30 s) whether the
    /// sender answers or not, requests every `retransmit_interval`, nothing asked for before
    /// a stream's first record.
    pub fn libncrx() -> Self {
        StreamConfig {
            unanswered_hole_timeout: None,
            ask_for_boot_head: false,
            slots: 8192,
            ack_interval: None,
            retransmit_interval: Duration::from_secs(1),
            retransmit_stride: 256,
            message_timeout: Duration::from_secs(30),
            out_of_order_threshold: 19,
            out_of_order_interval: Duration::from_secs(5),
            out_of_order_timeout: Duration::from_secs(30),
            restart_ts_back: Duration::from_secs(1),
            max_held_bytes: 16 << 20,
            max_fragmented_total: netconsole_proto::DEFAULT_MAX_TOTAL,
        }
    }

    /// The production daemon's preset (netconsd): 512 slots, every timer 200 ms, acks on;
    /// senders that do not answer are not handled apart (its holes last 200 ms anyway).
    pub fn daemon() -> Self {
        let ms200 = Duration::from_millis(200);
        StreamConfig {
            slots: 512,
            ack_interval: Some(ms200),
            retransmit_interval: ms200,
            message_timeout: ms200,
            out_of_order_interval: ms200,
            out_of_order_timeout: ms200,
            max_held_bytes: 2 << 20,
            ..StreamConfig::libncrx()
        }
    }

    /// The same values made consistent: at least 2 slots, a stride below the window,
    /// non-zero intervals, a threshold within 1..=32.
    pub(crate) fn normalized(mut self) -> Self {
        let tick = Duration::from_nanos(1);
        self.slots = self.slots.clamp(2, MAX_SLOTS);
        let max_stride = (self.slots as u64 - 1).max(1);
        self.retransmit_stride = self.retransmit_stride.clamp(1, max_stride);
        self.retransmit_interval = self.retransmit_interval.max(tick);
        if let Some(hold) = &mut self.unanswered_hole_timeout {
            *hold = (*hold).min(self.message_timeout);
        }
        self.out_of_order_threshold = self.out_of_order_threshold.clamp(1, 32);
        if let Some(interval) = &mut self.ack_interval {
            *interval = (*interval).max(tick);
        }
        self
    }

    /// Sequence numbers the stream keeps open at most (`slots - retransmit_stride`).
    pub(crate) fn max_open(&self) -> u64 {
        (self.slots as u64 - self.retransmit_stride).max(1)
    }
}

/// Default of [`ReceiverConfig::max_held_bytes_total`]: 256 MiB held over all sources.
pub(crate) const DEFAULT_MAX_HELD_BYTES_TOTAL: usize = 256 << 20;

/// Parameters of the multi-source front ([`crate::Receiver`]).
///
/// | parameter | default | meaning |
/// |---|---|---|
/// | [`max_sources`](ReceiverConfig::max_sources) | 1024 | sources tracked at once |
/// | [`idle_timeout`](ReceiverConfig::idle_timeout) | 600 s | evict a quiet source |
/// | [`evict_when_full_after`](ReceiverConfig::evict_when_full_after) | 10 s | quiet time before a full table evicts |
/// | [`max_held_bytes_total`](ReceiverConfig::max_held_bytes_total) | 256 MiB | record bytes held over all sources |
///
/// Each source also holds at most [`StreamConfig::max_held_bytes`] (16 MiB by default, 2 MiB
/// with the daemon preset): without the total, 1024 sources could hold 16 GiB.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceiverConfig {
    /// Each source's stream.
    pub stream: StreamConfig,
    /// Most sources tracked at once.
    pub max_sources: usize,
    /// A source quiet this long is flushed and evicted.
    pub idle_timeout: Duration,
    /// When `max_sources` are tracked, a new source evicts the least recently active one if
    /// that one has been quiet at least this long; otherwise its datagram is refused.
    pub evict_when_full_after: Duration,
    /// Most record bytes held by all sources together ([`Stream::held_bytes`](crate::Stream::held_bytes)
    /// summed), on top of each source's [`StreamConfig::max_held_bytes`]. Past it, the source
    /// holding the most gives up its oldest held bytes (complete records at its tail
    /// delivered, holes reported lost, incomplete records as such), then the next one if
    /// needed, until the total fits: nothing is dropped without an event or a counter.
    pub max_held_bytes_total: usize,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            stream: StreamConfig::default(),
            max_sources: 1024,
            idle_timeout: Duration::from_secs(600),
            evict_when_full_after: Duration::from_secs(10),
            max_held_bytes_total: DEFAULT_MAX_HELD_BYTES_TOTAL,
        }
    }
}

impl ReceiverConfig {
    /// libncrx's stream values ([`StreamConfig::libncrx`]) with the default limits.
    pub fn libncrx() -> Self {
        ReceiverConfig {
            stream: StreamConfig::libncrx(),
            ..ReceiverConfig::default()
        }
    }

    /// The daemon's stream preset ([`StreamConfig::daemon`]) with the default limits.
    pub fn daemon() -> Self {
        ReceiverConfig {
            stream: StreamConfig::daemon(),
            ..ReceiverConfig::default()
        }
    }
}
