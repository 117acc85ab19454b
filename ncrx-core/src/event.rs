//! What the receiver hands out ([`Event`]), and the output buffer the events borrow.

use alloc::vec::Vec;
use core::num::NonZeroU32;
use core::ops::Range;

use netconsole_proto::{Header, HeaderError, RecordFields};

/// An extended record as delivered, borrowing the receiver's output buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record<'a> {
    /// The header's record fields: seq, ts_usec, level, facility, flag, `caller=`.
    pub fields: RecordFields,
    /// The (first) datagram carried `ncemg=1`: it came by emergency transmission.
    pub ncemg: bool,
    /// The kernel release netconsole prepended, if any.
    pub release: Option<&'a [u8]>,
    /// The header as received, up to and including the `;` (for a fragmented record: the
    /// header of the first fragment received, `ncfrag` field included).
    pub header: &'a [u8],
    /// The whole body (text, dictionary, userdata, sysdata), escaped as on the wire.
    pub body: &'a [u8],
    /// `header` and `body` side by side.
    datagram: &'a [u8],
}

impl<'a> Record<'a> {
    /// The header parsed again, for its unknown `key=value` fields
    /// ([`Header::unknown_fields`]). A fragmented record keeps the header of its fragment at
    /// offset 0, so header and whole body parse together. An incomplete record may lack it.
    pub fn parse_header(&self) -> Result<Header<'a>, HeaderError> {
        Header::parse(self.datagram).map(|(header, _)| header)
    }
}

/// A fragmented record given up on with bytes missing. No byte is invented: only the
/// received pieces are readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct IncompleteRecord<'a> {
    /// The header fields (its `body` is empty: use [`IncompleteRecord::received`]).
    pub record: Record<'a>,
    /// The body length announced by `ncfrag`.
    pub total: usize,
    /// The byte ranges of the body that never arrived, ascending.
    pub missing: &'a [Range<usize>],
    buffer: &'a [u8],
}

impl<'a> IncompleteRecord<'a> {
    /// The received pieces of the body, `(offset, bytes)`, ascending.
    pub fn received(&self) -> impl Iterator<Item = (usize, &'a [u8])> + 'a {
        let buffer = self.buffer;
        let total = self.total.min(buffer.len());
        let missing = self.missing;
        let mut cursor = 0;
        let mut gaps = missing.iter();
        core::iter::from_fn(move || {
            while cursor < total {
                let (piece_end, next_cursor) = match gaps.next() {
                    Some(gap) => (gap.start.min(total), gap.end.min(total)),
                    None => (total, total),
                };
                let start = cursor;
                cursor = next_cursor;
                if piece_end > start {
                    return Some((start, &buffer[start..piece_end]));
                }
            }
            None
        })
    }

    /// Bytes received.
    pub fn received_len(&self) -> usize {
        self.total
            - self
                .missing
                .iter()
                .map(ExactSizeIterator::len)
                .sum::<usize>()
    }
}

/// Why a stream restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RestartReason {
    /// The release prepended to the records changed.
    Release,
    /// A sequence number the stream remembers came back with another `ts_usec`, or a
    /// record's `ts_usec` contradicts the sequence order (later seq, far earlier time).
    Timestamp,
    /// Sequence and timestamp both went far back (before anything remembered).
    FarBack,
    /// Too many of the last 32 records were out of order (libncrx's rule).
    OutOfOrder,
}

/// A new stream epoch: everything of the previous one was retired first (records delivered,
/// holes reported lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Restart {
    /// Why.
    pub reason: RestartReason,
    /// The new epoch number (the first stream of a source is epoch 0).
    pub epoch: u64,
    /// The sequence number the previous epoch expected next.
    pub previous_next_seq: u64,
    /// The sequence number the new epoch starts at.
    pub seq: u64,
}

/// One output of the receiver: a record in order, a loss, a restart, raw text.
///
/// Events borrow the receiver's output buffer: the bytes stay valid until the next call on
/// the receiver. Draining events after each call keeps the buffer empty (it is reused, so the
/// in-order path allocates nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// The next record of the stream, in sequence order.
    Record(Record<'a>),
    /// A record that arrived after its place was retired (given up on, before the stream's
    /// start, or out of the window): delivered once, marked out of order.
    Late(Record<'a>),
    /// A fragmented record given up on with bytes missing (its place in the sequence).
    Incomplete(IncompleteRecord<'a>),
    /// These sequence numbers were given up on: no record for them will come in order.
    Lost {
        /// The missing sequence numbers.
        seqs: Range<u64>,
    },
    /// The sender restarted (rebooted, replayed its log): a new epoch begins.
    Restart(Restart),
    /// A plain (non-extended) netconsole datagram, as received.
    Plain(&'a [u8]),
    /// The source was evicted (idle, or room needed); its stream was flushed before.
    SourceEvicted,
}

/// The fields of a record kept while its event waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordMeta {
    fields: RecordFields,
    ncemg: bool,
    /// The release's length (at most the datagram's, which the stream keeps within `u32`;
    /// never 0, as a release holds a `.`): four bytes, so that the meta stays 40 bytes.
    release_len: Option<NonZeroU32>,
}

impl RecordMeta {
    pub(crate) fn of(header: &Header<'_>) -> Self {
        RecordMeta {
            fields: header.fields,
            ncemg: header.ncemg,
            // The release is always the first field.
            release_len: header
                .release
                .and_then(|r| NonZeroU32::new(u32::try_from(r.len()).unwrap_or(u32::MAX))),
        }
    }

    #[inline]
    pub(crate) fn view<'a>(&self, datagram: &'a [u8], header_len: usize) -> Record<'a> {
        let (header, body) = datagram.split_at(header_len.min(datagram.len()));
        Record {
            fields: self.fields,
            ncemg: self.ncemg,
            release: self
                .release_len
                .and_then(|len| header.get(..usize::try_from(len.get()).ok()?)),
            header,
            body,
            datagram,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    Record {
        meta: RecordMeta,
        at: usize,
        header_len: usize,
        len: usize,
        late: bool,
    },
    Incomplete {
        meta: RecordMeta,
        at: usize,
        header_len: usize,
        total: usize,
        missing: Range<usize>,
    },
    Lost(Range<u64>),
    Restart(Restart),
    Plain {
        at: usize,
        len: usize,
    },
}

/// Events waiting to be polled, with the bytes they borrow.
///
/// A vector read from `next` on: events are appended while earlier ones are polled, and the
/// whole buffer is emptied (capacity kept) once the last one handed out is released.
#[derive(Debug, Clone, Default)]
pub(crate) struct Output {
    events: Vec<Pending>,
    bytes: Vec<u8>,
    ranges: Vec<Range<usize>>,
    /// Events before this index were handed out; the one before it is still borrowed until
    /// the next call.
    next: usize,
}

/// Output buffer capacity kept across drains; above it the buffer is given back.
pub(crate) const KEEP_BYTES: usize = 1 << 20;

impl Output {
    /// Forgets the events handed out; empties the buffers once nothing waits.
    #[inline]
    pub(crate) fn release(&mut self) {
        if self.next > 0 && self.next == self.events.len() {
            self.clear();
        }
    }

    #[inline]
    fn clear(&mut self) {
        self.next = 0;
        self.events.clear();
        self.bytes.clear();
        self.ranges.clear();
        if self.bytes.capacity() > KEEP_BYTES
            || self.ranges.capacity() > KEEP_BYTES / 16
            || self.events.capacity() > KEEP_BYTES / 64
        {
            self.shrink();
        }
    }

    #[cold]
    fn shrink(&mut self) {
        self.bytes.shrink_to(KEEP_BYTES);
        self.ranges.shrink_to(KEEP_BYTES / 16);
        self.events.shrink_to(KEEP_BYTES / 64);
    }

    #[inline]
    pub(crate) fn has_event(&self) -> bool {
        self.next < self.events.len()
    }

    /// Gives back what the buffers do not hold now (a quiet stream).
    pub(crate) fn give_back(&mut self) {
        if self.events.is_empty() {
            *self = Output::default();
        } else {
            self.events.shrink_to_fit();
            self.bytes.shrink_to_fit();
            self.ranges.shrink_to_fit();
        }
    }

    pub(crate) fn memory_used(&self) -> usize {
        self.bytes.capacity()
            + self.ranges.capacity() * core::mem::size_of::<Range<usize>>()
            + self.events.capacity() * core::mem::size_of::<Pending>()
    }

    /// A record whose header is the first `header_len` bytes of `datagram`.
    #[inline]
    pub(crate) fn record(
        &mut self,
        meta: RecordMeta,
        datagram: &[u8],
        header_len: usize,
        late: bool,
    ) {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(datagram);
        self.events.push(Pending::Record {
            meta,
            at,
            header_len,
            len: datagram.len(),
            late,
        });
    }

    /// A record whose header and body are apart.
    pub(crate) fn record_parts(&mut self, meta: RecordMeta, header: &[u8], body: &[u8]) {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(header);
        self.bytes.extend_from_slice(body);
        self.events.push(Pending::Record {
            meta,
            at,
            header_len: header.len(),
            len: header.len() + body.len(),
            late: false,
        });
    }

    pub(crate) fn incomplete(
        &mut self,
        meta: RecordMeta,
        header: &[u8],
        body: &[u8],
        missing: impl Iterator<Item = Range<usize>>,
    ) {
        let at = self.bytes.len();
        let total = body.len();
        self.bytes.extend_from_slice(header);
        self.bytes.extend_from_slice(body);
        let first = self.ranges.len();
        self.ranges.extend(missing);
        self.events.push(Pending::Incomplete {
            meta,
            at,
            header_len: header.len(),
            total,
            missing: first..self.ranges.len(),
        });
    }

    pub(crate) fn lost(&mut self, seqs: Range<u64>) {
        if seqs.is_empty() {
            return;
        }
        // A loss right after the last one (a gap given up on in two steps) is one event.
        let waiting = self.has_event();
        if let Some(Pending::Lost(last)) = self.events.last_mut() {
            if last.end == seqs.start && waiting {
                last.end = seqs.end;
                return;
            }
        }
        self.events.push(Pending::Lost(seqs));
    }

    pub(crate) fn restart(&mut self, restart: Restart) {
        self.events.push(Pending::Restart(restart));
    }

    pub(crate) fn plain(&mut self, text: &[u8]) {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(text);
        self.events.push(Pending::Plain {
            at,
            len: text.len(),
        });
    }

    /// The next event; it stays valid until the next call on the owner.
    #[inline]
    pub(crate) fn poll(&mut self) -> Option<Event<'_>> {
        if self.next >= self.events.len() {
            if self.next > 0 {
                self.clear();
            }
            return None;
        }
        let pending = self.events.get(self.next)?;
        self.next += 1;
        Some(self.view(pending))
    }

    /// Hands every waiting event to `f`, then empties the buffers.
    #[inline]
    pub(crate) fn drain(&mut self, mut f: impl FnMut(Event<'_>)) {
        if let Some(waiting) = self.events.get(self.next..) {
            for pending in waiting {
                f(self.view(pending));
            }
        }
        if !self.events.is_empty() {
            self.clear();
        }
    }

    /// The event `pending` describes, borrowing the buffers.
    #[inline]
    fn view<'a>(&'a self, pending: &'a Pending) -> Event<'a> {
        let bytes = &self.bytes[..];
        let slice = |at: usize, len: usize| bytes.get(at..at + len).unwrap_or_default();
        match pending {
            Pending::Record {
                meta,
                at,
                header_len,
                len,
                late,
            } => {
                let record = meta.view(slice(*at, *len), *header_len);
                if *late {
                    Event::Late(record)
                } else {
                    Event::Record(record)
                }
            }
            Pending::Incomplete {
                meta,
                at,
                header_len,
                total,
                missing,
            } => Event::Incomplete(IncompleteRecord {
                record: meta.view(slice(*at, *header_len), *header_len),
                total: *total,
                missing: self.ranges.get(missing.clone()).unwrap_or_default(),
                buffer: slice(at + header_len, *total),
            }),
            Pending::Lost(seqs) => Event::Lost { seqs: seqs.clone() },
            Pending::Restart(restart) => Event::Restart(*restart),
            Pending::Plain { at, len } => Event::Plain(slice(*at, *len)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_exposes_only_received_bytes() {
        let mut out = Output::default();
        let (header, _) = Header::parse(b"6,9,1,-,ncfrag=0/10;ab").unwrap();
        out.incomplete(
            RecordMeta::of(&header),
            b"6,9,1,-,ncfrag=0/10;",
            b"ab\0\0\0fgh\0\0",
            [2..5, 8..10].into_iter(),
        );
        let Some(Event::Incomplete(record)) = out.poll() else {
            panic!("expected an incomplete record");
        };
        assert_eq!(record.record.fields.seq, 9);
        assert_eq!(record.missing, [2..5, 8..10]);
        let received: Vec<_> = record.received().collect();
        assert_eq!(received, [(0, &b"ab"[..]), (5, &b"fgh"[..])]);
        assert_eq!(record.received_len(), 5);
        assert!(out.poll().is_none());
        assert_eq!(out.bytes.len(), 0);
    }
}
