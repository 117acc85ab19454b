//! The sender half of reliable netconsole, as a sans-IO state machine (described on
//! [`Sender`]).

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::time::Duration;

use netpoll_frame::Instant;

use crate::MAX_PRINT_CHUNK;
use crate::body::CONSOLE_EXT_LOG_MAX;
use crate::format::{ExtFragments, SendError, SendOptions};
use crate::header::{Header, HeaderError};
use crate::response::Response;

/// Sender configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SenderConfig {
    /// Most unacknowledged records held (default 1024).
    pub window: usize,
    /// Longest record accepted by [`Sender::push`] (default 8192, `CONSOLE_EXT_LOG_MAX`).
    pub max_record: usize,
    /// How long the ack may lag before emergency transmission (default 10 s).
    pub ack_timeout: Duration,
    /// First emergency interval (default 100 ms).
    pub emergency_min_interval: Duration,
    /// Largest emergency interval (default 1 s).
    pub emergency_max_interval: Duration,
    /// Kernel release to prepend to every datagram (`r`), if any.
    pub release: Option<Vec<u8>>,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            window: 1024,
            max_record: CONSOLE_EXT_LOG_MAX,
            ack_timeout: Duration::from_secs(10),
            emergency_min_interval: Duration::from_millis(100),
            emergency_max_interval: Duration::from_secs(1),
            release: None,
        }
    }
}

impl SenderConfig {
    /// This configuration with another window size.
    #[must_use]
    pub fn with_window(mut self, window: usize) -> Self {
        self.window = window;
        self
    }

    /// This configuration with a release to prepend.
    #[must_use]
    pub fn with_release(mut self, release: &[u8]) -> Self {
        self.release = Some(release.to_vec());
        self
    }
}

/// Why [`Sender::push`] refused a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SenderError {
    /// The record's header does not parse.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The record cannot be sent (see [`SendError`]).
    #[error(transparent)]
    Send(#[from] SendError),
    /// The record is longer than [`SenderConfig::max_record`].
    #[error("record longer than the configured maximum")]
    TooLong,
}

/// Counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SenderStats {
    /// Records pushed.
    pub pushed: u64,
    /// Records dropped unacknowledged because the window was full.
    pub dropped: u64,
    /// Records acknowledged.
    pub acked: u64,
    /// Records re-sent on request.
    pub retransmitted: u64,
    /// Requested records no longer held.
    pub unavailable: u64,
    /// Records sent by emergency transmission.
    pub emergency: u64,
    /// Times the sequence went backwards (a new stream): the window was cleared.
    pub restarts: u64,
}

fn send_options(release: Option<&[u8]>, ncemg: bool) -> SendOptions<'_> {
    SendOptions {
        release,
        ncemg,
        ..SendOptions::default()
    }
}

#[derive(Debug, Clone)]
struct Held {
    /// Push number: consecutive along `held`, so a record is found from its id in O(1).
    id: u64,
    seq: u64,
    msg: Vec<u8>,
    pushed_at: Instant,
    /// Whether a transmission of the whole record is queued and not started, plain
    /// (`[0]`) and `ncemg` (`[1]`): a request for it then adds nothing.
    queued: [bool; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    /// The [`Held::id`] of the record (a record acked or dropped meanwhile is skipped).
    id: u64,
    ncemg: bool,
    /// Body offset of the next fragment.
    offset: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Emergency {
    interval: Duration,
    /// Next sequence to send in this pass (`None`: the pass reached `u64::MAX`).
    next_seq: Option<u64>,
    next_at: Instant,
}

/// The sender half of reliable netconsole, as a sans-IO state machine.
///
/// From Tejun Heo's 2015 series (never merged; `nctx` in netconsd implements it in user
/// space): the sender keeps the records the receiver has not acknowledged yet, answers
/// response packets ([`crate::Response`]) and, when acknowledgements stop making progress,
/// re-sends on its own ("emergency transmission").
///
/// - [`Sender::push`] takes a record as printk formatted it ([`crate::format_kmsg`]) and
///   queues its datagrams (fragmented as the kernel does, [`crate::ExtFragments`]). The window
///   holds at most [`SenderConfig::window`] records: when full, the oldest is dropped and
///   counted ([`SenderStats::dropped`]).
/// - [`Sender::handle_response`] drops every record up to `ack_seq` and queues every
///   fragment of each listed record still held. The first response arms the emergency timer.
/// - Emergency transmission starts when the oldest unacknowledged record has waited
///   [`SenderConfig::ack_timeout`] (10 s) since it was pushed or since the last progress of
///   the ack, whichever is later. It then sends one record per interval, oldest first,
///   marked `,ncemg=1`; the interval starts at 100 ms and doubles after each full pass up to
///   1 s. Any progress of the ack ends it.
/// - [`Sender::poll_transmit`] hands out the datagrams, [`Sender::poll_timeout`] the exact next
///   deadline, [`Sender::handle_timeout`] acts on it (early or repeated calls are harmless).
///
/// Memory is bounded by the window and [`SenderConfig::max_record`], whatever the peer sends.
///
/// ```
/// use core::time::Duration;
/// use netconsole_proto::{Response, Sender, SenderConfig};
/// use netpoll_frame::Instant;
///
/// let mut sender = Sender::new(SenderConfig::default());
/// let t0 = Instant::from_millis(0);
/// sender.push(t0, b"6,10,5,-;first\n")?;
/// sender.push(t0, b"6,11,6,-;second\n")?;
/// let mut out = [0u8; 1000];
/// let mut next = |s: &mut Sender| s.poll_transmit(&mut out).map(|n| out[..n].to_vec());
/// assert_eq!(next(&mut sender).unwrap(), b"6,10,5,-;first\n");
/// assert_eq!(next(&mut sender).unwrap(), b"6,11,6,-;second\n");
/// assert_eq!(sender.poll_timeout(), None); // no receiver heard yet
///
/// sender.handle_response(t0, &Response::parse(b"ncrx10 11")?);
/// assert_eq!(next(&mut sender).unwrap(), b"6,11,6,-;second\n");
/// assert_eq!(sender.poll_timeout(), Some(t0 + Duration::from_secs(10)));
/// sender.handle_timeout(t0 + Duration::from_secs(10));
/// assert_eq!(next(&mut sender).unwrap(), b"6,11,6,-,ncemg=1;second\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Sender {
    config: SenderConfig,
    held: VecDeque<Held>,
    pending: VecDeque<Pending>,
    /// Message buffers of records no longer held, reused by [`Sender::push`] (at most
    /// `window` buffers in `held` and here together): no allocation in the steady state.
    spare: Vec<Vec<u8>>,
    /// The id of the next record pushed.
    next_id: u64,
    /// A response has been seen: acks are in use and the emergency timer runs.
    armed: bool,
    last_progress: Instant,
    emergency: Option<Emergency>,
    stats: SenderStats,
}

impl Sender {
    /// A sender with nothing held.
    ///
    /// A window of 0 is taken as 1, an emergency interval below 1 ms as 1 ms (so a driver
    /// looping on [`Sender::poll_timeout`] always sees time move), and a maximum interval
    /// below the minimum as the minimum.
    pub fn new(mut config: SenderConfig) -> Self {
        config.window = config.window.max(1);
        config.emergency_min_interval = config.emergency_min_interval.max(Duration::from_millis(1));
        config.emergency_max_interval = config
            .emergency_max_interval
            .max(config.emergency_min_interval);
        Sender {
            config,
            held: VecDeque::new(),
            pending: VecDeque::new(),
            spare: Vec::new(),
            next_id: 0,
            armed: false,
            last_progress: Instant::ZERO,
            emergency: None,
            stats: SenderStats::default(),
        }
    }

    /// The index in `held` of the record with this seq (held seqs are ascending).
    fn find(&self, seq: u64) -> Option<usize> {
        self.held.binary_search_by_key(&seq, |h| h.seq).ok()
    }

    /// The index in `held` of the record with this id (held ids are consecutive).
    fn index_of(&self, id: u64) -> Option<usize> {
        let front = self.held.front()?.id;
        let index = usize::try_from(id.checked_sub(front)?).ok()?;
        (index < self.held.len()).then_some(index)
    }

    /// Keeps the buffer of a record no longer held for a later push, within the window.
    fn recycle(&mut self, held: Held) {
        if self.spare.len() + self.held.len() < self.config.window {
            self.spare.push(held.msg);
        }
    }

    /// Takes a record as printk formatted it and queues its datagrams.
    pub fn push(&mut self, now: Instant, msg: &[u8]) -> Result<(), SenderError> {
        if msg.len() > self.config.max_record {
            return Err(SenderError::TooLong);
        }
        let (header, _) = Header::parse(msg)?;
        // Both the plain and the emergency forms must be sendable.
        ExtFragments::new(msg, send_options(self.config.release.as_deref(), true))?;
        let seq = header.fields.seq;
        if self.held.back().is_some_and(|h| h.seq >= seq) {
            while let Some(held) = self.held.pop_front() {
                self.recycle(held);
            }
            self.pending.clear();
            self.emergency = None;
            self.stats.restarts += 1;
        }
        if self.held.len() == self.config.window {
            if let Some(held) = self.held.pop_front() {
                self.recycle(held);
            }
            self.stats.dropped += 1;
        }
        if self.held.is_empty() {
            self.last_progress = now;
        }
        let mut buffer = self.spare.pop().unwrap_or_default();
        buffer.clear();
        buffer.extend_from_slice(msg);
        let id = self.next_id;
        self.next_id += 1;
        self.held.push_back(Held {
            id,
            seq,
            msg: buffer,
            pushed_at: now,
            queued: [false; 2],
        });
        self.enqueue(self.held.len() - 1, false);
        self.stats.pushed += 1;
        Ok(())
    }

    /// Queues a transmission of every fragment of `held[index]`, unless one is queued and
    /// not started yet.
    fn enqueue(&mut self, index: usize, ncemg: bool) {
        let window = self.config.window;
        let Some(held) = self.held.get_mut(index) else {
            return;
        };
        let queued = &mut held.queued[usize::from(ncemg)];
        if !*queued && self.pending.len() <= window {
            *queued = true;
            self.pending.push_back(Pending {
                id: held.id,
                ncemg,
                offset: 0,
            });
        }
    }

    /// Acts on a response: drops what it acknowledges, queues what it asks for.
    pub fn handle_response(&mut self, now: Instant, response: &Response<'_>) {
        self.armed = true;
        let before = self.held.len();
        // An ack of u64::MAX (nothing retired yet) acknowledges nothing.
        let acked = |seq: u64| response.acked().is_some_and(|ack| seq <= ack);
        while self.held.front().is_some_and(|h| acked(h.seq)) {
            if let Some(held) = self.held.pop_front() {
                self.recycle(held);
            }
        }
        let acked = before - self.held.len();
        if acked > 0 {
            self.stats.acked += acked as u64;
            self.last_progress = now;
            self.emergency = None;
        }
        for seq in response.missing() {
            if let Some(index) = self.find(seq) {
                self.enqueue(index, false);
                self.stats.retransmitted += 1;
            } else {
                self.stats.unavailable += 1;
            }
        }
    }

    /// When the oldest held record started to lag, for the emergency timer.
    fn lag_start(&self) -> Option<Instant> {
        let oldest = self.held.front()?;
        Some(oldest.pushed_at.max(self.last_progress))
    }

    /// The exact next deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.armed || self.held.is_empty() {
            return None;
        }
        match self.emergency {
            Some(e) => Some(e.next_at),
            None => self.lag_start().map(|t| t + self.config.ack_timeout),
        }
    }

    /// Acts on the passage of time.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.poll_timeout() else {
            return;
        };
        if now < deadline {
            return;
        }
        let Some(oldest) = self.held.front().map(|h| h.seq) else {
            return;
        };
        let newest = self.held.back().map_or(oldest, |h| h.seq);
        let (interval, seq) = match self.emergency {
            None => (self.config.emergency_min_interval, oldest),
            Some(Emergency {
                interval,
                next_seq: Some(next),
                ..
            }) if next <= newest => (interval, next.max(oldest)),
            Some(e) => (
                e.interval
                    .saturating_mul(2)
                    .min(self.config.emergency_max_interval),
                oldest,
            ),
        };
        // The held record at or after `seq`.
        let index = self.held.partition_point(|h| h.seq < seq);
        let seq = self.held[index].seq;
        self.enqueue(index, true);
        self.stats.emergency += 1;
        self.emergency = Some(Emergency {
            interval,
            next_seq: seq.checked_add(1),
            next_at: now + interval,
        });
    }

    /// Writes the next datagram to send into `out`.
    pub fn poll_transmit(&mut self, out: &mut [u8; MAX_PRINT_CHUNK]) -> Option<usize> {
        while let Some(pending) = self.pending.front().copied() {
            let Some(index) = self.index_of(pending.id) else {
                self.pending.pop_front();
                continue;
            };
            if pending.offset == 0 {
                // Started: a request for the record queues it again from now on.
                self.held[index].queued[usize::from(pending.ncemg)] = false;
            }
            let msg = &self.held[index].msg;
            let options = send_options(self.config.release.as_deref(), pending.ncemg);
            let Ok(mut frags) = ExtFragments::new(msg, options) else {
                self.pending.pop_front();
                continue;
            };
            frags.resume_at(pending.offset);
            let written = frags.write_next(out);
            if written.is_none() || frags.is_done() {
                self.pending.pop_front();
            } else if let Some(front) = self.pending.front_mut() {
                front.offset = frags.position();
            }
            if written.is_some() {
                return written;
            }
        }
        None
    }

    /// Records held (not yet acknowledged).
    pub fn unacked(&self) -> usize {
        self.held.len()
    }

    /// Whether emergency transmission is under way.
    pub fn in_emergency(&self) -> bool {
        self.emergency.is_some()
    }

    /// Counters.
    pub fn stats(&self) -> SenderStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(s: &mut Sender) -> Vec<Vec<u8>> {
        let mut out = [0u8; MAX_PRINT_CHUNK];
        let mut v = Vec::new();
        while let Some(n) = s.poll_transmit(&mut out) {
            v.push(out[..n].to_vec());
        }
        v
    }

    fn msg(seq: u64) -> Vec<u8> {
        format!("6,{seq},{},-;record {seq}\n", seq.wrapping_mul(10)).into_bytes()
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn window_drops_oldest_and_counts() {
        let mut s = Sender::new(SenderConfig {
            window: 2,
            ..SenderConfig::default()
        });
        for seq in 1..=3 {
            s.push(Instant::ZERO, &msg(seq)).unwrap();
        }
        assert_eq!(s.unacked(), 2);
        assert_eq!(s.stats().dropped, 1);
        // The dropped record is no longer sent either.
        assert_eq!(drain(&mut s), [msg(2), msg(3)]);
    }

    #[test]
    fn ack_drops_and_resend_sends_every_fragment() {
        let mut s = Sender::new(SenderConfig::default());
        let mut long = b"6,5,1,-;".to_vec();
        long.extend(core::iter::repeat_n(b'y', 2500));
        long.push(b'\n');
        s.push(Instant::ZERO, &msg(4)).unwrap();
        s.push(Instant::ZERO, &long).unwrap();
        let first = drain(&mut s);
        assert_eq!(first.len(), 4);
        assert!(first[1].starts_with(b"6,5,1,-,ncfrag=0/2501;"));
        s.handle_response(Instant::ZERO, &Response::parse(b"ncrx4 5 9").unwrap());
        assert_eq!(s.unacked(), 1);
        assert_eq!(drain(&mut s), first[1..]);
        assert_eq!(s.stats().retransmitted, 1);
        assert_eq!(s.stats().unavailable, 1);
        assert_eq!(s.stats().acked, 1);
    }

    #[test]
    fn an_ack_of_u64_max_acknowledges_nothing_and_may_ask_for_0() {
        let mut s = Sender::new(SenderConfig::default());
        for seq in 0..=2 {
            s.push(Instant::ZERO, &msg(seq)).unwrap();
        }
        assert_eq!(drain(&mut s).len(), 3);
        // What libncrx sends with nothing retired and 0 missing.
        let head = Response::parse(b"ncrx18446744073709551615 0").unwrap();
        s.handle_response(Instant::ZERO, &head);
        assert_eq!(s.unacked(), 3);
        assert_eq!(s.stats().acked, 0);
        assert_eq!(drain(&mut s), [msg(0)]);
        s.handle_response(Instant::ZERO, &Response::parse(b"ncrx0").unwrap());
        assert_eq!((s.unacked(), s.stats().acked), (2, 1));
    }

    #[test]
    fn requests_queue_a_record_once_until_it_starts() {
        let mut s = Sender::new(SenderConfig::default());
        for seq in 1..=3 {
            s.push(Instant::ZERO, &msg(seq)).unwrap();
        }
        assert_eq!(drain(&mut s).len(), 3);
        let ask = Response::parse(b"ncrx0 2 3").unwrap();
        s.handle_response(Instant::ZERO, &ask);
        s.handle_response(Instant::ZERO, &ask);
        // Each record once.
        assert_eq!(drain(&mut s), [msg(2), msg(3)]);
        assert_eq!(s.stats().retransmitted, 4);
        // Once sent, asking again queues it again.
        s.handle_response(Instant::ZERO, &Response::parse(b"ncrx0 3").unwrap());
        assert_eq!(drain(&mut s), [msg(3)]);
    }

    #[test]
    fn a_queued_transmission_of_an_acked_record_is_skipped() {
        let mut s = Sender::new(SenderConfig::default());
        s.push(Instant::ZERO, &msg(5)).unwrap();
        s.handle_response(Instant::ZERO, &Response::parse(b"ncrx5").unwrap());
        assert_eq!(s.unacked(), 0);
        // The same seq again, nothing held: not a restart, and sent exactly once.
        let again = b"6,5,99,-;again\n";
        s.push(Instant::ZERO, again).unwrap();
        assert_eq!(s.stats().restarts, 0);
        assert_eq!(drain(&mut s), [again.to_vec()]);
    }

    #[test]
    fn emergency_schedule() {
        let mut s = Sender::new(SenderConfig::default());
        let t0 = Instant::from_millis(1_000);
        for seq in 1..=3 {
            s.push(t0, &msg(seq)).unwrap();
        }
        drain(&mut s);
        assert_eq!(s.poll_timeout(), None);
        let t1 = t0 + 500 * MS;
        s.handle_response(t1, &Response::parse(b"ncrx0").unwrap());
        // No progress: the lag counts from the push of the oldest record.
        let start = t0 + Duration::from_secs(10);
        assert_eq!(s.poll_timeout(), Some(start));
        s.handle_timeout(start.checked_sub(MS).unwrap());
        assert!(drain(&mut s).is_empty());
        let mut now = start;
        let mut sent = Vec::new();
        let mut gaps = Vec::new();
        for _ in 0..12 {
            s.handle_timeout(now);
            let out = drain(&mut s);
            assert_eq!(out.len(), 1);
            sent.push(out[0].clone());
            let next = s.poll_timeout().unwrap();
            gaps.push((next - now).as_millis());
            now = next;
        }
        assert!(sent[0].starts_with(b"6,1,10,-,ncemg=1;"));
        assert!(sent[1].starts_with(b"6,2,20,-,ncemg=1;"));
        assert!(sent[3].starts_with(b"6,1,10,-,ncemg=1;"));
        assert_eq!(
            gaps,
            [100, 100, 100, 200, 200, 200, 400, 400, 400, 800, 800, 800]
        );
        s.handle_timeout(now);
        s.handle_timeout(now);
        let next = s.poll_timeout().unwrap();
        assert_eq!((next - now).as_millis(), 1000);
        assert_eq!(drain(&mut s).len(), 1);
        // Progress ends the emergency; the lag restarts from that moment.
        s.handle_response(now, &Response::parse(b"ncrx1").unwrap());
        assert!(!s.in_emergency());
        assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(10)));
        s.handle_response(now, &Response::parse(b"ncrx3").unwrap());
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn emergency_at_the_end_of_the_sequence_space() {
        let mut s = Sender::new(SenderConfig {
            emergency_max_interval: Duration::MAX,
            ..SenderConfig::default()
        });
        let top = format!("6,{},1,-;last\n", u64::MAX);
        s.push(Instant::ZERO, &msg(u64::MAX - 1)).unwrap();
        s.push(Instant::ZERO, top.as_bytes()).unwrap();
        drain(&mut s);
        s.handle_response(Instant::ZERO, &Response::parse(b"ncrx0").unwrap());
        let mut now = Instant::ZERO;
        for _ in 0..40 {
            now = s.poll_timeout().unwrap();
            s.handle_timeout(now);
            assert_eq!(drain(&mut s).len(), 1);
        }
        // Intervals doubled without overflowing, and both records are still being sent.
        assert!(s.poll_timeout().unwrap() > now);
        assert_eq!(s.unacked(), 2);
    }

    #[test]
    fn sequence_going_back_restarts() {
        let mut s = Sender::new(SenderConfig::default());
        s.push(Instant::ZERO, &msg(7)).unwrap();
        s.push(Instant::ZERO, &msg(0)).unwrap();
        assert_eq!(s.unacked(), 1);
        assert_eq!(s.stats().restarts, 1);
        assert_eq!(drain(&mut s), [msg(0)]);
        assert!(matches!(
            s.push(Instant::ZERO, b"not a record"),
            Err(SenderError::Header(_))
        ));
    }
}
