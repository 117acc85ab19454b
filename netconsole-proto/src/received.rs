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
//!                                 see below for a \n in the limit's last byte)
//! ```
//!
//! [`split_body`] finds the two parts of a received body without being told the sender's
//! kernel: a record is taken as cut at [`PRINTK_MESSAGE_MAX`] only when its text (or a
//! ` SUBSYSTEM=`/` DEVICE=` line) runs past that limit *and* everything after the limit is
//! ` key=value` lines with no dictionary key among them, which is what Linux 6.9+ senders
//! with userdata or sysdata produce; otherwise the body is split as [`Body::parse`] does
//! (records of kernels before 6.3 run up to 8192 bytes uncut). A pre-6.3 record whose escaped
//! text has ` key=value` lines' shape from exactly that byte to its end would be misread as
//! cut; re-sending it with [`format_received`] still gives the same bytes.
//!
//! A record printk cut can still end its text with `\n`. printk writes an escape with
//! `scnprintf`, which keeps the buffer's last byte for its NUL, and writes the `\n` only while
//! there is room. So when the text's output stops one byte short of the limit (an escape cut
//! to `\`, `\x` or `\xN` there, or escapes left out whole, and no printable byte of the text
//! after them to fill the last byte), the `\n` takes the limit's last byte and the dictionary
//! is left out. [`split_body`] reads such a body as the kernel wrote it: the text ends at that
//! `\n` (terminated, so [`format_received`] writes the `\n` again) and the appended lines
//! follow. That the text was cut is only seen when it ends in a dangling escape
//! (no whole escaped text does; `decode_exact` refuses it). When only whole escapes were left
//! out, the bytes are those of the uncut record holding the shorter text, and no reader can
//! tell the two apart.
//!
//! [`dictionary_len`] tells which of a record's ` KEY=VALUE` lines are printk's dictionary
//! (Linux 5.10+ writes at most ` SUBSYSTEM=` then ` DEVICE=`) and which were appended.
//! [`format_received`] writes printk's part again: decoded text and dictionary escaped as
//! printk escapes them, or, for a record kept in wire form (its text cut in the middle of an
//! escape, or anything that decoding would change), copied as it came; a record received
//! without the `\n` after its text gets none. [`format_appended`] writes the appended lines
//! as they came. Given to [`ExtFragments`](crate::ExtFragments) as message and userdata, they
//! give back the datagrams the kernel sent.
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

use crate::body::{Body, BufferTooSmall, PRINTK_MESSAGE_MAX, escape_into, escaped_len};
use crate::format::{DictEntry, KmsgRecord, extradata_line_len, format_kmsg, put_extradata_line};
use crate::scan::find;

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
/// [`PRINTK_MESSAGE_MAX`] with userdata or sysdata after it (see the [module](self) doc).
/// `kernel_header_len` is [`Header::kernel_len`](crate::Header::kernel_len).
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
    // printk's header alone: the record formatted with no text and no dictionary is
    // "<header>;\n"; the longest header is far below 128 bytes.
    let mut head = [0u8; 128];
    let mut bare = *record;
    bare.text = &[];
    bare.dict = &[];
    let head_len = format_kmsg(&bare, &mut head).saturating_sub(1);
    let part_len = |bytes: &[u8]| {
        if wire {
            bytes.len()
        } else {
            escaped_len(bytes)
        }
    };
    let needed = head_len
        + part_len(record.text)
        + usize::from(!cut)
        + record
            .dict
            .iter()
            .map(|e| part_len(e.key) + part_len(e.value) + 3)
            .sum::<usize>();
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
            .all(|&b| !needs_printk_escape(b))
            .then_some(alloc::borrow::Cow::Borrowed(wire));
    }
    let mut bytes = alloc::vec::Vec::with_capacity(wire.len());
    decode_exact_into(wire, &mut bytes).then_some(alloc::borrow::Cow::Owned(bytes))
}

/// Whether printk writes byte `b` of a text or dictionary as `\xNN`: below 0x20, from 0x7f,
/// and the backslash (`msg_add_ext_text` in `kernel/printk/printk.c`).
const fn needs_printk_escape(b: u8) -> bool {
    b < 0x20 || b >= 0x7f || b == b'\\'
}

/// [`decode_exact`] into a caller's buffer, for a receiver that decodes every record without
/// allocating: `out` is cleared, then holds the decoded bytes when the function returns
/// `true`. It returns `false` (and `out` holds a partial decoding) exactly when
/// [`decode_exact`] gives `None`: an escape that is not `\x` and two lowercase hex digits, an
/// escape of a byte printk leaves as it is, or a byte printk would have escaped.
#[cfg(feature = "alloc")]
pub fn decode_exact_into(wire: &[u8], out: &mut alloc::vec::Vec<u8>) -> bool {
    fn lower_hex(d: u8) -> Option<u8> {
        match d {
            b'0'..=b'9' => Some(d - b'0'),
            b'a'..=b'f' => Some(d - b'a' + 10),
            _ => None,
        }
    }
    out.clear();
    let mut i = 0;
    while i < wire.len() {
        // Runs of bytes printk leaves as they are, copied at once.
        let run = wire[i..]
            .iter()
            .position(|&b| needs_printk_escape(b))
            .unwrap_or(wire.len() - i);
        out.extend_from_slice(&wire[i..i + run]);
        i += run;
        if i == wire.len() {
            break;
        }
        let (Some(b'x'), Some(hi), Some(lo)) = (
            wire.get(i + 1).filter(|_| wire[i] == b'\\'),
            wire.get(i + 2).copied().and_then(lower_hex),
            wire.get(i + 3).copied().and_then(lower_hex),
        ) else {
            return false;
        };
        let byte = hi << 4 | lo;
        if !needs_printk_escape(byte) {
            return false;
        }
        out.push(byte);
        i += 4;
    }
    true
}

/// The bytes [`format_appended`] writes for `entries`: [`extradata_line_len`] of each.
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
