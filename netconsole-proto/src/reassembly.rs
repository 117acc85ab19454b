//! Reassembling one record from its `ncfrag` fragments.
//!
//! Each fragment carries `ncfrag=<offset>/<total>`: its chunk goes at `offset` in a body of
//! `total` bytes. Fragments may come in any order, duplicated, or overlapping (a sender that
//! re-cuts a record differently); overlapping bytes must agree, or the fragment is refused
//! with [`ReassemblyError::Conflict`] and nothing is written. A total above the cap (default
//! [`DEFAULT_MAX_TOTAL`], 64 KiB) is refused before any allocation. While incomplete,
//! [`Reassembly::missing`] lists the byte ranges not yet received; no byte is ever invented.
//!
//! Memory is bounded: `total` bytes plus at most [`MAX_PIECES`] received ranges.
//!
//! ```
//! use netconsole_proto::{DEFAULT_MAX_TOTAL, ExtRecord, FragmentedRecord};
//!
//! let second = ExtRecord::parse(b"6,7,8,-,ncfrag=5/10;56789")?;
//! let first = ExtRecord::parse(b"6,7,8,-,ncfrag=0/10;01234")?;
//! let mut record = FragmentedRecord::new(&second, DEFAULT_MAX_TOTAL)?;
//! assert_eq!(record.body().missing().collect::<Vec<_>>(), [0..5]);
//! record.push(&first)?;
//! assert_eq!(record.to_record().unwrap().body, b"0123456789");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use alloc::vec::Vec;
use core::ops::Range;

use crate::header::{Caller, Flag};
use crate::record::{ExtRecord, OwnedRecord};

/// Default cap on a fragmented record's total length.
pub const DEFAULT_MAX_TOTAL: usize = 64 * 1024;
/// Most disjoint received ranges one reassembly keeps (a kernel sends a few dozen at most).
pub const MAX_PIECES: usize = 256;

/// Why a fragment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReassemblyError {
    /// The announced total is above the cap.
    #[error("fragmented record of {total} bytes above the cap of {cap}")]
    TooLarge {
        /// Announced total.
        total: usize,
        /// Configured cap.
        cap: usize,
    },
    /// The chunk does not fit in the total (or is empty).
    #[error("chunk {offset}+{len} outside total {total}")]
    OutOfRange {
        /// Chunk offset.
        offset: usize,
        /// Chunk length.
        len: usize,
        /// Record total.
        total: usize,
    },
    /// The chunk's bytes differ from bytes already received at the same place.
    #[error("fragment conflicts with received bytes at offset {offset}")]
    Conflict {
        /// First differing offset.
        offset: usize,
    },
    /// The fragment belongs to another record (sequence, total or header fields differ),
    /// or the datagram is not a fragment.
    #[error("fragment does not belong to this record")]
    OtherRecord,
    /// Too many disjoint pieces.
    #[error("more than {MAX_PIECES} disjoint pieces")]
    TooManyPieces,
}

/// The bytes of one record body being put together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassembly {
    buf: Vec<u8>,
    /// Received ranges: sorted, disjoint, not touching.
    pieces: Vec<Range<usize>>,
    received: usize,
}

impl Reassembly {
    /// Starts a body of `total` bytes, refusing totals above `cap`.
    pub fn new(total: usize, cap: usize) -> Result<Self, ReassemblyError> {
        if total > cap {
            return Err(ReassemblyError::TooLarge { total, cap });
        }
        Ok(Reassembly {
            buf: alloc::vec![0; total],
            pieces: Vec::new(),
            received: 0,
        })
    }

    /// The body length.
    pub fn total(&self) -> usize {
        self.buf.len()
    }

    /// Bytes received so far (each counted once).
    pub fn received(&self) -> usize {
        self.received
    }

    /// Places `chunk` at `offset`. Returns how many bytes were new.
    pub fn insert(&mut self, offset: usize, chunk: &[u8]) -> Result<usize, ReassemblyError> {
        let total = self.buf.len();
        let end = offset
            .checked_add(chunk.len())
            .filter(|&end| end <= total && !chunk.is_empty())
            .ok_or(ReassemblyError::OutOfRange {
                offset,
                len: chunk.len(),
                total,
            })?;
        // Pieces that overlap or touch [offset, end).
        let first = self.pieces.partition_point(|p| p.end < offset);
        let last = self.pieces.partition_point(|p| p.start <= end);
        let mut overlapped = 0;
        for piece in &self.pieces[first..last] {
            let lo = piece.start.max(offset);
            let hi = piece.end.min(end);
            if lo < hi {
                let old = &self.buf[lo..hi];
                let new = &chunk[lo - offset..hi - offset];
                if let Some(i) = old.iter().zip(new).position(|(a, b)| a != b) {
                    return Err(ReassemblyError::Conflict { offset: lo + i });
                }
                overlapped += hi - lo;
            }
        }
        if first == last && self.pieces.len() >= MAX_PIECES {
            return Err(ReassemblyError::TooManyPieces);
        }
        self.buf[offset..end].copy_from_slice(chunk);
        let merged_start = self
            .pieces
            .get(first)
            .map_or(offset, |p| p.start.min(offset));
        let merged_end = if last > first {
            self.pieces[last - 1].end.max(end)
        } else {
            end
        };
        self.pieces
            .splice(first..last, core::iter::once(merged_start..merged_end));
        let fresh = chunk.len() - overlapped;
        self.received += fresh;
        Ok(fresh)
    }

    /// Whether every byte has been received.
    pub fn is_complete(&self) -> bool {
        self.received == self.buf.len()
    }

    /// The byte ranges not received yet, ascending.
    pub fn missing(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        let total = self.buf.len();
        let mut cursor = 0;
        let mut pieces = self.pieces.iter();
        core::iter::from_fn(move || {
            loop {
                if cursor >= total {
                    return None;
                }
                match pieces.next() {
                    Some(p) if p.start > cursor => {
                        let gap = cursor..p.start;
                        cursor = p.end;
                        return Some(gap);
                    }
                    Some(p) => cursor = p.end,
                    None => {
                        let gap = cursor..total;
                        cursor = total;
                        return Some(gap);
                    }
                }
            }
        })
    }

    /// The whole body, once complete.
    pub fn complete(&self) -> Option<&[u8]> {
        self.is_complete().then_some(&self.buf[..])
    }

    /// The whole body, or `self` back when incomplete.
    pub fn into_complete(self) -> Result<Vec<u8>, Self> {
        if self.is_complete() {
            Ok(self.buf)
        } else {
            Err(self)
        }
    }
}

/// The header fields every fragment of one record repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    release: Option<Vec<u8>>,
    level: u8,
    facility: u8,
    seq: u64,
    ts_usec: u64,
    flag: Flag,
    caller: Option<Caller>,
    total: usize,
}

impl Identity {
    fn of(record: &ExtRecord<'_>) -> Option<Self> {
        let h = &record.header;
        Some(Identity {
            release: h.release.map(<[u8]>::to_vec),
            level: h.level,
            facility: h.facility,
            seq: h.seq,
            ts_usec: h.ts_usec,
            flag: h.flag,
            caller: h.caller,
            total: h.ncfrag?.total,
        })
    }

    fn matches(&self, record: &ExtRecord<'_>) -> bool {
        let h = &record.header;
        h.seq == self.seq
            && h.ncfrag.map(|f| f.total) == Some(self.total)
            && h.ts_usec == self.ts_usec
            && h.level == self.level
            && h.facility == self.facility
            && h.flag == self.flag
            && h.caller == self.caller
            && h.release == self.release.as_deref()
    }
}

/// One fragmented record being reassembled from its datagrams.
#[derive(Debug, Clone)]
pub struct FragmentedRecord {
    identity: Identity,
    first: OwnedRecord,
    body: Reassembly,
}

impl FragmentedRecord {
    /// Starts from any fragment of the record.
    pub fn new(fragment: &ExtRecord<'_>, cap: usize) -> Result<Self, ReassemblyError> {
        let identity = Identity::of(fragment).ok_or(ReassemblyError::OtherRecord)?;
        let body = Reassembly::new(identity.total, cap)?;
        let mut record = FragmentedRecord {
            identity,
            first: OwnedRecord::from_parts(&fragment.header, &[]),
            body,
        };
        record.push(fragment)?;
        Ok(record)
    }

    /// The record's sequence number.
    pub fn seq(&self) -> u64 {
        self.identity.seq
    }

    /// Adds a fragment; returns the bytes that were new.
    pub fn push(&mut self, fragment: &ExtRecord<'_>) -> Result<usize, ReassemblyError> {
        if !self.identity.matches(fragment) {
            return Err(ReassemblyError::OtherRecord);
        }
        let Some(ncfrag) = fragment.header.ncfrag else {
            return Err(ReassemblyError::OtherRecord);
        };
        self.body.insert(ncfrag.offset, fragment.body)
    }

    /// The body so far.
    pub fn body(&self) -> &Reassembly {
        &self.body
    }

    /// Whether every byte of the body has arrived.
    pub fn is_complete(&self) -> bool {
        self.body.is_complete()
    }

    /// The whole record (header fields of the first fragment seen, whole body), once
    /// complete; `None` while bytes are missing (see [`Reassembly::missing`]).
    pub fn to_record(&self) -> Option<OwnedRecord> {
        let body = self.body.complete()?;
        let mut record = self.first.clone();
        record.body = body.to_vec();
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps(r: &Reassembly) -> Vec<(usize, usize)> {
        r.missing().map(|g| (g.start, g.end)).collect()
    }

    #[test]
    fn any_order_duplicates_overlap() {
        let body = b"0123456789abcdef";
        let mut r = Reassembly::new(16, DEFAULT_MAX_TOTAL).unwrap();
        assert_eq!(r.insert(10, &body[10..16]), Ok(6));
        assert_eq!(gaps(&r), [(0, 10)]);
        assert_eq!(r.insert(10, &body[10..16]), Ok(0));
        assert_eq!(r.insert(2, &body[2..5]), Ok(3));
        assert_eq!(gaps(&r), [(0, 2), (5, 10)]);
        assert_eq!(r.complete(), None);
        assert_eq!(r.insert(1, &body[1..12]), Ok(6));
        assert_eq!(gaps(&r), [(0, 1)]);
        assert_eq!(r.insert(0, b"0"), Ok(1));
        assert_eq!(r.complete(), Some(&body[..]));
        assert_eq!(r.missing().count(), 0);
    }

    #[test]
    fn refuses_conflicts_and_bad_ranges() {
        let mut r = Reassembly::new(8, DEFAULT_MAX_TOTAL).unwrap();
        r.insert(0, b"abcd").unwrap();
        assert_eq!(
            r.insert(2, b"cX"),
            Err(ReassemblyError::Conflict { offset: 3 })
        );
        assert_eq!(r.received(), 4);
        assert_eq!(
            r.insert(6, b"abc"),
            Err(ReassemblyError::OutOfRange {
                offset: 6,
                len: 3,
                total: 8
            })
        );
        assert_eq!(
            r.insert(usize::MAX, b"a"),
            Err(ReassemblyError::OutOfRange {
                offset: usize::MAX,
                len: 1,
                total: 8
            })
        );
        assert_eq!(
            Reassembly::new(65_537, DEFAULT_MAX_TOTAL),
            Err(ReassemblyError::TooLarge {
                total: 65_537,
                cap: DEFAULT_MAX_TOTAL
            })
        );
    }

    #[test]
    fn piece_count_is_bounded() {
        let mut r = Reassembly::new(4 * MAX_PIECES, DEFAULT_MAX_TOTAL).unwrap();
        for i in 0..MAX_PIECES {
            r.insert(i * 4, b"x").unwrap();
        }
        assert_eq!(r.insert(2, b"y"), Err(ReassemblyError::TooManyPieces));
        // Growing an existing piece is still fine.
        assert_eq!(r.insert(1, b"z"), Ok(1));
    }

    #[test]
    fn record_from_fragments() {
        let a = ExtRecord::parse(b"6,7,8,-,ncfrag=0/10;01234").unwrap();
        let b = ExtRecord::parse(b"6,7,8,-,ncfrag=5/10;56789").unwrap();
        let other = ExtRecord::parse(b"6,8,8,-,ncfrag=5/10;56789").unwrap();
        let mut rec = FragmentedRecord::new(&b, DEFAULT_MAX_TOTAL).unwrap();
        assert_eq!(rec.push(&other), Err(ReassemblyError::OtherRecord));
        assert!(!rec.is_complete());
        assert_eq!(rec.to_record(), None);
        rec.push(&a).unwrap();
        let done = rec.to_record().unwrap();
        assert_eq!(done.seq, 7);
        assert_eq!(done.body, b"0123456789");
    }
}
