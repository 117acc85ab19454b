//! The bitmap of what this epoch delivered, behind the head.
//!
//! It covers [`DELIVERED_SPAN`] times the ring. Beyond its reach, every number from the
//! last one given up on (`delivered_since`) to the tail was delivered, so a duplicate
//! within `8 × slots` of the head is still known; where a smaller ring grew, see
//! [`Stream::resize_ring`].

#[allow(
    clippy::wildcard_imports,
    reason = "a part of the stream: it shares the stream module's private items"
)]
use super::*;

/// How many times the ring's span the delivered bitmap covers.
pub(super) const DELIVERED_SPAN: usize = 8;

impl Stream {
    #[inline]
    pub(super) fn bits(&self) -> u64 {
        self.delivered.len() as u64 * 64
    }

    #[inline]
    pub(super) fn mark_delivered(&mut self, seq: u64) {
        let bit = slot_of(self.delivered.len() * 64, seq);
        self.delivered[bit / 64] |= 1 << (bit % 64);
    }

    /// Whether this epoch delivered `seq`, one the stream [remembers](Stream::remembers):
    /// its bit, or beyond the bitmap (the ring shrank), whether it is above every number
    /// given up on.
    #[inline]
    pub(super) fn was_delivered(&self, seq: u64) -> bool {
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
    pub(super) fn remembers(&self, seq: u64) -> bool {
        let back = self.head - seq;
        back <= self.bits()
            || (seq >= self.delivered_since
                && back <= (ring_len(self.config.slots) * DELIVERED_SPAN) as u64)
    }

    /// The delivered bitmap moved to `bits` bits (a power of two, at least 64), a word at a
    /// time: the numbers the old map reaches keep their bits; those further back, up to the
    /// new reach, are set ("may have been delivered"). A 64-aligned block of numbers is one
    /// word in either map, both being powers of two.
    pub(super) fn delivered_resized(&self, bits: usize) -> Vec<u64> {
        let mut delivered = alloc::vec![0u64; bits / 64];
        let head = self.head;
        let lowest = head.saturating_sub(bits as u64);
        let known_from = head.saturating_sub(self.bits().min(bits as u64));
        // The bits of the numbers `[from, to)` of the block starting at `block`.
        let span = |block: u64, from: u64, to: u64| -> u64 {
            let (from, to) = (from.max(block), to.min(block.saturating_add(64)));
            if from >= to {
                return 0;
            }
            let width = to - from;
            let ones = if width == 64 {
                u64::MAX
            } else {
                (1 << width) - 1
            };
            ones << (from - block)
        };
        let mut block = lowest & !63;
        while block < head {
            let known = span(block, known_from, head);
            let old = self.delivered[slot_of(self.delivered.len() * 64, block) / 64];
            let word = (old & known) | span(block, lowest, known_from);
            // The partial blocks at both ends share a word, each with its own bits.
            delivered[slot_of(bits, block) / 64] |= word;
            let Some(next) = block.checked_add(64) else {
                break;
            };
            block = next;
        }
        delivered
    }

    /// Forgets the bits of `[from, to)` (numbers the head now passes).
    #[inline]
    pub(super) fn clear_delivered(&mut self, from: u64, to: u64) {
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
}
