//! The stream's timers, as a small named table: the next timeout is their minimum.

#[allow(
    clippy::wildcard_imports,
    reason = "a part of the stream: it shares the stream module's private items"
)]
use super::*;

/// The timers of a stream, as a small named table (quinn-proto's `TimerTable`): the next
/// timeout is the minimum of their deadlines ([`Stream::poll_timeout`]), and
/// [`Stream::handle_timeout`] acts on each that is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// The next interval retransmission request (`requests_due`, in time order).
    Request,
    /// Giving up on the run at the tail. Runs are created in sequence order as time goes
    /// on, so the tail's is always the next to time out: one deadline.
    GiveUp,
    /// Releasing the oldest buffered out-of-order record.
    OutOfOrder,
    /// Sending the ack that `ack_interval` delays.
    Ack,
}

impl Timer {
    const ALL: [Timer; 4] = [Timer::Request, Timer::GiveUp, Timer::OutOfOrder, Timer::Ack];
}

impl Stream {
    /// The next deadline, if any: the earliest of the stream's timers (the next
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
    pub(super) fn deadline(&self, timer: Timer) -> Option<Instant> {
        match timer {
            Timer::Request => self.request_deadline(),
            Timer::GiveUp => self.give_up_deadline(),
            Timer::OutOfOrder => self.out_of_order_deadline(),
            Timer::Ack => self.ack_deadline(),
        }
    }

    /// [`Timer::Request`]: the front of the time-ordered interval requests.
    #[inline]
    pub(super) fn request_deadline(&self) -> Option<Instant> {
        self.requests_due.front().map(|&(at, _, _)| at)
    }

    /// [`Timer::GiveUp`]: the hold time after the tail's run was found.
    #[inline]
    pub(super) fn give_up_deadline(&self) -> Option<Instant> {
        let (_, run) = self
            .runs
            .is_open()
            .then(|| self.runs.first(self.tail, self.head))
            .flatten()?;
        Some(self.give_up_at(&run))
    }

    /// [`Timer::OutOfOrder`]: the oldest buffered out-of-order record's timeout.
    #[inline]
    pub(super) fn out_of_order_deadline(&self) -> Option<Instant> {
        self.oos
            .front()
            .map(|front| front.at + self.config.out_of_order_timeout)
    }

    /// [`Timer::Ack`]: `ack_interval` after records were retired, unless the ack is due.
    #[inline]
    pub(super) fn ack_deadline(&self) -> Option<Instant> {
        match (self.ack_pending_since, self.config.ack_interval) {
            (Some(since), Some(interval)) if !self.ack_due => Some(since + interval),
            _ => None,
        }
    }

    /// When the run is given up on: the hold time after it was found.
    #[inline]
    pub(super) fn give_up_at(&self, run: &Run) -> Instant {
        run.learned_at + self.hold
    }
}
