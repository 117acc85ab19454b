//! The stream's counters.

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
    /// Records delivered late ([`Event::Late`](crate::Event::Late)).
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
    /// Sequence numbers given up on ([`Event::Lost`](crate::Event::Lost)).
    pub lost: u64,
    /// Fragmented records given up on incomplete.
    pub incomplete: u64,
    /// Records counted out of order (buffered).
    pub out_of_order: u64,
    /// Out-of-order records ahead of the window dropped when the buffer overflowed or their
    /// [`out_of_order_timeout`](crate::StreamConfig::out_of_order_timeout) passed, because the
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
    /// Times the sender's port was reported closed ([`Stream::handle_unreachable`](crate::Stream::handle_unreachable)).
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
