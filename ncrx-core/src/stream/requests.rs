//! Retransmission requests and acks: when holes are asked for (interval and stride
//! rules), and the response packets.
//!
//! A range with holes is asked for every
//! [`retransmit_interval`](StreamConfig::retransmit_interval) (shorter while the sender has
//! not answered) from a queue in time order, since every entry is due one interval after it
//! was pushed; ranges due within a quarter interval of a due one go in the same response.
//! It is also asked for when the head has moved
//! [`retransmit_stride`](StreamConfig::retransmit_stride) past it, then twice, four times
//! that distance further (a heap keyed by the head position, rounded up to a quarter stride
//! so that requests leave together). libncrx asks again at every stride for every hole, so
//! its requests per packet grow with the holes; here they do not.

#[allow(
    clippy::wildcard_imports,
    reason = "a part of the stream: it shares the stream module's private items"
)]
use super::*;

/// Most sequence numbers gathered for one response (each takes at least 2 bytes).
pub(super) const RESPONSE_SEQS: usize = MAX_RESPONSE / 2;

impl Stream {
    /// Whether a response packet waits.
    #[inline]
    pub(crate) fn has_transmit(&self) -> bool {
        self.started
            && (self.ack_due || !self.requests.is_empty())
            && self.answering != Answering::Unreachable
    }

    /// Writes the next response packet (`ncrx<ack> <seq>...`, at most 1000 bytes) into
    /// `buf`, for the source's address and port; returns its length.
    ///
    /// The ack (the last number retired) goes with every request; alone, it goes
    /// [`ack_interval`](StreamConfig::ack_interval) after records were retired when that is
    /// set, and at once for an `ncemg` record.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<usize> {
        if !self.has_transmit() {
            return None;
        }
        // The last number retired; u64::MAX when nothing is (a fresh boot's head asked for
        // from 0), as libncrx writes it: the sender then acknowledges nothing.
        let ack = self.tail.wrapping_sub(1);
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
    pub(super) fn encode_requests(
        &mut self,
        ack: u64,
        seqs: &mut [u64],
        buf: &mut [u8],
    ) -> Option<usize> {
        seqs.sort_unstable();
        let mut unique = 0;
        for i in 0..seqs.len() {
            if unique == 0 || seqs[i] != seqs[unique - 1] {
                seqs[unique] = seqs[i];
                unique += 1;
            }
        }
        let skip = seqs[..unique].partition_point(|&seq| seq < self.tail);
        if unique == skip && (!self.ack_due || self.tail == 0) {
            // Everything asked for arrived or was retired meanwhile (and an ack that
            // acknowledges nothing says nothing).
            self.ack_due = false;
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

    /// Asks for the holes of `[start, end)` one request delay from now (the retransmit
    /// interval, shorter while the sender has not answered); never to an unreachable sender.
    #[inline]
    pub(super) fn schedule_request(&mut self, start: u64, end: u64) {
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

    #[inline]
    pub(super) fn request(&mut self, range: Range<u64>) {
        if self.requests.len() < self.config.slots && self.may_request() {
            self.requests.push_back(range);
        }
    }

    /// Schedules a stride request for the missing `[start, end)`, due once the head is more
    /// than `distance` past `from`.
    #[inline]
    pub(super) fn stride_after(&mut self, start: u64, end: u64, from: u64, distance: u64) {
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
    #[inline]
    pub(super) fn stride_check(&mut self) {
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
}
