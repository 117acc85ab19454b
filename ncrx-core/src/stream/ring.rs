//! The record ring: growing when holes need it, shrinking back when the stream is quiet.
//!
//! The ring, the runs' ring and the delivered bitmap are sized by what the stream needs,
//! not by the window: [`RING_MIN`] entries (and 256 bits) for a stream with nothing open,
//! doubled when a hole needs more (the open span, and as much again remembered), up to
//! `slots` rounded up to a power of two. A stream in order again for eight times as many
//! numbers as its ring holds (the delivered bitmap's reach), or with nothing open for
//! [`QUIET_SHRINK`] at a timer call, gives the larger ring back, and its idle buffers: a
//! quiet source costs about 3.3 KiB in all.

#[allow(
    clippy::wildcard_imports,
    reason = "a part of the stream: it shares the stream module's private items"
)]
use super::*;

/// Entries of the ring (and its bitmaps) of a stream with nothing open: a quiet source
/// costs this many slots (about 1.3 KiB) and a 256-bit delivered map, whatever its window.
pub(super) const RING_MIN: usize = 32;

/// A stream with nothing open this long since its last hole gives its larger ring back
/// at the next timer call.
pub(super) const QUIET_SHRINK: core::time::Duration = core::time::Duration::from_secs(10);

impl Stream {
    /// How far back from the head the ring remembers each number: the window, or the ring
    /// while it is smaller.
    #[inline]
    pub(super) fn ring_span(&self) -> u64 {
        self.config.slots.min(self.slots.len()) as u64
    }

    /// Makes the ring hold at least `span` open numbers with as many again remembered
    /// behind them: doubles it (up to the window's ring) when `2 * span` exceeds it.
    #[inline]
    pub(super) fn ensure_ring(&mut self, span: u64) {
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
    pub(super) fn shrink_streak(&self) -> u64 {
        (self.slots.len() * DELIVERED_SPAN) as u64
    }

    /// Gives the larger ring back when nothing is open (nothing held in it), and the
    /// buffers a quiet stream does not need; else tries again a ring's length later.
    #[cold]
    #[inline(never)]
    pub(super) fn shrink_quiet(&mut self) {
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
    pub(super) fn resize_ring(&mut self, len: usize) {
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
        let bits = (len * DELIVERED_SPAN).div_ceil(64) * 64;
        self.delivered = self.delivered_resized(bits);
        self.shrink_at = if len > RING_MIN {
            self.head.saturating_add(self.shrink_streak())
        } else {
            u64::MAX
        };
    }

    #[inline]
    pub(super) fn slot(&self, seq: u64) -> &Slot {
        &self.slots[slot_of(self.slots.len(), seq)]
    }

    #[inline]
    pub(super) fn slot_mut(&mut self, seq: u64) -> &mut Slot {
        let n = self.slots.len();
        &mut self.slots[slot_of(n, seq)]
    }

    /// Whether the ring entry of `seq` is about `seq` in this epoch.
    #[inline]
    pub(super) fn tagged(&self, seq: u64) -> bool {
        let slot = self.slot(seq);
        slot.epoch == self.epoch && slot.seq == seq && !matches!(slot.state, SlotState::Free)
    }
}
