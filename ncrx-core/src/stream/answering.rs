//! Senders that answer retransmission requests and senders that do not (see
//! [the configuration](crate::StreamConfig#senders-that-answer-and-senders-that-do-not)).

#[allow(
    clippy::wildcard_imports,
    reason = "a part of the stream: it shares the stream module's private items"
)]
use super::*;

/// What a stream knows of its sender's answers to retransmission requests (see
/// [the configuration](crate::StreamConfig#senders-that-answer-and-senders-that-do-not)).
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

impl Stream {
    /// What the stream knows of its sender's answers to retransmission requests.
    pub fn answering(&self) -> Answering {
        self.answering
    }

    /// Whether the stream tells senders that answer from those that do not (an
    /// [`unanswered_hole_timeout`](StreamConfig::unanswered_hole_timeout) is set).
    #[inline]
    pub(super) fn tells_answering(&self) -> bool {
        self.config.unanswered_hole_timeout.is_some()
    }

    /// Moves to `answering` and sets the hold time, the request delay and the spacing that
    /// follow from it. Open holes follow the new hold time: each is given up on that long
    /// after it was found.
    pub(super) fn set_answering(&mut self, answering: Answering) {
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

    /// The sender showed that it answers (a number asked for arrived, or an `ncemg` record).
    #[inline]
    pub(super) fn learned_answers(&mut self) {
        if self.answering != Answering::Answers && self.tells_answering() {
            self.set_answering(Answering::Answers);
        }
    }

    /// The sender's port is closed (ICMP port unreachable for a response sent to it): from
    /// now on the stream sends it nothing, neither requests nor acks, and holds its holes
    /// at most [`unanswered_hole_timeout`](StreamConfig::unanswered_hole_timeout) (when
    /// set), until an `ncemg` record shows that it answers again. See
    /// [the configuration](crate::StreamConfig#senders-that-answer-and-senders-that-do-not).
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
    pub(super) fn may_request(&self) -> bool {
        match self.answering {
            Answering::Answers => true,
            Answering::Unreachable => false,
            Answering::Unknown => !self.tells_answering() || self.now >= self.request_next,
        }
    }
}
