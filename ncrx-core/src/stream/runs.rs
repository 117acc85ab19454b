//! Runs of missing numbers, in a ring indexed by their start with a bitmap of the starts
//! in use, and the bit scans over it.
//!
//! Every sequence number in `[tail, head)` that is not complete belongs to one run: a range
//! of missing numbers (or one incomplete fragmented record) with the time the receiver
//! learned of it, from which it gives up on it the hold time later. The run at the tail is
//! one lookup; the run holding a number is found by scanning the bitmap back from it, 64
//! numbers a word (at most `slots / 64` words), whatever the number of holes.

#[allow(
    clippy::wildcard_imports,
    reason = "a part of the stream: it shares the stream module's private items"
)]
use super::*;

/// Incomplete sequence numbers `[start, end)` (a key of `runs` gives the start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    pub(super) end: u64,
    /// When the receiver learned these were missing: it gives up on them the stream's hold
    /// time later ([`Stream::give_up_at`]).
    pub(super) learned_at: Instant,
    /// One fragmented record with bytes missing (held in its slot).
    pub(super) partial: bool,
    /// Asked for while the sender was not known to answer: a number of it arriving shows
    /// that it does.
    pub(super) requested: bool,
}

/// Calls `visit` with the offset (below `len`) from position `from` of each set bit at or
/// after it, in order, going up through `len` positions of a ring of `nbits` bits, until it
/// returns false.
#[inline]
pub(super) fn each_set_up(
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
pub(super) fn scan_up(bits: &[u64], nbits: usize, from: usize, len: usize) -> Option<usize> {
    let mut first = None;
    each_set_up(bits, nbits, from, len, |offset| {
        first = Some(offset);
        false
    });
    first
}

/// Offset (below `len`) back from position `from` of the first set bit at or before it,
/// going down through `len` positions of a ring of `nbits` bits.
pub(super) fn scan_down(bits: &[u64], nbits: usize, from: usize, len: usize) -> Option<usize> {
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
pub(super) struct Runs {
    pub(super) entries: Vec<(u64, Run)>,
    pub(super) used: Vec<u64>,
    pub(super) slots: usize,
    pub(super) len: usize,
}

impl Runs {
    pub(super) fn new(slots: usize) -> Self {
        Runs {
            entries: Vec::new(),
            used: Vec::new(),
            slots: ring_len(slots),
            len: 0,
        }
    }

    #[inline]
    pub(super) fn bit(&self, i: usize) -> bool {
        self.used
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    #[inline]
    pub(super) fn insert(&mut self, start: u64, run: Run) {
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

    #[inline]
    pub(super) fn remove(&mut self, start: u64) -> Option<Run> {
        let i = slot_of(self.slots, start);
        if !self.bit(i) || self.entries[i].0 != start {
            return None;
        }
        self.used[i / 64] &= !(1 << (i % 64));
        self.len -= 1;
        Some(self.entries[i].1)
    }

    #[inline]
    pub(super) fn get_mut(&mut self, start: u64) -> Option<&mut Run> {
        let i = slot_of(self.slots, start);
        if !self.bit(i) || self.entries[i].0 != start {
            return None;
        }
        Some(&mut self.entries[i].1)
    }

    /// The run with the lowest start in `[from, to)`.
    #[inline]
    pub(super) fn first(&self, from: u64, to: u64) -> Option<(u64, Run)> {
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

    #[inline]
    pub(super) fn first_after(&self, from: u64, to: u64) -> Option<(u64, Run)> {
        let len = usize::try_from(to - from).map_or(self.slots, |n| n.min(self.slots));
        let offset = scan_up(&self.used, self.slots, slot_of(self.slots, from), len)?;
        Some(self.entries[slot_of(self.slots, from + offset as u64)])
    }

    /// Calls `visit` with each run starting in `[from, to)`, in order, until it returns false.
    #[inline]
    pub(super) fn each(&self, from: u64, to: u64, mut visit: impl FnMut(u64, &Run) -> bool) {
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
    #[inline]
    pub(super) fn last(&self, from: u64, to: u64) -> Option<(u64, Run)> {
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
    pub(super) fn is_open(&self) -> bool {
        self.len > 0
    }

    /// The same runs in a ring of `slots` entries (a power of two above the open window);
    /// with none open, the ring is given back until the next run.
    pub(super) fn resize(&mut self, slots: usize) {
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

    pub(super) fn memory_used(&self) -> usize {
        self.entries.capacity() * core::mem::size_of::<(u64, Run)>() + self.used.capacity() * 8
    }
}
