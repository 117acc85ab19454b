//! The plain console line: the bytes a (non-extended) console's `write` receives for one
//! printk record (the rule is on [`format_console`]).

use crate::format::Decimal;
use crate::header::{Flag, RecordFields};

/// The console buffer of Linux 5.10 to 6.2 (`CONSOLE_LOG_MAX`).
pub const CONSOLE_LOG_MAX: usize = 1024;

/// The longest prefix [`console_prefix`] writes: `<2047>`, a 14-digit time and an 11-byte
/// caller, with brackets and the space.
pub(crate) const CONSOLE_PREFIX_MAX: usize = 48;

/// A printk record as a console sees it (raw, unescaped text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsoleRecord<'a> {
    /// The record's fields. The console prints `ts_usec` with [`ConsoleOptions::time`], the
    /// prefix (level and facility) with [`ConsoleOptions::syslog`] and the caller with
    /// [`ConsoleOptions::caller`]. It never prints `seq` (kept to match records with
    /// datagrams) nor `flag`: `record_print_text` prefixes every record alike, `LOG_CONT` or
    /// not.
    pub fields: RecordFields,
    /// The text, raw, without the final newline.
    pub text: &'a [u8],
}

impl<'a> ConsoleRecord<'a> {
    /// A record with the given level, sequence, timestamp and text; facility 0, flag `-`, no
    /// caller.
    #[must_use]
    pub const fn new(level: u8, seq: u64, ts_usec: u64, text: &'a [u8]) -> Self {
        let fields = RecordFields {
            seq,
            ts_usec,
            level,
            facility: 0,
            flag: Flag::Normal,
            caller: None,
        };
        Self::from_fields(fields, text)
    }

    /// A record with the given fields (those of a parsed [`Header`](crate::Header), for one)
    /// and text.
    #[must_use]
    pub const fn from_fields(fields: RecordFields, text: &'a [u8]) -> Self {
        ConsoleRecord { fields, text }
    }
}

/// How the kernel formats console text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsoleOptions {
    /// `printk.time`: the `[%5lu.%06lu]` prefix. Default true.
    pub time: bool,
    /// `CONFIG_PRINTK_CALLER`: the `[%6s]` caller and a space even without time. Default false.
    pub caller: bool,
    /// `console_msg_format=syslog`: the `<PRI>` prefix. Default false.
    pub syslog: bool,
    /// The console buffer, terminating NUL included. Default 2048 (`PRINTK_MESSAGE_MAX`,
    /// Linux 6.3 and later); [`CONSOLE_LOG_MAX`] for 5.10 to 6.2.
    pub buffer_size: usize,
}

impl ConsoleOptions {
    /// Linux 5.10 to 6.2 defaults: time on, 1024-byte buffer.
    pub const LINUX_5_10: Self = ConsoleOptions {
        time: true,
        caller: false,
        syslog: false,
        buffer_size: CONSOLE_LOG_MAX,
    };
    /// Linux 6.3 and later defaults: time on, 2048-byte buffer.
    pub const LINUX_6_3: Self = ConsoleOptions {
        time: true,
        caller: false,
        syslog: false,
        buffer_size: crate::PRINTK_MESSAGE_MAX,
    };
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        Self::LINUX_6_3
    }
}

/// Whether a record is printed on consoles: its level must be below the console loglevel
/// (`suppress_message_printing`; `loglevel=8` prints every level).
#[must_use]
pub const fn printed_on_console(level: u8, console_loglevel: u8) -> bool {
    (level & 7) < console_loglevel
}

/// Writes decimal `value` at `out[at..]`, left-padded with `pad` to `width`; returns the end.
fn put_decimal(out: &mut [u8], at: usize, value: u64, width: usize, pad: u8) -> usize {
    let digits = Decimal::new(value);
    let digits = digits.as_bytes();
    let start = at + width.saturating_sub(digits.len());
    out[at..start].fill(pad);
    out[start..start + digits.len()].copy_from_slice(digits);
    start + digits.len()
}

/// The prefix the kernel puts in front of every line of `record` (`info_print_prefix`).
/// Returns its length.
pub(crate) fn console_prefix(
    record: &ConsoleRecord<'_>,
    options: &ConsoleOptions,
    out: &mut [u8; CONSOLE_PREFIX_MAX],
) -> usize {
    let fields = &record.fields;
    let mut len = 0;
    if options.syslog {
        out[0] = b'<';
        len = put_decimal(out, 1, u64::from(fields.prefix()), 0, b'0');
        out[len] = b'>';
        len += 1;
    }
    if options.time {
        out[len] = b'[';
        len = put_decimal(out, len + 1, fields.ts_usec / 1_000_000, 5, b' ');
        out[len] = b'.';
        len = put_decimal(out, len + 1, fields.ts_usec % 1_000_000, 6, b'0');
        out[len] = b']';
        len += 1;
    }
    if options.caller {
        if let Some(caller) = fields.caller {
            let (letter, id) = caller.parts();
            // The kernel keeps 31 bits of id; "%c%u" then right-aligned in six columns.
            let id = u64::from(id & 0x7fff_ffff);
            let mut digits = 1;
            let mut rest = id / 10;
            while rest > 0 {
                digits += 1;
                rest /= 10;
            }
            out[len] = b'[';
            len += 1;
            for _ in (digits + 1)..6 {
                out[len] = b' ';
                len += 1;
            }
            out[len] = letter;
            len = put_decimal(out, len + 1, id, 0, b'0');
            out[len] = b']';
            len += 1;
        }
    }
    if options.time || options.caller {
        out[len] = b' ';
        len += 1;
    }
    len
}

/// Formats `record` as the console text Linux hands to netconsole's `write`: the bytes a
/// (non-extended) console's `write` receives for one printk record, which plain netconsole
/// sends as they are. Writes at most `out.len()` bytes and returns how many; the kernel's
/// buffer is taken as `min(options.buffer_size, out.len() + 1)` (the `+ 1` is the NUL the
/// kernel keeps and this function does not write), so a short `out` cuts the text the way a
/// short kernel buffer would.
///
/// Linux builds this text in `kernel/printk/printk.c`: `record_print_text` puts the prefix
/// from `info_print_prefix` in front of every line of the record's text and ends the last
/// line with the `\n` that `vprintk_store` removed. The prefix is, in this order:
///
/// ```text
///  <PRI>            [sssss.uuuuuu]      [  T123]          ' '
///  |                |                   |                 |
///  print_syslog     print_time          print_caller      only if time or
///  console_msg_     printk.time=1       CONFIG_PRINTK_    CONFIG_PRINTK_CALLER
///  format=syslog    "[%5lu.%06lu]"      CALLER "[%6s]"
///  (facility<<3 | level)
///
/// text "a\nb"  ->  "[    1.000002] a\n[    1.000002] b\n"
/// ```
///
/// The console reads the record into a buffer (Linux 5.10 to 6.2: [`CONSOLE_LOG_MAX`], 1024
/// bytes; 6.3 and later, since the printk buffer rework that introduced it:
/// [`PRINTK_MESSAGE_MAX`](crate::PRINTK_MESSAGE_MAX), 2048 bytes) that also holds a
/// terminating NUL. Text longer than that buffer is cut, then `record_print_text` prints
/// lines whole or not at all: it stops at the first line that does not fit with its prefix,
/// its newline and the NUL (a record whose only line does not fit prints nothing), and once it
/// had to shorten the text it also drops a last line that has no newline. This function
/// follows that loop step by step with the buffer size in [`ConsoleOptions::buffer_size`],
/// further limited by `out.len() + 1`. Records written to `/dev/kmsg` are short enough to
/// fit (`LOG_LINE_MAX` is the buffer less the longest prefix) unless they have many lines:
/// Linux 6.1's 1024-byte buffer drops the tail of such a record, as the captures show.
///
/// Every other byte goes through unchanged: control bytes, invalid UTF-8, and a NUL (a
/// `/dev/kmsg` write never stores one, as the kernel formats it with `%s`; a record that
/// holds one is sent with it). Netconsole's `write_msg` then sends the whole console text of
/// one record in datagrams of at most [`MAX_PRINT_CHUNK`](crate::MAX_PRINT_CHUNK) bytes
/// ([`plain_chunks`](crate::plain_chunks)); a datagram never holds two records.
///
/// ```
/// use netconsole_proto::{ConsoleOptions, ConsoleRecord, format_console};
///
/// let record = ConsoleRecord::new(6, 7, 6_498_885, b"one\ntwo");
/// let mut out = [0u8; 64];
/// let len = format_console(&record, &ConsoleOptions::default(), &mut out);
/// assert_eq!(&out[..len], b"[    6.498885] one\n[    6.498885] two\n");
/// ```
pub fn format_console(
    record: &ConsoleRecord<'_>,
    options: &ConsoleOptions,
    out: &mut [u8],
) -> usize {
    let buffer = options.buffer_size.min(out.len().saturating_add(1));
    let mut prefix = [0u8; CONSOLE_PREFIX_MAX];
    let prefix_len = console_prefix(record, options, &mut prefix);
    let prefix = &prefix[..prefix_len];

    // The console reads at most `buffer` bytes of text.
    let mut rest = &record.text[..record.text.len().min(buffer)];
    let mut cut = false;
    let mut len = 0;
    loop {
        let line_len = match rest.iter().position(|&b| b == b'\n') {
            Some(at) => at,
            // A line left over after a cut is dropped.
            None if cut => break,
            None => rest.len(),
        };
        // Room for the prefix, the rest of the text, a newline and the NUL?
        if len + prefix_len + rest.len() + 2 > buffer {
            if len + prefix_len + line_len + 2 > buffer {
                break;
            }
            rest = &rest[..buffer - len - prefix_len - 2];
            cut = true;
        }
        out[len..len + prefix_len].copy_from_slice(prefix);
        len += prefix_len;
        out[len..len + line_len].copy_from_slice(&rest[..line_len]);
        len += line_len;
        out[len] = b'\n';
        len += 1;
        if line_len == rest.len() {
            break;
        }
        rest = &rest[line_len + 1..];
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Caller;

    #[test]
    fn the_longest_prefix_fits() {
        // Prefix 2047, the largest time, a caller id of 31 bits (what the kernel keeps).
        let mut record = ConsoleRecord::new(7, 0, u64::MAX, b"");
        record.fields.facility = 255;
        record.fields.caller = Some(Caller::Cpu(u32::MAX));
        let options = ConsoleOptions {
            time: true,
            caller: true,
            syslog: true,
            buffer_size: crate::PRINTK_MESSAGE_MAX,
        };
        let mut out = [0u8; CONSOLE_PREFIX_MAX];
        let len = console_prefix(&record, &options, &mut out);
        assert_eq!(&out[..len], b"<2047>[18446744073709.551615][C2147483647] ");
    }
}
