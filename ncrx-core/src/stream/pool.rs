//! The whole datagrams held in the window, in a slab of 128-byte blocks.

#[allow(
    clippy::wildcard_imports,
    reason = "a part of the stream: it shares the stream module's private items"
)]
use super::*;

/// A whole datagram held in the window: parsed once. Its bytes are the entry's block of
/// [`HeldPool::blocks`], or `spill` when longer than a block.
///
/// One cache line each (64 bytes, aligned): a record held behind a hole costs this line, its
/// block and its ring slot, which is what the lossy paths are bound by once the window
/// outgrows the caches.
#[derive(Debug, Clone)]
#[repr(align(64))]
pub(super) struct Held {
    pub(super) meta: RecordMeta,
    /// Lengths fit: [`Stream::handle_datagram`] refuses datagrams longer than `u32::MAX`.
    pub(super) header_len: u32,
    pub(super) len: u32,
    pub(super) spill: Option<Box<[u8]>>,
}

/// Bytes of one block of the pool: whole datagrams up to this long are held without an
/// allocation of their own.
pub(super) const BLOCK: usize = 128;

/// Pool entries kept when the pool empties; above it the pool is given back.
pub(super) const POOL_KEEP: usize = 64;

/// The whole datagrams held in the window, in one slab: entry `i` and block `i` (`BLOCK`
/// bytes at `i * BLOCK`) go together, free entries are reused. Holding a record behind a hole
/// and retiring it allocates nothing once the pool has grown to the window's needs.
#[derive(Debug, Clone, Default)]
pub(super) struct HeldPool {
    pub(super) entries: Vec<Held>,
    pub(super) blocks: Vec<u8>,
    pub(super) free: Vec<usize>,
}

impl HeldPool {
    #[inline]
    pub(super) fn insert(&mut self, meta: RecordMeta, datagram: &[u8], header_len: usize) -> usize {
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
    #[inline]
    pub(super) fn get(&self, i: usize) -> (&Held, &[u8]) {
        let held = &self.entries[i];
        let bytes = match &held.spill {
            Some(spill) => spill,
            None => &self.blocks[i * BLOCK..i * BLOCK + held.len as usize],
        };
        (held, bytes)
    }

    #[inline]
    pub(super) fn remove(&mut self, i: usize) {
        self.entries[i].spill = None;
        self.free.push(i);
        if self.free.len() == self.entries.len() && self.entries.len() > POOL_KEEP {
            *self = HeldPool::default();
        }
    }

    /// Heap bytes of the pool.
    pub(super) fn memory_used(&self) -> usize {
        self.entries.capacity() * core::mem::size_of::<Held>()
            + self.blocks.capacity()
            + self.free.capacity() * core::mem::size_of::<usize>()
    }

    /// Bound on [`HeldPool::memory_used`]: at most `entries` in use at once (growth doubles).
    pub(super) fn memory_bound(entries: usize) -> usize {
        2 * entries.max(POOL_KEEP)
            * (core::mem::size_of::<Held>() + BLOCK + core::mem::size_of::<usize>())
    }
}
