//! Reassembling one record from its `ncfrag` fragments (the rules are on
//! [`FragmentedRecord`]).

use alloc::vec::Vec;
use core::ops::Range;

use crate::header::Header;
use crate::record::{ExtRecord, OwnedRecord};

/// Default cap on a fragmented record's total length: 128 KiB, above the largest record a
/// kernel sends.
///
/// On the kernels with userdata (6.9+) a record's body is its text (printk's buffer,
/// [`PRINTK_MESSAGE_MAX`](crate::PRINTK_MESSAGE_MAX) bytes at most) followed by the
/// userdata and sysdata lines, each at most 255 bytes (`MAX_EXTRADATA_ENTRY_LEN` less its
/// NUL). Linux 7.3 accepts 256 userdata items (`MAX_USERDATA_ITEMS`, 16 when userdata came):
/// 256 lines of a 53-byte key and a 199-byte value make 65,280 bytes of userdata alone. With
/// the text and the four sysdata lines a fragmented record announces a total of at most
/// 2048 + 260 × 255 = 68,348 bytes; the largest a live 7.3 kernel sent in the kernel tests
/// was 67,374. (Before 6.9, a body is at most
/// [`CONSOLE_EXT_LOG_MAX`](crate::CONSOLE_EXT_LOG_MAX) bytes.)
pub const DEFAULT_MAX_TOTAL: usize = 128 * 1024;

/// Userdata items a configfs target takes at most on Linux 7.3 (`MAX_USERDATA_ITEMS` in
/// drivers/net/netconsole.c; 16 from 6.9, when userdata came, until it was raised).
const MAX_USERDATA_ITEMS: usize = 256;

/// The largest body a kernel sends: printk's text buffer, then every userdata item and the
/// four sysdata lines at their longest (see [`DEFAULT_MAX_TOTAL`]).
const LARGEST_KERNEL_TOTAL: usize = crate::PRINTK_MESSAGE_MAX
    + (MAX_USERDATA_ITEMS + 4) * (crate::format::MAX_EXTRADATA_ENTRY_LEN - 1);

const _: () = assert!(LARGEST_KERNEL_TOTAL <= DEFAULT_MAX_TOTAL);
const _: () = assert!(crate::CONSOLE_EXT_LOG_MAX <= DEFAULT_MAX_TOTAL);
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

    /// The byte ranges received so far, ascending, disjoint and not touching: the
    /// complement of [`Reassembly::missing`].
    pub fn received_ranges(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        self.pieces.iter().cloned()
    }

    /// The body buffer as it is, complete or not: [`Reassembly::total`] bytes, where only
    /// the [`Reassembly::received_ranges`] hold received bytes and every byte of the
    /// [`Reassembly::missing`] ranges is zero (never a guess). What a receiver hands out
    /// for a record it gives up on, without keeping a copy of the chunks itself.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The body buffer as it is, complete or not (see [`Reassembly::bytes`]).
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
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

/// One fragmented record being reassembled from its datagrams.
///
/// Each fragment carries `ncfrag=<offset>/<total>`: its chunk goes at `offset` in a body of
/// `total` bytes. Fragments may come in any order, duplicated, or overlapping (a sender that
/// re-cuts a record differently); overlapping bytes must agree, or the fragment is refused
/// with [`ReassemblyError::Conflict`] and nothing is written. A total above the cap (default
/// [`DEFAULT_MAX_TOTAL`], 128 KiB) is refused before any allocation. While incomplete,
/// [`Reassembly::missing`] lists the byte ranges not yet received and
/// [`Reassembly::bytes`] shows the body as it stands (zero where missing: no byte is ever
/// invented), so a receiver that gives up on a record can hand out what arrived without
/// keeping its own copy.
///
/// The record keeps the header of the first fragment seen (its release and extra fields in
/// one buffer, the rest as values; [`FragmentedRecord::header`] gives it back without
/// allocating) and the body being put together; every later fragment must repeat that header
/// (same seq, ts_usec, level, facility, flag, caller, release and total), or it is refused as
/// [`ReassemblyError::OtherRecord`].
///
/// Memory is bounded: `total` bytes, the first fragment's release and extra fields, and at
/// most [`MAX_PIECES`] received ranges.
///
/// ```
/// use netconsole_proto::{DEFAULT_MAX_TOTAL, ExtRecord, FragmentedRecord};
///
/// let second = ExtRecord::parse(b"6,7,8,-,ncfrag=5/10;56789")?;
/// let first = ExtRecord::parse(b"6,7,8,-,ncfrag=0/10;01234")?;
/// let mut record = FragmentedRecord::new(&second, DEFAULT_MAX_TOTAL)?;
/// assert_eq!(record.body().missing().collect::<Vec<_>>(), [0..5]);
/// record.push(&first)?;
/// assert_eq!(record.to_record().unwrap().body, b"0123456789");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct FragmentedRecord {
    /// The first fragment's header without its slices (see [`FragmentedRecord::header`]).
    first: Header<'static>,
    /// The first fragment's release, then its extra fields (`,k=v,...`).
    head: Vec<u8>,
    /// Length of the release at the start of `head`, when there is one.
    release_len: Option<usize>,
    body: Reassembly,
}

impl FragmentedRecord {
    /// Starts from any fragment of the record.
    pub fn new(fragment: &ExtRecord<'_>, cap: usize) -> Result<Self, ReassemblyError> {
        let h = &fragment.header;
        let total = h.ncfrag.ok_or(ReassemblyError::OtherRecord)?.total;
        let body = Reassembly::new(total, cap)?;
        let release = h.release.unwrap_or_default();
        let mut head = Vec::with_capacity(release.len() + h.extra.len());
        head.extend_from_slice(release);
        head.extend_from_slice(h.extra);
        let mut record = FragmentedRecord {
            first: Header {
                release: None,
                fields: h.fields,
                ncfrag: h.ncfrag,
                ncemg: h.ncemg,
                extra: &[],
                len: h.len,
                kernel_len: h.kernel_len,
            },
            head,
            release_len: h.release.map(<[u8]>::len),
            body,
        };
        record.push(fragment)?;
        Ok(record)
    }

    /// The header of the first fragment seen, borrowing the record (nothing is allocated).
    /// Its `ncfrag` is that fragment's; [`Header::extra_fields`] and [`Header::unknown_fields`]
    /// give its extra fields.
    pub fn header(&self) -> Header<'_> {
        let (release, extra) = self.head.split_at(self.release_len.unwrap_or(0));
        Header {
            release: self.release_len.map(|_| release),
            extra,
            ..self.first
        }
    }

    /// The record's sequence number.
    pub fn seq(&self) -> u64 {
        self.first.fields.seq
    }

    /// Whether `fragment` repeats this record's header.
    fn same_record(&self, fragment: &ExtRecord<'_>) -> bool {
        let (first, h) = (&self.first, &fragment.header);
        h.fields == first.fields
            && h.ncfrag.map(|f| f.total) == Some(self.body.total())
            && h.release == self.header().release
    }

    /// Adds a fragment; returns the bytes that were new.
    pub fn push(&mut self, fragment: &ExtRecord<'_>) -> Result<usize, ReassemblyError> {
        if !self.same_record(fragment) {
            return Err(ReassemblyError::OtherRecord);
        }
        let Some(ncfrag) = fragment.header.ncfrag else {
            return Err(ReassemblyError::OtherRecord);
        };
        self.body.insert(ncfrag.offset, fragment.body)
    }

    /// The body so far: its bytes ([`Reassembly::bytes`]), what is missing
    /// ([`Reassembly::missing`]).
    pub fn body(&self) -> &Reassembly {
        &self.body
    }

    /// The body, complete or not, given up by the record (nothing is copied).
    pub fn into_body(self) -> Reassembly {
        self.body
    }

    /// Whether every byte of the body has arrived.
    pub fn is_complete(&self) -> bool {
        self.body.is_complete()
    }

    /// The whole record (header fields of the first fragment seen, whole body), once
    /// complete; `None` while bytes are missing (see [`Reassembly::missing`]).
    pub fn to_record(&self) -> Option<OwnedRecord> {
        let body = self.body.complete()?;
        Some(OwnedRecord::from_parts(&self.header(), body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Caller;

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
            Reassembly::new(DEFAULT_MAX_TOTAL + 1, DEFAULT_MAX_TOTAL),
            Err(ReassemblyError::TooLarge {
                total: DEFAULT_MAX_TOTAL + 1,
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
    fn partial_bytes_and_ranges() {
        let mut r = Reassembly::new(10, DEFAULT_MAX_TOTAL).unwrap();
        r.insert(2, b"cd").unwrap();
        r.insert(7, b"hij").unwrap();
        assert_eq!(r.bytes(), b"\0\0cd\0\0\0hij");
        assert_eq!(r.received_ranges().collect::<Vec<_>>(), [2..4, 7..10]);
        assert_eq!(gaps(&r), [(0, 2), (4, 7)]);
        // Received and missing ranges tile the body.
        let mut all: Vec<_> = r.received_ranges().chain(r.missing()).collect();
        all.sort_by_key(|g| g.start);
        assert!(all.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!((all[0].start, all[all.len() - 1].end), (0, 10));
        assert_eq!(r.clone().into_bytes(), r.bytes());
    }

    #[test]
    fn header_of_the_first_fragment() {
        let d = b"7.3.4+deb13-amd64,14,709,7301468,c,caller=T9,zz=1,ncfrag=3/6;def";
        let second = ExtRecord::parse(d).unwrap();
        let mut rec = FragmentedRecord::new(&second, DEFAULT_MAX_TOTAL).unwrap();
        let h = rec.header();
        assert_eq!(h, second.header);
        assert_eq!(h.release, Some(&b"7.3.4+deb13-amd64"[..]));
        assert_eq!(
            h.unknown_fields().collect::<Vec<_>>(),
            [(&b"zz"[..], &b"1"[..])]
        );
        let first =
            ExtRecord::parse(b"7.3.4+deb13-amd64,14,709,7301468,c,caller=T9,zz=1,ncfrag=0/6;abc")
                .unwrap();
        let other_release =
            ExtRecord::parse(b"7.3.5,14,709,7301468,c,caller=T9,zz=1,ncfrag=0/6;abc").unwrap();
        assert_eq!(rec.push(&other_release), Err(ReassemblyError::OtherRecord));
        assert_eq!(rec.body().bytes(), b"\0\0\0def");
        rec.push(&first).unwrap();
        // Still the header of the first fragment seen.
        assert_eq!(rec.header().ncfrag.map(|f| f.offset), Some(3));
        let done = rec.to_record().unwrap();
        assert_eq!(done.release.as_deref(), Some(&b"7.3.4+deb13-amd64"[..]));
        assert_eq!(done.unknown_fields, [(b"zz".to_vec(), b"1".to_vec())]);
        assert_eq!(
            (done.fields.caller, done.body.as_slice()),
            (Some(Caller::Task(9)), &b"abcdef"[..])
        );
        assert_eq!(rec.into_body().into_bytes(), b"abcdef");
        // Without a release.
        let plain = ExtRecord::parse(b"6,1,2,-,ncfrag=0/4;ab").unwrap();
        let rec = FragmentedRecord::new(&plain, DEFAULT_MAX_TOTAL).unwrap();
        assert_eq!(rec.header(), plain.header);
    }

    /// The largest record Linux 7.3 sends, measured there (kernel-tests): a text at printk's
    /// limit, release prepended, 256 userdata items of a 53-byte key and a 199-byte value,
    /// and every sysdata line. Its total is above 64 KiB (the cap before, which refused every
    /// fragment of it) and it comes out whole under the default cap.
    #[test]
    fn the_largest_record_a_kernel_sends_is_taken_whole() {
        use crate::{
            ExtFragments, MAX_EXTRADATA_NAME_LEN, MAX_EXTRADATA_VALUE_LEN, MAX_PRINT_CHUNK,
            PRINTK_MESSAGE_MAX, SendOptions, Sysdata, format_userdata, userdata_len,
        };
        let keys: Vec<Vec<u8>> = (0..MAX_USERDATA_ITEMS)
            .map(|i| {
                let mut key = alloc::format!("k{i:03}").into_bytes();
                key.resize(MAX_EXTRADATA_NAME_LEN, b'n');
                key
            })
            .collect();
        let value = [b'v'; MAX_EXTRADATA_VALUE_LEN - 1];
        let entries: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (&k[..], &value[..])).collect();
        let mut userdata = alloc::vec![0; userdata_len(&entries)];
        format_userdata(&entries, &mut userdata).unwrap();
        let sysdata = Sysdata {
            cpu: Some(u32::MAX),
            taskname: Some(b"kworker/u16:255"),
            release: Some(b"7.3.4+deb13-cloud-amd64"),
            msgid: Some(u32::MAX),
        };
        let mut sys = alloc::vec![0; sysdata.formatted_len()];
        sysdata.format_into(&mut sys).unwrap();
        let mut msg = b"6,123456,7654321,-;".to_vec();
        msg.resize(PRINTK_MESSAGE_MAX - 1, b'x');
        msg.push(b'\n');
        let options = SendOptions {
            release: Some(b"7.3.4+deb13-cloud-amd64"),
            userdata: &userdata,
            sysdata: &sys,
            ..SendOptions::default()
        };
        let mut frags = ExtFragments::new(&msg, options).unwrap();
        let total = frags.total();
        assert!(
            total > 64 * 1024 && total <= LARGEST_KERNEL_TOTAL,
            "{total}"
        );
        let mut out = [0u8; MAX_PRINT_CHUNK];
        let mut datagrams = Vec::new();
        while let Some(len) = frags.write_next(&mut out) {
            datagrams.push(out[..len].to_vec());
        }
        // Last first, as a reordering network may deliver them.
        let parsed: Vec<ExtRecord<'_>> = datagrams
            .iter()
            .rev()
            .map(|d| ExtRecord::parse(d).unwrap())
            .collect();
        let mut record = FragmentedRecord::new(&parsed[0], DEFAULT_MAX_TOTAL).unwrap();
        for fragment in &parsed[1..] {
            record.push(fragment).unwrap();
        }
        let done = record.to_record().unwrap();
        let body = [&msg[19..], &userdata[..], &sys[..]].concat();
        assert_eq!(done.body, body);
        assert_eq!(
            done.release.as_deref(),
            Some(&b"7.3.4+deb13-cloud-amd64"[..])
        );
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
        assert_eq!(done.fields.seq, 7);
        assert_eq!(done.body, b"0123456789");
    }
}
