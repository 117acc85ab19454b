//! A received extended record taken apart, and put back together byte for byte.
//!
//! What a Linux 6.9+ target sends is two parts that follow different rules:
//!
//! ```text
//!  [release,]<header>;<text>\n[ SUBSYSTEM=<v>\n][ DEVICE=<v>\n][ <key>=<value>\n]*
//!            \_____________________________________________/ \_________________/
//!             printk's part: escaped (\xNN), cut at the        appended by netconsole:
//!             format limit (2048 bytes on Linux 6.3+)          userdata, then sysdata;
//!                                                              never escaped, never cut
//!
//!  cut:      [release,]<header>;<text up to the limit, maybe a dangling \>[ <key>=<value>\n]*
//!                                 (no \n: the appended lines go on the same line; but
//!                                 see split_body for a \n in the limit's last byte)
//! ```
//!
//! [`split_body`] finds the two parts without being told the sender's kernel.
//! [`fits_format_limit`] tells from the lengths alone that a record was not cut, so that most
//! records split without their header being parsed again.
//!
//! [`dictionary_len`] tells which of a record's ` KEY=VALUE` lines are printk's dictionary
//! (Linux 5.10+ writes at most ` SUBSYSTEM=` then ` DEVICE=`) and which were appended.
//! [`format_received`] writes printk's part again: decoded text and dictionary escaped as
//! printk escapes them, or, for a record kept in wire form (its text cut in the middle of an
//! escape, or anything that decoding would change), copied as it came; a record received
//! without the `\n` after its text gets none. [`format_appended`] writes the appended lines
//! as they came. Given to [`ExtFragments`](crate::ExtFragments) as message and userdata, they
//! give back the datagrams the kernel sent. [`ReceivedRecord`] does all of it for a record
//! given as its fields in wire form (header fields as written, text, every line): it checks
//! the header fields, tells dictionary from appended lines, and writes both parts.
//!
//! ```
//! use netconsole_proto::received::{dictionary_len, format_appended, format_received, split_body};
//! use netconsole_proto::{DictEntry, KmsgRecord};
//!
//! // A Linux 7.3 record cut at 2048 bytes, its userdata on the text's line.
//! let header = b"6,9,1,-;";
//! let mut body = vec![b'x'; 2048 - header.len()];
//! body.extend_from_slice(b" host=web1\n cpu=0\n");
//! let split = split_body(&body, header.len());
//! assert!(!split.text_terminated());
//! assert_eq!(split.text().len(), 2040);
//! let lines: Vec<DictEntry<'_>> =
//!     split.lines().map(|l| DictEntry { key: l.key(), value: l.value() }).collect();
//! assert_eq!(dictionary_len(lines.iter().map(|e| e.key)), 0);
//!
//! // And back: printk's part (cut: no newline), then the appended lines.
//! let record = KmsgRecord::new(6, 9, 1, split.text());
//! let mut msg = [0u8; 4096];
//! let len = format_received(&record, true, true, &mut msg).unwrap();
//! let mut appended = [0u8; 64];
//! let extra = format_appended(&lines, &mut appended).unwrap();
//! assert_eq!([&msg[..len], &appended[..extra]].concat(), [&header[..], &body].concat());
//! ```

#[cfg(feature = "alloc")]
use crate::body::needs_escape;
use crate::body::{Body, BufferTooSmall, PRINTK_MESSAGE_MAX, escape_into, escaped_len};
use crate::format::{DictEntry, KmsgRecord, extradata_line_len, format_kmsg, put_extradata_line};
use crate::header::{Caller, CallerError, Flag};
use crate::scan::find;
#[cfg(feature = "alloc")]
use crate::scan::find_escape;

/// The keys of printk's dictionary on Linux 5.10+, in the order printk writes them.
const DICTIONARY_KEYS: [&[u8]; 2] = [b"SUBSYSTEM", b"DEVICE"];

/// Whether `rest` is one or more whole ` key=value\n` lines (key non-empty, no space in
/// it) none of which is a dictionary line: what netconsole appends after a cut record.
fn appended_lines(mut rest: &[u8]) -> bool {
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let Some(end) = find(b'\n', rest) else {
            return false;
        };
        let Some((&b' ', line)) = rest[..end].split_first() else {
            return false;
        };
        let Some(eq) = find(b'=', line) else {
            return false;
        };
        let key = &line[..eq];
        if key.is_empty() || key.contains(&b' ') || DICTIONARY_KEYS.contains(&key) {
            return false;
        }
        rest = &rest[end + 1..];
    }
    true
}

/// Splits a received record body (after the header's `;`; fragments reassembled) into
/// text and lines, finding by itself whether a Linux 6.9+ sender cut the record at
/// [`PRINTK_MESSAGE_MAX`] with userdata or sysdata after it (the [module](self) doc draws
/// both shapes). `kernel_header_len` is [`Header::kernel_len`](crate::Header::kernel_len).
///
/// A record is taken as cut at [`PRINTK_MESSAGE_MAX`] only when its text (or a
/// ` SUBSYSTEM=`/` DEVICE=` line) runs past that limit *and* everything after the limit is
/// ` key=value` lines with no dictionary key among them, which is what Linux 6.9+ senders
/// with userdata or sysdata produce; otherwise the body is split as [`Body::parse`] does
/// (records of kernels before 6.3 run up to 8192 bytes uncut). A pre-6.3 record whose escaped
/// text has ` key=value` lines' shape from exactly that byte to its end would be misread as
/// cut; re-sending it with [`format_received`] still gives the same bytes.
///
/// A record printk cut can still end its text with `\n`. printk writes an escape with
/// `scnprintf`, which keeps the buffer's last byte for its NUL, and writes the `\n` only while
/// there is room. So when the text's output stops one byte short of the limit (an escape cut
/// to `\`, `\x` or `\xN` there, or escapes left out whole, and no printable byte of the text
/// after them to fill the last byte), the `\n` takes the limit's last byte and the dictionary
/// is left out. It reads such a body as the kernel wrote it: the text ends at that
/// `\n` (terminated, so [`format_received`] writes the `\n` again) and the appended lines
/// follow. That the text was cut is only seen when it ends in a dangling escape
/// (no whole escaped text does; `decode_exact` refuses it). When only whole escapes were left
/// out, the bytes are those of the uncut record holding the shorter text, and no reader can
/// tell the two apart.
pub fn split_body(body: &[u8], kernel_header_len: usize) -> Body<'_> {
    let whole = Body::parse(body);
    let Some(limit) = PRINTK_MESSAGE_MAX.checked_sub(kernel_header_len) else {
        return whole;
    };
    if body.len() <= limit || limit == 0 || body[limit - 1] == b'\n' {
        return whole;
    }
    let limited = Body::parse_limited(body, kernel_header_len, PRINTK_MESSAGE_MAX);
    if limited != whole && appended_lines(&body[limit..]) {
        limited
    } else {
        whole
    }
}

/// Whether a record fits printk's format limit whole, judged from the lengths alone: its
/// header as received (`received_header_len` bytes, `;` included) and the body after it
/// (`body_len` bytes, fragments reassembled). When it does, printk did not cut it, and
/// [`Body::parse`] splits its body as [`split_body`] and [`Body::parse_limited`] would,
/// without the header being parsed again.
///
/// printk's part of the header ([`Header::kernel_len`](crate::Header::kernel_len)) is what
/// the received header holds without netconsole's additions (release, `ncfrag`, `ncemg`), so
/// it is never longer; a record that is not whole (a fragment, a piece of one) has no more
/// body than the whole record.
///
/// ```
/// use netconsole_proto::{Body, PRINTK_MESSAGE_MAX, received};
///
/// let header = b"6.1.0,6,12,5000,-,ncfrag=0/41;";
/// let body = b"hello\n SUBSYSTEM=net\n DEVICE=n2\n cpu=1\n";
/// assert!(received::fits_format_limit(header.len(), body.len(), PRINTK_MESSAGE_MAX));
/// assert!(!received::fits_format_limit(header.len(), 2048, PRINTK_MESSAGE_MAX));
/// let (h, _) = netconsole_proto::Header::parse(b"6.1.0,6,12,5000,-;x").unwrap();
/// assert_eq!(received::split_body(body, h.kernel_len()), Body::parse(body));
/// ```
pub const fn fits_format_limit(
    received_header_len: usize,
    body_len: usize,
    format_limit: usize,
) -> bool {
    received_header_len.saturating_add(body_len) <= format_limit
}

/// How many of a record's ` KEY=VALUE` lines, given by their keys in wire order, are
/// printk's dictionary: a leading ` SUBSYSTEM=`, then a ` DEVICE=`, each at most once
/// (Linux 5.10+). The lines after them were appended by netconsole (userdata, sysdata).
/// Kernels before 5.10 printed any key in the dictionary but had no userdata: for their
/// records every line is dictionary, which the caller knows and this function does not.
pub fn dictionary_len<'k>(keys: impl IntoIterator<Item = &'k [u8]>) -> usize {
    let mut expected = DICTIONARY_KEYS.iter();
    let mut count = 0;
    for key in keys {
        if !expected.any(|k| *k == key) {
            break;
        }
        count += 1;
    }
    count
}

/// Writes printk's part of a received record again: `record`'s header, its text and its
/// dictionary lines (`record.dict`; empty values are written too, as received). With `wire`,
/// text, keys and values are copied as they are (they hold the wire form); otherwise they
/// are escaped as printk escapes them. With `cut` no `\n` follows the text (the kernel cut
/// the record; its dictionary is then normally empty). Nothing is cut: the record was
/// already printk's output. Returns the bytes written.
pub fn format_received(
    record: &KmsgRecord<'_>,
    wire: bool,
    cut: bool,
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    let (head, head_len) = printk_header(record);
    let needed = received_len(record, head_len, wire, cut);
    if out.len() < needed {
        return Err(BufferTooSmall { needed });
    }
    out[..head_len].copy_from_slice(&head[..head_len]);
    let mut pos = head_len;
    let mut put = |bytes: &[u8], escape: bool, pos: &mut usize| {
        if escape {
            // Sized above: cannot fail.
            *pos += escape_into(bytes, &mut out[*pos..]).unwrap_or(0);
        } else {
            out[*pos..*pos + bytes.len()].copy_from_slice(bytes);
            *pos += bytes.len();
        }
    };
    put(record.text, !wire, &mut pos);
    if !cut {
        put(b"\n", false, &mut pos);
    }
    for entry in record.dict {
        put(b" ", false, &mut pos);
        put(entry.key, !wire, &mut pos);
        put(b"=", false, &mut pos);
        put(entry.value, !wire, &mut pos);
        put(b"\n", false, &mut pos);
    }
    Ok(pos)
}

/// printk's header of `record` (`<prefix>,<seq>,<ts_usec>,<flag>[,caller=..];`) and its
/// length: the record formatted with no text and no dictionary is `<header>;\n`, and the
/// longest header is far below 128 bytes.
fn printk_header(record: &KmsgRecord<'_>) -> ([u8; 128], usize) {
    let mut head = [0u8; 128];
    let mut bare = *record;
    bare.text = &[];
    bare.dict = &[];
    let head_len = format_kmsg(&bare, &mut head).saturating_sub(1);
    (head, head_len)
}

/// The bytes [`format_received`] writes for `record` after a header of `head_len` bytes:
/// text and dictionary lines (` KEY=VALUE\n`, as `msg_add_dict_text` in
/// kernel/printk/printk.c writes them) copied (`wire`) or escaped, and the `\n` after the
/// text unless `cut`.
fn received_len(record: &KmsgRecord<'_>, head_len: usize, wire: bool, cut: bool) -> usize {
    let part_len = |bytes: &[u8]| {
        if wire {
            bytes.len()
        } else {
            escaped_len(bytes)
        }
    };
    head_len
        + part_len(record.text)
        + usize::from(!cut)
        + record
            .dict
            .iter()
            .map(|e| part_len(e.key) + part_len(e.value) + b" =\n".len())
            .sum::<usize>()
}

/// The decoded bytes of `wire` (text, key or value in printk's escaping) when nothing is lost
/// by decoding: no malformed escape, and escaping the bytes again gives `wire` back (printk
/// escapes exactly the bytes below 0x20, from 0x7f, and `\\`, in lowercase hex). `None`
/// otherwise: a cut left a dangling `\\`, an uppercase or needless escape, or a userdata value
/// sent unescaped with such bytes in it; such strings must be kept in wire form to be sent
/// again byte for byte.
#[cfg(feature = "alloc")]
pub fn decode_exact(wire: &[u8]) -> Option<alloc::borrow::Cow<'_, [u8]>> {
    if !wire.contains(&b'\\') {
        // No escape: the bytes stand for themselves when printk would leave them as they are.
        return wire
            .iter()
            .all(|&b| !needs_escape(b))
            .then_some(alloc::borrow::Cow::Borrowed(wire));
    }
    let mut bytes = alloc::vec::Vec::with_capacity(wire.len());
    decode_exact_into(wire, &mut bytes).then_some(alloc::borrow::Cow::Owned(bytes))
}

/// [`decode_exact`] into a caller's buffer, for a receiver that decodes every record without
/// allocating: `out` is cleared, then holds the decoded bytes when the function returns
/// `true`. It returns `false` (and `out` holds a partial decoding) exactly when
/// [`decode_exact`] gives `None`: an escape that is not `\x` and two lowercase hex digits, an
/// escape of a byte printk leaves as it is, or a byte printk would have escaped.
#[cfg(feature = "alloc")]
pub fn decode_exact_into(wire: &[u8], out: &mut alloc::vec::Vec<u8>) -> bool {
    /// The value of each lowercase hex digit; 0xff for the other bytes.
    const LOWER_HEX: [u8; 256] = {
        let mut table = [0xff; 256];
        let mut d = 0;
        while d < 16 {
            table[b"0123456789abcdef"[d] as usize] = d as u8;
            d += 1;
        }
        table
    };
    out.clear();
    let mut rest = wire;
    loop {
        // Runs of bytes printk leaves as they are, found eight at a time and copied at once.
        let run = find_escape(rest).unwrap_or(rest.len());
        out.extend_from_slice(&rest[..run]);
        rest = &rest[run..];
        if rest.is_empty() {
            return true;
        }
        // Then escapes, as long as they follow one another (`\xe2\x82\xac`).
        loop {
            let Some((&[b'\\', b'x', hi, lo], after)) = rest.split_first_chunk::<4>() else {
                return false;
            };
            let (hi, lo) = (LOWER_HEX[usize::from(hi)], LOWER_HEX[usize::from(lo)]);
            let byte = hi << 4 | lo;
            if (hi | lo) > 0x0f || !needs_escape(byte) {
                return false;
            }
            out.push(byte);
            rest = after;
            if rest.first() != Some(&b'\\') {
                break;
            }
        }
    }
}

/// The bytes [`format_appended`] writes for `entries`: ` <key>=<value>\n` for each.
///
/// ```
/// use netconsole_proto::DictEntry;
/// use netconsole_proto::received::appended_len;
///
/// let lines = [DictEntry { key: b"cpu", value: b"1" }, DictEntry { key: b"empty", value: b"" }];
/// assert_eq!(appended_len(&lines), b" cpu=1\n empty=\n".len());
/// ```
pub fn appended_len(entries: &[DictEntry<'_>]) -> usize {
    entries
        .iter()
        .map(|e| extradata_line_len(e.key, e.value))
        .sum()
}

/// Writes the lines netconsole appended to a received record (userdata, sysdata) as they
/// came: ` key=value\n` each, nothing escaped, empty values kept. Returns the bytes written;
/// `out` needs [`appended_len`] bytes.
pub fn format_appended(entries: &[DictEntry<'_>], out: &mut [u8]) -> Result<usize, BufferTooSmall> {
    let needed = appended_len(entries);
    if out.len() < needed {
        return Err(BufferTooSmall { needed });
    }
    let mut pos = 0;
    for entry in entries {
        pos += put_extradata_line(entry.key, entry.value, &mut out[pos..]);
    }
    Ok(pos)
}

/// A received record to send again, given as its fields in wire form: what a receiver
/// reports of one (ncrx's JSON lines, for one). [`format_message`](Self::format_message)
/// writes the message printk made of it (what `/dev/kmsg` returns, and what netconsole
/// fragments); [`format_appended`](Self::format_appended) the lines netconsole appended after
/// it (userdata, sysdata), which go to [`ExtFragments`](crate::ExtFragments) as userdata.
/// Together they give back the datagrams the sender's kernel sent.
///
/// The header fields are taken as written on the wire and checked
/// ([`RecordError`]): the level (0 to 7), the flag (`-`, `c` or `+`) and the `caller=`
/// value (`T<pid>` or `C<cpu>`). So they are not a [`RecordFields`](crate::RecordFields),
/// whose flag and caller are parsed already: here they are text a receiver reported, and
/// writing the record is where a bad one is found.
///
/// `lines` are split as the sender's kernel wrote them: printk's dictionary, then the
/// appended lines ([`dictionary_len`](Self::dictionary_len)). A record in wire form
/// (`wire`) or cut by its kernel (`cut`) is already printk's output and is written back as
/// it came ([`format_received`]); any other is formatted as printk formats it into its buffer
/// of `format_limit` bytes ([`format_kmsg`], which cuts as the kernel cuts).
///
/// ```
/// use netconsole_proto::received::ReceivedRecord;
/// use netconsole_proto::DictEntry;
///
/// // A Linux 7.3 record of a configfs target with userdata and sysdata, as received.
/// let lines = [
///     DictEntry { key: b"host", value: b"web1" },
///     DictEntry { key: b"msgid", value: b"9" },
/// ];
/// let mut record = ReceivedRecord::new(6, 7, 8, b"tab\there");
/// record.facility = 1;
/// record.caller = Some(b"T42");
/// record.lines = &lines;
/// let mut message = vec![0; record.message_capacity().unwrap()];
/// let len = record.format_message(&mut message).unwrap();
/// assert_eq!(&message[..len], b"14,7,8,-,caller=T42;tab\\x09here\n");
/// let mut appended = vec![0; record.appended_len()];
/// record.format_appended(&mut appended).unwrap();
/// assert_eq!(appended, b" host=web1\n msgid=9\n");
///
/// record.flag = b"x";
/// assert!(record.format_message(&mut message).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceivedRecord<'a> {
    /// Log level, 0 (emerg) to 7 (debug).
    pub level: u8,
    /// Syslog facility.
    pub facility: u8,
    /// printk sequence number.
    pub seq: u64,
    /// Microseconds since the sender's boot.
    pub ts_usec: u64,
    /// The flag as written: `-`, `c` or `+`.
    pub flag: &'a [u8],
    /// The `caller=` value as written (`T<pid>` or `C<cpu>`), if the header had one.
    pub caller: Option<&'a [u8]>,
    /// The text: raw bytes, or with `wire` the bytes as they came (printk's escaping).
    pub text: &'a [u8],
    /// Every ` key=value` line after the text, in wire order: printk's dictionary, then the
    /// lines netconsole appended (userdata, sysdata). With `wire`, keys and values of the
    /// dictionary are in wire form too; appended lines are never escaped.
    pub lines: &'a [DictEntry<'a>],
    /// Text and dictionary hold the wire form (printk's escaping), not raw bytes: written
    /// back as they are.
    pub wire: bool,
    /// The sender's printk cut the record at its format limit: no `\n` after the text.
    pub cut: bool,
    /// The sender's printk format buffer: [`PRINTK_MESSAGE_MAX`] (the default, Linux 6.3+)
    /// or [`CONSOLE_EXT_LOG_MAX`](crate::CONSOLE_EXT_LOG_MAX) (earlier kernels).
    pub format_limit: usize,
}

/// Why a [`ReceivedRecord`] cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The flag is not one byte of `-`, `c` or `+`.
    #[error("flag is not -, c or +")]
    Flag,
    /// The `caller=` value is not `T<pid>` or `C<cpu>`.
    #[error("bad caller: {0}")]
    Caller(CallerError),
    /// The level does not fit printk's three bits.
    #[error("level {0} is not 0..7")]
    Level(u8),
    /// The output buffer is too small.
    #[error(transparent)]
    BufferTooSmall(#[from] BufferTooSmall),
}

impl<'a> ReceivedRecord<'a> {
    /// A record with the given level, sequence, timestamp and raw text; facility 0, flag
    /// `-`, no caller, no lines, not in wire form, not cut, a format limit of
    /// [`PRINTK_MESSAGE_MAX`].
    pub const fn new(level: u8, seq: u64, ts_usec: u64, text: &'a [u8]) -> Self {
        ReceivedRecord {
            level,
            facility: 0,
            seq,
            ts_usec,
            flag: b"-",
            caller: None,
            text,
            lines: &[],
            wire: false,
            cut: false,
            format_limit: PRINTK_MESSAGE_MAX,
        }
    }

    /// How many of `lines` are printk's dictionary; the rest were appended by netconsole.
    /// A format limit above [`PRINTK_MESSAGE_MAX`] is a kernel before 6.3, which has no
    /// userdata or sysdata (they came in 6.9): every line is dictionary. Otherwise
    /// [`dictionary_len`](fn@dictionary_len) decides (a leading ` SUBSYSTEM=`, ` DEVICE=`).
    ///
    /// ```
    /// use netconsole_proto::received::ReceivedRecord;
    /// use netconsole_proto::{CONSOLE_EXT_LOG_MAX, DictEntry};
    ///
    /// let lines = [
    ///     DictEntry { key: b"SUBSYSTEM", value: b"net" },
    ///     DictEntry { key: b"host", value: b"web1" },
    /// ];
    /// let mut record = ReceivedRecord::new(6, 1, 2, b"eth0: up");
    /// record.lines = &lines;
    /// assert_eq!(record.dictionary_len(), 1);
    /// record.format_limit = CONSOLE_EXT_LOG_MAX;
    /// assert_eq!(record.dictionary_len(), 2);
    /// ```
    pub fn dictionary_len(&self) -> usize {
        if self.format_limit > PRINTK_MESSAGE_MAX {
            self.lines.len()
        } else {
            dictionary_len(self.lines.iter().map(|e| e.key))
        }
    }

    /// The lines netconsole appended: those after the dictionary.
    fn appended(&self) -> &'a [DictEntry<'a>] {
        self.lines.get(self.dictionary_len()..).unwrap_or_default()
    }

    /// The record printk holds, its header fields checked (flag, then caller, then level),
    /// with its dictionary lines. Its text is in wire form when `wire` is.
    fn printk_record(&self) -> Result<KmsgRecord<'a>, RecordError> {
        let flag = Flag::from_field(self.flag).ok_or(RecordError::Flag)?;
        let caller = self
            .caller
            .map(Caller::parse_value)
            .transpose()
            .map_err(RecordError::Caller)?;
        if self.level > 7 {
            return Err(RecordError::Level(self.level));
        }
        let mut record = KmsgRecord::new(self.level, self.seq, self.ts_usec, self.text);
        record.fields.facility = self.facility;
        record.fields.flag = flag;
        record.fields.caller = caller;
        record.dict = self.lines.get(..self.dictionary_len()).unwrap_or_default();
        Ok(record)
    }

    /// The buffer [`format_message`](Self::format_message) needs: the message's length for a
    /// record written back as it came (`wire` or `cut`), else printk's whole buffer
    /// (`format_limit`), where printk formats and cuts it.
    pub fn message_capacity(&self) -> Result<usize, RecordError> {
        let record = self.printk_record()?;
        Ok(if self.wire || self.cut {
            received_len(&record, printk_header(&record).1, self.wire, self.cut)
        } else {
            self.format_limit
        })
    }

    /// Writes the message printk made of the record (header, text, dictionary) into `out`;
    /// returns its length. `out` needs [`message_capacity`](Self::message_capacity) bytes.
    pub fn format_message(&self, out: &mut [u8]) -> Result<usize, RecordError> {
        let record = self.printk_record()?;
        if self.wire || self.cut {
            return Ok(format_received(&record, self.wire, self.cut, out)?);
        }
        let needed = self.format_limit;
        let buffer = out.get_mut(..needed).ok_or(BufferTooSmall { needed })?;
        Ok(format_kmsg(&record, buffer))
    }

    /// The bytes [`format_appended`](Self::format_appended) writes.
    pub fn appended_len(&self) -> usize {
        appended_len(self.appended())
    }

    /// Writes the lines netconsole appended after the message, as they came
    /// ([`format_appended`](fn@format_appended)); returns their length. `out` needs
    /// [`appended_len`](Self::appended_len) bytes.
    pub fn format_appended(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        format_appended(self.appended(), out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "alloc")]
    #[test]
    fn decode_exact_only_when_nothing_is_lost() {
        assert_eq!(decode_exact(b"a\\x09b").as_deref(), Some(&b"a\tb"[..]));
        assert_eq!(decode_exact(b"plain").as_deref(), Some(&b"plain"[..]));
        // A dangling escape, an uppercase one, a needless one, a raw byte printk escapes.
        for wire in [
            &b"cut \\x0"[..],
            b"\\x0A",
            b"\\x41",
            b"eq\\back",
            b"caf\xc3\xa9",
        ] {
            assert_eq!(decode_exact(wire), None, "{}", wire.escape_ascii());
        }
    }

    /// The message and the appended lines of `record`, written into buffers of the sizes it
    /// asks for.
    fn written(record: &ReceivedRecord<'_>) -> (Vec<u8>, Vec<u8>) {
        let mut message = vec![0; record.message_capacity().unwrap()];
        let len = record.format_message(&mut message).unwrap();
        message.truncate(len);
        let mut appended = vec![0; record.appended_len()];
        assert_eq!(record.format_appended(&mut appended), Ok(appended.len()));
        (message, appended)
    }

    /// Record 685 of the Linux 7.3 capture `configfs_userdata`, as the kernel sent it (its
    /// release prepended, userdata and sysdata appended).
    const LINUX_7_3_SPEC_01: &[u8] = b"7.3.4+deb13-amd64,14,685,5966024,-;rig-spec-01 ctl: \
        tab[\\x09] cr[\\x0d] esc[\\x1b] del[\\x7f] bell[\\x07] backslash[\\x5c] end\n \
        rig_cfg=changed-mid-run\n odd=spaces and;semi,comma=eq\\back\n taskname=dd\n \
        release=7.3.4+deb13-amd64\n msgid=304\n";

    #[test]
    fn a_received_linux_7_3_record_is_sent_again_byte_for_byte() {
        let lines = [
            DictEntry {
                key: b"rig_cfg",
                value: b"changed-mid-run",
            },
            DictEntry {
                key: b"odd",
                value: b"spaces and;semi,comma=eq\\back",
            },
            DictEntry {
                key: b"taskname",
                value: b"dd",
            },
            DictEntry {
                key: b"release",
                value: b"7.3.4+deb13-amd64",
            },
            DictEntry {
                key: b"msgid",
                value: b"304",
            },
        ];
        let raw =
            b"rig-spec-01 ctl: tab[\t] cr[\r] esc[\x1b] del[\x7f] bell[\x07] backslash[\\] end";
        let mut record = ReceivedRecord::new(6, 685, 5_966_024, raw);
        record.facility = 1;
        record.lines = &lines;
        assert_eq!(record.dictionary_len(), 0);
        let (message, appended) = written(&record);
        assert_eq!(
            message,
            b"14,685,5966024,-;rig-spec-01 ctl: tab[\\x09] cr[\\x0d] esc[\\x1b] del[\\x7f] \
              bell[\\x07] backslash[\\x5c] end\n"
        );
        assert_eq!(
            appended,
            b" rig_cfg=changed-mid-run\n odd=spaces and;semi,comma=eq\\back\n taskname=dd\n \
              release=7.3.4+deb13-amd64\n msgid=304\n"
        );
        assert_eq!(record.message_capacity(), Ok(PRINTK_MESSAGE_MAX));
        // The message and its appended lines given to netconsole: the captured datagram.
        let options = crate::SendOptions {
            release: Some(b"7.3.4+deb13-amd64"),
            userdata: &appended,
            ..crate::SendOptions::default()
        };
        let mut fragments = crate::ExtFragments::new(&message, options).unwrap();
        let mut datagram = [0u8; crate::MAX_PRINT_CHUNK];
        let len = fragments.write_next(&mut datagram).unwrap();
        assert_eq!(&datagram[..len], LINUX_7_3_SPEC_01);
        assert_eq!(fragments.write_next(&mut datagram), None);
        // The same record kept in wire form: the same message, sized exactly.
        let escaped = b"rig-spec-01 ctl: tab[\\x09] cr[\\x0d] esc[\\x1b] del[\\x7f] bell[\\x07] \
            backslash[\\x5c] end";
        record.text = escaped;
        record.wire = true;
        assert_eq!(record.message_capacity(), Ok(message.len()));
        assert_eq!(written(&record), (message, appended));
    }

    #[test]
    fn every_line_is_dictionary_before_linux_6_3() {
        // Record 181 of the Linux 6.1 capture `ext`, and a line after its dictionary.
        let lines = [
            DictEntry {
                key: b"SUBSYSTEM",
                value: b"acpi",
            },
            DictEntry {
                key: b"DEVICE",
                value: b"+acpi:PNP0A03:00",
            },
            DictEntry {
                key: b"note",
                value: b"a\tb",
            },
        ];
        let text = b"acpi PNP0A03:00: _OSC: OS supports [ASPM ClockPM Segments MSI HPX-Type3]";
        let mut record = ReceivedRecord::new(6, 181, 1_227_757, text);
        record.format_limit = crate::CONSOLE_EXT_LOG_MAX;
        record.lines = &lines[..2];
        assert_eq!(
            written(&record),
            (
                b"6,181,1227757,-;acpi PNP0A03:00: _OSC: OS supports [ASPM ClockPM Segments MSI \
                  HPX-Type3]\n SUBSYSTEM=acpi\n DEVICE=+acpi:PNP0A03:00\n"
                    .to_vec(),
                Vec::new()
            )
        );
        assert_eq!(record.message_capacity(), Ok(8192));
        // Before 6.3 any key is printk's (escaped, in the message); from 6.3 only the
        // leading SUBSYSTEM and DEVICE are, and the rest was appended (as it came).
        record.lines = &lines;
        assert_eq!(record.dictionary_len(), 3);
        let (message, appended) = written(&record);
        assert!(message.ends_with(b" DEVICE=+acpi:PNP0A03:00\n note=a\\x09b\n"));
        assert_eq!(appended, b"");
        record.format_limit = PRINTK_MESSAGE_MAX;
        assert_eq!(record.dictionary_len(), 2);
        let (message, appended) = written(&record);
        assert!(message.ends_with(b" DEVICE=+acpi:PNP0A03:00\n"));
        assert_eq!(appended, b" note=a\tb\n");
    }

    #[test]
    fn a_cut_record_is_written_back_without_its_newline() {
        // Linux 7.3 cut at 2048 bytes, in the middle of an escape; userdata after it.
        let mut text = vec![b'x'; 2048 - b"6,9,1,-;".len() - 1];
        text.push(b'\\');
        let lines = [
            DictEntry {
                key: b"host",
                value: b"web1",
            },
            DictEntry {
                key: b"cpu",
                value: b"0",
            },
        ];
        let mut record = ReceivedRecord::new(6, 9, 1, &text);
        record.wire = true;
        record.cut = true;
        record.lines = &lines;
        assert_eq!(record.message_capacity(), Ok(2048));
        let (message, appended) = written(&record);
        assert_eq!(message.len(), 2048);
        assert!(message.starts_with(b"6,9,1,-;xxx") && message.ends_with(b"xx\\"));
        assert_eq!(appended, b" host=web1\n cpu=0\n");
        // Not received cut: printk formats the raw text into its 2048 bytes. The escape of
        // the backslash (`\x5c`) does not fit in the last byte, which the `\n` then takes.
        record.wire = false;
        record.cut = false;
        let (message, _) = written(&record);
        assert_eq!(message.len(), 2048);
        assert!(message.ends_with(b"xx\n"), "{}", message.escape_ascii());
    }

    #[test]
    fn header_fields_are_checked_in_order() {
        let mut record = ReceivedRecord::new(9, 1, 2, b"x");
        record.flag = b"x";
        record.caller = Some(b"X1");
        let mut out = [0u8; 4096];
        assert_eq!(record.format_message(&mut out), Err(RecordError::Flag));
        assert_eq!(record.message_capacity(), Err(RecordError::Flag));
        for flag in [&b""[..], b"--", b"c+"] {
            record.flag = flag;
            assert_eq!(record.format_message(&mut out), Err(RecordError::Flag));
        }
        record.flag = b"+";
        assert_eq!(
            record.format_message(&mut out),
            Err(RecordError::Caller(CallerError::Kind))
        );
        record.caller = Some(b"C4");
        assert_eq!(record.format_message(&mut out), Err(RecordError::Level(9)));
        assert_eq!(RecordError::Level(9).to_string(), "level 9 is not 0..7");
        record.level = 7;
        assert_eq!(record.format_message(&mut out), Ok(20));
        assert_eq!(&out[..20], b"7,1,2,+,caller=C4;x\n");
        assert_eq!(
            record.format_message(&mut out[..100]),
            Err(RecordError::BufferTooSmall(BufferTooSmall { needed: 2048 }))
        );
    }

    #[test]
    fn appended_lines_shape() {
        assert!(appended_lines(b" a=b\n cpu=0\n"));
        assert!(appended_lines(b" odd=spaces and;semi,comma=eq\\back\n"));
        assert!(!appended_lines(b""));
        assert!(!appended_lines(b" a=b"));
        assert!(!appended_lines(b"a=b\n"));
        assert!(!appended_lines(b" ab\n"));
        assert!(!appended_lines(b" =b\n"));
        assert!(!appended_lines(b" a b=c\n"));
        assert!(!appended_lines(b" a=b\n SUBSYSTEM=pci\n"));
    }

    #[test]
    fn dictionary_is_subsystem_then_device() {
        let keys = |k: &[&'static [u8]]| dictionary_len(k.iter().copied());
        assert_eq!(keys(&[b"SUBSYSTEM", b"DEVICE", b"host"]), 2);
        assert_eq!(keys(&[b"DEVICE", b"cpu"]), 1);
        assert_eq!(keys(&[b"host", b"SUBSYSTEM"]), 0);
        assert_eq!(keys(&[b"DEVICE", b"SUBSYSTEM"]), 1);
        assert_eq!(keys(&[b"SUBSYSTEM", b"SUBSYSTEM"]), 1);
        assert_eq!(keys(&[]), 0);
    }

    #[test]
    fn long_uncut_text_stays_whole() {
        // A Linux 6.1 record: 3000 bytes of text, no limit, a dictionary after it.
        let mut body = vec![b'a'; 3000];
        body.extend_from_slice(b"\n SUBSYSTEM=pci\n");
        let split = split_body(&body, 8);
        assert!(split.text_terminated());
        assert_eq!(split.text().len(), 3000);
        // Text past the limit that is not followed by appended lines only.
        let mut body = vec![b'a'; 2040];
        body.extend_from_slice(b" k=v more text\n SUBSYSTEM=pci\n");
        assert_eq!(split_body(&body, 8).text().len(), 2054);
    }

    #[test]
    fn userdata_past_the_limit_of_an_uncut_record_stays_whole() {
        // 7.3, not cut: the limit falls inside a userdata value with a space in it.
        let mut body = vec![b'a'; 2028];
        body.extend_from_slice(b"\n odd=spaces and;semi,comma=x\n cpu=1\n");
        let limit = 2048 - 8;
        assert_eq!(&body[limit..limit + 4], b" and");
        let split = split_body(&body, 8);
        assert!(split.text_terminated());
        let values: Vec<&[u8]> = split.lines().map(|l| l.value()).collect();
        assert_eq!(values, [&b"spaces and;semi,comma=x"[..], b"1"]);
    }
}
