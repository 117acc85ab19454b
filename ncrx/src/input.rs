//! Splitting `ncrx send`'s input into records.
//!
//! `/dev/kmsg` records: what one `read()` of `/dev/kmsg` returns is one record, a header line
//! (`prefix,seq,ts_usec,flag[,caller=..];escaped text\n`) then zero or more dictionary lines
//! that begin with a space (` KEY=VALUE\n`). In a stream (`cat /dev/kmsg`, a file) a record
//! therefore ends at a newline followed by anything but a space. A 0x1e byte (the separator
//! of the captures' `kmsg.raw`) also ends a record: it is needed for records the kernel cut,
//! which have no trailing newline. The bytes of each record are kept exactly.

use std::io::{self, BufRead, Read};

/// The record separator of `kmsg.raw` files (ASCII RS).
pub(crate) const RECORD_SEPARATOR: u8 = 0x1e;

/// Reads `/dev/kmsg`-format records from a buffered stream.
pub(crate) struct KmsgRecords<R> {
    reader: R,
    /// On a pipe or terminal, a newline at the end of what has arrived so far ends the record
    /// (so a live record is sent at once, not when the next one arrives). On a file, the next
    /// byte is always looked at.
    live: bool,
}

impl<R: BufRead + BufferIsEmpty> KmsgRecords<R> {
    /// Records from `reader`; `live` for pipes, terminals and character devices.
    pub(crate) fn new(reader: R, live: bool) -> Self {
        KmsgRecords { reader, live }
    }

    /// The next record's bytes (without a 0x1e separator), or `None` at the end.
    pub(crate) fn next_record(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut record = Vec::new();
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok((!record.is_empty()).then_some(record));
            }
            let Some(end) = buf
                .iter()
                .position(|&b| b == b'\n' || b == RECORD_SEPARATOR)
            else {
                record.extend_from_slice(buf);
                let len = buf.len();
                self.reader.consume(len);
                continue;
            };
            let separator = buf[end];
            record.extend_from_slice(&buf[..end]);
            self.reader.consume(end + 1);
            if separator == RECORD_SEPARATOR {
                if record.is_empty() {
                    continue;
                }
                return Ok(Some(record));
            }
            record.push(b'\n');
            // A newline: the record goes on only if a dictionary line follows.
            let next = if self.live && self.reader.buffer_is_empty() {
                None
            } else {
                self.reader.fill_buf()?.first().copied()
            };
            if next != Some(b' ') {
                return Ok(Some(record));
            }
        }
    }
}

/// Whether a buffered reader holds nothing unread (so reading more might block).
pub(crate) trait BufferIsEmpty {
    fn buffer_is_empty(&self) -> bool;
}

impl<T: Read> BufferIsEmpty for io::BufReader<T> {
    fn buffer_is_empty(&self) -> bool {
        self.buffer().is_empty()
    }
}

impl BufferIsEmpty for &[u8] {
    fn buffer_is_empty(&self) -> bool {
        self.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(input: &[u8], live: bool) -> Vec<Vec<u8>> {
        let mut records = KmsgRecords::new(input, live);
        let mut out = Vec::new();
        while let Some(record) = records.next_record().unwrap() {
            out.push(record);
        }
        out
    }

    #[test]
    fn dictionary_lines_stay_with_their_record() {
        let input = b"6,1,2,-;first\n SUBSYSTEM=pci\n DEVICE=+pci:0000:00:03.0\n4,2,3,-;second\n";
        assert_eq!(
            split(input, false),
            [
                b"6,1,2,-;first\n SUBSYSTEM=pci\n DEVICE=+pci:0000:00:03.0\n".to_vec(),
                b"4,2,3,-;second\n".to_vec()
            ]
        );
    }

    #[test]
    fn separators_keep_cut_records_whole() {
        // A record cut by the kernel has no trailing newline; kmsg.raw separates with 0x1e.
        let input = b"6,1,2,-;whole\n\x1e6,2,3,-;cut \\\x1e6,3,4,-;next\n\x1e";
        assert_eq!(
            split(input, false),
            [
                b"6,1,2,-;whole\n".to_vec(),
                b"6,2,3,-;cut \\".to_vec(),
                b"6,3,4,-;next\n".to_vec()
            ]
        );
    }

    #[test]
    fn live_input_ends_a_record_at_the_end_of_what_arrived() {
        // `&[u8]` as a reader: everything has arrived, so only the end of input is "empty".
        let input = b"6,1,2,-;a\n SUBSYSTEM=net\n";
        assert_eq!(split(input, true), [input.to_vec()]);
        assert_eq!(split(b"", true), Vec::<Vec<u8>>::new());
    }
}
